"""mtlmood.significance: t-intervals, the fast macro metrics (== scikit-learn), paired bootstrap and permutation tests."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from mtlmood.significance import (
    macro_average_precision,
    macro_metric,
    macro_roc_auc,
    mean_ci,
    paired_bootstrap,
    permutation_test,
    welch_p_value,
)


def _data(n: int, labels: int, seed: int, ties: bool = False, signal: float = 0.5,
          prevalence: tuple[float, float] = (0.1, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < rng.uniform(*prevalence, labels)).astype(int)
    y[0], y[1] = 1, 0  # every label has a positive and a negative
    p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.shape))))
    return y, (np.round(p, 1) if ties else p)


def _sk_macro(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """scikit-learn's macro AP and ROC-AUC (percent) over the labels with both classes."""
    ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    ap = np.mean([average_precision_score(y[:, j], p[:, j]) for j in ok])
    auc = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in ok])
    return 100 * ap, 100 * auc


# ------------------------------------------------------------------ mean_ci
def test_mean_ci_matches_scipy_t_interval() -> None:
    v = np.array([71.2, 74.6, 73.1, 72.8])
    mean, lo, hi = mean_ci(v, 0.95)
    ref = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert mean == pytest.approx(v.mean()) and (lo, hi) == pytest.approx(ref)
    assert mean_ci(v, 0.9)[2] < hi  # narrower at lower confidence


def test_mean_ci_edge_cases() -> None:
    m, lo, hi = mean_ci([70.0])
    assert m == 70.0 and math.isnan(lo) and math.isnan(hi)  # one seed: no interval, not a zero-width one
    assert all(math.isnan(x) for x in mean_ci([]))
    assert mean_ci([70.0, float("nan"), 72.0])[0] == pytest.approx(71.0)  # NaN (failed trial) dropped
    assert mean_ci([5.0, 5.0, 5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], confidence=95)


def test_welch_p_value() -> None:
    assert math.isnan(welch_p_value([1.0], [2.0, 3.0]))
    assert welch_p_value([70, 71, 72], [80, 81, 82]) < 0.01
    assert welch_p_value([70, 71, 72], [70, 71, 72]) == pytest.approx(1.0)


# ------------------------------------------------------- fast macro metrics
@pytest.mark.parametrize("n,labels,ties", [(60, 3, False), (250, 9, True), (400, 50, False), (37, 4, True)])
def test_fast_macro_metrics_equal_sklearn(n: int, labels: int, ties: bool) -> None:
    y, p = _data(n, labels, seed=n, ties=ties)
    ap, auc = _sk_macro(y, p)
    assert macro_average_precision(y, p) == pytest.approx(ap, abs=1e-9)
    assert macro_roc_auc(y, p) == pytest.approx(auc, abs=1e-9)
    # scikit-learn's own macro average agrees when every label is scorable.
    assert macro_average_precision(y, p) == pytest.approx(100 * average_precision_score(y, p, average="macro"), abs=1e-9)


def test_weights_equal_resampled_rows() -> None:
    """A bootstrap resample is a vector of draw counts: weighted metric == metric on the duplicated rows."""
    y, p = _data(120, 6, seed=3, ties=True)
    rng = np.random.default_rng(0)
    w = rng.multinomial(120, np.full(120, 1 / 120), size=5).astype(float)  # 5 resamples at once
    got_ap = macro_metric(y, p, "pr_auc", w)
    got_auc = macro_metric(y, p, "roc_auc", w)
    for b in range(5):
        rows = np.repeat(np.arange(120), w[b].astype(int))
        ap, auc = _sk_macro(y[rows], p[rows])
        assert got_ap[b] == pytest.approx(ap, abs=1e-9) and got_auc[b] == pytest.approx(auc, abs=1e-9)


def test_unscorable_labels_are_excluded() -> None:
    y, p = _data(80, 4, seed=5)
    y[:, 1] = 0  # no positive
    y[:, 3] = 1  # no negative
    ap, auc = _sk_macro(y, p)  # over labels 0 and 2 only
    assert macro_average_precision(y, p) == pytest.approx(ap) and macro_roc_auc(y, p) == pytest.approx(auc)
    assert math.isnan(macro_average_precision(np.zeros((10, 2), int), np.random.default_rng(0).random((10, 2))))


