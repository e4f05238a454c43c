"""The cross-cell rule: log alpha* = intercept + slope * log(N_mood / N_meta), with cells at the grid's edge censored.

The heuristic alpha = N_mood / N_meta is slope 1, intercept 0. Each cell gives
log alpha* with a standard error (:class:`study.report.alpha_star.AlphaStar`)
or, when its best arm is the smallest or largest alpha searched, only a bound.

* **Model.** log alpha*_c = a + b x_c + u_c + e_c: u_c ~ N(0, tau^2) is the
  cells' scatter around the rule (estimated), e_c ~ N(0, se_c^2) each cell's
  own alpha* uncertainty (given).
* **Censoring (Tobit).** A cell whose alpha* is a lower bound L enters the
  likelihood as P(log alpha* >= L) = Phi((a + b x - L) / s), an upper bound U as
  Phi((U - a - b x) / s), s^2 = tau^2 + se^2; never as if alpha* were L (an
  edge taken as exact pulled a true slope 0 to 0.5-0.7).
* **Fit.** For fixed tau the log-likelihood is concave in (a, b) (log Phi and
  the normal log density are), so Newton finds it; tau is profiled over a
  grid, by the restricted (REML-like) likelihood when at least 4 cells have a
  value (ML puts tau at 0 too often with 4-6 cells), else by plain ML (with 2
  residual df or fewer the restricted term rewards an unbounded tau whenever
  bounds pull against the estimates: slopes of -4 in simulation). All of it
  is vectorised, so simulations run it thousands of times.
* **Interval with 4-6 cells.** The Wald covariance from the observed
  information is scaled by the Knapp-Hartung factor q = (sum of squared
  standardised residuals) / (C - 2) (a bound cell contributes E[z^2 | beyond
  its bound] under the fit), floored so that the interval is never narrower
  than the model-based normal one, and read with t quantiles on C - 2 df.
  Without bounds and with equal se this is the OLS t-interval; the Wald
  interval alone, with normal quantiles, covered 71-89 % in simulation.
* **Too few cells.** With fewer than 3 cells (or fewer than 2 inside their
  grid, at distinct ratios) there is no test: CI and p-values are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from study.report.alpha_star import AlphaStar

EXACT, LOWER, UPPER = 0, 1, 2
_KIND = {"": EXACT, "lower": LOWER, "upper": UPPER}
# Between-cell SD tau profiled over 0 and 0.01 .. 5 (log alpha units: a factor 1.01 .. 150).
TAU_GRID = np.concatenate([[0.0], np.geomspace(0.01, 5.0, 47)])
REML_MIN_EXACT = 4  # REML needs >= 2 residual df among the cells with a value (see tobit_fit)
_MIN_SD = 0.01  # a cell's alpha* is never known better than 1 %: keeps exact cells with se = 0 finite
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class SlopeFit:
    """log alpha* = intercept + slope * log(N_mood / N_meta) across cells, with intervals and tests.

    The heuristic alpha = N_mood / N_meta corresponds to slope 1, intercept 0.
    se / df: the slope's standard error and the t degrees of freedom of its
    interval and tests (C - 2). p_zero / p_one: two-sided p-values of H0
    slope = 0 (alpha* does not follow the ratio) and H0 slope = 1 (it follows it
    as the heuristic says). tau: the cells' scatter around the line (log
    alpha). n_bounds: cells that entered as censored (alpha* at a grid edge).
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
    se: float = math.nan
    df: float = math.nan
    p_zero: float = math.nan
    p_one: float = math.nan
    tau: float = math.nan
    n_bounds: int = 0


