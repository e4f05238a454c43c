"""The report's tables, as pandas DataFrames (numbers, not text; rendering is render.py's job).

All metrics are in percent; CIs come from the hierarchical bootstrap over seeds and test
songs (``study.report.statistics``). Arms are only ever compared within their cell.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from study.cells import Cell
from study.report.bootstrap import ArmDraws, arm_draws, cluster_weights, default_clusters, n_clusters
from study.report.curves import AlphaStar
from study.report.pooled import fit_seed_model
from study.report.statistics import Estimate, estimate_from_draws
from study.report.verdicts import BASELINE, BEST, HEURISTIC, LEARNED, CellEvidence, alpha_arms, best_alpha_runs

METRIC_NAMES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC"}


def _scalar_facts(facts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a cell's split facts into scalar columns (nested dicts become a.b keys)."""
    flat: dict[str, Any] = {}
    for key, value in facts.items():
        if isinstance(value, dict):
            flat.update(_scalar_facts(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[f"{prefix}{key}"] = value
    return flat


def labels_table(cells: list[Cell]) -> pd.DataFrame:
    """Per cell: mood labels and metadata classes really used, the heuristic, songs per split,
    and the train/test artist overlap (from the labelled, split songs)."""
    rows = []
    for cell in cells:
        rows.append(
            {
                "cell": cell.label,
                "mood labels": cell.n_mood_labels,
                "N_meta": cell.n_meta,
                "heuristic alpha": cell.heuristic_alpha if cell.metadata != "none" else math.nan,
                **{k: v for k, v in _scalar_facts(cell.facts).items() if k not in ("n_mood_labels", "n_meta")},
            }
        )
    return pd.DataFrame(rows)


Estimates = dict[str, dict[str, Estimate]]  # arm (BEST: the cross-fitted best alpha) -> metric -> estimate


def arm_estimates(e: CellEvidence, n_boot: int, confidence: float) -> Estimates:
    """Mean and CI of every arm of a cell (and of the cross-fitted best alpha), per metric, with
    the cell's pooled seed model (seed df from every arm): read by the curve table and Table 1."""
    y = np.asarray(e.y_true)
    clusters = default_clusters(e.clusters, y.shape[0])
    weights = cluster_weights(clusters, n_boot, np.random.default_rng(0))
    units = n_clusters(clusters)
    names = alpha_arms(e)
    picks = best_alpha_runs(e, names) if names else []
    out: Estimates = {name: {} for name in e.arms}
    if picks:
        out[BEST] = {}
    for metric in METRIC_NAMES:
        draws = {name: arm_draws(y, arm, weights, metric, name) for name, arm in e.arms.items()}
        model = fit_seed_model(draws)
        if picks:
            draws[BEST] = ArmDraws.stack([(draws[name], i) for name, i in picks])
        for name, d in draws.items():
            out[name][metric] = estimate_from_draws(d, units, confidence, model)
    return out


def _estimate_columns(estimates: dict[str, Estimate]) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric, est in estimates.items():
        name = METRIC_NAMES[metric]
        out.update({f"{name}": est.mean, f"{name} low": est.low, f"{name} high": est.high})
    return out


def curve_table(e: CellEvidence, cell: Cell, tuned_factor: Optional[float], estimates: Estimates) -> pd.DataFrame:
    """The alpha-response curve of one cell: every arm with its alpha, seeds, validation and
    test scores (mean and CI over seeds and songs). When the tuned alpha is a grid point the
    table says so on that row instead of repeating it."""
    rows = []
    for name, arm in e.arms.items():
        alpha = e.alphas.get(name, math.nan)
        note = ""
        if name == BASELINE:
            note = "alpha = 0: no metadata head (shared by the metadata sets of this mood count)"
        elif name == LEARNED:
            note = "uncertainty weighting (Kendall et al. 2018): alpha = its mean effective weight at the best epoch"
        elif (
            tuned_factor is not None
            and name != "tuned"
            and math.isclose(alpha, tuned_factor * cell.heuristic_alpha, rel_tol=1e-6)
        ):
            note = "also the tuned alpha of the search"
        if name == HEURISTIC:
            note = (note + "; " if note else "") + "the paper's heuristic N_mood / N_meta"
        rows.append(
            {
                "cell": cell.label,
                "arm": name,
                "alpha": alpha,
                "x heuristic": alpha / cell.heuristic_alpha if cell.heuristic_alpha else math.nan,
                "seeds": len(arm.seeds),
                "val PR-AUC": float(np.nanmean(e.val[name])),
                **_estimate_columns(estimates[name]),
                "note": note,
            }
        )
    table = pd.DataFrame(rows)
    return table.sort_values("alpha", kind="stable").reset_index(drop=True)


def table1_rows(
    e: CellEvidence, cell: Cell, reference: Optional[dict[str, Any]], n_test: int, estimates: Estimates
) -> list[dict[str, Any]]:
    """The paper's Table 1 layout for one cell: baseline, heuristic, best alpha (chosen on
    validation, cross-fitted over seeds), learned weight, and the non-deep reference."""
    configs = [  # (row name, arm, multi-task?)
        ("baseline (alpha = 0)", BASELINE, False),
        ("multi-task, heuristic alpha", HEURISTIC, True),
        (f"multi-task, {BEST} (validation, cross-fitted)", BEST, True),
        ("multi-task, learned weight", LEARNED, True),
    ]
    rows = []
    for config, name, multi_task in configs:
        if name not in estimates:
            continue
        rows.append(
            {
                "cell": cell.label,
                "config": config,
                "N_meta": cell.n_meta if multi_task else 0,
                "alpha": e.alphas.get(name, math.nan) if name != BASELINE else 0.0,
                "test songs": n_test,
                "seeds": next(iter(estimates[name].values())).n_seeds,
                **_estimate_columns(estimates[name]),
            }
        )
    if reference is not None:
        rows.append(
            {
                "cell": cell.label,
                "config": "reference: logistic regression on log-mel mean/std",
                "N_meta": 0,
                "alpha": math.nan,
                "test songs": n_test,
                "seeds": 1,
                "ROC-AUC": reference["test_roc_auc"],
                "ROC-AUC low": math.nan,
                "ROC-AUC high": math.nan,
                "PR-AUC": reference["test_pr_auc"],
                "PR-AUC low": math.nan,
                "PR-AUC high": math.nan,
            }
        )
    return rows


def alpha_star_row(cell: Cell, star: AlphaStar, verdicts: pd.DataFrame) -> dict[str, Any]:
    """alpha* on validation with its interval, next to the heuristic and its regret on test."""
    regret = verdicts[
        (verdicts["comparison"] == f"{BEST} - {HEURISTIC}")
        & (verdicts["metric"] == "pr_auc")
        & (verdicts["test"] == "difference")
    ]
    r = regret.iloc[0] if not regret.empty else None
    return {
        "cell": cell.label,
        "N_mood / N_meta": cell.heuristic_alpha,
        "alpha*": star.alpha,
        "alpha* low": star.low,
        "alpha* high": star.high,
        "alpha* method": star.method,
        "at edge of grid": star.at_edge,
        # "lower": alpha* >= limit (best arm at the largest alpha tried), "upper": alpha* <= limit; "" an estimate.
        # limit: the geometric midpoint of the edge alpha and its neighbour, where the slope censors the cell.
        "alpha* bound": star.bound,
        "alpha* limit": star.limit,
        "se log alpha*": star.se_log,
        "regret (PR-AUC points)": r["estimate"] if r is not None else math.nan,
        "regret low": r["low"] if r is not None else math.nan,
        "regret high": r["high"] if r is not None else math.nan,
    }
