"""Intervals, p-values and detectable effects of an estimate whose variance is a sum of
independent components, each with its own degrees of freedom (training seeds, test songs).

The interval is Banerjee's (1960) conservative combination: half-width
``sqrt(sum_i (t_{df_i, 1-a})^2 v_i)``, each component scaled by its own t quantile. With a
dominant seed component it is the t test with the seed model's df; with a dominant song
component it approaches the normal. Why not Welch-Satterthwaite? Its df are estimated from
the same noisy variances: when seeds happen to agree, the variance is small AND the df jump
up, so the t quantile shrinks exactly when se is underestimated (in simulation it rejected
a true null in 6.5-8 % of cells at 5 %). The p-value is the smallest level at which the
interval excludes 0, so ``p < 1 - confidence`` exactly when the CI excludes 0; ``df`` is the
*effective* df: the df whose t quantile reproduces the half-width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats

# A variance component of an estimate: (variance, degrees of freedom).
Component = tuple[float, float]


def critical(components: Sequence[Component], alpha: float) -> float:
    """Upper-alpha critical value of the combined statistic: sqrt(sum_i t_{df_i}(1 - alpha)^2 v_i) (Banerjee)."""
    var = np.array([v for v, _ in components])
    df = np.array([d for _, d in components])
    q = -special.stdtrit(df, alpha)  # upper-alpha t quantile, accurate for tiny alpha
    with np.errstate(over="ignore"):  # 1 df at alpha ~ 1e-300: an infinite critical value is the right answer
        return float(math.sqrt(np.sum(q * q * var)))


def one_sided_p(x: float, components: Sequence[Component]) -> float:
    """Smallest alpha with x >= the upper-alpha critical value: the one-sided p-value of a
    statistic x (H0: mean <= 0)."""
    if x < 0:
        return 1.0 - one_sided_p(-x, components)
    if x == 0:
        return 0.5
    lo = math.log(1e-300)
    if critical(components, 1e-300) <= x:
        return 0.0
    # critical(alpha) decreases in alpha; solve in log alpha for accuracy at small p.
    root = optimize.brentq(lambda la: critical(components, math.exp(la)) - x, lo, math.log(0.5), xtol=1e-10)
    return float(math.exp(root))


def effective_df(components: Sequence[Component], alpha: float) -> float:
    """The df whose upper-alpha t quantile times se equals the combined critical value."""
    se = math.sqrt(sum(v for v, _ in components))
    dfs = [d for _, d in components]
    target = critical(components, alpha) / se

    def quantile(d: float) -> float:
        return -float(special.stdtrit(d, alpha))

    lo, hi = min(dfs), max(dfs)
    if quantile(hi) >= target or hi == lo:
        return float(hi)
    if quantile(lo) <= target:
        return float(lo)
    return float(optimize.brentq(lambda d: quantile(d) - target, lo, hi, xtol=1e-6))


def summarize(
    estimate: float, components: Sequence[Component], confidence: float
) -> tuple[float, float, float, float, float]:
    """(se, effective df, low, high, two-sided p) of an estimate with independent variance components."""
    comps = [(v, d) for v, d in components if v > 0]
    se = math.sqrt(sum(v for v, _ in comps))
    alpha = (1.0 - confidence) / 2.0
    if se == 0:  # identical runs: no spread at all
        df = float(sum(d for _, d in components))
        return 0.0, df, estimate, estimate, (1.0 if estimate == 0 else 0.0)
    half = critical(comps, alpha)
    p = min(1.0, 2.0 * one_sided_p(abs(estimate), comps))
    return se, effective_df(comps, alpha), estimate - half, estimate + half, p


def minimum_detectable_effect(se: float, df: float, level: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided t test at ``level`` detects with probability ``power``.

    ``(t_{1-level/2, df} + t_{power, df}) * se``. ``level`` is the level the test is really
    held to: inside a Holm family of m tests, the first step's level / m.
    """
    if not (math.isfinite(se) and df > 0 and 0 < level < 1):
        return math.nan
    return float((stats.t.ppf(1.0 - level / 2.0, df) + stats.t.ppf(power, df)) * se)


def components_mde(components: Sequence[Component], level: float = 0.05, power: float = 0.8) -> float:
    """:func:`minimum_detectable_effect` of an estimate with these variance components (its effective df)."""
    comps = [(v, d) for v, d in components if v > 0 and math.isfinite(v)]
    if not comps:
        return math.nan
    se = math.sqrt(sum(v for v, _ in comps))
    return minimum_detectable_effect(se, effective_df(comps, level / 2.0), level, power)
