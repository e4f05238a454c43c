"""Song-level macro ROC-AUC and PR-AUC, in percent: the project's one metrics module.

A song's probabilities are the mean of its segments' sigmoids (mtlmood.inference
computes them); scores are macro-averaged ROC-AUC and PR-AUC (average precision, as
scikit-learn defines it) over the mood labels, **in percent**. Two entry points to
the same numbers, side by side:

* :func:`macro_scores` -- per-label scores, prevalence and the excluded labels:
  what training, evaluation and the trial tables report.
* :func:`macro_metric` -- the same macro value under song weights, vectorised over
  many weight rows at once: what the study report's bootstrap needs. A resample with
  replacement is exactly a vector of integer song weights (how often each song was
  drawn), and scikit-learn's average precision / ROC-AUC on the resampled rows equal
  the sample-weighted metrics on the original rows. So each label is sorted once and
  all resamples are evaluated together as weighted cumulative sums, thousands of
  times faster than calling scikit-learn per resample.

Both compute with one rank-based evaluator (``_MacroEvaluator``); the tests check them
against scikit-learn's ``roc_auc_score`` and ``average_precision_score``, with and without
ties and weights. Training does not import scikit-learn for this: with scikit-learn's
metrics, every Ray Train worker of a study spent ~1.2 CPU-s more importing it (scikit-learn
pulls in scipy.stats and pandas; 2.85 against 1.6 CPU-s for torch + this module's imports,
2026-12-07, 2 cores).

A label with no positive or no negative song has no defined AUC: both leave it out of
the macro average (never a crash, never a 0 or 100 that says nothing about the model).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence, TypedDict

import numpy as np
from scipy import sparse

Metric = Literal["pr_auc", "roc_auc"]
METRICS: tuple[str, ...] = ("pr_auc", "roc_auc")

# Upper bound on (resamples x group columns) evaluated at once: keeps each of the
# handful of work arrays at <= 32 MB whatever n_boot, n_songs and n_labels are.
_CHUNK_ELEMENTS = 4_000_000


class LabelScore(TypedDict):
    roc_auc: float
    pr_auc: float
    positives: int


class Scores(TypedDict, total=False):
    """What ``macro_scores`` returns (a plain dict at runtime). All scores are percentages."""

    roc_auc: float  # macro over the scorable labels; NaN when none is scorable
    pr_auc: float
    prevalence: float  # mean positive rate of the scorable labels = PR-AUC of a chance predictor
    n_songs: int
    n_labels: int  # labels scored
    excluded_labels: list[str]  # labels with no positive or no negative song (AUC undefined)
    per_label: dict[str, LabelScore]
    warning: str


def _nan() -> float:
    return float("nan")


def macro_scores(y_true: np.ndarray, y_prob: np.ndarray, label_names: Optional[Sequence[str]] = None) -> Scores:
    """Macro ROC-AUC / PR-AUC in percent over the mood labels, plus per-label scores.

    A label with no positive or no negative song has no defined AUC: it is left
    out of the macro average and listed in ``excluded_labels`` (never a crash).
    ``prevalence`` is the mean positive rate (%) of the scored labels: the PR-AUC
    a chance predictor would get, the floor to compare PR-AUC against.
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape} must both be (songs, labels)")
    names = list(label_names) if label_names is not None else [str(i) for i in range(y_true.shape[1])]
    if len(names) != y_true.shape[1]:
        raise ValueError(f"{len(names)} label names for {y_true.shape[1]} labels")
    y_true = (y_true > 0.5).astype(np.int64)
    positives = y_true.sum(axis=0)
    n_songs = y_true.shape[0]
    scores: Scores = {
        "roc_auc": _nan(),
        "pr_auc": _nan(),
        "prevalence": _nan(),
        "n_songs": int(n_songs),
        "n_labels": 0,
        "excluded_labels": [],
        "per_label": {},
    }
    if not np.isfinite(y_prob).all():
        scores["warning"] = "non-finite probabilities (the model diverged); scores are NaN"
        return scores
    scorable = [j for j in range(len(names)) if 0 < positives[j] < n_songs]
    scores["excluded_labels"] = [name for j, name in enumerate(names) if j not in scorable]
    roc, pr, prevalence = [], [], []
    if scorable:
        y, p, once = y_true[:, scorable].astype(float), y_prob[:, scorable], np.ones((1, n_songs))
        roc = _MacroEvaluator(y, p, "roc_auc").per_label(once)[0].tolist()
        pr = _MacroEvaluator(y, p, "pr_auc").per_label(once)[0].tolist()
    for j, label_roc, label_pr in zip(scorable, roc, pr):
        prevalence.append(100.0 * positives[j] / n_songs)
        scores["per_label"][names[j]] = {"roc_auc": label_roc, "pr_auc": label_pr, "positives": int(positives[j])}
    if roc:
        scores["roc_auc"], scores["pr_auc"] = float(np.mean(roc)), float(np.mean(pr))
        scores["prevalence"], scores["n_labels"] = float(np.mean(prevalence)), len(roc)
    return scores


