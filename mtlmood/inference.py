"""Song-level mood prediction from a checkpoint.

    predictor = Predictor.from_checkpoint("runs/train")
    prediction = predictor.predict_file("song.mp3")       # decode -> log-mel -> segments -> mean
    prediction.top                                        # [("happy", 0.91), ...]

The steps are exposed separately so a server can batch across requests:
``segments(features)`` cuts one song into (n, T, F) windows, ``predict_segments``
scores any stack of windows (from many songs), and the song's probabilities are
the mean over its windows.

Evaluation during training uses the same steps: ``song_probabilities`` packs the
segments of many songs into shared forwards (mtlmood.train.evaluate_split), so a
song's evaluated and served probabilities come from one code path.

Speed (see benchmarks/README.md for the measurements). On CPU the Predictor runs
``FusedCNN`` (mtlmood/fused.py), an inference-only rewrite of the eval-mode network
that gives the same probabilities (|Δp| < 1e-5 in fp32, tested) with far less memory
traffic; ``precision="bf16"`` runs its convolutions in bfloat16 (|Δp| ~1e-3); fp32
stays the default. ``predict_file``/``predict_bytes`` compute log-mel with the
BLAS-free fast path of mtlmood.features (|Δ| < 1e-5 from librosa's;
``mel_method="librosa"`` for the reference).
"""

from __future__ import annotations

import collections
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from mtlmood.checkpoint import ModelCard, load_checkpoint
from mtlmood.config import FeatureConfig, ModelConfig, TrainConfig
from mtlmood.features import MEL_METHODS, MelMethod
from mtlmood.fused import DTYPES, PRECISIONS, FusedCNN, Precision
from mtlmood.model import MoodCNN

# Defaults of the functions below: the paper's ~3 s window and the evaluation batch.
_SEGMENT_FRAMES = ModelConfig.segment_frames
_BATCH = TrainConfig.eval_batch_size  # segments per forward


