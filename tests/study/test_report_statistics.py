"""study.report: bootstrap comparisons, TOST, MDE, multiplicity (statistics), alpha* and
slope (curves), verdict rows."""

from __future__ import annotations

import gc
import math
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score
from statsmodels.stats.multitest import multipletests as _multipletests

from study.report.combine import summarize as _summary
from study.report.curves import crossfit_choice
from study.report.families import adjust_study
from study.report.statistics import (
    ArmRuns,
    Comparison,
    adjust_p_values,
    arm_estimate,
    cluster_weights,
    compare_arms,
    minimum_detectable_effect,
    tost,
)
from study.report.verdicts import ROW_COLUMNS, CellEvidence, best_alpha_runs, cell_verdicts


def multipletests(p: Any, method: str) -> Any:
    """statsmodels' ``multipletests``, the reference. Its Holm branch calls ``gc.collect()`` on
    every call: ~0.5 s each in a test process this size (the suite's 12 calls took 6.3 s,
    2026-12-07); a no-op collect there changes no result."""
    with mock.patch.object(gc, "collect", lambda *args: 0):
        return _multipletests(p, method=method)


def _labels(n: int, n_labels: int, rng: np.random.Generator) -> np.ndarray:
    y = (rng.random((n, n_labels)) < 0.3).astype(int)
    y[0], y[1] = 1, 0
    return y


def _arm(y: np.ndarray, seeds: tuple[int, ...], signal: float, rng: np.random.Generator) -> ArmRuns:
    probs = [1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.shape)))) for _ in seeds]
    return ArmRuns(seeds, np.stack(probs))


def _sk_macro(y: np.ndarray, p: np.ndarray, metric: str) -> float:
    score = average_precision_score if metric == "pr_auc" else roc_auc_score
    return 100 * float(np.mean([score(y[:, j], p[:, j]) for j in range(y.shape[1])]))


# ------------------------------------------------------------------ cluster bootstrap
def test_cluster_weights_keep_clusters_together() -> None:
    clusters = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    w = cluster_weights(clusters, 500, np.random.default_rng(0))
    assert w.shape == (500, 8)
    for name in np.unique(clusters):
        members = w[:, clusters == name]
        assert (members == members[:, :1]).all()  # every song of a drawn cluster counts once per draw
    per_cluster = np.stack([w[:, clusters == name][:, 0] for name in np.unique(clusters)], axis=1)
    assert (per_cluster.sum(axis=1) == 5).all()  # 5 clusters drawn per resample
    assert 0.9 < per_cluster.mean() / 1.0 < 1.1  # each cluster drawn once on average


def test_cluster_weights_default_to_song_resampling() -> None:
    w = cluster_weights(np.arange(50), 200, np.random.default_rng(1))
    assert (w.sum(axis=1) == 50).all() and set(np.unique(w)) <= set(range(51))


# ------------------------------------------------------------------ point estimates
@pytest.mark.parametrize("metric", ["pr_auc", "roc_auc"])
def test_point_estimates_equal_sklearn_mean_over_seeds(metric: str) -> None:
    rng = np.random.default_rng(2)
    y = _labels(120, 4, rng)
    a, b = _arm(y, (0, 1, 2), 0.8, rng), _arm(y, (0, 1, 2), 0.4, rng)
    per_a = [_sk_macro(y, p, metric) for p in a.probs]
    per_b = [_sk_macro(y, p, metric) for p in b.probs]
    est = arm_estimate(y, a, None, metric, n_boot=100)
    assert est.mean == pytest.approx(np.mean(per_a), abs=1e-9)
    assert est.per_seed == pytest.approx(per_a, abs=1e-9)
    c = compare_arms(y, a, b, None, metric, n_boot=100)
    assert c.estimate == pytest.approx(np.mean(per_a) - np.mean(per_b), abs=1e-9)
    assert c.paired
    # Paired by seed: the seed component is the unbiased variance of the per-seed differences over S.
    d = np.subtract(per_a, per_b)
    assert c.se_seed**2 == pytest.approx(np.var(d, ddof=1) / 3, rel=1e-9)
    assert c.se**2 == pytest.approx(c.se_seed**2 + c.se_song**2)
    assert c.low < c.estimate < c.high


