"""A non-deep reference: per-band log-mel statistics + one logistic regression per mood.

What a CNN has to beat to be worth its cost. Per song, the mean and the standard
deviation over time of each mel band of its first 29 s (what the feature cache
holds, cut exactly as evaluation cuts it) give 2 x n_mels features; they are
standardised (scaler fitted on the training songs) and every mood label gets its
own L2 logistic regression (one-vs-rest, ``class_weight=None``). The inverse
regularisation strength C is chosen from ``C_grid`` by the best validation macro
PR-AUC (ties: the smaller C, the simpler model); the test songs are scored once,
with that C, by ``mtlmood.metrics.macro_scores``, so the numbers are on the
CNN's scale (percent, labels without a positive or a negative excluded).

A label that is constant among the training songs (all 0 or all 1) has no
decision boundary to learn: it predicts its training prevalence (0 or 1).

    result = fit_reference(load_run_data(config))
    result.scores["pr_auc"], result.C
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mtlmood.metrics import Scores, json_safe, macro_scores
from mtlmood.rundata import RunData

DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0)
MAX_ITER = 5000  # far more than lbfgs needs on standardised features (sklearn's default is 100)


@dataclass
class ReferenceResult:
    """Test predictions and scores of the reference; row i of ``y_true``/``y_prob`` is ``song_ids[i]``."""

    song_ids: list[str]  # the test songs, in RunData row order
    mood_names: list[str]
    y_true: np.ndarray  # (n_test, N_mood) float32 0/1 targets
    y_prob: np.ndarray  # (n_test, N_mood) predicted probabilities
    scores: Scores  # test macro (and per-label) ROC-AUC / PR-AUC, %
    val_scores: Scores  # validation scores of the chosen C (per-label dropped)
    C: float  # the chosen inverse regularisation strength
    val_pr_auc_by_C: dict[float, float] = field(default_factory=dict)  # the whole selection
    seconds: float = 0.0  # features + fitting + scoring

    def to_dict(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready (NaN -> null)."""
        return json_safe(
            {
                "model": "log-mel mean/std + logistic regression per mood",
                "C": self.C,
                "val_pr_auc_by_C": {str(c): v for c, v in self.val_pr_auc_by_C.items()},
                "validation": self.val_scores,
                "test": self.scores,
                "mood_names": self.mood_names,
                "n_test_songs": len(self.song_ids),
                "seconds": self.seconds,
            }
        )


def song_statistics(features: np.ndarray, max_frames: int) -> np.ndarray:
    """(2 * n_mels,) per-band mean then standard deviation over the first ``max_frames`` frames
    (zeros for a song with no frame: log-mel 0 is silence)."""
    frames = np.asarray(features[:max_frames], dtype=np.float64)
    if len(frames) == 0:
        return np.zeros(2 * frames.shape[1])
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])


def split_statistics(data: RunData, split: str) -> np.ndarray:
    """(n_songs, 2 * n_mels) features of one split, in row order."""
    features = data.config.features
    max_frames = features.max_frames  # as evaluation cuts songs
    return np.stack([song_statistics(data.cache.features(song), max_frames) for song in data.song_ids(split)])


class _PerLabelLogistic:
    """One logistic regression per label; a label constant in training predicts its prevalence."""

    def __init__(self, C: float, seed: int) -> None:
        self.C, self.seed = C, seed
        self.models: list[Any] = []  # LogisticRegression, or the constant probability (float)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "_PerLabelLogistic":
        self.models = []
        for j in range(y.shape[1]):
            column = y[:, j]
            if column.min() == column.max():  # one class only: lbfgs would raise
                self.models.append(float(column.mean()))
                continue
            model = LogisticRegression(C=self.C, max_iter=MAX_ITER, random_state=self.seed)
            self.models.append(model.fit(x, column))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, n_labels) probability of each label being present."""
        columns = [np.full(len(x), m) if isinstance(m, float) else m.predict_proba(x)[:, 1] for m in self.models]
        return np.stack(columns, axis=1).astype(np.float32)


def _binary(targets: np.ndarray) -> np.ndarray:
    return (np.asarray(targets) > 0.5).astype(np.int64)


def fit_reference(data: RunData, C_grid: Sequence[float] = DEFAULT_C_GRID, seed: int = 0) -> ReferenceResult:
    """Fit on the training songs, choose C on the validation songs, score the test songs
    (see the module docstring)."""
    if not C_grid or any(not (c > 0 and math.isfinite(c)) for c in C_grid):
        raise ValueError(f"C_grid must hold positive finite numbers, got {C_grid!r}")
    started = time.perf_counter()
    names = data.mood_names
    scaler = StandardScaler().fit(split_statistics(data, "train"))
    x = {split: scaler.transform(split_statistics(data, split)) for split in ("train", "validation", "test")}
    y = {split: _binary(data.targets(split)[0]) for split in ("train", "validation", "test")}
    y_true, _ = data.targets("test")  # float32 0/1, as the CNN's SplitEvaluation holds them

    best: tuple[float, float, _PerLabelLogistic, Scores] | None = None  # (val PR-AUC, C, model, val scores)
    by_c: dict[float, float] = {}
    for c in sorted(float(c) for c in C_grid):
        model = _PerLabelLogistic(c, seed).fit(x["train"], y["train"])
        val = macro_scores(y["validation"], model.predict_proba(x["validation"]), names)
        by_c[c] = val["pr_auc"]
        score = -math.inf if math.isnan(val["pr_auc"]) else val["pr_auc"]
        if best is None or score > best[0]:  # strict: ties keep the smaller C
            best = (score, c, model, val)
    assert best is not None
    _, chosen, model, val_scores = best
    val_scores.pop("per_label", None)
    y_prob = model.predict_proba(x["test"])
    return ReferenceResult(
        song_ids=data.song_ids("test"),
        mood_names=names,
        y_true=y_true,
        y_prob=y_prob,
        scores=macro_scores(y["test"], y_prob, names),
        val_scores=val_scores,
        C=chosen,
        val_pr_auc_by_C=by_c,
        seconds=time.perf_counter() - started,
    )


__all__ = ["ReferenceResult", "fit_reference", "song_statistics", "split_statistics", "DEFAULT_C_GRID"]
