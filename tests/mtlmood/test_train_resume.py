"""`mtlmood train` survives being killed: a run SIGKILLed mid-training and re-run with the
same command ends with bit-identical weights to an uninterrupted run, and so does one
stopped by Ctrl-C; a finished run is not trained again; other settings in the same
directory are refused; --restart starts over.

The runs are real `python -m mtlmood_cli train` processes on the small synthetic feature
set of the other train tests (CPU, one thread). Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from helpers.train_cli import REPO, TIMEOUT, child_env, cli_dataset, train_command, wait_for
from mtlmood.checkpoint import CARD_FILE, WEIGHTS_FILE, load_train_state
from mtlmood.lock_file import LOCK_FILE
from mtlmood.train_output import STATE_FILE
from mtlmood_cli.main import main

# Every test here trains 4-epoch runs through `mtlmood train`, most in subprocesses: the full tier's.
pytestmark = pytest.mark.slow
EPOCHS = 4


def weights_sha256(directory: Path) -> str:
    """sha256 over the state_dict's names and tensor bytes, in name order."""
    state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run (``full``) and, beside it, the same command SIGKILLed after its
    first epoch state appeared and then re-run to the end (``resumed``)."""
    root = tmp_path_factory.mktemp("resume")
    config = cli_dataset(root / "data", epochs=EPOCHS)
    full, resumed = root / "full", root / "resumed"
    started = time.monotonic()
    # Both at once (one thread each): the uninterrupted run and the one to be killed.
    uninterrupted = subprocess.Popen(
        train_command(config, full),
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = subprocess.Popen(
        train_command(config, resumed),
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(resumed / STATE_FILE, victim, TIMEOUT)
        victim.send_signal(signal.SIGKILL)  # no cleanup at all: the worst case
        victim.communicate(timeout=30)
        killed_state = load_train_state(resumed / STATE_FILE)
        killed = {
            "epoch": killed_state["epoch"],
            "finished": (resumed / CARD_FILE).exists(),
            "lock_left": (resumed / LOCK_FILE).exists(),
        }
        again = subprocess.run(
            train_command(config, resumed), cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT
        )
        out, err = uninterrupted.communicate(timeout=TIMEOUT)
    finally:
        for process in (uninterrupted, victim):
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
    assert uninterrupted.returncode == 0, err
    assert again.returncode == 0, again.stderr
    return {
        "config": config,
        "full": full,
        "resumed": resumed,
        "killed": killed,
        "again": again,
        "full_out": out,
        "seconds": time.monotonic() - started,
    }


def test_a_killed_run_resumes_to_bit_identical_weights(runs: dict[str, Any]) -> None:
    killed = runs["killed"]
    assert 1 <= killed["epoch"] < EPOCHS and not killed["finished"], killed  # really cut short
    assert killed["lock_left"]  # SIGKILL leaves the lock; the re-run took it over
    again = runs["again"]
    assert f"resuming {runs['resumed']} after epoch {killed['epoch']}/{EPOCHS}" in again.stdout
    assert "taking over the stale lock" in again.stderr
    # Only the epochs after the kill were trained again.
    assert again.stdout.count(f"/{EPOCHS}  loss") == EPOCHS - killed["epoch"]
    assert weights_sha256(runs["resumed"]) == weights_sha256(runs["full"])
    full = json.loads((runs["full"] / "metrics.json").read_text())
    resumed = json.loads((runs["resumed"] / "metrics.json").read_text())
    for key in ("train_loss", "train_meta_loss", "val"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in full["history"]], key
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    assert not (runs["resumed"] / LOCK_FILE).exists() and not (runs["full"] / LOCK_FILE).exists()
    state = load_train_state(runs["resumed"] / STATE_FILE)  # the last epoch's full state stays
    assert state["epoch"] == EPOCHS and {"model", "optimizer", "best_model", "history"} <= set(state)


def test_a_finished_run_is_not_trained_again(runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = runs["full"]
    before = (out / WEIGHTS_FILE).stat().st_mtime_ns
    assert main(["train", "--config", str(runs["config"]), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out} already holds this finished run (best epoch ")
    assert "nothing to do" in printed and "--restart" in printed and "loss" not in printed
    assert (out / WEIGHTS_FILE).stat().st_mtime_ns == before


def test_other_settings_in_the_same_directory_are_refused(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    for out in (runs["full"], runs["resumed"]):
        code = main(
            ["train", "--config", str(runs["config"]), "--set", "train.seed=7", "--set", "train.lr=0.01"]
            + ["--output", str(out)]
        )
        assert code == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1
        assert err.startswith(f"mtlmood train: error: {out} holds a run with other settings: ")
        assert "train.lr (0.001 -> 0.01); train.seed (0 -> 7)" in err and "--restart" in err


def test_restart_discards_the_run_and_trains_from_scratch(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(runs["full"], out)
    (out / "notes.txt").write_text("mine")  # not a file train wrote: it stays
    code = main(
        ["train", "--config", str(runs["config"]), "--set", "train.max_epochs=1", "--restart", "--output", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "--restart: removed model_card.json, weights.pt, metrics.json, train_state.pt, config.yaml" in printed
    assert printed.count("loss") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and (out / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_epochs"] == 1


def test_ctrl_c_keeps_the_finished_epochs_and_the_same_command_resumes(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C right after epoch 1 (a KeyboardInterrupt from its progress line): exit 130 with one
    line that promises the resume, epoch 1's state on disk, no lock left; the same command then
    trains only the other epochs and ends with the uninterrupted run's weights."""
    import mtlmood.train_output as train_output

    out = tmp_path / "interrupted"
    argv = ["train", "--config", str(runs["config"]), "--output", str(out)]
    progress_line = train_output.format_epoch

    def ctrl_c_after_epoch_1(result: Any, *args: Any) -> str:
        if result.epoch == 1:
            raise KeyboardInterrupt
        return progress_line(result, *args)

    with monkeypatch.context() as patch:
        patch.setattr(train_output, "format_epoch", ctrl_c_after_epoch_1)
        assert main(argv) == 130
    assert capsys.readouterr().err == (
        "mtlmood train: interrupted; finished epochs are kept, re-run the same command to resume\n"
    )
    assert load_train_state(out / STATE_FILE)["epoch"] == 1
    assert not (out / CARD_FILE).exists() and not (out / LOCK_FILE).exists()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"resuming {out} after epoch 1/{EPOCHS}" in printed
    assert printed.count(f"/{EPOCHS}  loss") == EPOCHS - 1
    assert weights_sha256(out) == weights_sha256(runs["full"])
