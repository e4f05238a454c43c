"""Negative and positive controls of the verdict statistics, by simulation (the model of
the simulated runs: tests/helpers/simulated_cells.py). A simulated cell has ~300 test songs, 3 mood
labels and 3 training seeds per arm; seed noise is at least as large as song noise, as with
small CNNs. Every simulation has a fixed seed, so the rates below are deterministic.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd

from helpers.simulated_cells import CLUSTERED, Noise, simulate_cell, true_gain
from mtlmood.metrics import macro_metric
from study.report.statistics import arm_draws, cluster_weights, compare_arms, compare_draws, n_clusters, tost
from study.report.verdicts import cell_verdicts

LEVEL = 0.05
N_BOOT = 200


def _verdict_rows(gains: dict[str, float], n_cells: int, seed: int, margin: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_cells):
        rows, _ = cell_verdicts(simulate_cell(rng, gains), margin=margin, n_boot=N_BOOT, seed=i, metrics=("pr_auc",))
        frames.append(rows.assign(sim=i))
    return pd.concat(frames, ignore_index=True)


@cache
def null_rows() -> pd.DataFrame:
    """250 null cells: three alpha arms and the baseline, all with the same skill."""
    return _verdict_rows({"baseline": 0.0, "heuristic": 0.0, "x3": 0.0}, 250, seed=1)


PLANTED = 0.8  # separation gain of the heuristic arm (logit units)


@cache
def planted_rows() -> pd.DataFrame:
    """200 cells in which the heuristic arm has a planted gain."""
    return _verdict_rows({"baseline": 0.0, "heuristic": PLANTED, "x3": 0.0}, 200, seed=2)


def _rate(mask: pd.Series | np.ndarray) -> float:
    return float(np.mean(mask))


# ------------------------------------------------------------------ negative controls
def test_null_heuristic_gain_is_declared_at_most_at_the_nominal_rate() -> None:
    rows = null_rows()
    gain = rows[(rows.comparison == "heuristic - baseline") & (rows.test == "difference")]
    assert len(gain) == 250
    rate = _rate(gain.p_raw < LEVEL)
    print(f"null rejection rate (heuristic - baseline): {rate:.3f}")
    assert rate <= 0.07
    # The intervals are not uselessly wide either: the se tracks the real spread of the estimates.
    assert 0.8 < np.sqrt(np.mean(gain.se**2)) / gain.estimate.std() < 1.3


def test_null_cross_fitted_best_alpha_has_no_winners_curse() -> None:
    """Picking the best of three equal arms per seed on its own validation would look like a
    gain; cross-fitting does not."""
    rows = null_rows()
    best = rows[(rows.comparison == "best alpha - baseline") & (rows.test == "difference")]
    rate = _rate(best.p_raw < LEVEL)
    print(
        f"null rejection rate (best alpha - baseline, cross-fitted): {rate:.3f}; "
        f"mean estimate {best.estimate.mean():.2f}"
    )
    assert rate <= 0.07
    assert abs(best.estimate.mean()) < 3 * best.estimate.std() / np.sqrt(len(best))
    # The same choice made on each seed's OWN validation score is optimistic (the point of cross-fitting).
    rng = np.random.default_rng(6)
    own = []
    for _ in range(100):
        cell = simulate_cell(rng, {"baseline": 0.0, "heuristic": 0.0, "x3": 0.0, "x1/3": 0.0})
        names = ["heuristic", "x3", "x1/3"]
        pick = np.argmax(np.stack([cell.val[n] for n in names]), axis=0)
        chosen = [float(macro_metric(cell.y_true, cell.arms[names[k]].probs[s])) for s, k in enumerate(pick)]
        base = [float(macro_metric(cell.y_true, p)) for p in cell.arms["baseline"].probs]
        own.append(np.mean(chosen) - np.mean(base))
    print(f"mean 'gain' of the best alpha chosen on its own seed: {np.mean(own):.2f} points")
    assert np.mean(own) > 3 * np.std(own) / np.sqrt(len(own))


def test_clustered_songs_need_the_cluster_bootstrap() -> None:
    """Songs of one artist share an arm x artist effect: resampling clusters stays calibrated,
    resampling songs does not."""
    rng = np.random.default_rng(3)
    p_clustered: list[float] = []
    p_songs: list[float] = []
    for i in range(200):
        cell = simulate_cell(rng, {"baseline": 0.0, "heuristic": 0.0}, CLUSTERED)
        for clusters, out in ((cell.clusters, p_clustered), (np.arange(len(cell.clusters)), p_songs)):
            w = cluster_weights(clusters, N_BOOT, np.random.default_rng(i))
            c = compare_draws(
                arm_draws(cell.y_true, cell.arms["heuristic"], w),
                arm_draws(cell.y_true, cell.arms["baseline"], w),
                n_clusters(clusters),
            )
            out.append(c.p_value)
    rate_clustered, rate_songs = _rate(np.array(p_clustered) < LEVEL), _rate(np.array(p_songs) < LEVEL)
    print(f"clustered null rejection rate: {rate_clustered:.3f}; ignoring clusters: {rate_songs:.3f}")
    assert rate_clustered <= 0.07
    assert rate_songs > 0.10  # informative: ignoring the clusters is anticonservative here


# ------------------------------------------------------------------ positive controls
@cache
def planted_truth() -> float:
    return true_gain(PLANTED)


def test_planted_gain_is_detected_and_covered() -> None:
    truth = planted_truth()
    rows = planted_rows()
    gain = rows[(rows.comparison == "heuristic - baseline") & (rows.test == "difference")]
    power = _rate(gain.p_raw < LEVEL)
    coverage = _rate((gain.low <= truth) & (truth <= gain.high))
    print(
        f"planted gain {truth:.2f} points: power {power:.3f}, coverage {coverage:.3f}, "
        f"mean estimate {gain.estimate.mean():.2f}, median MDE {gain.mde.median():.2f}"
    )
    assert power >= 0.80
    assert coverage >= 0.90
    assert abs(gain.estimate.mean() - truth) < 0.1 * truth  # the point estimate is (nearly) unbiased


def test_cross_fitted_best_alpha_finds_the_planted_arm() -> None:
    rows = planted_rows()
    best = rows[(rows.comparison == "best alpha - baseline") & (rows.test == "difference")]
    regret = rows[(rows.comparison == "best alpha - heuristic") & (rows.test == "difference")]
    by_construction = regret.note.str.contains("by construction")
    print(
        f"best alpha - baseline power {_rate(best.p_raw < LEVEL):.3f}; the heuristic chosen for every seed in "
        f"{_rate(by_construction):.3f} of cells; regret declared in {_rate(regret.p_raw < LEVEL):.3f}"
    )
    assert _rate(best.p_raw < LEVEL) >= 0.70
    assert _rate(regret.p_raw < LEVEL) <= 0.07  # the heuristic IS the best arm: no significant regret
    assert regret.p_raw[by_construction].isna().all()  # and no equivalence "shown" from a zero spread


# ------------------------------------------------------------------ equivalence
QUIET = Noise(tau_seed=0.05, tau_run=0.05, sd_noise=0.7)  # well-trained runs: equivalence can be shown


def _tost_rate(gain: float, margin: float, n_cells: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    shown = []
    for i in range(n_cells):
        cell = simulate_cell(rng, {"baseline": 0.0, "heuristic": gain}, QUIET)
        c = compare_arms(
            cell.y_true, cell.arms["heuristic"], cell.arms["baseline"], cell.clusters, n_boot=N_BOOT, seed=i
        )
        shown.append(tost(c, margin) < LEVEL)
    return _rate(np.array(shown))


def test_tost_shows_equivalence_when_there_is_no_difference() -> None:
    # With 3 seeds the seed component has 2 df, so showing equivalence takes a margin of ~4 se (se ~2 points here).
    rate = _tost_rate(0.0, margin=8.0, n_cells=150, seed=4)
    print(f"TOST equivalence shown with no difference (margin 8 points): {rate:.3f}")
    assert rate >= 0.70


def test_tost_rarely_shows_equivalence_beyond_the_margin() -> None:
    gain = 0.5
    truth = true_gain(gain, QUIET)
    margin = truth / 1.1  # the true difference exceeds the margin by 10 %
    rate = _tost_rate(gain, margin=margin, n_cells=150, seed=5)
    print(f"TOST equivalence shown with true difference {truth:.2f} > margin {margin:.2f}: {rate:.3f}")
    assert rate <= 0.06


def test_null_rows_are_well_formed() -> None:
    rows = null_rows()
    sub = rows[rows.comparison == "heuristic - baseline"]
    assert sub[["estimate", "low", "high", "se", "df", "p_raw", "mde"]].notna().all().all()
    assert (sub.low <= sub.estimate).all() and (sub.estimate <= sub.high).all()