def segment_song(
    features: np.ndarray, segment_frames: int = _SEGMENT_FRAMES, max_frames: Optional[int] = None
) -> np.ndarray:
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
def predict_segment_batches(
    model: nn.Module, segments: np.ndarray, batch_size: int = _BATCH, autocast_dtype: Optional[torch.dtype] = None
) -> np.ndarray:
    """Per-segment mood probabilities (n, N_mood) for segments (n, T, F); the model must be in eval mode."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(segments), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(segments[start : start + batch_size])).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            mood_logits, _ = model(x, with_meta=False)
        out.append(torch.sigmoid(mood_logits.float()).cpu().numpy())
    if not out:
        return np.zeros((0, getattr(model, "n_moods", 0)), dtype=np.float32)
    return np.concatenate(out)


def song_probabilities(
    model: nn.Module,
    features_list: Iterable[np.ndarray],
    segment_frames: int = _SEGMENT_FRAMES,
    max_frames: Optional[int] = None,
    batch_size: int = _BATCH,
    autocast_dtype: Optional[torch.dtype] = None,
) -> np.ndarray:
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


@dataclass
class Prediction:
    """Mood probabilities of one song. ``duration_s`` is the audio analysed (at most the
    first ``max_seconds``); ``top`` is the ``top_k`` most probable moods, best first."""

    probabilities: dict[str, float]
    top: list[tuple[str, float]]
    n_segments: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "probabilities": self.probabilities,
            "top": [{"mood": mood, "probability": p} for mood, p in self.top],
            "n_segments": self.n_segments,
            "duration_s": self.duration_s,
        }


class Predictor:
    """A loaded model plus the feature config it was trained with. Thread-safe.

    Speed options (results within the stated tolerances of the fp32 reference path,
    ``Predictor(model, card, fused=False)``; see the module docstring):

    * ``fused``: run ``FusedCNN`` (default on CPU; |Δp| < 1e-5 in fp32). Off on GPUs,
      where cuDNN does better with the plain model.
    * ``precision``: ``"fp32"`` (default) or ``"bf16"`` (|Δp| up to ~1e-2; fast on CPUs
      with AMX / AVX-512 BF16 and on GPUs; autocast when not fused).
    * ``channels_last``: NHWC conv layout for the plain (not fused) model.
    * ``mel_method``: ``"fast"`` (default) or ``"librosa"`` (the reference the feature
      cache uses) for the features of ``predict_file``/``predict_bytes``/``predict_files``.
      The fast path is 2x faster, within 1e-5 log10 units of librosa (|Δp| ~1e-7), and
      calls no BLAS, whose idle threads would otherwise spin against torch's (see
      mtlmood.features).
    """

    def __init__(
        self,
        model: MoodCNN,
        card: ModelCard,
        batch_size: int = _BATCH,
        precision: Precision = "fp32",
        fused: Optional[bool] = None,
        channels_last: bool = False,
        mel_method: MelMethod = "fast",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if mel_method not in MEL_METHODS:
            raise ValueError(f"mel_method must be one of {MEL_METHODS}, got {mel_method!r}")
        self.model = model.eval()
        self.card = card
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.precision = precision
        self.mel_method = mel_method
        self.fused = self.device.type == "cpu" if fused is None else bool(fused)
        self._autocast: Optional[torch.dtype] = None
        if self.fused:
            self._net: nn.Module = FusedCNN(model, precision)
        else:
            if channels_last:
                model.use_channels_last()
            self._net = model
            self._autocast = DTYPES[precision] if precision != "fp32" else None
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    @classmethod
    def from_checkpoint(
        cls,
        directory: Union[str, os.PathLike],
        device: Union[str, torch.device] = "cpu",
        batch_size: int = _BATCH,
        **options: Any,
    ) -> "Predictor":
        """Load ``weights.pt`` + ``model_card.json`` (CheckpointError on any problem).

        ``options`` are the speed options of ``Predictor`` (precision, fused, channels_last, mel_method).
        """
        model, card = load_checkpoint(directory, device=device)
        return cls(model, card, batch_size=batch_size, **options)

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
        """Frames of the first ``max_seconds`` of a song (see FeatureConfig.max_frames)."""
        return self.feature_config.max_frames

    def segments(self, features: np.ndarray) -> np.ndarray:
        """(n, T, F) non-overlapping windows of a song's (t, F) features (see ``segment_song``)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_config.n_mels:
            raise ValueError(f"expected features of shape (frames, {self.feature_config.n_mels}), got {features.shape}")
        return segment_song(features, self.segment_frames, self.max_frames)

    def predict_segments(self, segments: np.ndarray) -> np.ndarray:
        """(B, N_mood) sigmoid probabilities for a (B, T, F) stack of windows, from any songs."""
        segments = np.asarray(segments, dtype=np.float32)
        if segments.ndim != 3 or segments.shape[1:] != (self.segment_frames, self.feature_config.n_mels):
            raise ValueError(
                f"expected segments of shape (B, {self.segment_frames}, "
                f"{self.feature_config.n_mels}), got {segments.shape}"
            )
        with self._lock:
            return predict_segment_batches(self._net, segments, self.batch_size, self._autocast)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """(N_mood,) song probabilities: the mean over the song's windows."""
        return self.predict_segments(self.segments(features)).mean(axis=0)

    def predict_songs(self, songs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each song's (N_mood,) probabilities from its (n_i, T, F) segments: all songs' segments
        in shared forward passes, each song the mean over its own segments (as in evaluation)."""
        if not songs:
            return []
        counts = [len(song) for song in songs]
        probs = self.predict_segments(np.concatenate(songs) if len(songs) > 1 else songs[0])
        return [part.mean(axis=0) for part in np.split(probs, np.cumsum(counts)[:-1])]

    def prediction(self, features: np.ndarray, top_k: int = 3) -> Prediction:
        """A Prediction (named probabilities, top moods, counts) from (t, F) features."""
        segments = self.segments(features)
        probs = self.predict_segments(segments).mean(axis=0)
        return self.make_prediction(probs, len(segments), features.shape[0], top_k)

    def make_prediction(self, probabilities: np.ndarray, n_segments: int, n_frames: int, top_k: int = 3) -> Prediction:
        """Wrap a song's (N_mood,) probabilities (e.g. averaged by a batching server)."""
        names = self.mood_names
        named = {name: float(p) for name, p in zip(names, probabilities)}
        order = np.argsort(-np.asarray(probabilities), kind="stable")[: max(0, top_k)]
        # Centred framing gives 1 + n_samples // hop frames, so (frames - 1) hops ~ the audio's length.
        analysed = min(max(n_frames - 1, 0), self.max_frames) / self.feature_config.frames_per_second
        return Prediction(
            probabilities=named,
            top=[(names[i], float(probabilities[i])) for i in order],
            n_segments=int(n_segments),
            duration_s=round(float(analysed), 3),
        )

    def predict_file(self, path: Union[str, os.PathLike], top_k: int = 3) -> Prediction:
        """Decode an audio file (any common codec) and predict; AudioDecodeError on bad audio."""
        from mtlmood.features import features_from_file

        return self.prediction(features_from_file(Path(path), self.feature_config, self.mel_method), top_k)

    def predict_bytes(self, data: bytes, name: str = "<bytes>", top_k: int = 3) -> Prediction:
        """Same as ``predict_file`` for an in-memory payload (e.g. an HTTP upload)."""
        from mtlmood.features import features_from_bytes

        return self.prediction(features_from_bytes(data, self.feature_config, name, self.mel_method), top_k)

    def predict_files(
        self, paths: Iterable[Union[str, os.PathLike]], top_k: int = 3, workers: int = 1, min_batch: int = 32
    ) -> Iterator[Prediction]:
        """Predictions of many files, in order, as they are ready (same results as ``predict_file``).

        ``workers`` threads decode ahead (libsndfile, soxr and the FFT release the GIL)
        while the network runs, and the segments of consecutive files share forward
        passes of at least ``min_batch`` segments. Raises AudioDecodeError at the
        first file that cannot be decoded.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        from mtlmood.features import features_from_file

        def load(path: Union[str, os.PathLike]) -> np.ndarray:
            return features_from_file(Path(path), self.feature_config, self.mel_method)

        source = iter(paths)
        ahead: collections.deque[Future] = collections.deque()
        pending: list[tuple[np.ndarray, np.ndarray]] = []  # (features, segments) waiting for a forward
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mtlmood-predict") as pool:

            def refill() -> None:
                # Bounded look-ahead: memory stays flat however many paths there are.
                while len(ahead) < 2 * max(1, workers):
                    path = next(source, None)
                    if path is None:
                        return
                    ahead.append(pool.submit(load, path))

            refill()
            while ahead or pending:
                if ahead:
                    features = ahead.popleft().result()
                    refill()
                    pending.append((features, self.segments(features)))
                    if sum(len(seg) for _, seg in pending) < min_batch and ahead:
                        continue
                songs = self.predict_songs([seg for _, seg in pending])
                for (features, seg), song in zip(pending, songs):
                    yield self.make_prediction(song, len(seg), features.shape[0], top_k)
                pending.clear()


__all__ = [
    "segment_song",
    "predict_segment_batches",
    "song_probabilities",
    "Prediction",
    "Predictor",
]