def test_identical_arms_give_zero_difference() -> None:
    rng = np.random.default_rng(3)
    y = _labels(80, 3, rng)
    a = _arm(y, (0, 1, 2), 0.5, rng)
    c = compare_arms(y, a, a, None, n_boot=100)
    assert c.estimate == 0 and c.se == 0 and c.low == c.high == 0 and c.p_value == 1.0


def test_one_seed_gives_no_p_value() -> None:
    rng = np.random.default_rng(4)
    y = _labels(80, 3, rng)
    a, b = _arm(y, (0,), 1.0, rng), _arm(y, (0,), 0.0, rng)
    c = compare_arms(y, a, b, None, n_boot=100)
    assert math.isfinite(c.estimate) and c.estimate > 0
    assert all(math.isnan(v) for v in (c.p_value, c.se, c.low, c.high, c.df, c.mde))
    assert math.isfinite(c.se_song)  # the song spread alone is still reported
    est = arm_estimate(y, a, None, n_boot=50)
    assert math.isfinite(est.mean) and math.isnan(est.low) and math.isnan(est.se)
    assert math.isnan(compare_arms(y, _arm(y, (0, 1, 2), 1.0, rng), b, None, n_boot=50).p_value)


def test_unpaired_arms_use_both_seed_variances() -> None:
    rng = np.random.default_rng(5)
    y = _labels(100, 3, rng)
    a, b = _arm(y, (0, 1, 2), 0.8, rng), _arm(y, (3, 4, 5, 6), 0.8, rng)
    c = compare_arms(y, a, b, None, n_boot=100)
    per_a = [_sk_macro(y, p, "pr_auc") for p in a.probs]
    per_b = [_sk_macro(y, p, "pr_auc") for p in b.probs]
    assert not c.paired and (c.n_seeds_a, c.n_seeds_b) == (3, 4)
    assert c.se_seed**2 == pytest.approx(np.var(per_a, ddof=1) / 3 + np.var(per_b, ddof=1) / 4, rel=1e-9)


def test_pairing_follows_seed_identity_not_order() -> None:
    rng = np.random.default_rng(6)
    y = _labels(100, 3, rng)
    a = _arm(y, (0, 1, 2), 0.8, rng)
    b = _arm(y, (0, 1, 2), 0.5, rng)
    b_shuffled = ArmRuns((2, 0, 1), b.probs[[2, 0, 1]])
    c1, c2 = compare_arms(y, a, b, None, n_boot=100), compare_arms(y, a, b_shuffled, None, n_boot=100)
    assert c2.paired and c1.se_seed == pytest.approx(c2.se_seed) and c1.estimate == pytest.approx(c2.estimate)


def test_clustered_bootstrap_widens_the_song_component() -> None:
    """Duplicated songs (clips of one track) look like independent evidence unless resampled together."""
    rng = np.random.default_rng(7)
    base_y = _labels(60, 3, rng)
    y = np.repeat(base_y, 5, axis=0)
    a = ArmRuns((0, 1, 2), np.repeat(_arm(base_y, (0, 1, 2), 0.8, rng).probs, 5, axis=1))
    b = ArmRuns((0, 1, 2), np.repeat(_arm(base_y, (0, 1, 2), 0.8, rng).probs, 5, axis=1))
    tracks = np.repeat(np.arange(60), 5)
    song = compare_arms(y, a, b, None, n_boot=400)
    track = compare_arms(y, a, b, tracks, n_boot=400)
    assert track.se_song > 1.7 * song.se_song  # ~sqrt(5) larger
    assert track.estimate == song.estimate


