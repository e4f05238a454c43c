"""alpha* by simulation, through study.report.alpha_star: coverage of its interval and bias of its estimate.

A simulated cell scores the grid [1/9, 1/3, 1, 3, 9] x h with S seeds. The true
validation curve over log alpha is a bump of height A points above its tails,
centred at the true alpha* = 0.2, with a flatter left side (towards the
baseline) than right side (where the metadata loss takes over): Gaussian
shoulders of SD 1.5 and 1.0 in log alpha (curvature ratio 2.25). A run scores
curve + seed effect (shared by every arm trained with that seed, SD 1 point) +
run noise (SD 1 point, 0.5 and 1.5 in the other settings). The heuristic h
takes 4 positions across one grid step (a factor 3), so the truth lies on a
grid point as often as between two. Every simulation has a fixed seed.

Measured (fixed seeds, 300 cells per position, n_boot 600; coverage of the 95 % interval,
bias = mean log alpha* of the interior estimates minus log 0.2):

=====  ====================  ========  ====================  ================
S      run noise, height     coverage  bias (log alpha*)     cells at an edge
=====  ====================  ========  ====================  ================
3      1.0 points, A = 3     0.971     -0.17 (0.2 -> 0.168)  3.4 %
3      0.5 points, A = 3     0.969     -0.18                 0.2 %
5      1.0 points, A = 3     0.955     -0.18 (0.2 -> 0.166)  0.8 %
5      1.5 points, A = 4     0.955     -0.18                 1.7 %
3      1.0, symmetric peak   0.986     -0.02                 0.6 %
=====  ====================  ========  ====================  ================

The estimate's bias on an asymmetric peak is the grid's: three points a factor
3 apart cannot show an asymmetry between them (the old single quadratic over
the whole 81-fold range took 0.2 to 0.13, log bias -0.43); the interval
carries it by drawing the asymmetry. The percentile seed bootstrap it replaces
covered 73-75 % at S = 3 (issue 18).
"""

from __future__ import annotations

import numpy as np
import pytest

from study.report.alpha_star import alpha_star

MULTIPLES = np.array([1 / 9, 1 / 3, 1, 3, 9])
TRUE_ALPHA = 0.2
POSITIONS = TRUE_ALPHA * np.exp(np.linspace(0.0, np.log(3.0), 4, endpoint=False))  # heuristics h


def true_curve(log_alpha: np.ndarray, height: float = 3.0, left: float = 1.5, right: float = 1.0) -> np.ndarray:
    """Validation PR-AUC (points) of the simulated world at log alpha: a bump at TRUE_ALPHA."""
    d = log_alpha - np.log(TRUE_ALPHA)
    width = np.where(d < 0, left, right)
    return 40.0 + height * np.exp(-(d**2) / (2 * width**2))


def simulate(
    seeds: int, run_sd: float = 1.0, height: float = 3.0, left: float = 1.5, right: float = 1.0, n: int = 300
) -> dict[str, float]:
    """Coverage, bias (log), share of edge estimates over n cells at each of the 4 heuristic positions."""
    rng = np.random.default_rng(2024 + seeds)
    covered, log_est, edges, total = 0, [], 0, 0
    for h in POSITIONS:
        alphas = h * MULTIPLES
        curve = true_curve(np.log(alphas), height, left, right)
        for r in range(n):
            val = curve[:, None] + rng.normal(size=(1, seeds)) + run_sd * rng.normal(size=(5, seeds))
            star = alpha_star(alphas, val, n_boot=600, seed=r)
            covered += star.low <= TRUE_ALPHA <= star.high
            total += 1
            if star.bound:
                edges += 1
            else:
                log_est.append(np.log(star.alpha))
    return {
        "coverage": covered / total,
        "bias": float(np.mean(log_est) - np.log(TRUE_ALPHA)),
        "edges": edges / total,
    }


@pytest.mark.parametrize(
    ("seeds", "run_sd", "height"),
    [(3, 1.0, 3.0), (3, 0.5, 3.0), (5, 1.0, 3.0), (5, 1.5, 4.0)],
)
def test_alpha_star_interval_covers_an_asymmetric_peak(seeds: int, run_sd: float, height: float) -> None:
    out = simulate(seeds, run_sd, height)
    print(f"S={seeds} run SD {run_sd} height {height}: {out}")
    assert out["coverage"] >= 0.90
    assert abs(out["bias"]) < 0.25  # the grid's asymmetry bias: under a factor 1.3 (module docstring)
    assert out["edges"] < 0.05


def test_alpha_star_is_unbiased_on_a_symmetric_peak() -> None:
    out = simulate(3, left=1.2, right=1.2, n=200)
    print(f"symmetric peak, S=3: {out}")
    assert out["coverage"] >= 0.90 and abs(out["bias"]) < 0.06


def test_alpha_star_interval_is_informative() -> None:
    # Honest is not "always [0, inf)": at S = 5, run SD 1, the interval spans under a factor 9 in most cells.
    rng = np.random.default_rng(5)
    alphas = 0.3 * MULTIPLES
    curve = true_curve(np.log(alphas))
    widths = []
    for r in range(200):
        val = curve[:, None] + rng.normal(size=(1, 5)) + rng.normal(size=(5, 5))
        star = alpha_star(alphas, val, n_boot=600, seed=r)
        widths.append(np.log(star.high / star.low) if star.low > 0 else np.inf)
    assert np.median(widths) < np.log(9.0)
