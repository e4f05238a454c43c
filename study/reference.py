"""The non-deep reference of every cell: a logistic regression on per-band log-mel mean and
standard deviation (``mtlmood.reference``), fitted on the cell's training songs and scored
on its test songs. It depends on the mood labels only (not on metadata or alpha), so it is
fitted once per mood count. A reader sees from it whether the CNN learns more than
spectral statistics. Runs in the study's driver (it is seconds of CPU); results are
written once and reused when the study resumes."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from mtlmood import storage
from study.cells import Cell
from study.config import StudyConfig, trial_run_config

REFERENCE_DIR = "reference"
PREDICTIONS_FILE = "test_predictions.npz"
RESULT_FILE = "result.json"


def reference_dir(run_dir: str | os.PathLike[str], n_moods: int) -> str:
    """Where the reference of one mood count lives (a path or URI)."""
    return storage.join(run_dir, REFERENCE_DIR, f"{int(n_moods)}-moods")


def run_references(study: StudyConfig, cells: dict[str, Cell]) -> None:
    """Fit (or keep) the reference of every mood count of the study."""
    from mtlmood.reference import fit_reference
    from mtlmood.rundata import load_run_data

    for n_moods in study.search.n_moods:
        out = reference_dir(study.run_dir, n_moods)
        if storage.exists(storage.join(out, RESULT_FILE)):
            continue
        data = load_run_data(trial_run_config(study, int(n_moods), "none", 0.0, 0))
        result = fit_reference(data)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, song_ids=np.asarray(result.song_ids), y_true=result.y_true, y_prob=result.y_prob)
        storage.write_bytes(storage.join(out, PREDICTIONS_FILE), buffer.getvalue())
        storage.write_json(  # last: the reference of this mood count is done
            storage.join(out, RESULT_FILE),
            {
                "n_moods": int(n_moods),
                "test_pr_auc": float(result.scores["pr_auc"]),
                "test_roc_auc": float(result.scores["roc_auc"]),
                "C": float(result.C),
                "val_pr_auc": float(result.val_scores.get("pr_auc", float("nan"))),
                "seconds": float(result.seconds),
            },
        )
        print(
            f"[reference] {n_moods} moods: logistic regression on log-mel mean/std, test PR-AUC "
            f"{result.scores['pr_auc']:.1f} %, ROC-AUC {result.scores['roc_auc']:.1f} %",
            flush=True,
        )


def load_reference(run_dir: str | os.PathLike[str], n_moods: int) -> dict | None:
    """The reference result of one mood count, or None when the study has none."""
    try:
        return dict(json.loads(storage.read_text(storage.join(reference_dir(run_dir, n_moods), RESULT_FILE))))
    except FileNotFoundError:
        return None
