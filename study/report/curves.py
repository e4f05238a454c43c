"""The alpha-response curve of a cell and the cross-cell rule: alpha*, the cross-fitted best arm, the slope fit.

* :func:`alpha_star` -- the alpha that maximises validation PR-AUC, from a
  quadratic in log(alpha) fitted to the seed-mean validation curve, with a
  percentile interval over bootstrap resamples of the seeds. Its ``draws``
  (log alpha* of every resample) feed :func:`fit_slope`.
* :func:`crossfit_choice` -- for each seed, the arm chosen on the OTHER seeds'
  validation scores, so that the seed whose test score estimates "the best
  alpha" never took part in choosing it (no winner's curse in the gain).
* :func:`fit_slope` -- log alpha* = intercept + slope * log(N_mood / N_meta)
  across cells (the heuristic alpha = N_mood / N_meta is slope 1, intercept 0),
  with an interval that carries each cell's alpha* uncertainty.

Only validation scores choose anything here; test scores are never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

QUADRATIC = "quadratic in log alpha"
GRID = "grid argmax"


@dataclass(frozen=True)
class AlphaStar:
    """Best alpha on validation and its percentile interval over seed resamples.

    method: "quadratic in log alpha" (vertex of a concave fit inside the
    searched range) or "grid argmax" (the quadratic is not concave, its vertex
    lies outside the range, or fewer than 3 distinct alphas were scored).
    at_edge: the optimum is the smallest or largest alpha searched, so it is a
    bound (the true optimum may lie beyond), not an estimate.
    draws: log(alpha*) of each bootstrap resample of the seeds (NaN with fewer
    than 2 seeds, when low/high are NaN too).
    """

    alpha: float
    low: float
    high: float
    method: str
    at_edge: bool
    draws: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)


# ------------------------------------------------------------------ alpha*
def _fit_quadratics(x: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Least-squares (c0, c1, c2) of curve ~ c0 + c1 x + c2 x^2 for each row of curves (R, K), NaN points skipped."""
    mask = np.isfinite(curves).astype(float)
    y = np.where(mask > 0, curves, 0.0)
    design = np.stack([np.ones_like(x), x, x * x], axis=1)  # (K, 3)
    normal = np.einsum("rk,ki,kj->rij", mask, design, design)  # (R, 3, 3)
    rhs = np.einsum("rk,ki->ri", mask * y, design)  # (R, 3)
    return np.einsum("rij,rj->ri", np.linalg.pinv(normal), rhs)


