"""Confidence intervals and paired significance tests for macro ROC-AUC / PR-AUC.

The paper reports single runs, so gains of 0.2-0.6 points may be noise. These
helpers answer two separate questions about a gain:

* *Across training seeds*: :func:`mean_ci` gives a Student-t interval of a
  metric over seeds (training randomness).
* *Across test songs*: :func:`paired_bootstrap` resamples the test songs (the
  same resample for both arms, hence "paired") and recomputes the macro metric
  of both arms on each resample (test-set sampling noise). ``resample_seeds=True``
  additionally resamples the seeds of each arm, covering both noise sources.

Every metric here is in PERCENT (0-100), the project's single convention, and
differences are in percentage points.

The bootstrap needs the macro metric on thousands of resamples, which is far too
slow through scikit-learn. A resample with replacement is exactly a vector of
integer song weights (how often each song was drawn), and scikit-learn's
average precision / ROC-AUC on the resampled rows equal the sample-weighted
metrics on the original rows. So each label is sorted once, and all resamples
are evaluated together as weighted cumulative sums (:func:`macro_metric`); the
tests check equality with scikit-learn.

Pure numpy/scipy; no torch, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence

import numpy as np
from scipy import sparse, stats

Metric = Literal["pr_auc", "roc_auc"]
METRICS: tuple[str, ...] = ("pr_auc", "roc_auc")

# Upper bound on (resamples x group columns) evaluated at once: keeps each of the
# handful of work arrays at <= 32 MB whatever n_boot, n_songs and n_labels are.
_CHUNK_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------- CIs
def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval of ``values``.

    NaN / inf values are dropped first (a trial without a test score is not a
    zero). With no value left all three results are NaN; with exactly one value
    the mean is that value and both bounds are NaN, because one seed says
    nothing about seed-to-seed variance (an interval of width 0 would lie).
    Identical values give a zero-width interval.

    Returns ``(mean, low, high)``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size == 1:
        return mean, math.nan, math.nan
    sem = float(v.std(ddof=1)) / math.sqrt(v.size)
    half = float(stats.t.ppf(0.5 + confidence / 2.0, v.size - 1)) * sem
    return mean, mean - half, mean + half


def welch_p_value(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Welch t-test p-value of mean(a) != mean(b) over seeds; NaN with < 2 finite values per side.

    Used as the across-seeds companion of the song bootstrap: a gain can be
    stable over test songs yet smaller than seed-to-seed variation.
    """
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return math.nan
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        # Zero variance on both sides: t is undefined; identical means are "no evidence".
        return 1.0 if x[0] == y[0] else 0.0
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


# ------------------------------------------------------------- fast macro metrics
def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Gather along the last axis with a shared (n,) or a per-row (R, n) index."""
    return a[..., idx] if idx.ndim == 1 else np.take_along_axis(a, idx, axis=-1)


def _tie_groups(s_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For scores sorted descending along the last axis: index of the first and last item of each item's tie group.

    Tied scores share one threshold, so metrics may only be read at group ends
    (this is what makes the result equal scikit-learn's with ties).
    """
    n = s_sorted.shape[-1]
    last = np.ones(s_sorted.shape, dtype=bool)
    last[..., :-1] = s_sorted[..., 1:] != s_sorted[..., :-1]
    first = np.ones(s_sorted.shape, dtype=bool)
    first[..., 1:] = last[..., :-1]
    pos = np.broadcast_to(np.arange(n), s_sorted.shape)
    end = np.minimum.accumulate(np.where(last, pos, n)[..., ::-1], axis=-1)[..., ::-1]
    start = np.maximum.accumulate(np.where(first, pos, -1), axis=-1)
    return np.ascontiguousarray(start), np.ascontiguousarray(end)