def json_safe(value: Any) -> Any:
    """A copy with NaN/inf floats replaced by None, so it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


# ------------------------------------------------- weighted, vectorised macro metric
def _check_pair(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y as float 0/1, p) as (n_songs, n_labels) arrays; ValueError on mismatched shapes,
    non-finite probabilities or non-binary targets."""
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
        # Per label: (songs, group, value) of each section.
        parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
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

    def evaluate(self, w: np.ndarray) -> np.ndarray:
        """Macro metric in percent for each weight row of w (R, n); NaN where no label is scorable."""
        if self.labels.size == 0:
            return np.full(w.shape[0], np.nan)
        per_label_sum, denom, defined = self._label_sums(w)
        # Same rule as macro_scores for both metrics: a label needs a positive and a
        # negative song to be scored (an all-positive label's AP of 100% says nothing
        # about the model).
        with np.errstate(invalid="ignore", divide="ignore"):
            per_label = np.where(defined, per_label_sum / denom, 0.0)
            count = defined.sum(axis=1)
            return np.where(count > 0, 100.0 * per_label.sum(axis=1) / count, np.nan)

    def per_label(self, w: np.ndarray) -> np.ndarray:
        """The metric in percent of each scorable label (columns: ``self.labels``) for each
        weight row of w (R, n); NaN where a row leaves a label without a positive or a negative."""
        if self.labels.size == 0:
            return np.full((w.shape[0], 0), np.nan)
        per_label_sum, denom, defined = self._label_sums(w)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(defined, 100.0 * per_label_sum / denom, np.nan)

    def _label_sums(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per weight row and label: the metric's numerator, its denominator, and whether the
        label has a positive and a negative song under those weights (each (R, L'))."""
        total_pos = w @ self.y  # (R, L')
        total_neg = w.sum(axis=1, keepdims=True) - total_pos
        # The product comes out as (columns, R); one transposing copy then lets every
        # cumulative sum run along the contiguous axis, which is far cheaper overall.
        sums = np.ascontiguousarray((self.matrix @ np.ascontiguousarray(w.T, dtype=np.float64)).T)  # (R, sections*K)
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
        per_label_sum = np.add.reduceat(contrib, self.offsets[:-1], axis=1)  # (R, L')
        return per_label_sum, denom, (total_pos > 0) & (total_neg > 0)

    def evaluate_chunked(self, w: np.ndarray) -> np.ndarray:
        """:meth:`evaluate` over row chunks, so memory stays bounded for any number of resamples."""
        chunk = max(1, _CHUNK_ELEMENTS // max(self.width, 1))
        return np.concatenate([self.evaluate(w[lo : lo + chunk]) for lo in range(0, w.shape[0], chunk)])


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
    as 0 or 100 -- the rule of :func:`macro_scores`, so the value on
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