def _argmax_rows(x: np.ndarray, curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log alpha at the best scored grid point, whether it is the smallest/largest scored alpha) per row."""
    filled = np.where(np.isfinite(curves), curves, -np.inf)
    best = np.argmax(filled, axis=1)
    x_best = x[best]
    scored = np.isfinite(curves)
    lo = np.where(scored, x, np.inf).min(axis=1)
    hi = np.where(scored, x, -np.inf).max(axis=1)
    return x_best, (x_best <= lo) | (x_best >= hi)


def _alpha_star_rows(x: np.ndarray, curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log alpha*, "quadratic used" and "at edge" for each curve (R, K) over log alphas x (K,);
    NaN rows with no score."""
    # Centre and scale log alpha so the 3x3 normal equations are well conditioned.
    centre, scale = float(x.mean()), float(np.ptp(x)) or 1.0
    z = (x - centre) / scale
    coef = _fit_quadratics(z, curves)
    scored = np.isfinite(curves)
    _, which = np.unique(z, return_inverse=True)
    n_distinct = ((scored.astype(float) @ np.eye(which.max() + 1)[which]) > 0).sum(axis=1)  # distinct alphas scored
    z_lo = np.where(scored, z, np.inf).min(axis=1)
    z_hi = np.where(scored, z, -np.inf).max(axis=1)
    concave = (coef[:, 2] < -1e-12) & (n_distinct >= 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = -coef[:, 1] / (2.0 * coef[:, 2])
    quadratic = concave & (vertex >= z_lo) & (vertex <= z_hi)
    x_grid, edge_grid = _argmax_rows(x, curves)
    log_alpha = np.where(quadratic, centre + scale * vertex, x_grid)
    at_edge = np.where(quadratic, False, edge_grid)
    empty = ~scored.any(axis=1)
    log_alpha[empty] = np.nan
    return log_alpha, quadratic, at_edge


def _seed_mean_curves(val: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Validation curves (R, K) averaged over seeds drawn with multiplicities counts (R, S); missing seeds ignored."""
    present = np.isfinite(val).astype(float)
    total = np.where(present > 0, val, 0.0) @ counts.T  # (K, R)
    n = present @ counts.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan).T


def alpha_star(
    alphas: np.ndarray, val: np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> AlphaStar:
    """Best alpha on validation PR-AUC, with a percentile interval over bootstrap resamples of the seeds.

    alphas: (K,) alphas > 0 of the scored arms (grid and tuned; duplicates
    allowed). val: (K, S) best validation PR-AUC of each arm and seed, NaN for
    a missing run. The seed-mean curve is fitted by a quadratic in log(alpha);
    alpha* is its vertex when the fit is concave and the vertex lies inside the
    searched range, else the best grid point (``method`` says which;
    ``at_edge`` flags an optimum at the range's edge). The interval repeats the
    same rule on ``n_boot`` resamples of the seeds (columns) with replacement;
    with 3 seeds it is coarse (few distinct resamples). With one seed low/high
    and ``draws`` are NaN.
    """
    a = np.asarray(alphas, dtype=float).ravel()
    v = np.asarray(val, dtype=float)
    if v.ndim == 1:
        v = v[:, None]
    if v.shape[0] != a.size:
        raise ValueError(f"val has {v.shape[0]} rows for {a.size} alphas")
    if np.any(~(a > 0)):
        raise ValueError("alphas must be > 0 (log scale); the baseline alpha = 0 is not part of the curve")
    x = np.log(a)
    point, quadratic, at_edge = _alpha_star_rows(x, _seed_mean_curves(v, np.ones((1, v.shape[1]))))
    n_seeds = int(np.isfinite(v).any(axis=0).sum())
    if n_seeds < 2 or not np.isfinite(point[0]):
        draws = np.full(n_boot, np.nan)
        low = high = math.nan
    else:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(v.shape[1], np.full(v.shape[1], 1.0 / v.shape[1]), size=n_boot).astype(float)
        draws, _, _ = _alpha_star_rows(x, _seed_mean_curves(v, counts))
        ok = draws[np.isfinite(draws)]
        tail = (1.0 - confidence) / 2.0
        low, high = (float(np.exp(q)) for q in np.quantile(ok, [tail, 1.0 - tail]))
    return AlphaStar(float(np.exp(point[0])), low, high, QUADRATIC if quadratic[0] else GRID, bool(at_edge[0]), draws)


# ------------------------------------------------------------------ cross-fitting
def crossfit_choice(val: np.ndarray) -> np.ndarray:
    """For each seed s, the index of the arm with the best mean validation over the OTHER seeds (leave-one-seed-out).

    val: (K, S) validation score of arm k with seed s, NaN where that run is
    missing. An arm without a run for seed s cannot stand for seed s (it has no
    test predictions for it), so only arms with ``val[k, s]`` finite are
    eligible; -1 where no arm has seed s. Ties go to the lower index.

    With S == 1 (or when no eligible arm has another seed) the choice uses seed
    s's own validation: then it is NOT cross-fitted, and the chosen arm's test
    score carries the optimism of having been selected.
    """
    v = np.asarray(val, dtype=float)
    if v.ndim != 2:
        raise ValueError(f"val must be (n_arms, n_seeds), got shape {v.shape}")
    n_seeds = v.shape[1]
    choice = np.full(n_seeds, -1, dtype=int)
    present = np.isfinite(v)
    for s in range(n_seeds):
        eligible = present[:, s]
        if not eligible.any():
            continue
        others = np.delete(v, s, axis=1)
        with np.errstate(invalid="ignore"):
            n_other = np.isfinite(others).sum(axis=1)
            mean_other = np.where(n_other > 0, np.nansum(others, axis=1) / np.maximum(n_other, 1), np.nan)
        score = np.where(eligible, mean_other, np.nan)
        if not np.isfinite(score).any():
            score = np.where(eligible, v[:, s], np.nan)  # nothing to cross-fit with: own seed (documented)
        choice[s] = int(np.argmax(np.where(np.isfinite(score), score, -np.inf)))
    return choice


# ------------------------------------------------------------------ across cells
@dataclass(frozen=True)
class SlopeFit:
    """log alpha* = intercept + slope * log(N_mood / N_meta) across cells, with intervals.

    The heuristic alpha = N_mood / N_meta corresponds to slope 1, intercept 0.
    """

    slope: float
    slope_low: float
    slope_high: float
    intercept: float
    intercept_low: float
    intercept_high: float
    n_cells: int
    method: str
    note: str


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slope, intercept) of y ~ x for each column of y (C,) or (C, B)."""
    xc = x - x.mean()
    yy = y if y.ndim == 2 else y[:, None]
    slope = xc @ (yy - yy.mean(axis=0)) / float(xc @ xc)
    intercept = yy.mean(axis=0) - slope * x.mean()
    return slope, intercept


def _residual_interval(
    x: np.ndarray, y: np.ndarray, confidence: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Classical OLS t-intervals of (slope, intercept) from the residual scatter (C - 2 df)."""
    c = x.size
    slope, intercept = (float(v[0]) for v in _ols(x, y))
    resid = y - (intercept + slope * x)
    s2 = float(resid @ resid) / (c - 2)
    sxx = float(((x - x.mean()) ** 2).sum())
    t = float(stats.t.ppf(0.5 + confidence / 2.0, c - 2))
    se_slope = math.sqrt(s2 / sxx)
    se_int = math.sqrt(s2 * (1.0 / c + x.mean() ** 2 / sxx))
    return (slope - t * se_slope, slope + t * se_slope), (intercept - t * se_int, intercept + t * se_int)


def fit_slope(
    log_ratio: np.ndarray, log_alpha_star_draws: np.ndarray, log_alpha_star: np.ndarray, confidence: float = 0.95
) -> SlopeFit:
    """Fit log alpha* = intercept + slope * log(N_mood / N_meta) across cells.

    log_ratio: (C,) log of each cell's heuristic alpha. log_alpha_star: (C,)
    point estimates; log_alpha_star_draws: (C, B) bootstrap draws of them
    (``AlphaStar.draws``; the b-th draws of all cells form one joint draw).
    Cells with a NaN point estimate are dropped.

    Point fit: OLS on the point estimates. Interval: the percentile interval of
    the OLS refits on each joint draw (carries each cell's alpha* uncertainty);
    with C >= 3 cells also the classical OLS residual t-interval (carries the
    cells' scatter around the line), taking the wider of the two per bound.
    C == 2: the line is exact, with no residual degrees of freedom. C == 1:
    NaN slope. Cells whose alpha* is at the edge of its range are bounds, not
    estimates: callers should flag them (their draws understate the spread).
    """
    x_all = np.asarray(log_ratio, dtype=float).ravel()
    y_all = np.asarray(log_alpha_star, dtype=float).ravel()
    draws_all = np.asarray(log_alpha_star_draws, dtype=float)
    if draws_all.ndim == 1:
        draws_all = draws_all[:, None]
    if not (x_all.size == y_all.size == draws_all.shape[0]):
        raise ValueError("log_ratio, log_alpha_star and the rows of log_alpha_star_draws must have one entry per cell")
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    x, y, draws = x_all[keep], y_all[keep], draws_all[keep]
    c = int(x.size)
    nan = math.nan
    if c < 2 or np.ptp(x) == 0:
        note = (
            "no cell has an alpha*"
            if c == 0
            else "one cell cannot test a rule about ratios"
            if c == 1
            else "all cells share one ratio N_mood/N_meta: the slope is not identifiable"
        )
        return SlopeFit(nan, nan, nan, nan, nan, nan, c, "none", note)
    slope, intercept = (float(v[0]) for v in _ols(x, y))
    tail = (1.0 - confidence) / 2.0
    joint = draws[:, np.isfinite(draws).all(axis=0)] if draws.shape[1] else draws
    if joint.shape[1] >= 2:
        b_slope, b_int = _ols(x, joint)
        s_lo, s_hi = np.quantile(b_slope, [tail, 1 - tail])
        i_lo, i_hi = np.quantile(b_int, [tail, 1 - tail])
    else:
        s_lo = s_hi = i_lo = i_hi = nan
    notes = []
    if joint.shape[1] < 2:
        notes.append("no joint bootstrap draws (a cell with fewer than 2 seeds): alpha* uncertainty not carried")
    if c == 2:
        method = "OLS through two cells; interval: percentile of refits on joint bootstrap draws of alpha*"
        notes.append(
            "two cells: the line is exact, with no residual degrees of freedom; the interval covers only "
            "each cell's alpha* uncertainty, not scatter around the rule"
        )
        return SlopeFit(slope, s_lo, s_hi, intercept, i_lo, i_hi, c, method, "; ".join(notes))
    (rs_lo, rs_hi), (ri_lo, ri_hi) = _residual_interval(x, y, confidence)
    method = (
        "OLS on point estimates; interval: the wider per bound of the percentile interval of refits on joint "
        f"bootstrap draws of alpha* and the OLS residual t-interval ({c - 2} df)"
    )
    return SlopeFit(
        slope,
        float(np.nanmin([s_lo, rs_lo])),
        float(np.nanmax([s_hi, rs_hi])),
        intercept,
        float(np.nanmin([i_lo, ri_lo])),
        float(np.nanmax([i_hi, ri_hi])),
        c,
        method,
        "; ".join(notes),
    )
