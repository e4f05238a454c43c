"""mtlmood.metrics: macro ROC-AUC / PR-AUC in percent with per-label scores (macro_scores)
and the weighted, vectorised variant for bootstraps (macro_metric), both equal to scikit-learn."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mtlmood.metrics import json_safe, macro_metric, macro_scores


def test_macro_scores_in_percent_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = (rng.random((60, 4)) > 0.6).astype(np.float32)
    y_prob = np.clip(y_true * 0.3 + rng.random((60, 4)) * 0.7, 0, 1)
    scores = macro_scores(y_true, y_prob, ["a", "b", "c", "d"])
    assert scores["roc_auc"] == pytest.approx(100 * roc_auc_score(y_true, y_prob, average="macro"))
    assert scores["pr_auc"] == pytest.approx(100 * average_precision_score(y_true, y_prob, average="macro"))
    assert scores["prevalence"] == pytest.approx(100 * y_true.mean())
    assert scores["n_labels"] == 4 and scores["excluded_labels"] == [] and scores["n_songs"] == 60
    assert set(scores["per_label"]) == {"a", "b", "c", "d"}
    perfect = macro_scores(y_true, y_true)
    assert perfect["roc_auc"] == 100.0 and perfect["pr_auc"] == 100.0


@pytest.mark.parametrize("ties", [False, True])
def test_macro_scores_per_label_match_sklearn(ties: bool) -> None:
    """Each label's scores equal scikit-learn's, tied probabilities included (rounded to 0.1)."""
    rng = np.random.default_rng(1)
    y_true = (rng.random((80, 5)) > 0.7).astype(np.float32)
    y_prob = np.clip(y_true * 0.2 + rng.random((80, 5)) * 0.8, 0, 1)
    if ties:
        y_prob = np.round(y_prob, 1)
    scores = macro_scores(y_true, y_prob, list("abcde"))
    for j, name in enumerate("abcde"):
        label = scores["per_label"][name]
        assert label["roc_auc"] == pytest.approx(100 * roc_auc_score(y_true[:, j], y_prob[:, j]), abs=1e-9)
        assert label["pr_auc"] == pytest.approx(100 * average_precision_score(y_true[:, j], y_prob[:, j]), abs=1e-9)
        assert label["positives"] == int(y_true[:, j].sum())


def test_training_does_not_import_scikit_learn() -> None:
    """Every Ray Train worker imports mtlmood.train: scikit-learn there cost ~1.2 CPU-s each."""
    code = "import sys, mtlmood.train; print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_labels_without_positives_or_negatives_are_excluded_and_listed() -> None:
    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=np.float32)
    y_prob = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.8, 0.2, 0.5], [0.1, 0.4, 0.5]])
    scores = macro_scores(y_true, y_prob, ["happy", "sad", "calm"])
    assert scores["excluded_labels"] == ["sad", "calm"]
    assert scores["n_labels"] == 1 and scores["roc_auc"] == 100.0 and scores["prevalence"] == 50.0
    nothing = macro_scores(np.zeros((3, 2)), np.full((3, 2), 0.5))
    assert math.isnan(nothing["roc_auc"]) and math.isnan(nothing["pr_auc"])
    assert nothing["excluded_labels"] == ["0", "1"]
    assert json_safe(nothing)["roc_auc"] is None  # NaN never reaches a JSON file


def test_non_finite_probabilities_give_nan_scores_not_a_crash() -> None:
    scores = macro_scores(np.array([[1.0], [0.0]]), np.array([[np.nan], [0.2]]))
    assert math.isnan(scores["pr_auc"]) and "diverged" in scores["warning"]


# ------------------------------------------------ weighted macro metric (bootstrap)
def _data(
    n: int,
    labels: int,
    seed: int,
    ties: bool = False,
    signal: float = 0.5,
    prevalence: tuple[float, float] = (0.1, 0.5),
) -> tuple[np.ndarray, np.ndarray]:
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


@pytest.mark.parametrize("n,labels,ties", [(60, 3, False), (250, 9, True), (400, 50, False), (37, 4, True)])
def test_weighted_macro_metric_equals_sklearn(n: int, labels: int, ties: bool) -> None:
    y, p = _data(n, labels, seed=n, ties=ties)
    ap, auc = _sk_macro(y, p)
    assert macro_metric(y, p, "pr_auc") == pytest.approx(ap, abs=1e-9)
    assert macro_metric(y, p, "roc_auc") == pytest.approx(auc, abs=1e-9)
    # scikit-learn's own macro average agrees when every label is scorable.
    assert macro_metric(y, p, "pr_auc") == pytest.approx(100 * average_precision_score(y, p, average="macro"), abs=1e-9)


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
    assert macro_metric(y, p, "pr_auc") == pytest.approx(ap) and macro_metric(y, p, "roc_auc") == pytest.approx(auc)
    assert math.isnan(macro_metric(np.zeros((10, 2), int), np.random.default_rng(0).random((10, 2))))


def test_metric_input_checks() -> None:
    y, p = _data(20, 2, seed=1)
    with pytest.raises(ValueError):
        macro_metric(y, p[:, :1])
    with pytest.raises(ValueError):
        macro_metric(y, p, metric="f1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        macro_metric(y, np.where(p > 0.5, np.nan, p))


def test_weighted_macro_metric_equals_macro_scores() -> None:
    """The bootstrap must score exactly what the trial table reports (macro_scores)."""
    y, p = _data(300, 6, seed=12, ties=True)
    y[:, 2] = 0  # unscorable labels: both implementations leave them out
    y[:, 4] = 1
    scores = macro_scores(y, p)
    assert macro_metric(y, p, "pr_auc") == pytest.approx(scores["pr_auc"], abs=1e-9)
    assert macro_metric(y, p, "roc_auc") == pytest.approx(scores["roc_auc"], abs=1e-9)
