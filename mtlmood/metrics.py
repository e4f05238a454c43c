"""Song-level evaluation, as in the paper.

A song's probability per mood is the mean of the per-segment sigmoid outputs over
all non-overlapping ``segment_frames`` windows of its first 29 s. Scores are
macro-averaged ROC-AUC and PR-AUC (average precision, as scikit-learn defines it)
over the mood labels, **in percent**.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional, Sequence, TypedDict

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn


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


def segment_song(features: np.ndarray, segment_frames: int = 187,
                 max_frames: Optional[int] = None) -> np.ndarray:
    """Non-overlapping (n, segment_frames, n_mels) segments of the first ``max_frames`` frames.

    The remainder after the last full segment is dropped (as the paper's "all
    non-overlapping segments"). A song shorter than one segment gives one segment,
    zero-padded at the end (log-mel 0 = silence).
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"expected (frames, mels) features, got shape {features.shape}")
    if max_frames is not None:
        features = features[:max_frames]
    n = features.shape[0] // segment_frames
    if n == 0:
        padded = np.zeros((1, segment_frames, features.shape[1]), dtype=np.float32)
        padded[0, : features.shape[0]] = features
        return padded
    return np.ascontiguousarray(features[: n * segment_frames]).reshape(n, segment_frames, -1)


@torch.inference_mode()
def predict_segment_batches(model: nn.Module, segments: np.ndarray, batch_size: int = 256,
                            autocast_dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """Per-segment mood probabilities (n, N_mood) for segments (n, T, F); the model must be in eval mode."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(segments), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(segments[start: start + batch_size])).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16,
                            enabled=autocast_dtype is not None):
            mood_logits, _ = model(x, with_meta=False)
        out.append(torch.sigmoid(mood_logits.float()).cpu().numpy())
    if not out:
        return np.zeros((0, getattr(model, "n_moods", 0)), dtype=np.float32)
    return np.concatenate(out)


def song_probabilities(model: nn.Module, features_list: Iterable[np.ndarray], segment_frames: int = 187,
                       max_frames: Optional[int] = None, batch_size: int = 256,
                       autocast_dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """(n_songs, N_mood) song-level probabilities: mean of the segments' sigmoids per song.

    Segments of consecutive songs are packed into shared forward passes of
    ``batch_size`` segments, so short songs do not waste a forward each. The
    model is switched to eval mode for the call and restored afterwards.
    """
    was_training = model.training
    model.eval()
    sums: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    owners: list[int] = []  # song index of each pending segment
    n_pending = 0

    def flush() -> None:
        nonlocal n_pending
        if not pending:
            return
        probs = predict_segment_batches(model, np.concatenate(pending), batch_size, autocast_dtype)
        owner = np.asarray(owners)
        first = owner[0]
        song_sums = np.zeros((owner[-1] - first + 1, probs.shape[1]), dtype=np.float64)
        np.add.at(song_sums, owner - first, probs)
        counts = np.bincount(owner - first)
        # Songs never straddle two flushes, so each row here is a complete song.
        sums.extend(song_sums / counts[:, None])
        pending.clear()
        owners.clear()
        n_pending = 0

    try:
        for i, features in enumerate(features_list):
            segments = segment_song(features, segment_frames, max_frames)
            pending.append(segments)
            owners.extend([i] * len(segments))
            n_pending += len(segments)
            if n_pending >= batch_size:
                flush()
        flush()
    finally:
        model.train(was_training)
    if not sums:
        return np.zeros((0, getattr(model, "n_moods", 0)), dtype=np.float32)
    return np.stack(sums).astype(np.float32)


def _nan() -> float:
    return float("nan")


def macro_scores(y_true: np.ndarray, y_prob: np.ndarray,
                 label_names: Optional[Sequence[str]] = None) -> Scores:
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
    scores: Scores = {"roc_auc": _nan(), "pr_auc": _nan(), "prevalence": _nan(), "n_songs": int(n_songs),
                      "n_labels": 0, "excluded_labels": [], "per_label": {}}
    if not np.isfinite(y_prob).all():
        scores["warning"] = "non-finite probabilities (the model diverged); scores are NaN"
        return scores
    roc, pr, prevalence = [], [], []
    for j, name in enumerate(names):
        if positives[j] == 0 or positives[j] == n_songs:
            scores["excluded_labels"].append(name)
            continue
        label_roc = 100.0 * float(roc_auc_score(y_true[:, j], y_prob[:, j]))
        label_pr = 100.0 * float(average_precision_score(y_true[:, j], y_prob[:, j]))
        roc.append(label_roc)
        pr.append(label_pr)
        prevalence.append(100.0 * positives[j] / n_songs)
        scores["per_label"][name] = {"roc_auc": label_roc, "pr_auc": label_pr, "positives": int(positives[j])}
    if roc:
        scores.update(roc_auc=float(np.mean(roc)), pr_auc=float(np.mean(pr)),
                      prevalence=float(np.mean(prevalence)), n_labels=len(roc))
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
