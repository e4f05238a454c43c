"""The data model of what an α study says about a checkpoint it chose: the evidence a model card shows.

mtlmood defines the record and renders it (mtlmood.model_card); it never builds one from a
study's files. The study builds it from its own outputs (study.report.model_cards) and
hands it over, or writes it as JSON (``to_dict``) for a server to read back (``from_dict``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

from mtlmood.errors import MtlmoodError


def finite_number(value: Any) -> Optional[float]:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class ArmScores:
    """Test scores of a study arm: mean and interval over seeds and test songs (%)."""

    seeds: int
    pr_auc: float
    pr_low: float
    pr_high: float
    roc_auc: float
    roc_low: float
    roc_high: float
    confidence: Optional[float]  # the interval's level (e.g. 0.95), None when not recorded
    source: str = ""  # which of the study's outputs the scores come from, as the card names it

    @classmethod
    def from_dict(cls, data: Any) -> "ArmScores":
        """An ArmScores from its ``to_dict`` (MtlmoodError when a score is missing or not a number)."""
        if not isinstance(data, dict):
            raise MtlmoodError(f"arm scores must be a mapping, not {type(data).__name__}")
        names = ("seeds", "pr_auc", "pr_low", "pr_high", "roc_auc", "roc_low", "roc_high")
        values = {name: finite_number(data.get(name)) for name in names}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            raise MtlmoodError(f"arm scores lack {', '.join(missing)}")
        return cls(
            seeds=int(values.pop("seeds") or 0),
            **{name: float(value or 0.0) for name, value in values.items()},
            confidence=finite_number(data.get("confidence")),
            source=str(data.get("source", "")),
        )


@dataclass(frozen=True)
class StudyRecord:
    """What a study says about one of its best checkpoints (its pointer entry and report)."""

    run_dir: str  # the study's run folder (a path or a URI), as the card names it
    cell: str
    is_default: bool
    selected_by: str
    arm: str
    phase: str
    alpha: Optional[float]
    seed: Optional[int]
    val_pr_auc: Optional[float]
    test_pr_auc: Optional[float]
    test_roc_auc: Optional[float]
    arm_scores: Optional[ArmScores]
    arm_note: str = ""  # why arm_scores is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "StudyRecord":
        """A StudyRecord from its ``to_dict`` (MtlmoodError when it is not one)."""
        if not isinstance(data, dict) or not isinstance(data.get("cell"), str):
            raise MtlmoodError("a study record must be a mapping that names its cell")
        seed = finite_number(data.get("seed"))
        scores = data.get("arm_scores")
        return cls(
            run_dir=str(data.get("run_dir", "")),
            cell=data["cell"],
            is_default=bool(data.get("is_default", False)),
            selected_by=str(data.get("selected_by", "")),
            arm=str(data.get("arm", "")),
            phase=str(data.get("phase", "")),
            alpha=finite_number(data.get("alpha")),
            seed=None if seed is None else int(seed),
            val_pr_auc=finite_number(data.get("val_pr_auc")),
            test_pr_auc=finite_number(data.get("test_pr_auc")),
            test_roc_auc=finite_number(data.get("test_roc_auc")),
            arm_scores=None if scores is None else ArmScores.from_dict(scores),
            arm_note=str(data.get("arm_note", "")),
        )