def test_single_seed_component_reduces_to_the_t_test() -> None:
    se, df, _, high, p = _summary(1.3, [(0.25, 4.0)], 0.95)
    assert (se, df) == (pytest.approx(0.5), pytest.approx(4.0))
    assert p == pytest.approx(2 * stats.t.sf(1.3 / 0.5, 4), rel=1e-6)
    assert high - 1.3 == pytest.approx(stats.t.ppf(0.975, 4) * 0.5)


@settings(max_examples=40, deadline=None)
@given(
    v1=st.floats(0.01, 10),
    v2=st.floats(0.01, 10),
    df1=st.integers(1, 9),
    df2=st.integers(10, 2000),
    confidence=st.sampled_from([0.9, 0.95, 0.99]),
)
def test_p_value_and_interval_agree(v1: float, v2: float, df1: int, df2: int, confidence: float) -> None:
    """p < 1 - confidence exactly when the interval excludes 0; df reproduces the half-width."""
    components = [(v1, float(df1)), (v2, float(df2))]
    half = _summary(0.0, components, confidence)[3]
    se, df, _, _, p_edge = _summary(half, components, confidence)
    assert p_edge == pytest.approx(1 - confidence, rel=1e-5)
    assert stats.t.ppf(0.5 + confidence / 2, df) * se == pytest.approx(half, rel=1e-5)
    assert df1 - 1e-6 <= df <= df2 + 1e-6
    # Conservative: never narrower than the normal interval with the same se.
    assert half >= stats.norm.ppf(0.5 + confidence / 2) * se - 1e-9


# ------------------------------------------------------------------ TOST, MDE, multiplicity
def _comparison(estimate: float, se: float, df: float) -> Comparison:
    return Comparison(estimate, estimate - 2 * se, estimate + 2 * se, se, df, math.nan, se, 0.0, True, 3, 3, math.nan)


def test_tost_sanity() -> None:
    assert tost(_comparison(0.0, 0.1, 50), 1.0) < 1e-6  # tight around 0: equivalent
    assert tost(_comparison(0.0, 2.0, 50), 1.0) > 0.3  # too noisy to show anything
    assert tost(_comparison(1.5, 0.1, 50), 1.0) > 0.99  # clearly outside the margin
    assert tost(_comparison(0.3, 0.5, 10), 1.0) == pytest.approx(tost(_comparison(-0.3, 0.5, 10), 1.0))
    assert tost(_comparison(0.3, 0.5, 10), 2.0) < tost(_comparison(0.3, 0.5, 10), 1.0)
    # max of the two one-sided t tests
    expected = max(stats.t.sf((0.3 + 1) / 0.5, 10), stats.t.cdf((0.3 - 1) / 0.5, 10))
    assert tost(_comparison(0.3, 0.5, 10), 1.0) == pytest.approx(expected)
    assert math.isnan(tost(_comparison(0.3, math.nan, math.nan), 1.0))
    with pytest.raises(ValueError):
        tost(_comparison(0.3, 0.5, 10), 0.0)


def test_tost_with_components_matches_t_for_one_component() -> None:
    rng = np.random.default_rng(8)
    y = _labels(100, 3, rng)
    c = compare_arms(y, _arm(y, (0, 1, 2), 0.8, rng), _arm(y, (0, 1, 2), 0.7, rng), None, n_boot=100)
    assert c.components and sum(v for v, _ in c.components) == pytest.approx(c.se**2)
    p = tost(c, 5.0)
    assert 0 <= p <= 1
    lone = Comparison(
        c.estimate, c.low, c.high, c.se, c.df, c.p_value, c.se, 0.0, True, 3, 3, c.mde, ((c.se**2, c.df),)
    )
    assert tost(lone, 5.0) == pytest.approx(tost(_comparison(c.estimate, c.se, c.df), 5.0), rel=1e-5)


def test_minimum_detectable_effect() -> None:
    assert minimum_detectable_effect(1.0, 1e9) == pytest.approx(1.959964 + 0.841621, rel=1e-5)
    assert minimum_detectable_effect(2.0, 2) == pytest.approx(2 * (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)))
    assert minimum_detectable_effect(1.0, 5, power=0.5) == pytest.approx(stats.t.ppf(0.975, 5))
    assert math.isnan(minimum_detectable_effect(math.nan, 3))


