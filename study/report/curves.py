"""The alpha-response curve of a cell and the cross-cell rule.

* :func:`alpha_star` (:mod:`study.report.alpha_star`) -- the alpha that
  maximises validation PR-AUC: a local peak of the seed-adjusted curve, an
  interval from a parametric bootstrap whose seed noise comes from the arm x
  seed residuals, and a bound (censored) when the best arm is at a grid edge.
* :func:`crossfit_choice` (here) -- for each seed, the arm chosen on the OTHER
  seeds' validation scores, so that the seed whose test score estimates "the
  best alpha" never took part in choosing it (no winner's curse in the gain).
* :func:`fit_slope` (:mod:`study.report.slope`) -- log alpha* = intercept +
  slope * log(N_mood / N_meta) across cells (the heuristic is slope 1,
  intercept 0), bounds censored, with t intervals and tests of slope 0 and 1.

Only validation scores choose anything here; test scores are never used.
"""

from __future__ import annotations

import numpy as np

from study.report.alpha_star import GRID, QUADRATIC, AlphaStar, alpha_star
from study.report.slope import SlopeFit, censored_slope, fit_slope

__all__ = [
    "GRID",
    "QUADRATIC",
    "AlphaStar",
    "SlopeFit",
    "alpha_star",
    "censored_slope",
    "crossfit_choice",
    "fit_slope",
]


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
