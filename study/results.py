"""Tune results -> the trial table (one row per trial), and the best alpha per cell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from study.cells import Cell
from study.config import StudyConfig
from study.trial import MODEL_DIR, PREDICTIONS_FILE, resolve_choice

COLUMNS = ["trial_id", "trial_number", "phase", "status", "dataset", "n_moods", "metadata", "n_meta", "alpha", "role",
           "heuristic_alpha", "seed", "epochs", "best_epoch", "early_stopped", "val_roc_auc", "val_pr_auc",
           "test_roc_auc", "test_pr_auc", "time_s", "checkpoint_path", "predictions_path", "error"]


def _num(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None else math.nan


def trial_table(grid: Any, phase: str, cells: dict[str, Cell], study: StudyConfig) -> pd.DataFrame:
    """One row per trial of a finished (or stopped) Tune phase; errored trials are kept as rows."""
    heuristics = {key: cell.heuristic_alpha for key, cell in cells.items()}
    rows = []
    for number, result in enumerate(grid):  # the grid lists trials in launch order
        metrics = dict(result.metrics or {})
        choice = resolve_choice(result.config or {}, heuristics, study.search.training_seed)
        cell = cells.get(f"{choice['n_moods']}|{choice['metadata']}")
        done = bool(metrics.get("final"))
        ckpt = str(metrics.get("checkpoint_path") or "") if done else ""
        predictions = str(Path(ckpt, PREDICTIONS_FILE)) if ckpt else ""
        rows.append({
            "trial_id": str(metrics.get("trial_id") or Path(result.path or "").name),
            "trial_number": number,
            "phase": phase,
            "status": "ERROR" if result.error else "TERMINATED",
            "dataset": study.run.dataset.name,
            "n_moods": choice["n_moods"],
            "metadata": choice["metadata"],
            "n_meta": cell.n_meta if cell else 0,
            "alpha": choice["alpha"],
            "role": "baseline" if choice["metadata"] == "none" and phase == "search" else choice["role"],
            "heuristic_alpha": choice["heuristic_alpha"] if choice["metadata"] != "none" else math.nan,
            "seed": choice["seed"],
            "epochs": int(metrics.get("epoch", 0) or 0),
            "best_epoch": int(metrics.get("best_epoch", 0) or 0),
            # A trial that never sent its final (test) report was stopped by the scheduler.
            "early_stopped": (not done) and result.error is None,
            "val_roc_auc": _num(metrics, "val_roc_auc"),
            "val_pr_auc": _num(metrics, "val_pr_auc"),
            "test_roc_auc": _num(metrics, "test_roc_auc"),
            "test_pr_auc": _num(metrics, "test_pr_auc"),
            "time_s": _num(metrics, "time_total_s"),
            "checkpoint_path": str(Path(ckpt, MODEL_DIR)) if ckpt else "",
            "predictions_path": predictions,
            "error": str(result.error).splitlines()[0][:300] if result.error else "",
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["n_moods", "metadata", "alpha", "seed"], kind="stable").reset_index(drop=True)


def best_alpha_per_cell(search: pd.DataFrame) -> dict[str, float]:
    """Per cell (``n_moods|metadata``, metadata != none): the alpha with the best *validation* PR-AUC.

    Trials that ran to their end are preferred; when the scheduler stopped every trial
    of a cell (ASHA compares trials across cells, so a strong baseline can stop them all),
    the best stopped one is taken. Selection never looks at test metrics, so the test
    set stays an honest estimate in phase 2.
    """
    usable = search[(search["status"] == "TERMINATED") & (search["metadata"] != "none") &
                    search["val_pr_auc"].notna()]
    best: dict[str, float] = {}
    for (n_moods, metadata), group in usable.groupby(["n_moods", "metadata"]):
        finished = group[~group["early_stopped"].astype(bool)]
        pool = finished if not finished.empty else group
        best[f"{int(n_moods)}|{metadata}"] = float(pool.loc[pool["val_pr_auc"].idxmax(), "alpha"])
    return best


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The winning trial for serving: best validation PR-AUC among finished trials with a checkpoint."""
    usable = trials[(trials["checkpoint_path"] != "") & trials["val_pr_auc"].notna()]
    if usable.empty:
        return None
    return usable.loc[usable["val_pr_auc"].idxmax()]
