"""A real tiny alpha study on a local Ray: Optuna + ASHA search, seeds, table, report,
resume after the driver is killed, and a training worker killed mid-trial.

Ray starts once for the module (dashboard on: Train V2 frees the resources of trials
that ASHA stops through the State API, which needs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from mtlmood.inference import Predictor  # noqa: E402
from study_data import make_study_data, prepare_study_features  # noqa: E402
from study.config import load_study_config  # noqa: E402
from study.ray_session import init_ray  # noqa: E402
from study.results import COLUMNS  # noqa: E402
from study.runner import run_study  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def small_overrides(data_dir: Path, storage: Path, name: str) -> list[str]:
    """Small settings: 8 filters, 6 batches per epoch, 3 epochs, 3 search trials, 3 seeds."""
    return [f"name={name}", f"storage_path={storage}", f"run.dataset.root={data_dir}",
            "run.model.n_filters=8", "run.train.max_epochs=3", "run.train.patience=2",
            "run.train.max_batches_per_epoch=6", "run.train.eval_batch_size=64", "run.train.num_threads=1",
            "search.num_samples=3", "search.n_moods=[4]", "search.metadata=[artist]",
            "confirm.seeds=[0,1,2]", "scheduler.grace_period=1", "report_bootstrap=200"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("study")
    data_dir = root / "data"
    make_study_data(data_dir, seed=3)
    study = load_study_config("synthetic", small_overrides(data_dir, root / "studies", "probe"))
    prepare_study_features(study)
    init_ray(None, num_cpus=2)
    yield {"root": root, "data": data_dir, "storage": root / "studies"}
    ray.shutdown()


def _finished_trials(train_dir: Path) -> int:
    """Trials whose final (tested) checkpoint Ray Train has written to storage."""
    return len(list(train_dir.glob("search-*/checkpoint_*/test_predictions.npz")))


def test_interrupted_study_resumes_to_the_full_table_report_and_best_checkpoint(env) -> None:
    """Kill the study's driver after its first finished search trial, resume it, then check the whole output:
    the same trial count as an uninterrupted run (3 search + 9 confirm), no trial twice."""
    overrides = small_overrides(env["data"], env["storage"], "interrupted")
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "mtlmood.cli", "study", "run", "synthetic", "--address", address,
               *[arg for o in overrides for arg in ("--set", o)]]
    environ = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    search_dir = env["storage"] / "interrupted" / "search"
    train_dir = env["storage"] / "interrupted" / "train"
    deadline = time.monotonic() + 240
    try:
        while _finished_trials(train_dir) < 1:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the study finished no trial in time"
            time.sleep(0.5)
        time.sleep(1.5)  # let Tune write its experiment state (every second here) with those trials
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-study, as with a lost head node
        proc.wait(timeout=30)
    assert not (search_dir / "phase_done.json").exists(), "the search finished before the kill"
    finished_before = {p.parent.parent.name for p in train_dir.glob("search-*/checkpoint_*/test_predictions.npz")}

    study = load_study_config("synthetic", overrides)
    outcome = run_study(study)
    trials = outcome.trials
    assert list(trials.columns) == COLUMNS
    assert not trials.duplicated(["trial_id", "role"]).any()
    search = trials[trials["phase"] == "search"]
    confirm = trials[trials["phase"] == "confirm"]
    assert len(search) == 3  # the same count as an uninterrupted run: nothing lost, nothing repeated
    # The trials finished before the kill are in the table, not replaced by new ones.
    assert {name.removeprefix("search-") for name in finished_before} <= set(search["trial_id"])
    # The seeded points: the baseline and the heuristic alpha were both evaluated in the search.
    assert ((search["metadata"] == "none") & (search["alpha"] == 0)).any()
    artist = search[search["metadata"] == "artist"]
    assert (abs(artist["alpha"] - artist["heuristic_alpha"]) < 1e-9).any()
    # Phase 2: baseline, heuristic and best alpha, each over 3 seeds, all finished and tested
    # (when the best alpha found is the heuristic, the best arm reuses the heuristic's runs).
    assert len(confirm) == 9 and confirm["trial_id"].nunique() in (6, 9)
    best_rows, heuristic_rows = confirm[confirm["role"] == "best"], confirm[confirm["role"] == "heuristic"]
    if confirm["trial_id"].nunique() == 6:
        assert sorted(best_rows["trial_id"]) == sorted(heuristic_rows["trial_id"])
    assert {role: sorted(seeds) for role, seeds in confirm.groupby("role")["seed"]} == {
        "baseline": [0, 1, 2], "best": [0, 1, 2], "heuristic": [0, 1, 2]}
    assert (confirm["status"] == "TERMINATED").all() and confirm["test_pr_auc"].notna().all()
    assert confirm["test_pr_auc"].between(0, 100).all() and confirm["epochs"].ge(1).all()
    assert all(Path(p).exists() for p in confirm["predictions_path"])

    report_dir = Path(outcome.run_dir) / "report"
    for name in ("trials.csv", "trials.parquet", "table1.csv", "report.md", "report.html"):
        assert (report_dir / name).stat().st_size > 0
    assert list((report_dir / "plots").glob("*.png"))
    assert len(pd.read_csv(report_dir / "trials.csv")) == len(trials)
    best = json.loads((Path(outcome.run_dir) / "best_checkpoint.json").read_text())
    assert len(Predictor.from_checkpoint(best["checkpoint"]).mood_names) == 4

    # Running the finished study again re-runs nothing and gives the same table.
    again = run_study(study)
    assert sorted(again.trials["trial_id"]) == sorted(trials["trial_id"])


def test_killed_training_worker_resumes_from_its_checkpoint(env) -> None:
    overrides = small_overrides(env["data"], env["storage"], "worker-kill") + [
        "run.train.max_epochs=5", "run.train.patience=5", "run.train.max_batches_per_epoch=12",
        "search.num_samples=1", "search.metadata=[]", "confirm.enabled=false", "scheduler.enabled=false"]
    study = load_study_config("synthetic", overrides)
    train_dir = env["storage"] / "worker-kill" / "train"
    killed: list[int] = []

    def kill_a_worker_after_first_checkpoint() -> None:
        from ray.util.state import list_actors

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not killed:
            if list(train_dir.glob("*/checkpoint_*")):
                alive = list_actors(address=ray.get_runtime_context().gcs_address,
                                    filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
                for actor in alive:
                    if actor.pid:
                        os.kill(actor.pid, signal.SIGKILL)
                        killed.append(actor.pid)
                        return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    outcome = run_study(study)
    killer.join(timeout=5)
    assert killed, "no training worker was killed (the test did not exercise the failure path)"

    trials = outcome.trials
    assert len(trials) == 1 and trials["status"].eq("TERMINATED").all()
    assert trials["test_pr_auc"].notna().all() and int(trials["epochs"].iloc[0]) == 5  # no hole in the table
    # The epochs reported to Tune never restart from 1: the new worker resumed from the checkpoint.
    results = next((env["storage"] / "worker-kill" / "search").glob("*/result.json")).read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in results if line.strip()]
    training_epochs = epochs[:-1]  # the last report is the final (test) one
    assert training_epochs == sorted(set(training_epochs)) and training_epochs[-1] == 5
    assert len(list(train_dir.glob("*"))) == 1
