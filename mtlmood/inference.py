"""Song-level mood prediction from a checkpoint.

    predictor = Predictor.from_checkpoint("runs/train")
    prediction = predictor.predict_file("song.mp3")       # decode -> log-mel -> segments -> mean
    prediction.top                                        # [("happy", 0.91), ...]

The steps are exposed separately so a server can batch across requests:
``segments(features)`` cuts one song into (n, T, F) windows, ``predict_segments``
scores any stack of windows (from many songs), and the song's probabilities are
the mean over its windows, exactly as in evaluation (mtlmood.metrics).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from mtlmood.checkpoint import ModelCard, load_checkpoint
from mtlmood.config import FeatureConfig
from mtlmood.metrics import predict_segment_batches, segment_song
from mtlmood.model import MoodCNN


@dataclass
class Prediction:
    """Mood probabilities of one song. ``duration_s`` is the audio analysed (at most the
    first ``max_seconds``); ``top`` is the ``top_k`` most probable moods, best first."""

    probabilities: dict[str, float]
    top: list[tuple[str, float]]
    n_segments: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"probabilities": self.probabilities,
                "top": [{"mood": mood, "probability": p} for mood, p in self.top],
                "n_segments": self.n_segments, "duration_s": self.duration_s}


class Predictor:
    """A loaded model plus the feature config it was trained with. Thread-safe."""

    def __init__(self, model: MoodCNN, card: ModelCard, batch_size: int = 256) -> None:
        self.model = model.eval()
        self.card = card
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    @classmethod
    def from_checkpoint(cls, directory: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                        batch_size: int = 256) -> "Predictor":
        """Load ``weights.pt`` + ``model_card.json`` (CheckpointError on any problem)."""
        model, card = load_checkpoint(directory, device=device)
        return cls(model, card, batch_size=batch_size)

    @property
    def mood_names(self) -> list[str]:
        return list(self.card.mood_names)

    @property
    def feature_config(self) -> FeatureConfig:
        return self.card.features

    @property
    def segment_frames(self) -> int:
        return self.card.model.segment_frames

    @property
    def max_frames(self) -> int:
        """Frames of the first ``max_seconds`` of a song: int(29 * 62.5) = 1812 by default."""
        return int(self.feature_config.max_seconds * self.feature_config.frames_per_second)

    def segments(self, features: np.ndarray) -> np.ndarray:
        """(n, T, F) non-overlapping windows of a song's (t, F) features (see metrics.segment_song)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_config.n_mels:
            raise ValueError(f"expected features of shape (frames, {self.feature_config.n_mels}), "
                             f"got {features.shape}")
        return segment_song(features, self.segment_frames, self.max_frames)

    def predict_segments(self, segments: np.ndarray) -> np.ndarray:
        """(B, N_mood) sigmoid probabilities for a (B, T, F) stack of windows, from any songs."""
        segments = np.asarray(segments, dtype=np.float32)
        if segments.ndim != 3 or segments.shape[1:] != (self.segment_frames, self.feature_config.n_mels):
            raise ValueError(f"expected segments of shape (B, {self.segment_frames}, "
                             f"{self.feature_config.n_mels}), got {segments.shape}")
        with self._lock:
            return predict_segment_batches(self.model, segments, self.batch_size)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """(N_mood,) song probabilities: the mean over the song's windows."""
        return self.predict_segments(self.segments(features)).mean(axis=0)

    def prediction(self, features: np.ndarray, top_k: int = 3) -> Prediction:
        """A Prediction (named probabilities, top moods, counts) from (t, F) features."""
        segments = self.segments(features)
        probs = self.predict_segments(segments).mean(axis=0)
        return self.make_prediction(probs, len(segments), features.shape[0], top_k)

    def make_prediction(self, probabilities: np.ndarray, n_segments: int, n_frames: int,
                        top_k: int = 3) -> Prediction:
        """Wrap a song's (N_mood,) probabilities (e.g. averaged by a batching server)."""
        names = self.mood_names
        named = {name: float(p) for name, p in zip(names, probabilities)}
        order = np.argsort(-np.asarray(probabilities), kind="stable")[: max(0, top_k)]
        # Centred framing gives 1 + n_samples // hop frames, so (frames - 1) hops ~ the audio's length.
        analysed = min(max(n_frames - 1, 0), self.max_frames) / self.feature_config.frames_per_second
        return Prediction(probabilities=named, top=[(names[i], float(probabilities[i])) for i in order],
                          n_segments=int(n_segments), duration_s=round(float(analysed), 3))

    def predict_file(self, path: Union[str, os.PathLike], top_k: int = 3) -> Prediction:
        """Decode an audio file (any common codec) and predict; AudioDecodeError on bad audio."""
        from mtlmood.features import features_from_file

        return self.prediction(features_from_file(Path(path), self.feature_config), top_k)

    def predict_bytes(self, data: bytes, name: str = "<bytes>", top_k: int = 3) -> Prediction:
        """Same as ``predict_file`` for an in-memory payload (e.g. an HTTP upload)."""
        from mtlmood.features import features_from_bytes

        return self.prediction(features_from_bytes(data, self.feature_config, name), top_k)
