"""The study's evidence for the model cards of the checkpoints it chose, built from its own files.

A study's pointer (best_checkpoint.json) names the best checkpoint of each cell; the
interval over seeds of that checkpoint's arm is in the report's curves.csv, its level in
study_config.yaml. This module reads them into a :class:`~mtlmood.study_evidence.StudyRecord`
and hands it to mtlmood's model card writer; beside each chosen checkpoint it also writes the
record as JSON (mtlmood.filenames.STUDY_EVIDENCE_FILE) for a server, which may not import the
study, to render the same card. When the report is missing or holds no row for the arm, the
card says so plainly.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

from mtlmood.checkpoint_pointer import BEST_CHECKPOINTS_FILE, has_pointer, read_pointer
from mtlmood.errors import MtlmoodError
from mtlmood.fileio import atomic_write_json
from mtlmood.filenames import STUDY_EVIDENCE_FILE
from mtlmood.model_card import MODEL_CARD_FILE, write_model_card
from mtlmood.study_evidence import ArmScores, StudyRecord, finite_number
from study.filenames import CURVES_FILE, STUDY_CONFIG_FILE
from study.report.summary import REPORT_DIR

CURVES_PATH = f"{REPORT_DIR}/{CURVES_FILE}"  # the report's α-response table, relative to the run directory
PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger(__name__)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _confidence(run_dir: Path) -> Optional[float]:
    try:
        import yaml

        data = yaml.safe_load((run_dir / STUDY_CONFIG_FILE).read_text())
        return finite_number(data["report"]["confidence"])
    except Exception:  # absent or another layout: the level is then "not recorded"
        return None


def _curve_row_matches(label: str, n_moods: Any, metadata: str) -> bool:
    """Whether a curves.csv cell label ("<dataset> · <n> moods · <metadata>") is this cell.
    A baseline cell ("none") matches any metadata set of its mood count: its baseline rows
    are the same runs, shared by the metadata sets."""
    parts = [part.strip() for part in label.split("·")]
    if len(parts) < 3 or not parts[-2].split():
        return False
    return parts[-2].split()[0] == str(n_moods) and (metadata in ("none", parts[-1]))


def _arm_scores(run_dir: Path, entry: dict[str, Any]) -> tuple[Optional[ArmScores], str]:
    """(the arm's mean and interval from report/curves.csv, or None and why)."""
    path = run_dir / CURVES_PATH
    if not path.exists():
        return None, f"the study has no {CURVES_PATH} (no report yet, or no curve runs)"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row.get("arm") == entry.get("arm") and _curve_row_matches(
            row.get("cell", ""), entry.get("n_moods"), str(entry.get("metadata", ""))
        ):
            values = [
                finite_number(row.get(k))
                for k in ("PR-AUC", "PR-AUC low", "PR-AUC high", "ROC-AUC", "ROC-AUC low", "ROC-AUC high")
            ]
            seeds = finite_number(row.get("seeds"))
            if any(v is None for v in values) or seeds is None:
                return None, f"its row in {CURVES_PATH} has no interval (too few seeds?)"
            pr, pr_lo, pr_hi, roc, roc_lo, roc_hi = (float(v or 0.0) for v in values)
            confidence = _confidence(run_dir)
            return ArmScores(int(seeds), pr, pr_lo, pr_hi, roc, roc_lo, roc_hi, confidence, CURVES_PATH), ""
    return None, (
        f"{CURVES_PATH} has no row for arm {entry.get('arm')!r} of this cell "
        "(a search trial, or a cell without curve runs)"
    )


def study_record(run_dir: PathLike, cell: str, shown_as: str = "") -> StudyRecord:
    """The study's record of ``cell``'s best checkpoint (MtlmoodError when the pointer lacks it).
    ``shown_as``: how the card names the run directory (default its path; a URI for a local copy)."""
    run_dir = Path(run_dir)
    data = read_pointer(run_dir)
    entry = (data.get("cells") or {}).get(cell)
    if not isinstance(entry, dict):
        raise MtlmoodError(f"{run_dir / BEST_CHECKPOINTS_FILE} has no cell {cell!r}")
    scores, note = _arm_scores(run_dir, entry)
    seed = finite_number(entry.get("seed"))
    return StudyRecord(
        run_dir=shown_as or str(run_dir),
        cell=cell,
        is_default=data.get("default_cell") == cell,
        selected_by=str(data.get("selected_by", "")),
        arm=str(entry.get("arm", "")),
        phase=str(entry.get("phase", "")),
        alpha=finite_number(entry.get("alpha")),
        seed=None if seed is None else int(seed),
        val_pr_auc=finite_number(entry.get("val_pr_auc")),
        test_pr_auc=finite_number(entry.get("test_pr_auc")),
        test_roc_auc=finite_number(entry.get("test_roc_auc")),
        arm_scores=scores,
        arm_note=note,
    )


def study_cells(run_dir: Path) -> dict[str, Path]:
    """cell -> checkpoint directory of a study's best_checkpoint.json ({} when unreadable)."""
    try:
        data = read_pointer(run_dir)
    except MtlmoodError:
        return {}
    cells = data.get("cells")
    out = {}
    for cell, entry in cells.items() if isinstance(cells, dict) else []:
        target = entry.get("checkpoint") if isinstance(entry, dict) else None
        if isinstance(target, str) and target:
            out[str(cell)] = Path(target) if Path(target).is_absolute() else run_dir / target
    return out


def find_study_record(checkpoint: PathLike) -> Optional[StudyRecord]:
    """The record of the study that chose ``checkpoint`` as a cell's best, found by walking up
    from it to a best_checkpoint.json that names it; None when no study chose it."""
    start = Path(checkpoint).resolve()
    for run_dir in start.parents:
        if not has_pointer(run_dir):
            continue
        for cell, target in study_cells(run_dir).items():
            if _same_dir(target, start):
                try:
                    return study_record(run_dir, cell)
                except (MtlmoodError, OSError, ValueError):
                    return None
    return None


def write_study_model_cards(run_dir: PathLike, shown_as: str = "") -> list[Path]:
    """MODEL_CARD.md beside the best checkpoint of every cell in a study's best_checkpoint.json,
    with the study's record of it as JSON (STUDY_EVIDENCE_FILE) beside it for a server.

    Called by the study report after it writes the pointer. A checkpoint whose card cannot
    be written is logged and skipped: a report is never lost over a model card. Returns the
    cards written.
    """
    run_dir = Path(run_dir)
    written = []
    for cell, checkpoint in study_cells(run_dir).items():
        try:
            record = study_record(run_dir, cell, shown_as)
            written.append(write_model_card(checkpoint, study=record))
            atomic_write_json(checkpoint / STUDY_EVIDENCE_FILE, record.to_dict())
        except (MtlmoodError, OSError, ValueError) as exc:
            log.warning("no %s for cell %s (%s): %s", MODEL_CARD_FILE, cell, checkpoint, exc)
    return written
