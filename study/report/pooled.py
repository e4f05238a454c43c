"""The pooled seed model of a cell: every arm estimated jointly, the training seed a factor
shared by the arms.

All arms of a cell train with the same curve seeds (same initialisation and data order for
seed s), so a run's metric on the full test set is modelled as two-way additive::

    m[arm, seed] = mu + a[arm] + b[seed] + e[arm, seed],   e ~ (0, sigma^2) independent

b[seed] is what a seed does to every arm alike (a lucky data order); it cancels in any
within-seed contrast of arms. e is the run's own deviation: the arm x seed interaction,
including that run's particular errors on these test songs. sigma^2 is estimated from the
residuals of the least-squares fit over ALL arms, with (arms - 1)(seeds - 1) degrees of
freedom for a complete table (n_runs - n_arms - n_seeds + 1 in general), instead of
seeds - 1 for a comparison that looks at its two arms only: with 6 arms and 3 seeds, 10 df
instead of 2 (the first step of a Holm family of 7 at 5 % then needs |t| ~ 3.6, not 27).
The price is an assumption: the arms share one run-to-run noise level. The simulations in
tests/study/ check the rates under it, and with two arms the model IS the per-comparison
paired t test (so nothing is lost where there is nothing to pool).

A contrast is a weight per run with weights summing to 0 within each seed (so b cancels);
its seed variance is ``sigma^2 * sum(w^2)``. This also handles the cross-fitted best-alpha
arm, whose run for seed s comes from whichever arm was chosen for s: a seed whose choice is
the heuristic contributes exactly nothing to "best - heuristic", and the variance says so
(the old per-comparison rule, with a degenerate 0 for every such seed, gave p = 0.42 in
every cell where all seeds but one chose the heuristic).

One arm's mean (not a contrast) keeps the seed effects: its run variance
``var(b) + sigma^2`` is estimated from the fitted seed effects and sigma^2 together, with
Satterthwaite degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from study.report.bootstrap import ArmDraws
from study.report.combine import Component


@dataclass(frozen=True)
class SeedModel:
    """The fitted two-way (arm x seed) model of one cell and one metric.

    resid_var / resid_df: sigma^2, the variance of a run around arm + seed effects.
    run_var / run_df: var(b) + sigma^2, the variance of one arm's run around the arm's mean.
    """

    resid_var: float
    resid_df: float
    run_var: float
    run_df: float
    n_arms: int
    n_seeds: int


NO_MODEL = SeedModel(math.nan, 0.0, math.nan, 0.0, 0, 0)


def fit_seed_model(arms: Mapping[str, ArmDraws]) -> SeedModel:
    """Least-squares fit of m[arm, seed] = mu + a[arm] + b[seed] over the real arms' full-test-set values."""
    names = [n for n, d in arms.items() if d.full.size]
    seeds = sorted({s for n in names for s in arms[n].seeds})
    if not names or len(seeds) < 2:
        return NO_MODEL
    rows, values = [], []
    for k, name in enumerate(names):
        for s, v in zip(arms[name].seeds, arms[name].full):
            if math.isfinite(float(v)):
                rows.append((k, seeds.index(s)))
                values.append(float(v))
    n_arms, n_seeds = len(names), len(seeds)
    y = np.asarray(values)
    design = np.zeros((y.size, n_arms + n_seeds - 1))
    for i, (k, j) in enumerate(rows):
        design[i, k] = 1.0
        if j > 0:  # seed 0 is the reference level
            design[i, n_arms + j - 1] = 1.0
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    rank = int(np.linalg.matrix_rank(design))
    df = float(y.size - rank)
    if df < 1:
        return NO_MODEL
    resid = y - design @ coef
    rss = float(resid @ resid)
    # Identical runs leave only rounding noise in the residuals: call it what it is, zero.
    sigma2 = 0.0 if rss <= 1e-24 * float(y @ y + 1.0) else rss / df
    seed_effects = np.concatenate([[0.0], coef[n_arms:]])
    # var of the fitted seed effects = var(b) + sigma^2 / (arms per seed); add back the rest of sigma^2.
    per_seed = np.bincount([j for _, j in rows], minlength=n_seeds).astype(float)
    v_b = float(np.var(seed_effects, ddof=1))
    share = float(np.mean(1.0 - 1.0 / np.maximum(per_seed, 1.0)))
    part_b, part_e = v_b, sigma2 * share
    run_var = part_b + part_e
    denom = part_b**2 / (n_seeds - 1) + part_e**2 / df
    run_df = run_var**2 / denom if denom > 0 else float(n_seeds - 1)
    return SeedModel(sigma2, df, run_var, float(run_df), n_arms, n_seeds)


