"""The study's evidence on the model cards of the checkpoints it chose (study.report.model_cards):
one card per cell with its arm's interval from the report, the record beside it for a server,
a plain "no interval" when the report lacks it, and `mtlmood model-card` finding the study."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpers.model_cards import card_checkpoint
from mtlmood.model_card import MODEL_CARD_FILE
from mtlmood_cli.main import main
from study.report.model_cards import find_study_record, write_study_model_cards


def _study(run_dir: Path) -> dict[str, Path]:
    """A study run directory as the study writes it: best_checkpoint.json, report/curves.csv,
    study_config.yaml, and the checkpoints (one cell's is missing)."""
    checkpoints = {
        "3|artist+year": card_checkpoint(run_dir / "runs/curve/3-artist+year/x1/3/seed-2/model"),
        "3|none": card_checkpoint(run_dir / "runs/curve/3-none/baseline/seed-1/model", n_meta=0, alpha=0.0),
        "9|artist+year": card_checkpoint(run_dir / "runs/search/t0001/model"),
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
    with caplog.at_level(logging.WARNING, logger="study.report.model_cards"):
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
    assert find_study_record(card_checkpoint(tmp_path / "elsewhere")) is None  # under the run dir, but not chosen


def test_the_command_finds_the_study_that_chose_thecard_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _study(tmp_path)["3|artist+year"]
    assert main(["model-card", str(checkpoint), "--output", str(tmp_path / "card.md")]) == 0
    assert f"wrote {tmp_path / 'card.md'}" in capsys.readouterr().out
    assert "### From the α study" in (tmp_path / "card.md").read_text()


def test_the_record_beside_each_card_is_what_the_card_was_rendered_from(tmp_path: Path) -> None:
    """A server (which may not import the study) renders the same card from the record the study wrote."""
    from mtlmood.checkpoint import read_card
    from mtlmood.filenames import STUDY_EVIDENCE_FILE
    from mtlmood.model_card import render_model_card
    from mtlmood.study_evidence import StudyRecord

    checkpoints = _study(tmp_path)
    write_study_model_cards(tmp_path)
    for cell, checkpoint in checkpoints.items():
        record = StudyRecord.from_dict(json.loads((checkpoint / STUDY_EVIDENCE_FILE).read_text()))
        assert record == find_study_record(checkpoint) and record.cell == cell
        rendered = render_model_card(read_card(checkpoint), str(checkpoint), record)
        assert rendered == (checkpoint / MODEL_CARD_FILE).read_text()
