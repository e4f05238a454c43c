"""Hierarchical-bootstrap comparisons of study arms, TOST, minimum detectable effect, multiplicity.

All metrics are macro PR-AUC or ROC-AUC in PERCENT; differences are in
percentage points. Pure numpy/scipy/statsmodels.

Method
------
An *arm* of a cell (e.g. alpha = 0, or the heuristic alpha) is trained with S
seeds and each run predicts the same n test songs. Its reported value is the
mean over seeds of the macro metric on the full test set. That mean is noisy
for two reasons, and both are estimated:

1. **Training seeds.** Another set of seeds gives other models. With per-seed
   values m_s (metric of seed s on the full test set) the seed component of
   the variance of the mean is ``v_seed = s^2 / S`` with the *unbiased*
   variance s^2 (ddof = 1); S - 1 degrees of freedom. This is what a bootstrap
   over seeds gives once the seed-level deviations are inflated by
   sqrt(S / (S - 1)); without the inflation a plain bootstrap of 3 seeds would
   underestimate it by a factor 2/3. Because m_s is measured on the one test
   set, v_seed already contains each run's own errors on these songs (the
   seed x song interaction), not only the seed-to-seed differences of skill.
2. **Test songs.** Another test set gives other values. Songs are resampled
   by *cluster* (e.g. all clips of one track, or all songs of one artist,
   drawn together; by default every song is its own cluster), B times, as
   integer weights per song (:func:`cluster_weights`). For each draw b and
   seed s the macro metric M[s, b] is evaluated (one vectorised
   :func:`mtlmood.metrics.macro_metric` call per seed for all draws).
   With the seeds held fixed, C = var_b(mean_s M[s, b]) is the song-level
   variance of the seed mean. C also contains the interaction of point 1
   (divided by S), which v_seed already counts; it is removed with the
   per-seed bootstrap variances V = mean_s var_b(M[s, b]):
   ``v_song = max(0, C - (V - C) / (S - 1))`` (a method-of-moments split of
   the two-way random-effects model; without it the seed x song noise is
   counted twice and the test is needlessly conservative). n_clusters - 1 df.

This is a two-level (songs x seeds) bootstrap whose seed level is done
analytically: by the law of total variance, drawing songs and then S seeds with
replacement from the inflated deviations has variance (song part) + s^2 / S,
here without the Monte Carlo noise of resampling from three values, and with
the song part taken net of the interaction so that nothing is counted twice.

**Differences** ``metric(A) - metric(B)``: both arms are evaluated on the SAME
song draws (paired over songs: a song that is hard for every arm cancels).
When both arms were trained with the same set of seeds, run s of A is paired
with run s of B (same initialisation and data order) and everything above is
applied to the per-seed differences d_s (seed component ``var_s(d_s) / S``,
S - 1 df). Otherwise the arms are independent at the seed level: components
``var_a / S_a`` and ``var_b / S_b`` (S_a - 1, S_b - 1 df), and the song
component is C of the difference minus each arm's interaction term.

**Reference distribution.** ``se = sqrt(sum of the components v_i)``. The
interval is Banerjee's (1960) conservative combination: half-width
``sqrt(sum_i (t_{df_i, 1-(1-confidence)/2})^2 v_i)``, each component scaled by
its own t quantile. With a dominant seed component this is the paired t test
over seeds (2 df with 3 seeds: wide, honestly so); with a dominant song
component it approaches the normal. The p-value is the smallest level at which
that interval excludes 0, so ``p < 1 - confidence`` exactly when the CI
excludes 0. ``df`` reports the *effective* degrees of freedom: the df whose t
quantile reproduces the half-width at ``confidence``.

Why not Welch-Satterthwaite degrees of freedom? Its df are estimated from the
same noisy seed variance: when three seeds happen to agree, v_seed is small
AND the df jump up, so the t quantile shrinks exactly when se is
underestimated. In simulations with seed noise larger than song noise it
rejected a true null in 6.5-8 % of cells at the 5 % level (3 seeds); the
combination above rejected 3-5 % (4.7 % over 1,500 simulated null cells) and
its se matched the spread of the estimates. Its price: when both components
are of similar size it is conservative (down to ~1 % rejections), i.e. some power is
lost. tests/test_report_verdict_simulation.py re-measures the rates.

**Equivalence** (:func:`tost`): two one-sided tests with the same combination
(one-sided quantiles); equivalence within +/- m at level alpha exactly when
the 1 - 2 alpha interval lies inside +/- m.

**One seed.** With a single seed in an arm the seed component cannot be
estimated, so se, CI, p-value and MDE are NaN (the song component alone would
silently ignore seed noise, which for small CNNs is often the larger part);
``se_song`` is then the raw song-level spread, interaction included.

Resamples in which no label is scorable (no positive or no negative song under
the weights) give NaN metrics and are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd
from scipy import optimize, special, stats
from statsmodels.stats.multitest import multipletests

from mtlmood.metrics import Metric, macro_metric

METRICS: tuple[Metric, ...] = ("pr_auc", "roc_auc")


# A variance component of an estimate: (variance, degrees of freedom).
Component = tuple[float, float]


# ------------------------------------------------------------------ data types
@dataclass(frozen=True)
class ArmRuns:
    """Test predictions of one arm of a cell: one probability matrix per training seed,
    rows aligned to the cell's test songs."""

    seeds: tuple[int, ...]
    probs: np.ndarray  # (S, n_songs, n_labels)

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=float)
        if probs.ndim == 2:  # one seed given as a plain (n, L) matrix
            probs = probs[None]
        if probs.ndim != 3:
            raise ValueError(f"probs must be (n_seeds, n_songs, n_labels), got shape {probs.shape}")
        seeds = tuple(int(s) for s in self.seeds)
        if len(seeds) != probs.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {probs.shape[0]} probability matrices")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicate seeds {seeds}")
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "seeds", seeds)


