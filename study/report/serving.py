"""The serving pointer of a study: the best model of every cell (by validation PR-AUC,
within the cell), the default one to serve, and the model card (and its evidence) beside each of them.

``<run>/best_checkpoint.json`` is what ``mtlmood serve --study`` and ``mtlmood predict``
resolve. Cells are never ranked against each other: PR-AUC of 3 and 50 moods lives on
different scales, so the default cell is chosen within the largest mood count.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from mtlmood import storage
from mtlmood.checkpoint import CARD_FILE
from mtlmood.checkpoint_pointer import BEST_CHECKPOINTS_FILE, write_pointer
from mtlmood.filenames import STUDY_EVIDENCE_FILE
from mtlmood.model_card import MODEL_CARD_FILE
from study.config import StudyConfig
from study.filenames import STUDY_CONFIG_FILE
from study.report.model_cards import CURVES_PATH, write_study_model_cards

# How the pointer's models were chosen, as the pointer says it.
SELECTED_BY = "highest validation PR-AUC (%) within each cell; cells are never ranked against each other"


def best_per_cell(trials: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per cell (baselines included), the finished run with the best *validation* PR-AUC."""
    usable = trials[(trials["checkpoint_path"].fillna("") != "") & trials["val_pr_auc"].notna()]
    best: dict[str, dict[str, Any]] = {}
    for key, rows in usable.groupby("cell"):
        row = rows.loc[rows["val_pr_auc"].idxmax()]
        best[str(key)] = {
            "checkpoint": row["checkpoint_path"],
            "arm": row["arm"],
            "phase": row["phase"],
            "alpha": float(row["alpha"]),
            "seed": int(row["seed"]),
            "n_moods": int(row["n_moods"]),
            "metadata": row["metadata"],
            "val_pr_auc": float(row["val_pr_auc"]),
            "test_pr_auc": float(row["test_pr_auc"]),
            "test_roc_auc": float(row["test_roc_auc"]),
        }
    return best


def default_serve_cell(study: StudyConfig, best: dict[str, dict[str, Any]]) -> Optional[str]:
    """The cell to serve: the config's ``report.serve_cell``, else the largest mood count with
    the metadata set (baseline included) whose best model scored highest on validation.
    Only cells of one mood count are compared: their PR-AUC shares a scale."""
    if study.report.serve_cell:
        return study.report.serve_cell if study.report.serve_cell in best else None
    for n_moods in sorted((int(n) for n in study.search.n_moods), reverse=True):
        same = {k: v for k, v in best.items() if v["n_moods"] == n_moods}
        if same:
            return max(same, key=lambda k: same[k]["val_pr_auc"])
    return None


def _write_model_cards(run_dir: str, best: dict[str, dict[str, Any]]) -> None:
    """MODEL_CARD.md and the study's evidence beside each cell's best checkpoint
    (study.report.model_cards reads and writes local files: a study on an object store gets
    them rendered from a local copy of the files they come from, then uploaded, with the
    copy's path replaced by the URI)."""
    if not storage.is_uri(run_dir):
        write_study_model_cards(run_dir)
        return
    needed = [BEST_CHECKPOINTS_FILE, STUDY_CONFIG_FILE, CURVES_PATH]
    needed += [f"{entry['checkpoint']}/{CARD_FILE}" for entry in best.values()]
    with tempfile.TemporaryDirectory(prefix="mtlmood-cards-") as tmp:
        mirror = Path(tmp)
        for relative in needed:
            try:
                data = storage.read_bytes(storage.join(run_dir, relative))
            except FileNotFoundError:
                continue
            (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
            (mirror / relative).write_bytes(data)
        for card in write_study_model_cards(mirror, shown_as=run_dir):
            for name in (MODEL_CARD_FILE, STUDY_EVIDENCE_FILE):
                text = (card.parent / name).read_text(encoding="utf-8").replace(str(mirror), run_dir)
                storage.write_text(storage.join(run_dir, (card.parent / name).relative_to(mirror).as_posix()), text)


def write_best_pointer(study: StudyConfig, trials: pd.DataFrame) -> str:
    """``<run>/best_checkpoint.json`` (mtlmood.checkpoint_pointer.write_pointer, the format the
    core owns): the best model of every cell (paths relative to the run directory), and the
    default one to serve; returns where the default one is."""
    run_dir = study.run_dir
    best = best_per_cell(trials)
    default = default_serve_cell(study, best)
    if default is None:
        return ""
    write_pointer(run_dir, best, default, SELECTED_BY)
    _write_model_cards(run_dir, best)  # MODEL_CARD.md beside each cell's best checkpoint
    return storage.join(run_dir, best[default]["checkpoint"])