def _label_metric(y: np.ndarray, w: np.ndarray, start: np.ndarray, end: np.ndarray, metric: str) -> np.ndarray:
    """Weighted AP or ROC-AUC (fraction) of one label for R weight rows, items already sorted by descending score.

    y: (n,) or (R, n) 0/1; w: (R, n) non-negative weights; start/end: tie-group
    bounds, (n,) or (R, n). NaN where the label has no weighted positive or no
    weighted negative (the rule of :func:`macro_metric`).
    """
    wp = w * y  # weight of positives at each rank
    tp = np.cumsum(wp, axis=-1)
    total_pos = tp[..., -1]
    tp_end = _take(tp, end)
    if metric == "pr_auc":
        # AP = sum_k (R_k - R_{k-1}) P_k over thresholds = (1/P) sum_i w_i y_i * precision(threshold of i).
        cw_end = _take(np.cumsum(w, axis=-1), end)
        prec = np.divide(tp_end, cw_end, out=np.zeros_like(tp_end), where=cw_end > 0)
        num = np.sum(wp * prec, axis=-1)
        total_neg = np.sum(w, axis=-1) - total_pos
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((total_pos > 0) & (total_neg > 0), num / total_pos, np.nan)
    # ROC-AUC = P(score_pos > score_neg) + 0.5 P(tie): each negative counts the
    # positives strictly above its tie group plus half of those inside it;
    # this equals the trapezoidal area scikit-learn computes.
    wn = w - wp
    total_neg = np.sum(wn, axis=-1)
    tp_before = _take(tp, start) - _take(wp, start)  # cumulative positives before the group starts
    num = np.sum(wn * (tp_before + tp_end), axis=-1) * 0.5
    denom = total_pos * total_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, num / denom, np.nan)


