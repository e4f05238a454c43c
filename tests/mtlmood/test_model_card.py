"""MODEL_CARD.md: every contract value read from the checkpoint's config, the labels, alpha and
metadata, scores (with a study's intervals when a study chose the checkpoint, and a plain
"no interval" otherwise), limitations and the citation; one per cell of a study."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from mtlmood.checkpoint import ModelCard, save_checkpoint
from mtlmood.config import DatasetConfig, FeatureConfig, LabelConfig, ModelConfig
from mtlmood.model import MoodCNN
from mtlmood.model_card import (
    MODEL_CARD_FILE,
    find_study_record,
    render_model_card,
    write_model_card,
    write_study_model_cards,
)
from mtlmood_cli.main import main

MOODS = ["calm", "dark", "happy"]
# Deliberately unlike the paper's values, so a hard-coded 16 kHz / 96 / 187 would show.
FEATURES = FeatureConfig(sample_rate=22050, max_seconds=10.0, n_fft=1024, hop_length=512, n_mels=40, log_multiplier=100)
MODEL = ModelConfig(n_filters=4, n_blocks=2, segment_frames=24, n_mels=40)
TEST = {
    "roc_auc": 81.234,
    "pr_auc": 64.567,
    "prevalence": 33.3,
    "n_songs": 77,
    "n_labels": 3,
    "excluded_labels": [],
    "per_label": {m: {"roc_auc": 80.0, "pr_auc": 60.0, "positives": 10} for m in MOODS},
}


def _checkpoint(directory: Path, n_meta: int = 3, alpha: float = 0.5, **card: Any) -> Path:
    meta = [f"artist:a{i}" for i in range(n_meta - 1)] + (["year:2005-2009"] if n_meta else [])
    options: dict[str, Any] = dict(
        mood_names=MOODS,
        meta_names=meta,
        model=MODEL,
        features=FEATURES,
        alpha=alpha,
        dataset=DatasetConfig(name="synthetic", root="/data/synth"),
        labels=LabelConfig(n_moods=3, metadata="artist+year" if n_meta else "none", n_artists=2),
        metrics={"best_epoch": 4, "validation": {"pr_auc": 60.1, "n_songs": 70}, "test": TEST},
        seed=7,
        run_config={"train": {"alpha": "auto"}},
    )
    options.update(card)
    torch.manual_seed(0)
    save_checkpoint(directory, MoodCNN(options["model"], len(MOODS), n_meta), ModelCard(**options))
    return directory


def test_the_card_states_the_checkpoints_own_contract_labels_and_alpha(tmp_path: Path) -> None:
    text = write_model_card(_checkpoint(tmp_path / "ckpt")).read_text()
    assert (tmp_path / "ckpt" / MODEL_CARD_FILE).is_file()
    for expected in (
        "22050 Hz",
        "the first 10 s = at most 430 frames",  # int(10 * 22050 / 512)
        "n_fft 1024, hop 512 (43.0664 frames/s)",
        "40 bands",
        "log10(1 + 100 · mel)",
        "non-overlapping windows of 24 frames (≈ 0.56 s)",
        "float32 (batch, 24, 40)",
        "the mean over the song's windows",
        "`calm`, `dark`, `happy`",
        "N_meta = 3",
        "`artist+year`",
        "α = 0.5, 0.5 × the paper's heuristic N_mood / N_meta = 3/3 = 1",
        "**PR-AUC 64.57**, ROC-AUC 81.23",
        "**No confidence interval is available**",
        "**This checkpoint was trained on synthetic songs**",
        "Only the first 10 s of a recording are heard",
        "features.n_mels = 40 (paper: 96)",
        "Kumar",
        "Multi-task Learning with Metadata for Music Mood Classification",
        "arXiv:2110.04765",
    ):
        assert expected in text, expected
    for paper_value in ("16000 Hz", "96 bands", "187 frames", "29 s"):
        assert paper_value not in text, paper_value


def test_a_paper_config_baseline_card(tmp_path: Path) -> None:
    card = ModelCard(
        mood_names=MOODS,
        meta_names=[],
        model=ModelConfig(n_filters=4),
        features=FeatureConfig(),
        alpha=0.0,
        dataset=DatasetConfig(name="mtg-jamendo"),
        labels=LabelConfig(metadata="none"),
    )
    text = render_model_card(card, "ckpt")
    for expected in ("16000 Hz", "96 bands", "187 frames (≈ 2.99 s)", "first 29 s = at most 1812 frames"):
        assert expected in text, expected
    assert "Single-task baseline: α = 0" in text and "No test scores were recorded" in text
    assert "trained on synthetic" not in text and "model.n_filters = 4 (paper: 128)" in text


def _study(run_dir: Path) -> dict[str, Path]:
    """A study run directory as the study writes it: best_checkpoint.json, report/curves.csv,
    study_config.yaml, and the checkpoints (one cell's is missing)."""
    checkpoints = {
        "3|artist+year": _checkpoint(run_dir / "runs/curve/3-artist+year/x1/3/seed-2/model"),
        "3|none": _checkpoint(run_dir / "runs/curve/3-none/baseline/seed-1/model", n_meta=0, alpha=0.0),
        "9|artist+year": _checkpoint(run_dir / "runs/search/t0001/model"),
    }
    cells = {
        "3|artist+year": {"arm": "x1/3", "phase": "curve", "alpha": 0.333, "seed": 2, "metadata": "artist+year"},
        "3|none": {"arm": "baseline", "phase": "curve", "alpha": 0.0, "seed": 1, "metadata": "none"},
        "9|artist+year": {"arm": "t0001", "phase": "search", "alpha": 1.5, "seed": 0, "metadata": "artist+year"},
        "50|artist": {"arm": "heuristic", "phase": "curve", "alpha": 1.0, "seed": 0, "metadata": "artist"},
    }
    for key, cell in cells.items():
        cell.update(n_moods=int(key.split("|")[0]), val_pr_auc=70.0, test_pr_auc=71.5, test_roc_auc=80.25)
        path = checkpoints.get(key, run_dir / "runs/curve/50-artist/gone")
        cell["checkpoint"] = str(path.relative_to(run_dir))
    pointer = {"default_cell": "3|artist+year", "checkpoint": cells["3|artist+year"]["checkpoint"], "cells": cells}
    pointer["selected_by"] = "highest validation PR-AUC (%) within each cell"
    (run_dir / "best_checkpoint.json").write_text(json.dumps(pointer))
    (run_dir / "report").mkdir()
    header = ",".join(
        ["cell", "arm", "alpha", "x heuristic", "seeds", "val PR-AUC", "ROC-AUC", "ROC-AUC low", "ROC-AUC high"]
        + ["PR-AUC", "PR-AUC low", "PR-AUC high", "note"]
    )
    rows = [
        "synthetic · 3 moods · artist+year,baseline,0,0,3,60,80.5,79.5,81.5,61.25,59.75,62.75,",
        "synthetic · 3 moods · artist+year,x1/3,0.333,0.333,3,61,82.5,81.5,83.5,63.25,61.75,64.75,",
        "synthetic · 50 moods · artist+year,x1/3,0.333,0.333,3,61,1,1,1,1,1,1,",
    ]
    (run_dir / "report" / "curves.csv").write_text("\n".join([header, *rows]) + "\n")
    (run_dir / "study_config.yaml").write_text("name: s\nreport:\n  confidence: 0.9\n")
    return checkpoints


def test_a_study_writes_one_card_per_cell_with_its_arms_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoints = _study(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mtlmood.model_card"):
        written = write_study_model_cards(tmp_path)
    assert sorted(written) == sorted(path / MODEL_CARD_FILE for path in checkpoints.values())
    assert "50|artist" in caplog.text  # its checkpoint is gone: logged and skipped

    multitask = (checkpoints["3|artist+year"] / MODEL_CARD_FILE).read_text()
    assert "Chosen as the best model of cell `3|artist+year` (the study's default cell for serving)" in multitask
    assert "Arm `x1/3` (curve phase), α = 0.333, seed 2" in multitask and "test PR-AUC 71.50" in multitask
    assert "Its arm over 3 seeds" in multitask and "90% interval" in multitask
    assert "**PR-AUC 63.25 [61.75, 64.75]**, ROC-AUC 82.50 [81.50, 83.50]" in multitask
    assert "No confidence interval" not in multitask and "One training run" not in multitask

    baseline = (checkpoints["3|none"] / MODEL_CARD_FILE).read_text()  # the baseline rows of its mood count
    assert "**PR-AUC 61.25 [59.75, 62.75]**" in baseline and "Single-task baseline" in baseline

    search = (checkpoints["9|artist+year"] / MODEL_CARD_FILE).read_text()
    assert "**No interval is available** for its arm" in search and "no row for arm 't0001'" in search


def test_a_study_without_a_report_says_so(tmp_path: Path) -> None:
    checkpoints = _study(tmp_path)
    (tmp_path / "report" / "curves.csv").unlink()
    record = find_study_record(checkpoints["3|artist+year"])
    assert record is not None and record.arm_scores is None and "report/curves.csv" in record.arm_note
    assert find_study_record(_checkpoint(tmp_path / "elsewhere")) is None  # under the run dir, but not chosen


def test_the_command_finds_the_study_that_chose_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _study(tmp_path)["3|artist+year"]
    assert main(["model-card", str(checkpoint), "--output", str(tmp_path / "card.md")]) == 0
    assert f"wrote {tmp_path / 'card.md'}" in capsys.readouterr().out
    assert "### From the α study" in (tmp_path / "card.md").read_text()
