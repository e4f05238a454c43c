"""Unit tests of alpha* (study.report.alpha_star), the cross-fitted choice and the censored slope
(study.report.slope), through the names study.report.curves exports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from study.report.curves import GRID, QUADRATIC, AlphaStar, alpha_star, censored_slope, crossfit_choice, fit_slope

GRID_ALPHAS = np.array([1 / 9, 1 / 3, 1, 3, 9])


# ------------------------------------------------------------------ alpha*
def test_alpha_star_recovers_the_vertex_of_a_concave_curve() -> None:
    alphas = GRID_ALPHAS * 0.2
    x = np.log(alphas)
    true = math.log(0.2 * 1.7)
    rng = np.random.default_rng(9)
    val = 50 - 2 * (x - true)[:, None] ** 2 + 0.05 * rng.normal(size=(5, 3))
    star = alpha_star(alphas, val, n_boot=300)
    assert star.method == QUADRATIC and not star.at_edge and star.bound == ""
    assert star.alpha == pytest.approx(0.34, rel=0.05)
    assert star.low <= star.alpha <= star.high
    assert star.draws.shape == (300,) and np.isfinite(star.draws).all()
    assert 0 < star.se_log < 0.3 and math.isnan(star.limit)


def test_alpha_star_at_an_edge_is_a_bound() -> None:
    alphas = np.array([0.1, 0.3, 1.0, 3.0])
    rising = np.array([[40.0, 41, 40.5], [42, 43, 42.5], [45, 44, 45.5], [49, 50, 49.5]])
    star = alpha_star(alphas, rising, n_boot=100)
    assert star.at_edge and star.bound == "lower" and star.method == GRID and star.alpha == pytest.approx(3.0)
    # "alpha* >= the midpoint of the last step", not ">= 3": a peak inside the last step also wins at the edge.
    assert star.limit == pytest.approx(math.sqrt(3.0)) and star.low == pytest.approx(star.limit)
    assert star.high == math.inf and (star.draws == np.inf).all()
    convex = np.array([[45.0] * 3, [40.0] * 3, [40.0] * 3, [44.0] * 3])
    star = alpha_star(alphas, convex, n_boot=100)
    assert star.bound == "upper" and star.alpha == pytest.approx(0.1) and star.at_edge
    assert star.limit == pytest.approx(math.sqrt(0.03)) and star.low == 0.0 and star.high == pytest.approx(star.limit)


def test_alpha_star_ignores_missing_runs_and_one_seed_has_no_interval() -> None:
    alphas = np.array([0.1, 0.3, 1.0, 3.0, 9.0])
    val = 50 - (np.log(alphas) - np.log(1.0))[:, None] ** 2 * np.ones((1, 3))
    val[2, 1] = np.nan
    star = alpha_star(alphas, val, n_boot=100)
    assert star.alpha == pytest.approx(1.0, rel=1e-6)
    one = alpha_star(alphas, val[:, :1], n_boot=100)
    assert one.alpha == pytest.approx(1.0, rel=1e-6) and math.isnan(one.low) and np.isnan(one.draws).all()
    assert math.isnan(one.se_log)


def test_alpha_star_cancels_seed_effects() -> None:
    # Seeds that differ by 10 points across all arms give the interval of seeds that do not differ at all.
    rng = np.random.default_rng(3)
    x = np.log(GRID_ALPHAS)
    val = 50 - 2 * x[:, None] ** 2 + 0.3 * rng.normal(size=(5, 3))
    plain = alpha_star(GRID_ALPHAS, val, n_boot=500)
    shifted = alpha_star(GRID_ALPHAS, val + 10 * rng.normal(size=(1, 3)), n_boot=500)
    assert shifted.alpha == pytest.approx(plain.alpha) and shifted.low == pytest.approx(plain.low)
    assert shifted.high == pytest.approx(plain.high) and 0.5 < plain.low < 1 < plain.high < 2


def test_alpha_star_merges_arms_with_one_alpha_and_checks_input() -> None:
    x = np.log(GRID_ALPHAS)
    val = 50 - (x - 0.3)[:, None] ** 2 * np.ones((1, 3))
    doubled = alpha_star(np.r_[GRID_ALPHAS, 1.0], np.vstack([val, val[2:3]]), n_boot=100)
    assert doubled.alpha == pytest.approx(math.exp(0.3), rel=1e-6)
    with pytest.raises(ValueError):
        alpha_star(np.r_[0.0, GRID_ALPHAS[1:]], val)
    with pytest.raises(ValueError):
        alpha_star(GRID_ALPHAS[:4], val)
    empty = alpha_star(GRID_ALPHAS, np.full((5, 3), np.nan), n_boot=10)
    assert empty.method == "none" and math.isnan(empty.alpha)


# ------------------------------------------------------------------ cross-fitting
def test_crossfit_choice_leaves_the_scored_seed_out() -> None:
    # Seed 0 loves arm 0, the other seeds prefer arm 1.
    val = np.array([[60.0, 40.0, 40.0], [50.0, 45.0, 45.0], [10.0, 10.0, 10.0]])
    assert crossfit_choice(val).tolist() == [1, 0, 0]
    # Missing run: an arm without seed s cannot stand for seed s.
    val2 = val.copy()
    val2[1, 0] = np.nan
    assert crossfit_choice(val2)[0] == 0
    assert crossfit_choice(np.array([[1.0], [3.0], [2.0]])).tolist() == [1]  # one seed: its own validation


# ------------------------------------------------------------------ slope
X5 = np.log([0.05, 0.3, 1.0, 2.0, 5.6])


def test_censored_slope_on_exact_cells() -> None:
    y = 0.2 + 0.8 * X5
    fit = censored_slope(X5, y, np.full(5, 0.1), [""] * 5)
    assert fit.slope == pytest.approx(0.8, abs=1e-6) and fit.intercept == pytest.approx(0.2, abs=1e-6)
    assert fit.slope_low < 0.8 < fit.slope_high and fit.n_cells == 5 and fit.df == 3 and fit.n_bounds == 0
    # On the line exactly: the interval stays the model-based normal one (the cells' own se), not 0 wide.
    model_se = 0.1 / math.sqrt(((X5 - X5.mean()) ** 2).sum())
    assert fit.slope_high - fit.slope == pytest.approx(1.959964 * model_se, rel=1e-3)
    assert fit.p_zero < 0.001 and fit.p_one < 0.05
    noisy = censored_slope(X5, y + np.array([0.5, -0.5, 0.5, -0.5, 0.5]), np.full(5, 0.1), [""] * 5)
    assert noisy.slope_high - noisy.slope_low > fit.slope_high - fit.slope_low  # scatter widens the interval
    assert noisy.tau > 0.2


def test_censored_slope_uses_bounds_as_bounds() -> None:
    # True slope 0: the two small-ratio cells found their best alpha at the top of their grids.
    y = np.array([-0.9, -0.3, 0.05, -0.05, 0.02])
    fit = censored_slope(X5, y, np.full(5, 0.3), ["lower", "lower", "", "", ""])
    naive = censored_slope(X5, y, np.full(5, 0.3), [""] * 5)
    assert naive.slope > 0.15  # the bounds taken as values tilt the line
    assert abs(fit.slope) < abs(naive.slope) and fit.slope_low < 0 < fit.slope_high
    assert fit.n_bounds == 2 and "2 of 5 cells are bounds" in fit.note
    with pytest.raises(ValueError):
        censored_slope(X5, y, np.full(5, 0.3), ["below", "", "", "", ""])


def test_slope_with_too_few_cells_is_not_tested() -> None:
    y = 0.2 + 0.8 * X5
    two = censored_slope(X5[:2], y[:2], np.full(2, 0.1), ["", ""])
    assert two.slope == pytest.approx(0.8) and math.isnan(two.slope_low) and math.isnan(two.p_zero)
    assert "cannot be tested" in two.note
    one = censored_slope(X5[:1], y[:1], np.full(1, 0.1), [""])
    assert math.isnan(one.slope) and "not identifiable" in one.note
    bounds = censored_slope(X5[:3], y[:3], np.full(3, 0.1), ["lower", "lower", ""])
    assert math.isnan(bounds.slope) and bounds.n_bounds == 2


def test_fit_slope_from_alpha_stars() -> None:
    nan = math.nan
    stars = [AlphaStar(math.exp(v), nan, nan, QUADRATIC, False, se_log=0.2) for v in (0.2 + 0.8 * X5[1:])] + [
        AlphaStar(0.5, 0.3, math.inf, GRID, True, bound="lower", limit=0.3)
    ]
    fit = fit_slope(np.r_[X5[1:], X5[0]], stars)
    direct = censored_slope(
        np.r_[X5[1:], X5[0]],
        np.r_[0.2 + 0.8 * X5[1:], math.log(0.3)],
        np.r_[np.full(4, 0.2), nan],
        [""] * 4 + ["lower"],
    )
    assert fit.slope == pytest.approx(direct.slope) and fit.slope_low == pytest.approx(direct.slope_low)
    assert fit.n_bounds == 1 and "median" in fit.note  # the bound's missing se: the median of the others


def test_the_vertex_offset_is_the_root_of_its_two_branch_equation() -> None:
    """The closed-form vertex of the two-branch parabola equals a bisection of its equation
    f(v) = d0 (r (b - v)^2 - v^2) - d2 a (a + 2 v) on [0, b), for curvature ratios on both sides of
    1, exactly 1, and level neighbours (offset 0)."""
    from study.report.alpha_star import _vertex_offset

    rng = np.random.default_rng(3)
    n = 4000
    a, b = rng.uniform(0.05, 2.0, n), rng.uniform(0.05, 2.0, n)
    d0, d2 = rng.exponential(1.0, n), rng.exponential(1.0, n)
    d0[:200] = 0.0
    d2[100:300] = 0.0
    r = rng.choice([0.25, 1.0, 4.0], n) * rng.uniform(0.5, 2.0, n)
    r[-500:] = 1.0
    # The side convention of peak_log_alpha: the vertex lies right of the middle point, f(0) >= 0.
    keep = d0 * r * b**2 >= d2 * a**2
    a, b, d0, d2, r = a[keep], b[keep], d0[keep], d2[keep], r[keep]

    lo, hi = np.zeros_like(b), b.copy()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        positive = d0 * (r * (b - mid) ** 2 - mid**2) - d2 * a * (a + 2.0 * mid) >= 0
        lo, hi = np.where(positive, mid, lo), np.where(positive, hi, mid)
    bisection = np.where((d0 > 0) | (d2 > 0), 0.5 * (lo + hi), 0.0)

    offset = _vertex_offset(a, b, d0, d2, r)
    assert np.all((offset >= 0) & (offset <= b))
    assert offset == pytest.approx(bisection, abs=1e-12)
    assert np.all(offset[(d0 == 0) & (d2 == 0)] == 0.0)
