"""The learning check: a cell whose CNN is at chance, or below the non-deep reference, says so
first; runs that stopped on their budget or in their first epochs are flagged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from helpers.simulated_cells import Noise, simulate_cell
from study.config import StudyConfig
from study.report.bootstrap import ArmRuns, chance_pr_auc
from study.report.learning import AT_CHANCE, BELOW_REFERENCE, LEARNED, check_cell, warning_line
from study.report.tables import arm_estimates
from study.report.verdicts import CellEvidence

RUNS_OK = pd.DataFrame({"best_epoch": [6, 8, 7], "epochs": [10, 12, 11]})


def _checked(cell: CellEvidence, reference: dict | None = None, runs: pd.DataFrame = RUNS_OK, max_epochs: int = 16):
    est = arm_estimates(cell, n_boot=200, confidence=0.95)["baseline"]
    return check_cell(cell.cell, est["pr_auc"], est["roc_auc"], chance_pr_auc(cell.y_true), reference, runs, max_epochs)


def _random_cell(rng: np.random.Generator) -> CellEvidence:
    """Every arm predicts noise: the CNN learned nothing."""
    cell = simulate_cell(rng, {"baseline": 0.0, "heuristic": 0.0})
    arms = {k: ArmRuns(a.seeds, rng.random(a.probs.shape)) for k, a in cell.arms.items()}
    return CellEvidence(cell.cell, cell.heuristic_alpha, cell.y_true, cell.clusters, arms, cell.alphas, cell.val)


def test_a_cnn_at_chance_gets_the_warning_first() -> None:
    check = _checked(_random_cell(np.random.default_rng(0)), {"test_pr_auc": 60.0, "test_roc_auc": 80.0})
    assert check.status == AT_CHANCE and not check.learned
    config = StudyConfig()
    line = warning_line([check], config.run.train, config.run.model)
    assert line.startswith("**These verdicts describe models that did not learn** in 1 of 1 cell(s)")
    assert "run.train.max_epochs = 30" in line and "run.model.n_filters" in line
    assert "at chance" in check.sentence()


def test_a_cnn_that_learned_passes_and_one_below_the_reference_does_not() -> None:
    cell = simulate_cell(np.random.default_rng(1), {"baseline": 0.0, "heuristic": 0.0}, Noise(beta=2.5))
    learned = _checked(cell, {"test_pr_auc": 30.0, "test_roc_auc": 60.0})
    assert learned.status == LEARNED and warning_line([learned], StudyConfig().run.train, StudyConfig().run.model) == ""
    below = _checked(cell, {"test_pr_auc": 99.9, "test_roc_auc": 99.9})
    assert below.status == BELOW_REFERENCE


def test_runs_that_stop_on_their_budget_or_at_once_are_flagged() -> None:
    cell = simulate_cell(np.random.default_rng(2), {"baseline": 0.0, "heuristic": 0.0}, Noise(beta=2.5))
    at_budget = pd.DataFrame({"best_epoch": [16, 16, 9], "epochs": [16, 16, 16]})
    early = pd.DataFrame({"best_epoch": [1, 2, 7], "epochs": [5, 6, 11]})
    budget_check, early_check = _checked(cell, runs=at_budget), _checked(cell, runs=early)
    assert budget_check.learned and "budget's end" in budget_check.notes[0]
    assert "first 2 epochs" in early_check.notes[0]
    line = warning_line([budget_check], StudyConfig().run.train, StudyConfig().run.model)
    assert line.startswith("**Stopping warning.**") and "stopping rule rather than to α" in line


def test_the_console_prints_the_learning_warning_before_the_verdicts(tmp_path) -> None:
    from study.report.summary import verdict_summary

    cell = _random_cell(np.random.default_rng(3))
    check = _checked(cell)
    config = StudyConfig()
    warning = warning_line([check], config.run.train, config.run.model)
    report = tmp_path / "report"
    report.mkdir()
    (report / "learning.json").write_text(
        json.dumps({"warning": warning, "learned": False, "cells": [check.sentence()]}), encoding="utf-8"
    )
    pd.DataFrame(
        {
            "cell": [cell.cell],
            "comparison": ["heuristic - baseline"],
            "estimate": [0.1],
            "low": [-1.0],
            "high": [1.2],
            "p_adjusted": [0.8],
            "verdict": ["no significant difference (MDE 3.0 points)"],
            "family": ["primary"],
            "metric": ["pr_auc"],
        }
    ).to_csv(report / "verdicts.csv", index=False)
    lines = verdict_summary(tmp_path).splitlines()
    assert lines[0].startswith("These verdicts describe models that did not learn")
    assert lines[1].startswith("learning check: ") and "at chance" in lines[1]
    assert "no significant difference" in lines[-1]
