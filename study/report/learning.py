"""Did the CNN learn? The check every report makes before its verdicts.

A study of models that learned nothing reads like any other: every arm at chance, the
differences between arms noise around 0, and the verdicts say "no significant difference"
as if α did not matter. So each cell's baseline (α = 0) is held against:

* **chance**: the macro PR-AUC of a predictor that knows nothing (the mean positive rate
  of the test labels) and 50 % ROC-AUC: at chance when the baseline's CI reaches it;
* **the non-deep reference**: the logistic regression on log-mel mean/std of the same
  split (``study.reference``): below it when the baseline's CI lies wholly under it;
* **the stopping of its runs**: runs whose best epoch is the last of their budget were
  still learning; runs that stopped in their first epochs stopped on a noisy validation
  curve. Either way a gain between arms may belong to the stopping rule rather than to α.

The verdict's first line then says so and names the budgets to raise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from study.report.statistics import Estimate

LEARNED, AT_CHANCE, BELOW_REFERENCE = "learned", "at chance", "below the reference"
EARLY_EPOCHS = 2  # a run whose best epoch is one of the first two stopped on noise, not a plateau
SHARE = 0.3  # a share of runs above which the cell's stopping is flagged


@dataclass(frozen=True)
class LearningCheck:
    """The learning check of one cell: its status, the figures behind it and what to raise."""

    cell: str
    status: str
    baseline_pr: float
    baseline_pr_low: float
    baseline_pr_high: float
    baseline_roc_low: float
    chance_pr: float
    reference_pr: float
    share_at_budget: float  # runs whose best epoch was the last epoch they were allowed
    share_early: float  # runs that stopped with their best epoch among the first ones
    notes: list[str] = field(default_factory=list)

    @property
    def learned(self) -> bool:
        return self.status == LEARNED

    def sentence(self) -> str:
        """One line for the report and the console."""
        ref = f", reference {self.reference_pr:.1f}" if math.isfinite(self.reference_pr) else ""
        text = (
            f"{self.cell}: {self.status} — baseline test PR-AUC {self.baseline_pr:.1f} "
            f"[{self.baseline_pr_low:.1f}, {self.baseline_pr_high:.1f}] vs chance {self.chance_pr:.1f}{ref}"
        )
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


def _stopping(runs: pd.DataFrame, max_epochs: int) -> tuple[float, float]:
    """(share of runs whose best epoch was their budget's last, share whose best epoch came in the first epochs)."""
    if runs.empty:
        return math.nan, math.nan
    best = pd.to_numeric(runs["best_epoch"], errors="coerce")
    epochs = pd.to_numeric(runs["epochs"], errors="coerce")
    at_budget = (best >= epochs) & (epochs >= max_epochs)
    early = best <= EARLY_EPOCHS
    return float(at_budget.mean()), float(early.mean())


def check_cell(
    cell: str,
    baseline_pr: Estimate,
    baseline_roc: Estimate,
    chance_pr: float,
    reference: Optional[dict[str, Any]],
    runs: pd.DataFrame,
    max_epochs: int,
) -> LearningCheck:
    """The learning check of one cell from its baseline's estimates, chance, the reference and its curve runs."""
    reference_pr = float(reference["test_pr_auc"]) if reference else math.nan
    low = baseline_pr.low if math.isfinite(baseline_pr.low) else baseline_pr.mean
    high = baseline_pr.high if math.isfinite(baseline_pr.high) else baseline_pr.mean
    roc_low = baseline_roc.low if math.isfinite(baseline_roc.low) else baseline_roc.mean
    if low <= chance_pr or roc_low <= 50.0:
        status = AT_CHANCE
    elif math.isfinite(reference_pr) and high < reference_pr:
        status = BELOW_REFERENCE
    else:
        status = LEARNED
    at_budget, early = _stopping(runs, max_epochs)
    notes = []
    if at_budget > SHARE:
        notes.append(f"{at_budget:.0%} of runs had their best epoch at the budget's end (still learning)")
    if early > SHARE:
        notes.append(f"{early:.0%} of runs had their best epoch in the first {EARLY_EPOCHS} epochs")
    return LearningCheck(
        cell,
        status,
        baseline_pr.mean,
        low,
        high,
        roc_low,
        chance_pr,
        reference_pr,
        at_budget,
        early,
        notes,
    )


def raise_hint(train: Any, model: Any) -> str:
    """The budgets to raise, with their current values (from the study's run config)."""
    return (
        f"raise the training budget (run.train.max_epochs = {train.max_epochs}, run.train.max_batches_per_epoch = "
        f"{train.max_batches_per_epoch or 'no cap'}, run.train.min_epochs = {getattr(train, 'min_epochs', 0)}, "
        f"run.train.patience = {train.patience}), the model's width (run.model.n_filters = {model.n_filters}) "
        "or the training songs"
    )


def warning_line(checks: list[LearningCheck], train: Any, model: Any) -> str:
    """The verdict's first line when a cell did not learn or stopped on its budget; "" when all is well."""
    failed = [c for c in checks if not c.learned]
    stopping = [c for c in checks if c.learned and c.notes]
    parts = []
    if failed:
        names = "; ".join(f"{c.cell} ({c.status})" for c in failed)
        parts.append(
            f"**These verdicts describe models that did not learn** in {len(failed)} of {len(checks)} cell(s): "
            f"{names}. Differences between arms of such models say nothing about α: {raise_hint(train, model)}."
        )
    if stopping:
        names = "; ".join(f"{c.cell}: {'; '.join(c.notes)}" for c in stopping)
        parts.append(
            f"**Stopping warning.** {names}: a gain between arms may then belong to the stopping rule rather "
            f"than to α ({raise_hint(train, model)}; or smooth the stopping criterion, run.train.stop_smoothing)."
        )
    return " ".join(parts)


def checks_table(checks: list[LearningCheck]) -> pd.DataFrame:
    """The learning checks as a table (report/learning.csv)."""
    return pd.DataFrame(
        [
            {
                "cell": c.cell,
                "status": c.status,
                "baseline PR-AUC": c.baseline_pr,
                "baseline PR-AUC low": c.baseline_pr_low,
                "baseline PR-AUC high": c.baseline_pr_high,
                "baseline ROC-AUC low": c.baseline_roc_low,
                "chance PR-AUC": c.chance_pr,
                "reference PR-AUC": c.reference_pr,
                "runs best at budget end": c.share_at_budget,
                "runs best in first epochs": c.share_early,
                "notes": "; ".join(c.notes),
            }
            for c in checks
        ]
    )
