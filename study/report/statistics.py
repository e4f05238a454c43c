"""Estimates and comparisons of study arms: pooled seed model x clustered song bootstrap,
TOST equivalence, minimum detectable effect, multiplicity.

All metrics are macro PR-AUC or ROC-AUC in PERCENT; differences are in percentage points.
Pure numpy/scipy/statsmodels.

Method
------
An *arm* of a cell (alpha = 0, the heuristic alpha, ...) is trained with S seeds and each
run predicts the same n test songs. Its reported value is the mean over seeds of the macro
metric on the full test set. That mean is noisy for two reasons, and both are estimated:

1. **Training seeds** (:mod:`study.report.pooled`). All arms of a cell share the seeds, and
   every arm is estimated jointly in a two-way arm x seed model: a seed's shared effect
   cancels in a difference of arms, and the run-to-run noise sigma^2 uses every arm's
   degrees of freedom, (arms - 1)(seeds - 1), instead of the S - 1 of one pair.
2. **Test songs** (:mod:`study.report.bootstrap`). Songs are resampled by *cluster* (all
   songs of an artist, all clips of a track) B times, the same draws for every arm, so
   comparisons are paired over songs. The variance over draws of the seed-averaged
   statistic, net of each run's own song-level noise (which sigma^2 already contains),
   is the song component, with n_clusters - 1 df.

The interval combines the components with Banerjee's conservative rule
(:mod:`study.report.combine`); the p-value is the smallest level at which that interval
excludes 0. ``tests/study/test_report_verdict_simulation.py`` and
``tests/study/test_pooled_simulation.py`` measure size, power and coverage by simulation.

**Equivalence** (:func:`tost`): two one-sided tests with the same combination; equivalence
within +/- m at level alpha exactly when the 1 - 2 alpha interval lies inside +/- m.

**Too few runs.** Without residual degrees of freedom (one seed, or one arm with its
seed effects unidentified) seed noise cannot be estimated, so se, CI, p-value and MDE are
NaN rather than an interval that silently ignores the larger part of the noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

from study.report.bootstrap import (
    ArmDraws,
    ArmRuns,
    arm_draws,
    cluster_weights,
    default_clusters,
    n_clusters,
)
from study.report.combine import Component, minimum_detectable_effect, one_sided_p, summarize
from study.report.pooled import (
    SeedModel,
    aligned,
    arm_song_variance,
    contrast_seed_component,
    contrast_song_variance,
    fit_seed_model,
    independent_components,
)


@dataclass(frozen=True)
class Estimate:
    """One arm's metric: mean over seeds, with a CI over seeds and songs (NaN without seed df).

    df: effective degrees of freedom of the interval.
    """

    mean: float
    low: float
    high: float
    se: float
    df: float
    n_seeds: int
    per_seed: tuple[float, ...]  # metric of each seed on the full test set


@dataclass(frozen=True)
class Comparison:
    """metric(A) - metric(B) in percentage points, with its CI and two-sided p-value.

    se_seed / se_song: the two parts of se (se^2 = se_seed^2 + se_song^2).
    df: effective degrees of freedom (the t quantile with df reproduces the
    interval's half-width at the requested confidence).
    paired: runs were paired by seed (the comparison uses the seeds both arms have).
    mde: minimum detectable effect at level 1 - confidence and the requested power
    (the report recomputes it at the level its multiplicity family really uses).
    components: the (variance, df) parts behind se, used by :func:`tost`.
    """

    estimate: float
    low: float
    high: float
    se: float
    df: float
    p_value: float
    se_seed: float
    se_song: float
    paired: bool
    n_seeds_a: int
    n_seeds_b: int
    mde: float
    components: tuple[Component, ...] = field(default=(), repr=False, compare=False)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _check_units(n_units: int) -> None:
    if n_units < 2:
        raise ValueError(f"the song bootstrap needs at least 2 clusters, got {n_units}")


def estimate_from_draws(
    d: ArmDraws, n_units: int, confidence: float = 0.95, model: SeedModel | None = None
) -> Estimate:
    """:func:`arm_estimate` from precomputed draws; n_units = number of song clusters.

    ``model``: the cell's pooled seed model (default: one fitted on this arm alone).
    """
    _check_confidence(confidence)
    _check_units(n_units)
    per_seed = tuple(map(float, d.full))
    n = d.full.size
    mean = float(np.mean(d.full)) if n else math.nan
    m = model if model is not None else fit_seed_model({"arm": d})
    v_seed = m.run_var / n if n else math.nan
    v_song, _ = arm_song_variance(d.boot) if n else (math.nan, math.nan)
    if not (math.isfinite(v_seed) and math.isfinite(v_song) and math.isfinite(mean) and m.run_df > 0):
        return Estimate(mean, math.nan, math.nan, math.nan, math.nan, n, per_seed)
    se, df, low, high, _ = summarize(mean, [(v_seed, m.run_df), (v_song, n_units - 1)], confidence)
    return Estimate(mean, low, high, se, df, n, per_seed)


def compare_draws(
    a: ArmDraws,
    b: ArmDraws,
    n_units: int,
    confidence: float = 0.95,
    power: float = 0.8,
    model: SeedModel | None = None,
) -> Comparison:
    """:func:`compare_arms` from precomputed draws (both on the same song draws); n_units = number of song clusters.

    ``model``: the cell's pooled seed model; default: one fitted on A and B alone (then
    this is the paired t test over seeds combined with the song bootstrap).
    """
    _check_confidence(confidence)
    _check_units(n_units)
    if a.boot.shape[1] != b.boot.shape[1]:
        raise ValueError("both arms must be evaluated on the same song draws")
    s_a, s_b = a.full.size, b.full.size
    if model is None:
        a_named = a if all(a.sources) else ArmDraws(a.seeds, a.full, a.boot, ("A",) * s_a)
        b_named = b if all(b.sources) else ArmDraws(b.seeds, b.full, b.boot, ("B",) * s_b)
        a, b = a_named, b_named
        model = fit_seed_model({"A": a, "B": b}) if a.sources != b.sources else fit_seed_model({"A": a})
    if not set(a.seeds) & set(b.seeds):
        return _independent(a, b, n_units, confidence, power)
    a, b = aligned(a, b)
    paired = len(a.seeds) > 0
    estimate = float(np.mean(a.full - b.full)) if paired else math.nan
    v_seed, df_seed = contrast_seed_component(a, b, model)
    v_song, raw = contrast_song_variance(a, b) if paired else (math.nan, math.nan)
    se_seed = math.sqrt(v_seed) if math.isfinite(v_seed) else math.nan
    if not (math.isfinite(v_seed) and math.isfinite(v_song) and math.isfinite(estimate) and df_seed > 0):
        # No seed degrees of freedom: no interval rather than a too-narrow one.
        se_song = math.sqrt(raw) if math.isfinite(raw) else math.nan
        nan = math.nan
        return Comparison(estimate, nan, nan, nan, nan, nan, se_seed, se_song, paired, s_a, s_b, nan)
    components = ((v_seed, df_seed), (v_song, float(n_units - 1)))
    se, df, low, high, p = summarize(estimate, components, confidence)
    mde = minimum_detectable_effect(se, df, 1.0 - confidence, power)
    kept = tuple((v, d) for v, d in components if v > 0)
    return Comparison(estimate, low, high, se, df, p, se_seed, math.sqrt(v_song), paired, s_a, s_b, mde, kept)


def _independent(a: ArmDraws, b: ArmDraws, n_units: int, confidence: float, power: float) -> Comparison:
    """Arms with disjoint seeds: independent at the seed level (each arm's own seed variance)."""
    s_a, s_b = a.full.size, b.full.size
    estimate = float(np.mean(a.full) - np.mean(b.full)) if s_a and s_b else math.nan
    components, v_seed, raw = independent_components(a, b, n_units)
    se_seed = math.sqrt(v_seed) if math.isfinite(v_seed) else math.nan
    if len(components) < 3 or not math.isfinite(estimate):
        nan = math.nan
        se_song = math.sqrt(raw) if math.isfinite(raw) else nan
        return Comparison(estimate, nan, nan, nan, nan, nan, se_seed, se_song, False, s_a, s_b, nan)
    se, df, low, high, p = summarize(estimate, components, confidence)
    mde = minimum_detectable_effect(se, df, 1.0 - confidence, power)
    kept = tuple((v, d) for v, d in components if v > 0)
    v_song = components[-1][0]
    return Comparison(estimate, low, high, se, df, p, se_seed, math.sqrt(v_song), False, s_a, s_b, mde, kept)


def arm_estimate(
    y_true: np.ndarray,
    arm: ArmRuns,
    clusters: Sequence[str] | np.ndarray | None,
    metric: str = "pr_auc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    model: SeedModel | None = None,
) -> Estimate:
    """Mean over seeds of one arm's macro ``metric`` (percent) with an interval over seeds and clustered songs.

    ``clusters``: bootstrap unit of each test song (None: every song its own cluster).
    ``model``: the cell's pooled seed model for this metric (default: this arm alone).
    """
    y = np.asarray(y_true)
    c = default_clusters(clusters, y.shape[0])
    weights = cluster_weights(c, n_boot, np.random.default_rng(seed))
    return estimate_from_draws(arm_draws(y, arm, weights, metric), n_clusters(c), confidence, model)


def compare_arms(
    y_true: np.ndarray,
    a: ArmRuns,
    b: ArmRuns,
    clusters: Sequence[str] | np.ndarray | None,
    metric: str = "pr_auc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    power: float = 0.8,
) -> Comparison:
    """``metric(A) - metric(B)`` (percentage points) of two arms alone, paired by seed and over song draws.

    With only two arms the pooled seed model is the paired t test over seeds; a cell's
    verdicts (:func:`study.report.verdicts.cell_verdicts`) pool every arm instead.
    """
    y = np.asarray(y_true)
    c = default_clusters(clusters, y.shape[0])
    weights = cluster_weights(c, n_boot, np.random.default_rng(seed))
    return compare_draws(
        arm_draws(y, a, weights, metric, "A"), arm_draws(y, b, weights, metric, "B"), n_clusters(c), confidence, power
    )


# ------------------------------------------------------------------ equivalence & multiplicity
def tost(comparison: Comparison, margin: float) -> float:
    """TOST p-value for equivalence, H1: |true difference| < margin (points).

    The larger of the two one-sided p-values (H0: diff <= -margin and H0: diff >= +margin),
    with the comparison's variance components and the same conservative combination as its
    interval (else a t with ``comparison.se`` and ``comparison.df``). Equivalence at level
    alpha is shown when p < alpha. NaN when the comparison has no se.
    """
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    est, se, df = comparison.estimate, comparison.se, comparison.df
    if not (math.isfinite(se) and math.isfinite(est) and df > 0):
        return math.nan
    if se == 0:
        return 0.0 if abs(est) < margin else 1.0
    if comparison.components:
        p_lower = one_sided_p(est + margin, comparison.components)  # H0: diff <= -margin
        p_upper = one_sided_p(margin - est, comparison.components)  # H0: diff >= +margin
    else:
        p_lower = float(stats.t.sf((est + margin) / se, df))
        p_upper = float(stats.t.sf((margin - est) / se, df))
    return max(p_lower, p_upper)


ADJUST_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values ("holm": family-wise error; "bh": false discovery rate).

    Benjamini-Hochberg through statsmodels' ``multipletests``; Holm's step-down here (the same
    numbers, tested against statsmodels), because statsmodels' Holm runs a full ``gc.collect()``
    on every call (0.15.0, multitest.py): in a process with a large heap, a study's driver or
    the simulations that call this thousands of times, that cost 25 of a test's 31 s. NaN
    p-values (untestable comparisons) stay NaN and do not count as members of the family.
    """
    if method not in ADJUST_NAMES:
        raise ValueError(f"method must be one of {sorted(ADJUST_NAMES)}, got {method!r}")
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = _holm(p[ok]) if method == "holm" else multipletests(p[ok], method="fdr_bh")[1]
    return out


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's adjusted p-values: the i-th smallest times (n - i), made monotone, capped at 1."""
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    out = np.empty(len(p))
    out[order] = np.minimum(stepped, 1.0)
    return out