@pytest.mark.parametrize("method, sm", [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjust_p_values_matches_statsmodels(method: str, sm: str) -> None:
    p = np.array([0.001, 0.04, 0.03, 0.2, 0.5, 0.012])
    assert adjust_p_values(p, method) == pytest.approx(multipletests(p, method=sm)[1])
    with_nan = np.array([0.001, np.nan, 0.04, 0.03, np.nan, 0.2, 0.5, 0.012])
    out = adjust_p_values(with_nan, method)
    assert np.isnan(out[[1, 4]]).all()
    assert out[~np.isnan(with_nan)] == pytest.approx(multipletests(p, method=sm)[1])  # NaNs not counted
    assert np.isnan(adjust_p_values([np.nan, np.nan], method)).all()
    rng = np.random.default_rng(7)  # families of any size, with ties and products past 1
    for n in (1, 2, 3, 7, 30):
        for draw in (rng.uniform(size=n), rng.choice([0.01, 0.02, 0.3, 0.9], size=n)):
            assert adjust_p_values(draw, method) == pytest.approx(multipletests(draw, method=sm)[1], abs=1e-15)
    with pytest.raises(ValueError):
        adjust_p_values(p, "bonferroni-ish")


# ------------------------------------------------------------------ verdicts
def _cell(rng: np.random.Generator, learned: bool = True) -> CellEvidence:
    y = _labels(150, 3, rng)
    signals = {"baseline": 0.5, "heuristic": 0.8, "x1/3": 0.6, "x3": 0.7, "tuned": 0.75}
    alphas = {"baseline": 0.0, "heuristic": 0.4, "x1/3": 0.4 / 3, "x3": 1.2, "tuned": 0.9}
    if learned:
        signals["learned"], alphas["learned"] = 0.7, 0.5
    arms = {k: _arm(y, (0, 1, 2), s, rng) for k, s in signals.items()}
    val = {k: 40 + 10 * s + rng.normal(size=3) for k, s in signals.items()}
    return CellEvidence("synthetic | 3 moods | artist", 0.4, y, np.arange(150) // 2, arms, alphas, val)


def test_cell_verdicts_rows() -> None:
    cell = _cell(np.random.default_rng(11))
    rows, star = cell_verdicts(cell, margin=1.0, n_boot=200)
    assert list(rows.columns) == list(ROW_COLUMNS)
    expected = [
        "heuristic - baseline",
        "best alpha - baseline",
        "best alpha - heuristic",
        "best alpha - heuristic",
        "learned - heuristic",
        "learned - baseline",
    ]
    for metric in ("pr_auc", "roc_auc"):
        assert rows[rows.metric == metric].comparison.tolist() == expected
    tost_rows = rows[rows.test == "equivalence (TOST, margin 1)"]
    assert len(tost_rows) == 2 and (tost_rows.p_raw.between(0, 1)).all()
    assert rows.p_raw.between(0, 1).all() and (rows.low <= rows.high).all()
    assert 0.4 / 3 <= star.alpha <= 1.2
    # Six arms x three shared seeds: the pooled seed model has (6 - 1)(3 - 1) = 10 df for every row.
    assert (rows.seed_df == 10).all()
    direct = compare_arms(cell.y_true, cell.arms["heuristic"], cell.arms["baseline"], cell.clusters, n_boot=200)
    row = rows[(rows.comparison == "heuristic - baseline") & (rows.metric == "pr_auc")].iloc[0]
    assert row.estimate == pytest.approx(direct.estimate)
    # With only the two arms, the pooled model is the paired comparison of those two arms.
    pair = CellEvidence(
        cell.cell,
        cell.heuristic_alpha,
        cell.y_true,
        cell.clusters,
        {k: cell.arms[k] for k in ("baseline", "heuristic")},
        {k: cell.alphas[k] for k in ("baseline", "heuristic")},
        {k: cell.val[k] for k in ("baseline", "heuristic")},
    )
    two = cell_verdicts(pair, n_boot=200, metrics=("pr_auc",))[0].iloc[0]
    assert two.p_raw == pytest.approx(direct.p_value) and two.seed_df == 2
    assert (
        "learned - baseline"
        not in cell_verdicts(_cell(np.random.default_rng(11), learned=False), n_boot=50)[0].comparison.tolist()
    )


def test_best_alpha_is_cross_fitted() -> None:
    cell = _cell(np.random.default_rng(12))
    names = ["heuristic", "x1/3", "x3", "tuned"]
    val = np.stack([cell.val[n] for n in names])
    runs = best_alpha_runs(cell, names)
    assert [names.index(name) for name, _ in runs] == crossfit_choice(val).tolist()
    rows, _ = cell_verdicts(cell, n_boot=100, metrics=("pr_auc",))
    best = rows[rows.comparison == "best alpha - baseline"].iloc[0]
    per_seed = [_sk_macro(cell.y_true, cell.arms[name].probs[i], "pr_auc") for name, i in runs]
    base = [_sk_macro(cell.y_true, p, "pr_auc") for p in cell.arms["baseline"].probs]
    assert best.estimate == pytest.approx(np.mean(per_seed) - np.mean(base), abs=1e-9)


def test_adjust_study_verdicts() -> None:
    rows = pd.DataFrame(
        {
            "cell": ["c"] * 5,
            "comparison": [
                "heuristic - baseline",
                "best alpha - baseline",
                "best alpha - heuristic",
                "best alpha - heuristic",
                "learned - baseline",
            ],
            "metric": ["pr_auc"] * 5,
            "estimate": [1.2, -0.8, 0.1, 0.1, 0.3],
            "low": [0.0] * 5,
            "high": [0.0] * 5,
            "se": [0.1] * 5,
            "df": [2.0] * 5,
            "p_raw": [0.001, 0.002, 0.6, 0.004, np.nan],
            "mde": [0.5, 0.5, 1.23, 1.23, np.nan],
            "test": ["difference", "difference", "difference", "equivalence (TOST, margin 0.5)", "difference"],
        }
    )
    out = adjust_study(rows)
    assert out.p_adjusted.iloc[:4].tolist() == pytest.approx(
        multipletests([0.001, 0.002, 0.6, 0.004], method="holm")[1]
    )
    # The MDE is held to the level the family really uses: 0.05 / 4 testable rows.
    assert (out["mde level"].iloc[:4] == 0.05 / 4).all()
    mde = (stats.t.ppf(1 - 0.05 / 8, 2) + stats.t.ppf(0.8, 2)) * 0.1
    assert out.mde.iloc[2] == pytest.approx(mde)
    assert out.verdict.tolist() == [
        "significant gain",
        "significant loss",
        f"no significant difference (MDE {mde:.1f} points)",
        "equivalent within ±0.5",
        "not testable (no seed degrees of freedom (fewer than 2 seeds in the cell's runs))",
    ]
    assert adjust_study(rows.assign(p_raw=[0.001, 0.002, 0.6, 0.3, np.nan])).verdict.iloc[3] == "equivalence not shown"


def test_regret_that_is_zero_by_construction_is_not_tested() -> None:
    """If every seed's cross-fitted choice is the heuristic, best - heuristic is 0 run for run: no equivalence claim."""
    cell = _cell(np.random.default_rng(13), learned=False)
    cell.val["heuristic"] = cell.val["heuristic"] + 100.0  # validation always prefers the heuristic
    rows, _ = cell_verdicts(cell, n_boot=100, metrics=("pr_auc",))
    regret = rows[rows.comparison == "best alpha - heuristic"]
    assert len(regret) == 2 and regret.p_raw.isna().all() and (regret.estimate == 0).all()
    assert regret.note.str.contains("by construction").all()
    verdicts = adjust_study(rows).set_index("test").verdict
    assert verdicts["equivalence (TOST, margin 0.5)"].startswith("not testable (the cross-fitted best alpha")
