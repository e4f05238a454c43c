"""Writes a study's result tables, report and the best checkpoint pointer used by serve."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from mtlmood.config import to_dict
from mtlmood.fileio import atomic_write_json
from study.config import StudyConfig
from study.results import best_trial

BEST_FILE = "best_checkpoint.json"
REPORT_DIR = "report"


def write_best_pointer(run_dir: Path, trials: pd.DataFrame) -> str:
    """``<run>/best_checkpoint.json``: where `mtlmood serve --study RUN` finds the winner."""
    best = best_trial(trials)
    if best is None:
        return ""
    atomic_write_json(run_dir / BEST_FILE, {
        "checkpoint": best["checkpoint_path"], "trial_id": best["trial_id"], "phase": best["phase"],
        "selected_by": "highest validation PR-AUC (%) among finished trials",
        "n_moods": int(best["n_moods"]), "metadata": best["metadata"], "alpha": float(best["alpha"]),
        "seed": int(best["seed"]), "val_pr_auc": float(best["val_pr_auc"]),
        "test_pr_auc": float(best["test_pr_auc"]), "test_roc_auc": float(best["test_roc_auc"]),
    })
    return str(best["checkpoint_path"])


def write_study_report(study: StudyConfig, trials: pd.DataFrame, out_dir: Optional[Path] = None) -> str:
    """Trial table (CSV + Parquet), Table-1 summary with CIs and verdicts, plots; returns the best checkpoint."""
    from study.report_legacy import write_report

    run_dir = Path(study.run_dir)
    write_report(trials, out_dir or run_dir / REPORT_DIR, title=f"alpha study {study.name!r} on {study.run.dataset.name}",
                 study_config=to_dict(study), n_boot=study.report_bootstrap)
    return write_best_pointer(run_dir, trials)
