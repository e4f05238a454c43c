"""alpha* bracketed: the curve's grid extended beyond its end while the best arm sits there.

The curve trains, per metadata cell, the grid multiples of the heuristic (``curve.grid``).
If a cell's best grid multiple (by seed-mean *validation* PR-AUC: never test scores) is the
smallest or the largest, alpha* may lie beyond the grid: the cell gets the next multiple
beyond that end, by the grid's own end step (x27 after x9 when the grid ends 3, 9; x1/27
after x1/9), trained over the same curve seeds. Rounds repeat until every cell is bracketed
(its best is an interior multiple) or ``curve.max_extensions`` rounds ran. Each round is a
Tune experiment of its own (``curve-ext1``, ...), decided from the tables of the rounds
before it (on disk), so a study killed mid-way decides the same rounds again on resume.

Pure functions of the trial table: no Ray here.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from study.cells import Cell, metadata_cells
from study.results import arm_name
from study.trial import LEARNED

EXTENSIONS_FILE = "curve_extensions.json"
NOT_GRID_ARMS = ("baseline", "tuned", LEARNED)


def grid_means(curve: pd.DataFrame, key: str) -> dict[float, float]:
    """Per grid multiple of one cell (extensions included): its seed-mean validation PR-AUC
    (NaN when no seed finished). The tuned and learned arms and the baseline are not grid arms."""
    rows = curve[(curve["cell"] == key) & ~curve["arm"].isin(NOT_GRID_ARMS)]
    factors = pd.to_numeric(rows["alpha_factor"], errors="coerce")
    rows = rows[factors > 0]
    means: dict[float, float] = {}
    for factor, group in rows.groupby(pd.to_numeric(rows["alpha_factor"], errors="coerce")):
        values = pd.to_numeric(group["val_pr_auc"], errors="coerce").dropna()
        means[float(factor)] = float(values.mean()) if len(values) else math.nan
    return means


def extension_factor(means: Mapping[float, float]) -> float | None:
    """The next multiple to train when the best scored multiple is the grid's smallest or
    largest, else None (bracketed, or too few points to know the grid's step).

    ``means``: multiple -> seed-mean validation PR-AUC (NaN: no finished run). The ends are
    those of every multiple tried, so a failed end arm is never trained again; the step is
    the ratio of the two outermost multiples at that end. A tie between an end and an
    interior multiple counts as bracketed, a tie of both ends alone as no direction.
    """
    factors = sorted(means)
    scored = [f for f in factors if math.isfinite(means[f])]
    if len(factors) < 2 or not scored:
        return None
    top = max(means[f] for f in scored)
    best = [f for f in scored if means[f] == top]
    low, high = best[0] == factors[0], best[-1] == factors[-1]
    if len(best) > 1 and (any(f not in (factors[0], factors[-1]) for f in best) or (low and high)):
        return None
    if low and len(best) == 1:
        return factors[0] * factors[0] / factors[1]
    if high and len(best) == 1:
        return factors[-1] * factors[-1] / factors[-2]
    return None


def extension_jobs(
    curve: pd.DataFrame, cells: dict[str, Cell], seeds: list[list[int]], round_number: int
) -> list[dict[str, Any]]:
    """The jobs of extension round ``round_number``: per metadata cell whose best grid multiple
    is at an end of what ``curve`` (every earlier round's rows) holds, the next multiple, over
    the curve's seed chunks ``seeds``."""
    jobs = []
    for cell in metadata_cells(cells):
        factor = extension_factor(grid_means(curve, cell.key))
        if factor is None:
            continue
        for chunk in seeds:
            jobs.append(
                {
                    "cell": cell.key,
                    "arm": arm_name(factor),
                    "alpha": factor * cell.heuristic_alpha,
                    "alpha_factor": float(factor),
                    "round": round_number,
                    "seeds": list(chunk),
                }
            )
    return jobs


def extension_summary(curve: pd.DataFrame, cells: dict[str, Cell], max_extensions: int) -> dict[str, Any]:
    """``curve_extensions.json``: per metadata cell, the multiples tried, the best one by
    seed-mean validation PR-AUC, the extension multiples added, and whether alpha* is
    bracketed or still at an end of the grid when the rounds ran out (``limit_reached``:
    the report then states alpha* as a bound at the limit)."""
    summary: dict[str, Any] = {"max_extensions": max_extensions, "selected_by": "seed-mean validation PR-AUC"}
    per_cell: dict[str, Any] = {}
    for cell in metadata_cells(cells):
        means = grid_means(curve, cell.key)
        rows = curve[(curve["cell"] == cell.key) & ~curve["arm"].isin(NOT_GRID_ARMS)]
        rounds = (
            pd.to_numeric(rows["curve_round"], errors="coerce").fillna(0)
            if "curve_round" in rows
            else pd.Series(0, index=rows.index)  # a table from before extension rounds: all grid
        )
        added = sorted({float(f) for f in rows.loc[rounds > 0, "alpha_factor"]})
        scored = {f: m for f, m in means.items() if math.isfinite(m)}
        best = max(scored, key=lambda f: scored[f]) if scored else None
        at_end = extension_factor(means) is not None
        per_cell[cell.key] = {
            "label": cell.label,
            "factors": sorted(means),
            "val_pr_auc_mean": [means[f] if math.isfinite(means[f]) else None for f in sorted(means)],
            "best_factor": best,
            "extensions": added,
            "bracketed": best is not None and not at_end,
            "limit_reached": at_end,
            "side": None if not at_end or best is None else ("low" if best == min(means) else "high"),
        }
    summary["cells"] = per_cell
    return summary