def test_metric_input_checks() -> None:
    y, p = _data(20, 2, seed=1)
    with pytest.raises(ValueError):
        macro_metric(y, p[:, :1])
    with pytest.raises(ValueError):
        macro_metric(y, p, metric="f1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        macro_metric(y, np.where(p > 0.5, np.nan, p))


# --------------------------------------------------------- paired bootstrap
def test_bootstrap_identical_arms() -> None:
    y, p = _data(200, 5, seed=7)
    r = paired_bootstrap(y, [p, p], [p, p], n_boot=300)
    assert r.diff_mean == 0 and r.ci_low == 0 and r.ci_high == 0 and r.p_value == 1.0
    assert r.n_boot == 300


def test_bootstrap_detects_a_clear_difference_with_sign() -> None:
    rng = np.random.default_rng(11)
    y, _ = _data(300, 5, seed=11)
    strong = [1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(size=y.shape)))) for _ in range(3)]
    weak = [1 / (1 + np.exp(-(0.2 * (2 * y - 1) + rng.normal(size=y.shape)))) for _ in range(3)]
    r = paired_bootstrap(y, strong, weak, n_boot=500)
    assert r.p_value < 0.01 and 0 < r.ci_low < r.diff_mean < r.ci_high
    expected = np.mean([macro_average_precision(y, s) for s in strong]) - np.mean([macro_average_precision(y, w) for w in weak])
    assert r.diff_mean == pytest.approx(expected)
    flipped = paired_bootstrap(y, weak, strong, n_boot=500)
    assert flipped.diff_mean == pytest.approx(-r.diff_mean) and flipped.ci_high < 0
    auc = paired_bootstrap(y, strong, weak, metric="roc_auc", n_boot=200)
    assert auc.p_value < 0.01 and auc.metric == "roc_auc"


def test_bootstrap_null_is_not_significant_and_deterministic() -> None:
    """Two arms of the same quality (independent noise) rarely differ significantly; a fixed seed repeats."""
    rng = np.random.default_rng(2)
    y, _ = _data(300, 5, seed=2)
    a = [1 / (1 + np.exp(-(0.8 * (2 * y - 1) + rng.normal(size=y.shape)))) for _ in range(3)]
    b = [1 / (1 + np.exp(-(0.8 * (2 * y - 1) + rng.normal(size=y.shape)))) for _ in range(3)]
    r1 = paired_bootstrap(y, a, b, n_boot=400, seed=5)
    assert r1.ci_low < 0 < r1.ci_high and r1.p_value > 0.05
    assert paired_bootstrap(y, a, b, n_boot=400, seed=5) == r1


def test_bootstrap_resample_seeds_widens_the_interval() -> None:
    """When seeds disagree a lot, resampling them too must give a wider interval than songs alone."""
    rng = np.random.default_rng(4)
    y, _ = _data(300, 4, seed=4)
    a = [1 / (1 + np.exp(-(s * (2 * y - 1) + rng.normal(size=y.shape)))) for s in (0.3, 1.0, 1.8)]
    b = [1 / (1 + np.exp(-(1.0 * (2 * y - 1) + rng.normal(size=y.shape)))) for _ in range(3)]
    songs = paired_bootstrap(y, a, b, n_boot=400)
    both = paired_bootstrap(y, a, b, n_boot=400, resample_seeds=True)
    assert both.ci_high - both.ci_low > 1.5 * (songs.ci_high - songs.ci_low)
    assert both.diff_mean == songs.diff_mean


def test_bootstrap_is_fast_at_study_scale() -> None:
    """2000 test songs x 50 labels at MTG-Jamendo-like prevalence (2-8%), 2000 resamples: seconds, not minutes."""
    y, p = _data(2000, 50, seed=9, prevalence=(0.02, 0.08))
    _, q = _data(2000, 50, seed=10, prevalence=(0.02, 0.08))
    start = time.perf_counter()
    r = paired_bootstrap(y, [p], [q], n_boot=2000)
    assert time.perf_counter() - start < 20  # < 1 s on one free core; generous for a shared CI machine
    assert r.n_boot == 2000


# ------------------------------------------------------- permutation test
def test_permutation_test() -> None:
    rng = np.random.default_rng(8)
    y, p = _data(150, 4, seed=8)
    same = permutation_test(y, [p], [p], n_perm=100)
    assert same.diff == 0 and same.p_value == 1.0
    weak = 1 / (1 + np.exp(-(0.1 * (2 * y - 1) + rng.normal(size=y.shape))))
    strong = 1 / (1 + np.exp(-(2.0 * (2 * y - 1) + rng.normal(size=y.shape))))
    r = permutation_test(y, [strong], [weak], n_perm=200)
    assert r.p_value < 0.01 and r.diff == pytest.approx(macro_average_precision(y, strong) - macro_average_precision(y, weak))
    with pytest.raises(ValueError):
        permutation_test(y, [p, p], [p], n_perm=10)


def test_fast_metrics_equal_the_trial_tables_metric() -> None:
    """The bootstrap must score exactly what the trial table reports (mtlmood.metrics.macro_scores)."""
    pytest.importorskip("torch")  # mtlmood.metrics imports torch
    from mtlmood.metrics import macro_scores

    y, p = _data(300, 6, seed=12, ties=True)
    y[:, 2] = 0  # unscorable labels: both implementations leave them out
    y[:, 4] = 1
    scores = macro_scores(y, p)
    assert macro_average_precision(y, p) == pytest.approx(scores["pr_auc"], abs=1e-9)
    assert macro_roc_auc(y, p) == pytest.approx(scores["roc_auc"], abs=1e-9)