def _check_pair(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and y_prob {p.shape} must both be (n_songs, n_labels)")
    if not np.all(np.isfinite(p)):
        raise ValueError("y_prob holds NaN or inf")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must be binary (0/1)")
    return y.astype(float), p


class _MacroEvaluator:
    """Rank structure of one (n, L) score matrix, precomputed once, to evaluate its macro metric under many weight rows.

    Per label, only the tie groups that contain a positive matter (call them
    k = 1..K_l). With song weights w (a bootstrap resample), every quantity the
    metrics need is a weighted sum of songs into those groups:
      TPinc_k  positives tied in group k                 -> TP_k = cumsum_k TPinc
      CWinc_k  all songs after group k-1 up to group k's end (AP) -> CW_k = cumsum_k CWinc
      NEG_k    negatives from group k's start up to group k+1 (ROC)
      TIE_k    negatives tied in group k (ROC)
    AP  = sum_k TPinc_k * TP_k / CW_k / T
    AUC = sum_k (TP_k * NEG_k - 0.5 * TPinc_k * TIE_k) / (T * N)
    so one sparse (columns x songs) product per chunk of resamples replaces a sort and
    several full-length cumulative sums per label and resample.
    Columns are laid out section by section ([TPinc of all labels | CWinc or
    NEG of all labels | TIE of all labels]) so the per-label cumulative sums
    become one global cumsum minus each label's starting value.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, metric: str) -> None:
        n, n_labels = y.shape
        self.metric = metric
        parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []  # per label: (songs, group, value) per section
        labels: list[int] = []
        sizes: list[int] = []
        for label in range(n_labels):
            order = np.argsort(-p[:, label], kind="stable")
            s = p[order, label]
            pos = y[order, label] > 0
            first = np.ones(n, dtype=bool)
            first[1:] = s[1:] != s[:-1]
            gid = np.cumsum(first) - 1  # tie-group id of each sorted song
            has_pos = np.bincount(gid, weights=pos.astype(float)) > 0
            k = int(has_pos.sum())
            if k == 0:
                continue  # no positive even unweighted: excluded from every macro mean
            kmap = np.cumsum(has_pos) - 1  # positive-group index of a group (valid where has_pos)
            # prev[g]: last positive group at or before g; nxt[g]: first positive group at or after g.
            prev = np.maximum.accumulate(np.where(has_pos, kmap, -1))[gid]
            nxt = np.minimum.accumulate(np.where(has_pos, kmap, k)[::-1])[::-1][gid]
            sections = [(order[pos], kmap[gid[pos]], np.ones(int(pos.sum())))]
            if metric == "pr_auc":
                keep = nxt < k  # songs after the last positive group never change AP
                sections.append((order[keep], nxt[keep], np.ones(int(keep.sum()))))
            else:
                after = ~pos & (prev >= 0)  # negatives above every positive outrank no positive
                sections.append((order[after], prev[after], np.ones(int(after.sum()))))
                tie = ~pos & has_pos[gid]
                sections.append((order[tie], kmap[gid[tie]], np.ones(int(tie.sum()))))  # x 0.5 in evaluate
            parts.append(sections)
            labels.append(label)
            sizes.append(k)
        self.labels = np.asarray(labels, dtype=int)
        self.y = y[:, self.labels]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)  # label j owns [offsets[j], offsets[j+1])
        self.total = int(self.offsets[-1])
        self.n_sections = 2 if metric == "pr_auc" else 3
        if labels:
            rows, cols, vals = [], [], []
            for j, sections in enumerate(parts):
                for sec, (songs, group, value) in enumerate(sections):
                    rows.append(sec * self.total + self.offsets[j] + group)
                    cols.append(songs)
                    vals.append(value)
            # Row c of the matrix sums the songs that feed column c; applied to all
            # resamples at once as one sparse x dense product.
            self.matrix = sparse.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(self.n_sections * self.total, n),
            )
            self._matrix32: Optional[sparse.csr_matrix] = None
            self.owner = np.repeat(np.arange(len(labels)), sizes)  # label index of each group column

    @property
    def width(self) -> int:
        """Elements per weight row of the largest work array."""
        return self.n_sections * self.total

    def _segmented_cumsum(self, a: np.ndarray) -> np.ndarray:
        """Cumulative sum along axis 1 restarting at each label's first group (a: (R, K))."""
        c = np.cumsum(a, axis=1)  # along the contiguous axis: several times faster than along axis 0
        before = np.hstack([np.zeros((a.shape[0], 1), a.dtype), c[:, self.offsets[1:-1] - 1]])  # (R, L')
        c -= before[:, self.owner]
        return c

    def evaluate(self, w: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """Macro metric in percent for each weight row of w (R, n); NaN where no label is scorable.

        dtype float32 halves the memory traffic of the bootstrap; it is exact for the
        integer counts and cumulative sums (all < 2**24 for n_songs x n_labels < 16M)
        and changes a metric by ~1e-5 points through the final divisions only.
        """
        rows = w.shape[0]
        if self.labels.size == 0:
            return np.full(rows, np.nan)
        total_pos = w @ self.y  # (R, L')
        total_neg = w.sum(axis=1, keepdims=True) - total_pos
        matrix = self.matrix
        if dtype == np.float32:
            if self._matrix32 is None:
                self._matrix32 = self.matrix.astype(np.float32)
            matrix = self._matrix32
        # The product comes out as (columns, R); one transposing copy then lets every
        # cumulative sum run along the contiguous axis, which is far cheaper overall.
        sums = np.ascontiguousarray((matrix @ np.ascontiguousarray(w.T, dtype=dtype)).T)  # (R, sections*K)
        K = self.total
        tp_inc = sums[:, :K]
        tp = self._segmented_cumsum(tp_inc)
        if self.metric == "pr_auc":
            cw = self._segmented_cumsum(sums[:, K : 2 * K])
            np.divide(tp, cw, out=cw, where=cw > 0)  # precision at each positive group; cw > 0 wherever tp_inc > 0
            contrib = np.multiply(tp_inc, cw, out=cw)
            denom = total_pos
        else:
            contrib = tp * sums[:, K : 2 * K]
            contrib -= 0.5 * tp_inc * sums[:, 2 * K :]  # tied negatives count half a positive
            denom = total_pos * total_neg
        per_label_sum = np.add.reduceat(contrib, self.offsets[:-1], axis=1).astype(np.float64)  # (R, L')
        # Same rule as mtlmood.metrics.macro_scores for both metrics: a label needs a
        # positive and a negative song to be scored (an all-positive label's AP of
        # 100% says nothing about the model).
        defined = (total_pos > 0) & (total_neg > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_label = np.where(defined, per_label_sum / denom, 0.0)
            count = defined.sum(axis=1)
            return np.where(count > 0, 100.0 * per_label.sum(axis=1) / count, np.nan)

    def evaluate_chunked(self, w: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        """:meth:`evaluate` over row chunks, so memory stays bounded for any number of resamples."""
        chunk = max(1, _CHUNK_ELEMENTS // max(self.width, 1))
        return np.concatenate([self.evaluate(w[lo : lo + chunk], dtype) for lo in range(0, w.shape[0], chunk)])


def macro_metric(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    metric: Metric = "pr_auc",
    sample_weight: np.ndarray | None = None,
) -> float | np.ndarray:
    """Macro-averaged PR-AUC (average precision, scikit-learn's definition) or ROC-AUC, in percent.

    y_true, y_prob: (n_songs, n_labels). ``sample_weight`` is None (plain
    metric, returns a float), (n,) (returns a float) or (R, n) (one weight row
    per bootstrap resample, returns (R,)). A label with no (weighted) positive
    or no negative song is excluded from the macro average instead of counting
    as 0 or 100 -- the rule of ``mtlmood.metrics.macro_scores``, so the value on
    the full test set equals the trial table's; NaN if no label is left.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y, p = _check_pair(y_true, y_prob)
    n = y.shape[0]
    single = sample_weight is None or np.ndim(sample_weight) == 1
    w = np.ones((1, n)) if sample_weight is None else np.atleast_2d(np.asarray(sample_weight, dtype=float))
    if w.shape[1] != n:
        raise ValueError(f"sample_weight has {w.shape[1]} songs, y_true {n}")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative")
    macro = _MacroEvaluator(y, p, metric).evaluate_chunked(w)
    return float(macro[0]) if single else macro


def macro_average_precision(y_true: np.ndarray, y_prob: np.ndarray, sample_weight: np.ndarray | None = None) -> float | np.ndarray:
    """Macro PR-AUC (average precision) in percent; see :func:`macro_metric`."""
    return macro_metric(y_true, y_prob, "pr_auc", sample_weight)


def macro_roc_auc(y_true: np.ndarray, y_prob: np.ndarray, sample_weight: np.ndarray | None = None) -> float | np.ndarray:
    """Macro ROC-AUC in percent; see :func:`macro_metric`."""
    return macro_metric(y_true, y_prob, "roc_auc", sample_weight)


def _macro_rowwise(y: np.ndarray, scores: np.ndarray, metric: str) -> np.ndarray:
    """Macro metric (percent) for R score matrices at once: scores (R, n, L), unit weights; returns (R,)."""
    rows, n, n_labels = scores.shape
    total = np.zeros(rows)
    count = np.zeros(rows)
    ones = np.ones((rows, n))
    for label in range(n_labels):
        order = np.argsort(-scores[:, :, label], axis=1, kind="stable")
        s_sorted = np.take_along_axis(scores[:, :, label], order, axis=1)
        start, end = _tie_groups(s_sorted)
        value = _label_metric(y[order, label], ones, start, end, metric)
        ok = np.isfinite(value)
        total += np.where(ok, value, 0.0)
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, 100.0 * total / count, np.nan)


# ------------------------------------------------------------------ paired tests
@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of ``metric(A) - metric(B)`` over test songs, in percentage points.

    diff_mean: observed difference on the full test set (mean over seeds of A's
    macro metric minus that of B). ci_low/ci_high: percentile bootstrap interval
    of the difference. p_value: two-sided, the smallest level at which that
    interval would exclude 0 (so p < 0.05 when, up to resampling granularity,
    the 95% CI excludes 0).
    n_boot: resamples actually used (a resample in which no label is scorable
    -- none has both a positive and a negative song -- is dropped).
    """

    diff_mean: float
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int = 0
    metric: str = "pr_auc"
    confidence: float = 0.95


def _as_list(probs: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(probs, np.ndarray) and probs.ndim == 2:
        return [probs]
    out = [np.asarray(p, dtype=float) for p in probs]
    if not out:
        raise ValueError("an arm needs at least one (n_songs, n_labels) probability array")
    return out


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) draw counts of n songs resampled with replacement: the weights equivalent to each resample."""
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = draws + (np.arange(n_boot) * n)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def paired_bootstrap(
    y_true: np.ndarray,
    probs_a: Sequence[np.ndarray] | np.ndarray,
    probs_b: Sequence[np.ndarray] | np.ndarray,
    metric: Metric = "pr_auc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    resample_seeds: bool = False,
) -> BootstrapResult:
    """Paired bootstrap over test songs of macro ``metric`` (percent): arm A minus arm B.

    y_true: (n, L) labels of the test songs. probs_a / probs_b: one (n, L)
    probability array per seed of each arm, rows aligned with y_true (the seed
    counts may differ). Each resample draws n songs with replacement, the SAME
    draw for both arms, so song difficulty cancels; an arm's value on a resample
    is the mean over its seeds of the macro metric, with labels lacking a
    positive or negative song in that resample excluded (identically for both arms).

    resample_seeds=True also draws each arm's seeds with replacement on every
    resample, so the interval covers training-seed noise too (coarse with 3
    seeds, but more honest than ignoring it).
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    arm_a, arm_b = _as_list(probs_a), _as_list(probs_b)
    y, _ = _check_pair(y_true, arm_a[0])
    for p in arm_a + arm_b:
        _check_pair(y, p)
    rng = np.random.default_rng(seed)
    weights = bootstrap_counts(y.shape[0], n_boot, rng)

    def arm_values(arm: list[np.ndarray]) -> tuple[float, np.ndarray]:
        evaluators = [_MacroEvaluator(y, p, metric) for p in arm]
        ones = np.ones((1, y.shape[0]))
        observed = float(np.mean([e.evaluate(ones)[0] for e in evaluators]))  # exact, float64
        per_seed = np.stack([e.evaluate_chunked(weights, np.float32) for e in evaluators])  # (S, B)
        if resample_seeds:
            seed_counts = rng.multinomial(len(arm), np.full(len(arm), 1.0 / len(arm)), size=n_boot)  # (B, S)
            return observed, np.einsum("bs,sb->b", seed_counts, per_seed) / len(arm)
        return observed, per_seed.mean(axis=0)

    obs_a, boot_a = arm_values(arm_a)
    obs_b, boot_b = arm_values(arm_b)
    diff = boot_a - boot_b
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return BootstrapResult(obs_a - obs_b, math.nan, math.nan, math.nan, 0, metric, confidence)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diff, [tail, 1.0 - tail])
    # Percentile-interval inversion with the +1 correction: never exactly 0, and
    # identical arms (all differences 0) give p = 1.
    k = diff.size
    p_value = min(1.0, 2.0 * min((1 + np.sum(diff <= 0)) / (k + 1), (1 + np.sum(diff >= 0)) / (k + 1)))
    return BootstrapResult(obs_a - obs_b, float(low), float(high), float(p_value), int(k), metric, confidence)


@dataclass(frozen=True)
class PermutationResult:
    """Paired permutation test of ``metric(A) - metric(B)`` (percentage points); two-sided p-value."""

    diff: float
    p_value: float
    n_perm: int
    metric: str = "pr_auc"


def permutation_test(
    y_true: np.ndarray,
    probs_a: Sequence[np.ndarray] | np.ndarray,
    probs_b: Sequence[np.ndarray] | np.ndarray,
    metric: Metric = "pr_auc",
    n_perm: int = 1000,
    seed: int = 0,
    batch: int = 64,
) -> PermutationResult:
    """Paired permutation test: under H0 the two arms are exchangeable per song.

    Each permutation swaps, for a random half of the songs, the predictions of
    arm A and arm B (seed k of A paired with seed k of B, so both arms need the
    same number of seeds) and recomputes the mean-over-seeds macro difference.
    p = (1 + #{|d*| >= |d_obs|}) / (n_perm + 1). Slower than the bootstrap
    (every permutation needs a new sort); a cross-check, not the default test.
    """
    arm_a, arm_b = _as_list(probs_a), _as_list(probs_b)
    if len(arm_a) != len(arm_b):
        raise ValueError(f"permutation_test pairs seeds: got {len(arm_a)} vs {len(arm_b)} seeds")
    y, _ = _check_pair(y_true, arm_a[0])
    for p in arm_a + arm_b:
        _check_pair(y, p)
    observed = float(np.mean([macro_metric(y, a, metric) - macro_metric(y, b, metric) for a, b in zip(arm_a, arm_b)]))
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    diffs: list[np.ndarray] = []
    for lo in range(0, n_perm, batch):
        size = min(batch, n_perm - lo)
        swap = rng.random((size, n)) < 0.5
        d = np.zeros(size)
        for a, b in zip(arm_a, arm_b):
            sa = np.where(swap[:, :, None], b[None], a[None])
            sb = np.where(swap[:, :, None], a[None], b[None])
            d += _macro_rowwise(y, sa, metric) - _macro_rowwise(y, sb, metric)
        diffs.append(d / len(arm_a))
    null = np.concatenate(diffs)
    null = null[np.isfinite(null)]
    # A small tolerance keeps float round-off from excluding the observed statistic itself.
    extreme = np.sum(np.abs(null) >= abs(observed) - 1e-12)
    return PermutationResult(observed, float((1 + extreme) / (null.size + 1)), int(null.size), metric)
