"""Verdict rows of a cell.

:func:`cell_verdicts` turns one cell's evidence (test predictions of every arm over its
seeds, validation scores, alphas) into one row per test, for PR-AUC and ROC-AUC:

1. ``heuristic - baseline``: the gain of the paper's heuristic alpha = N_mood / N_meta;
2. ``best alpha - baseline``: the gain of the best alpha, *cross-fitted*: for seed s the
   "best alpha" arm contributes the predictions of the arm chosen on the other seeds'
   validation scores (:func:`study.report.curves.crossfit_choice`) among the arms with
   alpha > 0 (grid and tuned), so its test score is not inflated by having been selected;
3. ``best alpha - heuristic``: the heuristic's regret, as a difference test and as a TOST
   equivalence test with a declared margin (absence of a significant regret is not
   evidence of equivalence). When the cross-fitted choice is the heuristic for every seed
   the difference is 0 run for run, by construction: both rows get no p-value and say why;
4. ``learned - heuristic`` and ``learned - baseline`` when a learned-weight arm exists.

Every arm of the cell enters one pooled seed model per metric
(:mod:`study.report.pooled`): the seed noise of every comparison has (arms - 1)(seeds - 1)
degrees of freedom. All comparisons use the same song draws (one cluster bootstrap per
cell), so they are paired over songs with each other. p-values are raw here; the study
declares which rows form its primary family and adjusts each family on its own
(:mod:`study.report.families`). Rows without a p-value carry the reason in ``note``.

alpha* uses the GRID arms only: the tuned arm's alpha was chosen on the same validation
songs, so its validation score is optimistic and would pull alpha* towards it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.report.bootstrap import (
    METRICS,
    ArmDraws,
    ArmRuns,
    arm_draws,
    cluster_weights,
    default_clusters,
    n_clusters,
)
from study.report.curves import AlphaStar, alpha_star, crossfit_choice
from study.report.pooled import fit_seed_model
from study.report.statistics import Comparison, compare_draws, tost

BASELINE = "baseline"
HEURISTIC = "heuristic"
LEARNED = "learned"
BEST = "best alpha"
DIFFERENCE = "difference"
ROW_COLUMNS: tuple[str, ...] = (
    "cell",
    "comparison",
    "metric",
    "estimate",
    "low",
    "high",
    "se",
    "df",
    "p_raw",
    "mde",
    "test",
    "note",
    "seed_df",
)
FEW_SEEDS = "no seed degrees of freedom (fewer than 2 seeds in the cell's runs)"
TUNED = "tuned"
REGRET_BY_CONSTRUCTION = (
    "the cross-fitted best alpha is the heuristic for every seed: regret 0 by construction, no spread to test"
)


def equivalence_test(margin: float) -> str:
    """The ``test`` value of a TOST row with this margin (points)."""
    return f"equivalence (TOST, margin {margin:g})"


@dataclass
class CellEvidence:
    """Everything the verdicts of one cell need.

    arms: arm name -> test predictions over its seeds. Names: "baseline"
    (alpha 0), "heuristic" (the x1 grid point), other grid arms ("x1/9", "x3",
    ...), optionally "tuned" and "learned". alphas: arm -> alpha (baseline 0;
    learned: the mean effective alpha it ended with). val: arm -> (S,) best
    validation PR-AUC per seed, in the order of ``arms[arm].seeds``.
    clusters: (n_test_songs,) bootstrap unit of each test song (track or artist).
    """

    cell: str
    heuristic_alpha: float
    y_true: np.ndarray
    clusters: np.ndarray
    arms: dict[str, ArmRuns]
    alphas: dict[str, float]
    val: dict[str, np.ndarray]
    unit: str = "song"  # what the clusters are: song, track or artist (report.bootstrap_unit resolved)


def alpha_arms(e: CellEvidence) -> list[str]:
    """The arms that make up the alpha-response curve: alpha > 0, neither the baseline nor the learned weight."""
    return [name for name in e.arms if name not in (BASELINE, LEARNED) and e.alphas.get(name, 0.0) > 0]


def grid_arms(e: CellEvidence) -> list[str]:
    """The fresh-seed grid arms of the alpha curve (the tuned arm excluded: it was chosen on these validation songs)."""
    return [name for name in alpha_arms(e) if name != TUNED]


def validation_matrix(e: CellEvidence, names: Sequence[str]) -> tuple[tuple[int, ...], np.ndarray]:
    """(union of the arms' seeds, (K, S) validation scores with NaN where an arm lacks a seed)."""
    seeds: list[int] = []
    for name in names:
        seeds.extend(s for s in e.arms[name].seeds if s not in seeds)
    column = {s: j for j, s in enumerate(seeds)}
    val = np.full((len(names), len(seeds)), np.nan)
    for k, name in enumerate(names):
        scores = np.asarray(e.val[name], dtype=float).ravel()
        if scores.size != len(e.arms[name].seeds):
            raise ValueError(
                f"{e.cell}: arm {name!r} has {scores.size} validation scores for {len(e.arms[name].seeds)} seeds"
            )
        for s, v in zip(e.arms[name].seeds, scores):
            val[k, column[s]] = v
    return tuple(seeds), val


def best_alpha_runs(e: CellEvidence, names: Sequence[str]) -> list[tuple[str, int]]:
    """The cross-fitted best-alpha arm as (arm name, row in that arm) per seed, in seed order of the union."""
    seeds, val = validation_matrix(e, names)
    choice = crossfit_choice(val)
    return [(names[k], e.arms[names[k]].seeds.index(s)) for s, k in zip(seeds, choice) if k >= 0]


def _row(
    cell: str, comparison: str, metric: str, c: Comparison, test: str, p: float, note: str = "", seed_df: float = 0
) -> dict:
    if not note and not math.isfinite(p):
        note = FEW_SEEDS
    return {
        "cell": cell,
        "comparison": comparison,
        "metric": metric,
        "estimate": c.estimate,
        "low": c.low,
        "high": c.high,
        "se": c.se,
        "df": c.df,
        "p_raw": p,
        "mde": c.mde,
        "test": test,
        "note": note,
        "seed_df": seed_df,
    }


def _untestable(c: Comparison) -> Comparison:
    """The comparison with its spread removed (NaN se, CI, p, MDE): for a difference that is 0 by construction."""
    nan = math.nan
    return Comparison(
        c.estimate, nan, nan, nan, nan, nan, c.se_seed, c.se_song, c.paired, c.n_seeds_a, c.n_seeds_b, nan
    )


def _comparisons(e: CellEvidence, has_best: bool) -> list[tuple[str, str]]:
    """(A, B) pairs of the cell's rows, A - B."""
    pairs = [(HEURISTIC, BASELINE)]
    if has_best:
        pairs += [(BEST, BASELINE), (BEST, HEURISTIC)]
    if LEARNED in e.arms:
        pairs += [(LEARNED, HEURISTIC), (LEARNED, BASELINE)]
    return pairs


def cell_verdicts(
    e: CellEvidence,
    margin: float = 0.5,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    power: float = 0.8,
    metrics: Sequence[str] = METRICS,
) -> tuple[pd.DataFrame, AlphaStar]:
    """All verdict rows of one cell (columns ``ROW_COLUMNS``) and the cell's alpha* on validation.

    One row per comparison and metric (see the module docstring), plus a TOST
    row for ``best alpha - heuristic`` with the given ``margin`` (points; the
    row repeats the difference's estimate, CI and MDE, and its ``p_raw`` is the
    TOST p-value). p-values are raw: a study adjusts its families with
    :func:`study.report.families.adjust_study`. alpha* uses the grid arms only.
    """
    for required in (BASELINE, HEURISTIC):
        if required not in e.arms:
            raise KeyError(f"{e.cell}: the verdicts need a {required!r} arm (have {sorted(e.arms)})")
    y = np.asarray(e.y_true)
    clusters = default_clusters(e.clusters, y.shape[0])
    # One song draw for every comparison and metric of the cell: all rows are paired over songs.
    weights = cluster_weights(clusters, n_boot, np.random.default_rng(seed))
    units = n_clusters(clusters)
    curve = alpha_arms(e)
    best = best_alpha_runs(e, curve) if curve else []
    rows: list[dict] = []
    for metric in metrics:
        draws: dict[str, ArmDraws] = {name: arm_draws(y, arm, weights, metric, name) for name, arm in e.arms.items()}
        model = fit_seed_model(draws)  # every real arm, before the virtual best-alpha arm joins
        if best:
            draws[BEST] = ArmDraws.stack([(draws[name], i) for name, i in best])
        for a, b in _comparisons(e, bool(best)):
            c = compare_draws(draws[a], draws[b], units, confidence, power, model)
            label = f"{a} - {b}"
            if (a, b) == (BEST, HEURISTIC) and all(name == HEURISTIC for name, _ in best):
                # The difference is 0 run for run: its zero spread says nothing about the selection's own
                # variability, and a TOST on it would "show" equivalence for any margin.
                c = _untestable(c)
                for test in (DIFFERENCE, equivalence_test(margin)):
                    rows.append(_row(e.cell, label, metric, c, test, math.nan, REGRET_BY_CONSTRUCTION, model.resid_df))
                continue
            rows.append(_row(e.cell, label, metric, c, DIFFERENCE, c.p_value, seed_df=model.resid_df))
            if (a, b) == (BEST, HEURISTIC):
                rows.append(
                    _row(e.cell, label, metric, c, equivalence_test(margin), tost(c, margin), seed_df=model.resid_df)
                )
    grid = grid_arms(e)
    if grid:
        _, val = validation_matrix(e, grid)
        star = alpha_star(
            np.array([e.alphas[name] for name in grid]), val, n_boot=n_boot, seed=seed, confidence=confidence
        )
    else:
        star = AlphaStar(math.nan, math.nan, math.nan, "none", False, np.full(n_boot, np.nan))
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)), star