# ------------------------------------------------------------------ the censored likelihood
def _cell_terms(
    y: np.ndarray, mu: np.ndarray, s: np.ndarray, kind: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: log-likelihood, and its first and second derivative in the cell's mean mu."""
    z = (y - mu) / s
    t = np.where(kind == LOWER, -z, z)  # lower bound: P = Phi((mu - L)/s) = Phi(-z); upper: Phi(z)
    log_cdf = special.log_ndtr(t)
    mills = np.exp(-0.5 * t * t - _LOG_SQRT_2PI - log_cdf)  # phi(t) / Phi(t), stable far in the tail
    exact = kind == EXACT
    loglik = np.where(exact, -0.5 * z * z - np.log(s), log_cdf)
    grad = np.where(exact, z / s, np.where(kind == LOWER, mills / s, -mills / s))
    hess = np.where(exact, -1.0 / s**2, -mills * (t + mills) / s**2)
    return loglik, grad, hess


def _newton(
    x: np.ndarray, y: np.ndarray, kind: np.ndarray, s: np.ndarray, iterations: int = 60
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ML (a, b) of every row of (..., C) arrays at fixed s: (a, b, log-likelihood, information (..., 2, 2))."""
    # Start from weighted least squares with the bounds taken as values (a point on the right side).
    w = 1.0 / s**2
    sw, sx, sy = w.sum(-1), (w * x).sum(-1), (w * y).sum(-1)
    sxx, sxy = (w * x * x).sum(-1), (w * x * y).sum(-1)
    b = (sw * sxy - sx * sy) / (sw * sxx - sx**2)
    a = (sy - b * sx) / sw
    for _ in range(iterations):
        _, g, h = _cell_terms(y, a[..., None] + b[..., None] * x, s, kind)
        ga, gb = g.sum(-1), (g * x).sum(-1)
        haa, hab, hbb = h.sum(-1), (h * x).sum(-1), (h * x * x).sum(-1)
        det = haa * hbb - hab**2
        da, db = -(hbb * ga - hab * gb) / det, -(haa * gb - hab * ga) / det
        # Damped: a step of at most 2 log-alpha units, so a first step from a bad start cannot overshoot far.
        damp = np.maximum(1.0, np.hypot(da, db) / 2.0)
        a, b = a + da / damp, b + db / damp
        if not np.any(np.hypot(da, db) > 1e-10):  # NaN rows (a diverged fit) do not hold the others up
            break
    loglik, _, h = _cell_terms(y, a[..., None] + b[..., None] * x, s, kind)
    hab = (h * x).sum(-1)
    info = -np.stack([np.stack([h.sum(-1), hab], -1), np.stack([hab, (h * x * x).sum(-1)], -1)], -2)
    return a, b, loglik.sum(-1), info


def _squared_residuals(y: np.ndarray, mu: np.ndarray, s: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """z^2 of exact cells; E[z^2 | beyond the bound] under the fit for bound cells (1 + c * mills(c))."""
    z = (y - mu) / s
    c = np.where(kind == LOWER, z, -z)  # latent z >= c (a lower bound) or, mirrored, -z >= -z_bound
    mills = np.exp(-0.5 * c * c - _LOG_SQRT_2PI - special.log_ndtr(-c))
    return np.where(kind == EXACT, z * z, 1.0 + c * mills)


def tobit_fit(
    x: np.ndarray, y: np.ndarray, kind: np.ndarray, se: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Censored meta-regression of many studies at once (the method: module docstring).

    x: (C,) log ratios; y, kind, se: (R, C) log alpha* (the bound for a bound
    cell), EXACT / LOWER / UPPER, and se of log alpha*. Returns (a, b, tau,
    model-based covariance (R, 2, 2), Knapp-Hartung factor q (R,)). Rows
    whose fit diverges get NaN.
    """
    n_rows, n_cells = y.shape
    s = np.maximum(np.sqrt(TAU_GRID[:, None, None] ** 2 + se[None] ** 2), _MIN_SD)  # (G, R, C)
    shape = s.shape
    with np.errstate(all="ignore"):
        a, b, loglik, info = _newton(x, np.broadcast_to(y, shape), np.broadcast_to(kind, shape), s)
        # Restricted (REML-like) profile: log-likelihood - 0.5 log det(information of (a, b)), the Laplace
        # approximation of integrating the line out (plain ML puts tau at 0 too often with 4-6 cells);
        # plain ML below REML_MIN_EXACT cells with a value (module docstring).
        n_exact = (kind == EXACT).sum(-1)
        restricted = loglik - 0.5 * np.log(np.linalg.det(info)) * (n_exact >= REML_MIN_EXACT)
        best = np.argmax(np.where(np.isfinite(restricted), restricted, -np.inf), axis=0)
        rows = np.arange(n_rows)
        a, b, s, info = a[best, rows], b[best, rows], s[best, rows], info[best, rows]
        q = _squared_residuals(y, a[:, None] + b[:, None] * x, s, kind).sum(-1) / (n_cells - 2)
        cov = np.linalg.inv(info)
    bad = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(cov).all(axis=(1, 2))) | (np.abs(b) > 1e3)
    a, b = np.where(bad, np.nan, a), np.where(bad, np.nan, b)
    cov[bad] = np.nan
    q[bad] = np.nan
    return a, b, TAU_GRID[best], cov, q


def knapp_hartung_scale(q: float | np.ndarray, df: int, confidence: float = 0.95) -> float | np.ndarray:
    """The factor on the model-based variance: q, but at least (z / t_df)^2 at ``confidence``.

    A handful of cells lying by chance almost on the line make q small; the
    floor keeps the t-interval no narrower than the model-based normal interval
    (the cells' own se and the fitted tau), so luck cannot shrink it below what
    the cells' uncertainty allows.
    """
    z = stats.norm.ppf(0.5 + confidence / 2.0)
    t = stats.t.ppf(0.5 + confidence / 2.0, df)
    return np.maximum(q, (z / t) ** 2)


# ------------------------------------------------------------------ one study
def censored_slope(
    log_ratio: np.ndarray,
    log_alpha_star: np.ndarray,
    se_log: np.ndarray,
    bound: Sequence[str],
    confidence: float = 0.95,
) -> SlopeFit:
    """Fit log alpha* = intercept + slope * log ratio across cells, bounds censored (method: module docstring).

    log_ratio, log_alpha_star, se_log: (C,); bound: per cell "" (an estimate),
    "lower" (alpha* >= the value) or "upper" (alpha* <= the value). Cells with
    a NaN ratio or alpha* are dropped; a NaN se (one seed, or a bound cell whose
    draws mostly lie beyond the grid) takes the median se of the other cells.
    """
    x_all = np.asarray(log_ratio, dtype=float).ravel()
    y_all = np.asarray(log_alpha_star, dtype=float).ravel()
    se_all = np.asarray(se_log, dtype=float).ravel()
    kinds = list(bound)
    if not (x_all.size == y_all.size == se_all.size == len(kinds)):
        raise ValueError("log_ratio, log_alpha_star, se_log and bound need one entry per cell")
    unknown = set(kinds) - set(_KIND)
    if unknown:
        raise ValueError(f"bound must be one of {sorted(_KIND)}, got {sorted(unknown)}")
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    x, y, se = x_all[keep], y_all[keep], se_all[keep]
    kind = np.array([_KIND[k] for k, ok in zip(kinds, keep) if ok], dtype=int)
    c = int(x.size)
    n_bounds = int((kind != EXACT).sum())
    nan = math.nan
    exact_x = np.unique(x[kind == EXACT])
    if exact_x.size < 2:
        note = (
            "no cell has an alpha*"
            if c == 0
            else f"{c} cell{'s' if c != 1 else ''}, {exact_x.size} with alpha* inside the grid at distinct ratios: "
            "the slope is not identifiable"
        )
        return SlopeFit(nan, nan, nan, nan, nan, nan, c, "none", note, n_bounds=n_bounds)
    finite = np.isfinite(se) & (se >= 0)
    se = np.where(finite, se, float(np.median(se[finite])) if finite.any() else 0.0)
    notes = [f"{n_bounds} of {c} cells are bounds (alpha* at a grid edge, censored)"] if n_bounds else []
    if not finite.all():
        notes.append(f"{int((~finite).sum())} cell(s) without a standard error took the median of the others")
    if c < 3:  # two cells, both inside their grids: the line through them, and nothing to test it with
        slope = float((y[1] - y[0]) / (x[1] - x[0]))
        notes.append("two cells: the slope cannot be tested (no interval from two points)")
        return SlopeFit(
            slope, nan, nan, float(y[0] - slope * x[0]), nan, nan, c, "line through two cells", "; ".join(notes)
        )
    a, b, tau, cov, q = tobit_fit(x, y[None], kind[None], se[None])
    df = c - 2
    method = (
        "censored (Tobit) regression of log alpha* on log ratio, per-cell se + between-cell tau "
        "(restricted ML, profiled); Wald interval scaled by Knapp-Hartung (floored at the model-based one), "
        f"t with {df} df"
    )
    if not np.isfinite(b[0]):
        notes.append("the censored fit did not converge (the bounds do not pin the line)")
        return SlopeFit(nan, nan, nan, nan, nan, nan, c, method, "; ".join(notes), df=df, n_bounds=n_bounds)
    t = float(stats.t.ppf(0.5 + confidence / 2.0, df))
    scale = knapp_hartung_scale(float(q[0]), df, confidence)
    se_b, se_a = math.sqrt(cov[0, 1, 1] * scale), math.sqrt(cov[0, 0, 0] * scale)
    slope, intercept = float(b[0]), float(a[0])
    p_zero, p_one = (float(2.0 * stats.t.sf(abs(slope - h0) / se_b, df)) for h0 in (0.0, 1.0))
    return SlopeFit(
        slope,
        slope - t * se_b,
        slope + t * se_b,
        intercept,
        intercept - t * se_a,
        intercept + t * se_a,
        c,
        method,
        "; ".join(notes),
        se=se_b,
        df=float(df),
        p_zero=p_zero,
        p_one=p_one,
        tau=float(tau[0]),
        n_bounds=n_bounds,
    )


def fit_slope(log_ratio: np.ndarray, stars: Sequence[AlphaStar], confidence: float = 0.95) -> SlopeFit:
    """:func:`censored_slope` of the cells' :class:`AlphaStar`: log_ratio (C,) the log of each cell's
    N_mood / N_meta, stars (C,) their alpha*. An estimate enters at log alpha with se_log; a bound at
    log(limit), its censoring point, in the direction ``bound`` says."""
    log_alpha = np.log(np.array([s.limit if s.bound else s.alpha for s in stars], dtype=float))
    se = np.array([s.se_log for s in stars], dtype=float)
    return censored_slope(log_ratio, log_alpha, se, [s.bound for s in stars], confidence)
