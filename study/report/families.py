"""The study's multiplicity families and the verdict text of every row.

A study that adjusts every row of its report as one family can never say yes: with 12 rows
per cell and 2-df seed variances its first Holm step needed |t| ~ 27. The study therefore
**declares** a small primary family before it runs (``report.primary``; default per cell
``heuristic - baseline`` and the heuristic's regret ``best alpha - heuristic`` on PR-AUC,
and across cells the slope of log alpha* on log(N_mood / N_meta)). The primary family is
adjusted on its own (Holm or BH); every other row is secondary, adjusted in a family of its
own and labelled exploratory. The minimum detectable effect of a row is computed at the
level its family really holds it to: level / m for a family of m tests (the strictest step
of Holm and of BH), at the configured power.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from study.report.combine import minimum_detectable_effect
from study.report.curves import SlopeFit
from study.report.statistics import ADJUST_NAMES, adjust_p_values
from study.report.verdicts import DIFFERENCE, FEW_SEEDS, ROW_COLUMNS

PRIMARY, SECONDARY = "primary", "secondary"
SLOPE = "slope"
SLOPE_CELL = "all cells"
SLOPE_TEST = "slope = 0"
_MARGIN = re.compile(r"margin ([-+0-9.eE]+)")


def slope_row(fit: SlopeFit, metric: str = "pr_auc") -> dict[str, object]:
    """The cross-cell slope as a verdict row: H0 slope = 0 (alpha* does not follow N_mood/N_meta)."""
    p = float(getattr(fit, "p_zero", math.nan))
    se = float(getattr(fit, "se", math.nan))
    df = float(getattr(fit, "df", math.nan))
    note = fit.note if math.isfinite(p) else (fit.note or "the slope could not be tested")
    row: dict[str, object] = {c: math.nan for c in ROW_COLUMNS}
    row.update(
        {
            "cell": SLOPE_CELL,
            "comparison": SLOPE,
            "metric": metric,
            "estimate": fit.slope,
            "low": fit.slope_low,
            "high": fit.slope_high,
            "se": se,
            "df": df,
            "p_raw": p,
            "test": SLOPE_TEST,
            "note": note,
            "seed_df": math.nan,
        }
    )
    return row


def assign_families(rows: pd.DataFrame, primary: Sequence[str], primary_metric: str = "pr_auc") -> pd.DataFrame:
    """Rows with ``family``: primary for the declared difference rows on ``primary_metric`` (and the slope
    row when "slope" is declared), secondary for every other row."""
    out = rows.copy()
    chosen = set(primary)
    is_primary = (
        out["comparison"].isin(chosen)
        & (out["test"].isin([DIFFERENCE, SLOPE_TEST]))
        & (out["metric"] == primary_metric)
    )
    out["family"] = np.where(is_primary, PRIMARY, SECONDARY)
    return out


def _verdict(family: str, test: str, estimate: float, mde: float, p_adjusted: float, level: float, note: str) -> str:
    """The verdict text of one row (secondary rows are marked exploratory)."""
    if not math.isfinite(p_adjusted):
        return f"not testable ({note or FEW_SEEDS})"
    tag = "" if family == PRIMARY else " (exploratory)"
    mde_text = f"MDE {mde:.1f} points" if math.isfinite(mde) else "MDE n/a"
    if test == SLOPE_TEST:
        if p_adjusted < level:
            return f"significant slope: α* {'rises' if estimate > 0 else 'falls'} with N_mood/N_meta{tag}"
        return f"no significant slope{tag}"
    if test == DIFFERENCE:
        if p_adjusted < level:
            return ("significant gain" if estimate > 0 else "significant loss") + tag
        return f"no significant difference ({mde_text}){tag}"
    found = _MARGIN.search(test)
    margin = found.group(1) if found else "?"
    return (f"equivalent within ±{margin}" if p_adjusted < level else "equivalence not shown") + tag


def adjust_study(rows: pd.DataFrame, method: str = "holm", level: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Rows of a whole study with ``p_adjusted`` (each family adjusted on its own; NaN rows excluded),
    ``family size``, ``mde`` at the level really used (level / family size), ``mde level`` and ``verdict``.

    Rows without a ``family`` column are one primary family (the old, whole-report behaviour).
    """
    out = rows.copy()
    if "family" not in out:
        out["family"] = PRIMARY
    out["p_adjusted"] = np.nan
    out["family size"] = 0
    out["mde level"] = np.nan
    for family in (PRIMARY, SECONDARY):
        mask = (out["family"] == family).to_numpy()
        if not mask.any():
            continue
        p = out.loc[mask, "p_raw"].to_numpy(dtype=float)
        m = int(np.isfinite(p).sum())
        out.loc[mask, "p_adjusted"] = adjust_p_values(p, method)
        out.loc[mask, "family size"] = m
        out.loc[mask, "mde level"] = level / max(m, 1)
    out["mde"] = [
        minimum_detectable_effect(float(se), float(df), float(lv), power)
        if t == DIFFERENCE or str(t).startswith("equivalence") or t == SLOPE_TEST
        else math.nan
        for se, df, lv, t in zip(out["se"], out["df"], out["mde level"], out["test"])
    ]
    notes = out["note"].fillna("") if "note" in out else pd.Series([""] * len(out), index=out.index)
    out["verdict"] = [
        _verdict(str(f), str(t), float(est), float(mde), float(p), level, str(note))
        for f, t, est, mde, p, note in zip(
            out["family"], out["test"], out["estimate"], out["mde"], out["p_adjusted"], notes
        )
    ]
    return out


def method_sentence(method: str, level: float, power: float, family_size: int) -> str:
    """How the primary family was tested, in the words of the config."""
    return (
        f"{ADJUST_NAMES.get(method, method)} over the {family_size} declared primary test(s) at level {level:g}; "
        f"minimum detectable effects at {power:.0%} power and level {level:g}/{max(family_size, 1)}"
    )
