"""`mtlmood train / evaluate / predict` end to end: csv manifest + feature cache -> checkpoint -> scores.

Each test asks for what it needs: ``prepared`` (manifest, cached features, run config)
or ``trained`` (the checkpoint `mtlmood train` wrote from them), so any test runs alone.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from helpers.mtl_synthetic import MOODS, N_MELS, SEGMENT
from helpers.train_cli import write_manifest
from mtlmood.checkpoint import load_checkpoint
from mtlmood_cli.main import main

N_ARTISTS = 6  # the run config's labels.n_artists: alpha=auto is then 3 moods / 6


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A csv manifest whose features are already cached, and a small run config for it."""
    root = tmp_path_factory.mktemp("cli")
    write_manifest(root, [f"nofeat{i},audio/nofeat{i}.ogg,calm,a0" for i in range(3)])  # audio that never decoded
    config = {
        "dataset": {"name": "csv", "root": str(root / "manifest.csv")},
        "features": {"n_mels": N_MELS},
        "labels": {"n_moods": len(MOODS), "metadata": "artist", "n_artists": N_ARTISTS},
        "model": {"n_filters": 8, "n_blocks": 3, "segment_frames": SEGMENT, "n_mels": N_MELS, "bn_momentum": 0.1},
        "train": {"batch_size": 16, "max_batches_per_epoch": 24, "max_epochs": 3, "num_threads": 1},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    return {"root": root, "config": root / "run.yaml"}


@pytest.fixture(scope="module")
def trained(prepared: dict[str, Path]) -> dict[str, object]:
    """`mtlmood train` once on ``prepared``: what it printed and its output directory."""
    out = prepared["root"] / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "--config", str(prepared["config"]), "--set", "train.alpha=auto", "--output", str(out)])
    assert code == 0, printed.getvalue()  # every test of the checkpoint needs it
    return {"printed": printed.getvalue(), "out": out, "root": prepared["root"]}


def test_train_writes_checkpoint_metrics_and_config(trained: dict) -> None:
    out, printed = trained["out"], trained["printed"]
    assert printed.count("epoch ") >= 3 and "val ROC-AUC" in printed and "test (song-level macro, %)" in printed
    assert {"weights.pt", "model_card.json", "metrics.json", "config.yaml"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["alpha"] == pytest.approx(len(MOODS) / N_ARTISTS) and metrics["n_meta"] == N_ARTISTS
    assert metrics["data"]["dropped_without_features"] == 3
    assert metrics["test"]["pr_auc"] > metrics["test"]["prevalence"] + 20
    assert len(metrics["history"]) == metrics["history"][-1]["epoch"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["alpha"] == "auto" and resolved["output_dir"] == str(out)
    model, card = load_checkpoint(out)
    assert set(card.mood_names) == set(MOODS) and card.n_meta == N_ARTISTS and model.meta_head is not None
    assert card.metrics["test"]["pr_auc"] == pytest.approx(metrics["test"]["pr_auc"])


def test_evaluate_prints_the_test_table(trained: dict, capsys: pytest.CaptureFixture) -> None:
    out = trained["out"]
    assert main(["evaluate", str(out)]) == 0
    table = capsys.readouterr().out
    assert "ROC-AUC %" in table and f"macro ({len(MOODS)} labels)" in table and all(m in table for m in MOODS)
    assert main(["evaluate", str(out), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert scores["pr_auc"] == pytest.approx(metrics["test"]["pr_auc"])  # same data, same model
    assert main(["evaluate", str(out), "--split", "validation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "validation"


def test_predict_real_clips_and_report_bad_files(
    trained: dict, real_audio_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    out = trained["out"]
    trumpet = real_audio_dir / "sorohanro_-_solo-trumpet-06.ogg"
    vibe = real_audio_dir / "Kevin_MacLeod_-_Vibe_Ace.ogg"
    assert main(["predict", str(out), str(trumpet), str(vibe), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(trumpet)) and "segments" in lines[0]
    assert main(["predict", str(out), str(vibe), str(trained["root"] / "nope.mp3"), "--json"]) == 2
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert set(results[0]["probabilities"]) == set(MOODS) and len(results[0]["top"]) == 3
    assert "error" in results[1] and "nope.mp3" in captured.err


def test_user_errors_are_one_line(prepared: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(prepared["root"] / "missing")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--config",
                str(prepared["config"]),
                "--set",
                "train.alpha=-1",
                "--output",
                str(prepared["root"] / "bad"),
            ]
        )
        == 2
    )
    assert "train.alpha" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--config",
                str(prepared["config"]),
                "--set",
                f"cache_dir={prepared['root']}/none",
                "--output",
                str(prepared["root"] / "bad"),
            ]
        )
        == 2
    )
    assert "mtlmood prepare" in capsys.readouterr().err