@dataclass(frozen=True)
class Estimate:
    """One arm's metric: mean over seeds, with hierarchical-bootstrap CI (NaN spread with one seed).

    df: effective degrees of freedom of the interval (see the module docstring).
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
    """metric(A) - metric(B) in percentage points, with its hierarchical-bootstrap CI and two-sided p-value.

    se_seed / se_song: the two parts of se (se^2 = se_seed^2 + se_song^2).
    df: effective degrees of freedom (the t quantile with df reproduces the
    interval's half-width at the requested confidence).
    paired: runs were paired by seed (both arms trained with the same seeds).
    mde: minimum detectable effect at level 1 - confidence and the requested power.
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


@dataclass(frozen=True)
class ArmDraws:
    """An arm's metric per seed on the full test set (``full``, (S,)) and under each song draw (``boot``, (S, B)).

    The building block of every comparison: :func:`study.report.verdicts.cell_verdicts`
    computes it once per arm and metric and reuses it across comparisons.
    """

    seeds: tuple[int, ...]
    full: np.ndarray
    boot: np.ndarray

    def take(self, rows: Sequence[int]) -> ArmDraws:
        """The draws of a subset of this arm's seeds (row indices)."""
        idx = np.asarray(rows, dtype=int)
        return ArmDraws(tuple(self.seeds[i] for i in idx), self.full[idx], self.boot[idx])

    @staticmethod
    def stack(parts: Sequence[tuple[ArmDraws, int]]) -> ArmDraws:
        """A virtual arm made of row ``i`` of each ``(draws, i)`` (e.g. the cross-fitted best-alpha arm)."""
        if not parts:
            raise ValueError("a virtual arm needs at least one run")
        seeds = tuple(d.seeds[i] for d, i in parts)
        full = np.array([d.full[i] for d, i in parts], dtype=float)
        return ArmDraws(seeds, full, np.stack([d.boot[i] for d, i in parts]))


# ------------------------------------------------------------------ bootstrap
def cluster_weights(clusters: Sequence[str] | np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_songs) song weights of a cluster bootstrap.

    Each row draws the n_clusters clusters (e.g. the track or artist of each
    test song) with replacement; every song of a drawn cluster counts once per
    draw, so songs of one cluster always carry the same weight.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    codes, uniques = pd.factorize(np.asarray(clusters, dtype=object), sort=False)
    if np.any(codes < 0):
        raise ValueError("clusters hold missing values")
    k = len(uniques)
    draws = rng.integers(0, k, size=(n_boot, k))
    flat = draws + (np.arange(n_boot) * k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_boot * k).reshape(n_boot, k)
    return counts[:, codes].astype(float)


def n_clusters(clusters: Sequence[str] | np.ndarray) -> int:
    """Number of distinct clusters (the song level's bootstrap units)."""
    return len(pd.unique(np.asarray(clusters, dtype=object)))


def default_clusters(clusters: Sequence[str] | np.ndarray | None, n_songs: int) -> np.ndarray:
    """The given clusters, or one cluster per song."""
    if clusters is None:
        return np.arange(n_songs)
    c = np.asarray(clusters, dtype=object)
    if c.shape != (n_songs,):
        raise ValueError(f"clusters has shape {c.shape}, expected ({n_songs},)")
    return c


def arm_draws(y_true: np.ndarray, arm: ArmRuns, weights: np.ndarray, metric: str = "pr_auc") -> ArmDraws:
    """The arm's metric per seed on the full test set and under every weight row (one macro_metric call per seed)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y = np.asarray(y_true)
    y2 = y[:, None] if y.ndim == 1 else y
    if arm.probs.shape[1:] != y2.shape:
        raise ValueError(f"predictions {arm.probs.shape[1:]} do not match y_true {y2.shape}")
    # The unit-weight row first: the full-test-set value from the same evaluator.
    w = np.vstack([np.ones((1, y2.shape[0])), np.asarray(weights, dtype=float)])
    checked = cast(Metric, metric)
    values = np.stack([np.asarray(macro_metric(y2, p, checked, sample_weight=w)) for p in arm.probs])
    return ArmDraws(arm.seeds, values[:, 0], values[:, 1:])


# ------------------------------------------------------------------ variance components
def _seed_component(values: np.ndarray) -> Component:
    """(unbiased variance of the mean over seeds, S - 1); NaN variance with fewer than 2 seeds."""
    s = values.size
    return (float(np.var(values, ddof=1) / s) if s >= 2 else math.nan), float(s - 1)


def _song_variance(parts: Sequence[tuple[float, np.ndarray]]) -> tuple[float, float]:
    """Song-level variance of ``sum_j sign_j * mean_s boot_j[s]`` over the draws, with and without the interaction.

    parts: (sign, (S_j, B) draws) per independent group of runs (one arm, or
    the per-seed differences of a paired comparison). Returns
    (v_song, raw): raw = C, the variance over draws of the seed-averaged
    statistic; v_song = C minus each group's seed x song interaction
    (V_j - C_j) / (S_j - 1), which the seed component already counts; floored
    at 0. v_song is NaN when a group has one seed. Draws with a NaN are dropped.
    """
    ok = np.all([np.isfinite(m).all(axis=0) for _, m in parts], axis=0)
    if ok.sum() < 2:
        return math.nan, math.nan
    kept = [(sign, m[:, ok]) for sign, m in parts]
    raw = float(np.var(sum(sign * m.mean(axis=0) for sign, m in kept), ddof=1))
    v = raw
    for _, m in kept:
        s = m.shape[0]
        if s < 2:
            return math.nan, raw
        c_j = float(np.var(m.mean(axis=0), ddof=1))
        v_j = float(np.var(m, axis=1, ddof=1).mean())
        v -= (v_j - c_j) / (s - 1)
    return max(v, 0.0), raw


# ------------------------------------------------------------------ conservative t combination
def _critical(components: Sequence[Component], alpha: float) -> float:
    """Upper-alpha critical value of the combined statistic: sqrt(sum_i t_{df_i}(1 - alpha)^2 v_i) (Banerjee)."""
    var = np.array([v for v, _ in components])
    df = np.array([d for _, d in components])
    q = -special.stdtrit(df, alpha)  # upper-alpha t quantile, accurate for tiny alpha
    with np.errstate(over="ignore"):  # 1 df at alpha ~ 1e-300: an infinite critical value is the right answer
        return float(math.sqrt(np.sum(q * q * var)))


def _one_sided_p(x: float, components: Sequence[Component]) -> float:
    """Smallest alpha with x >= the upper-alpha critical value: the one-sided p-value of a
    statistic x (H0: mean <= 0)."""
    if x < 0:
        return 1.0 - _one_sided_p(-x, components)
    if x == 0:
        return 0.5
    lo = math.log(1e-300)
    if _critical(components, 1e-300) <= x:
        return 0.0
    # critical(alpha) decreases in alpha; solve in log alpha for accuracy at small p.
    root = optimize.brentq(lambda la: _critical(components, math.exp(la)) - x, lo, math.log(0.5), xtol=1e-10)
    return float(math.exp(root))


def _effective_df(components: Sequence[Component], alpha: float) -> float:
    """The df whose upper-alpha t quantile times se equals the combined critical value."""
    se = math.sqrt(sum(v for v, _ in components))
    dfs = [d for _, d in components]
    target = _critical(components, alpha) / se

    def quantile(d: float) -> float:
        return -float(special.stdtrit(d, alpha))

    lo, hi = min(dfs), max(dfs)
    if quantile(hi) >= target or hi == lo:
        return float(hi)
    if quantile(lo) <= target:
        return float(lo)
    return float(optimize.brentq(lambda d: quantile(d) - target, lo, hi, xtol=1e-6))


def _summary(
    estimate: float, components: Sequence[Component], confidence: float
) -> tuple[float, float, float, float, float]:
    """(se, effective df, low, high, two-sided p) of an estimate with independent variance components."""
    comps = [(v, d) for v, d in components if v > 0]
    se = math.sqrt(sum(v for v, _ in comps))
    alpha = (1.0 - confidence) / 2.0
    if se == 0:  # identical runs: no spread at all
        df = float(sum(d for _, d in components))
        return 0.0, df, estimate, estimate, (1.0 if estimate == 0 else 0.0)
    half = _critical(comps, alpha)
    p = min(1.0, 2.0 * _one_sided_p(abs(estimate), comps))
    return se, _effective_df(comps, alpha), estimate - half, estimate + half, p


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _check_units(n_units: int) -> None:
    if n_units < 2:
        raise ValueError(f"the song bootstrap needs at least 2 clusters, got {n_units}")


def minimum_detectable_effect(se: float, df: float, level: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided t test at ``level`` detects with probability ``power``.

    ``(t_{1-level/2, df} + t_{power, df}) * se``; for a comparison ``df`` is its
    effective df, exact for the first term.
    """
    if not (math.isfinite(se) and df > 0):
        return math.nan
    return float((stats.t.ppf(1.0 - level / 2.0, df) + stats.t.ppf(power, df)) * se)


def estimate_from_draws(d: ArmDraws, n_units: int, confidence: float = 0.95) -> Estimate:
    """:func:`arm_estimate` from precomputed draws; n_units = number of song clusters."""
    _check_confidence(confidence)
    _check_units(n_units)
    per_seed = tuple(map(float, d.full))
    mean = float(np.mean(d.full)) if d.full.size else math.nan
    seed_part = _seed_component(d.full)
    v_song, _ = _song_variance([(1.0, d.boot)]) if d.full.size else (math.nan, math.nan)
    if not (math.isfinite(seed_part[0]) and math.isfinite(v_song) and math.isfinite(mean)):
        return Estimate(mean, math.nan, math.nan, math.nan, math.nan, d.full.size, per_seed)
    se, df, low, high, _ = _summary(mean, [seed_part, (v_song, n_units - 1)], confidence)
    return Estimate(mean, low, high, se, df, d.full.size, per_seed)


def compare_draws(a: ArmDraws, b: ArmDraws, n_units: int, confidence: float = 0.95, power: float = 0.8) -> Comparison:
    """:func:`compare_arms` from precomputed draws (both on the same song draws); n_units = number of song clusters."""
    _check_confidence(confidence)
    _check_units(n_units)
    if a.boot.shape[1] != b.boot.shape[1]:
        raise ValueError("both arms must be evaluated on the same song draws")
    s_a, s_b = a.full.size, b.full.size
    paired = s_a == s_b and set(a.seeds) == set(b.seeds)
    if paired:  # align B's runs to A's seed order
        order = {seed: i for i, seed in enumerate(b.seeds)}
        b = b.take([order[seed] for seed in a.seeds])
    estimate = float(np.mean(a.full) - np.mean(b.full)) if s_a and s_b else math.nan
    if paired:
        seed_parts = [_seed_component(a.full - b.full)]
        v_song, raw = _song_variance([(1.0, a.boot - b.boot)])
    else:
        seed_parts = [_seed_component(a.full), _seed_component(b.full)]
        v_song, raw = _song_variance([(1.0, a.boot), (-1.0, b.boot)])
    v_seed = sum(v for v, _ in seed_parts)
    se_seed = math.sqrt(v_seed) if math.isfinite(v_seed) else math.nan
    if not (math.isfinite(v_seed) and math.isfinite(v_song) and math.isfinite(estimate)):
        # One seed in an arm: seed noise cannot be estimated, so no interval rather than a too-narrow one.
        se_song = math.sqrt(raw) if math.isfinite(raw) else math.nan
        return Comparison(
            estimate, math.nan, math.nan, math.nan, math.nan, math.nan, se_seed, se_song, paired, s_a, s_b, math.nan
        )
    components = tuple(seed_parts) + ((v_song, float(n_units - 1)),)
    se, df, low, high, p = _summary(estimate, components, confidence)
    mde = minimum_detectable_effect(se, df, 1.0 - confidence, power)
    return Comparison(
        estimate,
        low,
        high,
        se,
        df,
        p,
        se_seed,
        math.sqrt(v_song),
        paired,
        s_a,
        s_b,
        mde,
        tuple((v, d) for v, d in components if v > 0),
    )


def arm_estimate(
    y_true: np.ndarray,
    arm: ArmRuns,
    clusters: Sequence[str] | np.ndarray | None,
    metric: str = "pr_auc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Mean over seeds of one arm's macro ``metric`` (percent) with a hierarchical-bootstrap interval.

    See the module docstring for the method. ``clusters``: bootstrap unit of
    each test song (None: every song its own cluster). With one seed the
    interval is NaN.
    """
    y = np.asarray(y_true)
    c = default_clusters(clusters, y.shape[0])
    weights = cluster_weights(c, n_boot, np.random.default_rng(seed))
    return estimate_from_draws(arm_draws(y, arm, weights, metric), n_clusters(c), confidence)


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
    """``metric(A) - metric(B)`` (percentage points) by hierarchical bootstrap over seeds and clustered test songs.

    Same song draws for both arms; runs paired by seed when both arms have the
    same set of seeds. Returns NaN se / CI / p / MDE when an arm has a single
    seed (see the module docstring).
    """
    y = np.asarray(y_true)
    c = default_clusters(clusters, y.shape[0])
    weights = cluster_weights(c, n_boot, np.random.default_rng(seed))
    return compare_draws(
        arm_draws(y, a, weights, metric), arm_draws(y, b, weights, metric), n_clusters(c), confidence, power
    )


# ------------------------------------------------------------------ equivalence & multiplicity
def tost(comparison: Comparison, margin: float) -> float:
    """TOST p-value for equivalence, H1: |true difference| < margin (points).

    The larger of the two one-sided p-values (H0: diff <= -margin and
    H0: diff >= +margin). They use the comparison's variance components with
    the same conservative combination as its interval when it has them, else a
    t with ``comparison.se`` and ``comparison.df``. Equivalence at level alpha
    is shown when p < alpha (the 1 - 2 alpha interval lies inside +/- margin).
    NaN when the comparison has no se.
    """
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    est, se, df = comparison.estimate, comparison.se, comparison.df
    if not (math.isfinite(se) and math.isfinite(est) and df > 0):
        return math.nan
    if se == 0:
        return 0.0 if abs(est) < margin else 1.0
    if comparison.components:
        p_lower = _one_sided_p(est + margin, comparison.components)  # H0: diff <= -margin
        p_upper = _one_sided_p(margin - est, comparison.components)  # H0: diff >= +margin
    else:
        p_lower = float(stats.t.sf((est + margin) / se, df))
        p_upper = float(stats.t.sf((margin - est) / se, df))
    return max(p_lower, p_upper)


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values ("holm": family-wise error; "bh": false discovery rate).

    Uses statsmodels' ``multipletests``. NaN p-values (untestable comparisons)
    stay NaN and do not count as members of the family.
    """
    methods = {"holm": "holm", "bh": "fdr_bh"}
    if method not in methods:
        raise ValueError(f"method must be one of {sorted(methods)}, got {method!r}")
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=methods[method])[1]
    return out