def aligned(a: ArmDraws, b: ArmDraws) -> tuple[ArmDraws, ArmDraws]:
    """The rows of A and B of the seeds they share, in A's seed order (a contrast pairs runs by seed)."""
    common = [s for s in a.seeds if s in b.seeds]
    return a.take([a.seeds.index(s) for s in common]), b.take([b.seeds.index(s) for s in common])


def contrast_seed_component(a: ArmDraws, b: ArmDraws, model: SeedModel) -> Component:
    """(variance, df) of mean_s(A_s - B_s) from sigma^2: weights +-1/S per run, 0 where both rows are one run."""
    n = len(a.seeds)
    if n == 0 or not math.isfinite(model.resid_var):
        return math.nan, 0.0
    differing = sum(1 for sa, sb in zip(a.sources, b.sources) if not (sa and sa == sb))
    return model.resid_var * 2.0 * differing / n**2, model.resid_df


def contrast_song_variance(a: ArmDraws, b: ArmDraws) -> tuple[float, float]:
    """Song-level variance of mean_s(A_s - B_s) over the song draws, net of the seed x song interaction.

    Returns (v_song, raw). raw = C, the variance over draws of the seed-averaged
    contrast. Each run's own song-level noise (the interaction) is already in sigma^2,
    so it is removed by the method-of-moments split of the two-way random-effects model
    over the S' seeds whose runs differ: ``v = C' - (V' - C') / (S' - 1)`` with C' the
    variance of their mean and V' the mean of their per-seed variances, scaled by
    (S'/S)^2. With one differing seed the split is impossible and raw C is used
    (conservative: the interaction is then counted twice). Draws with a NaN are dropped.
    """
    d = a.boot - b.boot
    ok = np.isfinite(d).all(axis=0)
    if ok.sum() < 2:
        return math.nan, math.nan
    d = d[:, ok]
    n = d.shape[0]
    raw = float(np.var(d.mean(axis=0), ddof=1))
    rows = [i for i, (sa, sb) in enumerate(zip(a.sources, b.sources)) if not (sa and sa == sb)]
    if len(rows) < 2:
        return raw, raw
    part = d[rows]
    c = float(np.var(part.mean(axis=0), ddof=1))
    v = float(np.var(part, axis=1, ddof=1).mean())
    return max(0.0, c - (v - c) / (len(rows) - 1)) * (len(rows) / n) ** 2, raw


def arm_song_variance(boot: np.ndarray) -> tuple[float, float]:
    """Song-level variance of one arm's seed mean, net of the interaction (see :func:`contrast_song_variance`)."""
    ok = np.isfinite(boot).all(axis=0)
    if ok.sum() < 2 or boot.shape[0] < 2:
        return math.nan, math.nan
    m = boot[:, ok]
    raw = float(np.var(m.mean(axis=0), ddof=1))
    v = float(np.var(m, axis=1, ddof=1).mean())
    return max(0.0, raw - (v - raw) / (m.shape[0] - 1)), raw


def independent_components(a: ArmDraws, b: ArmDraws, n_units: int) -> tuple[list[Component], float, float]:
    """Components of mean(A) - mean(B) for arms trained with DISJOINT seeds (nothing to pair or pool):
    each arm's seed variance var/S (S - 1 df) and the song variance of the difference net of each
    arm's interaction. Returns (components, v_seed, raw song variance)."""
    parts: list[Component] = []
    for d in (a, b):
        s = d.full.size
        parts.append((float(np.var(d.full, ddof=1)) / s if s >= 2 else math.nan, float(s - 1)))
    v_seed = sum(v for v, _ in parts)
    ok = np.isfinite(a.boot).all(axis=0) & np.isfinite(b.boot).all(axis=0)
    if ok.sum() < 2 or not math.isfinite(v_seed):
        return parts, v_seed, math.nan
    raw = float(np.var(a.boot[:, ok].mean(axis=0) - b.boot[:, ok].mean(axis=0), ddof=1))
    v = raw
    for d in (a, b):
        m = d.boot[:, ok]
        c = float(np.var(m.mean(axis=0), ddof=1))
        v -= (float(np.var(m, axis=1, ddof=1).mean()) - c) / (m.shape[0] - 1)
    return [*parts, (max(v, 0.0), float(n_units - 1))], v_seed, raw
