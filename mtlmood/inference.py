"""Song-level mood prediction from a checkpoint.

    predictor = Predictor.from_checkpoint("runs/train")
    prediction = predictor.predict_file("song.mp3")       # decode -> log-mel -> segments -> mean
    prediction.top                                        # [("happy", 0.91), ...]

The steps are exposed separately so a server can batch across requests:
``segments(features)`` cuts one song into (n, T, F) windows, ``predict_segments``
scores any stack of windows (from many songs), and the song's probabilities are
the mean over its windows, exactly as in evaluation (mtlmood.metrics).

Speed (see benchmarks/README.md for the measurements). On CPU the Predictor runs
``FusedCNN``, an inference-only rewrite of the eval-mode network that gives the same
probabilities (|Δp| < 1e-5 in fp32, tested) with far less memory traffic:

* eval BatchNorm is a per-channel affine ``a·r + b``; folded with ReLU and max-pooling
  it becomes ``maxpool(conv_{a·w}(x))`` followed by a per-channel clamp and shift
  (``a·relu(m) = clamp(a·m, 0, inf)`` for a ≥ 0 and ``clamp(a·m, -inf, 0)`` for a < 0,
  and max-pooling commutes with both), so ReLU and BatchNorm run on the pooled,
  4× smaller tensor instead of the full-resolution conv output;
* the first conv (1 input channel, where oneDNN is slow) is an im2col matmul
  evaluated once per pooling offset, so pooling is an elementwise max of
  contiguous tensors;
* activations are channels-last, and the network runs in chunks of a few segments
  that stay in cache.

Its ``predict_file``/``predict_bytes`` compute log-mel with the BLAS-free fast path of
mtlmood.features (|Δ| < 1e-5 from librosa's; ``mel_method="librosa"`` for the reference).

``precision="bf16"`` runs the convolutions in bfloat16 (AMX / AVX-512 BF16 CPUs: the
network about 3x faster than fused fp32 there) with the first layer and the head in
fp32: the probabilities move by ~1e-3 (6e-4 measured on real clips; tested bound
2e-2); fp32 stays the default.
"""

from __future__ import annotations

import collections
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtlmood.checkpoint import ModelCard, load_checkpoint
from mtlmood.config import FeatureConfig
from mtlmood.features import MEL_METHODS, MelMethod
from mtlmood.metrics import predict_segment_batches, segment_song
from mtlmood.model import MoodCNN


Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _same_padding(kernel: int) -> tuple[int, int]:
    """(before, after) padding of PyTorch's ``padding="same"`` for a stride-1 kernel."""
    before = (kernel - 1) // 2
    return before, kernel - 1 - before


class FusedCNN(nn.Module):
    """Inference-only equivalent of an eval-mode MoodCNN's mood path (see the module docstring).

    ``forward(x (B, T, F), with_meta=False) -> (mood_logits (B, N_mood) float32, None)``,
    the MoodCNN interface, so it drops into ``metrics.predict_segment_batches``. It
    snapshots the model's weights and running statistics: rebuild it after they change.
    """

    def __init__(self, model: MoodCNN, precision: Precision = "fp32", chunk: int = 8) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        layers = list(model.trunk)
        kinds = (nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout)
        if len(layers) % 5 or not all(isinstance(m, kinds[i % 5]) for i, m in enumerate(layers)):
            raise ValueError("FusedCNN expects MoodCNN blocks: conv, ReLU, BatchNorm, max-pool, dropout")
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.chunk = max(1, int(chunk))
        self.n_moods = model.n_moods
        self.kernel = model.cfg.kernel_size
        self.pool = model.cfg.pool_size
        self.first_out = (model.cfg.segment_frames // self.pool, model.cfg.n_mels // self.pool)
        device = next(model.parameters()).device
        self.lo, self.hi, self.shift = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        self.weights = nn.ParameterList()
        with torch.no_grad():
            for i in range(0, len(layers), 5):
                conv, bn = layers[i], layers[i + 2]
                if bn.running_var is None:
                    raise ValueError("FusedCNN needs BatchNorm running statistics (track_running_stats=True)")
                gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
                beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
                a = (gamma / torch.sqrt(bn.running_var + bn.eps)).double()
                b = beta.double() - bn.running_mean.double() * a
                bias = conv.bias.double() * a if conv.bias is not None else torch.zeros_like(a)
                weight = conv.weight.double() * a.view(-1, 1, 1, 1)
                inf = torch.full_like(a, math.inf)
                # y = clamp(maxpool(conv_{a w}(x)) + a bias, lo, hi) + b, with the bias moved into the bounds.
                lo = torch.where(a >= 0, torch.zeros_like(a), -inf) - bias
                hi = torch.where(a >= 0, inf, torch.zeros_like(a)) - bias
                # The first layer (one input channel) and its epilogue stay fp32: it is cheap,
                # and the log-mel input deserves more than bf16's 8 bits of mantissa.
                dtype = torch.float32 if i == 0 else self.dtype
                if i == 0:
                    w = weight.reshape(weight.shape[0], -1).t().contiguous()  # (k*k, C) for the im2col matmul
                else:
                    w = weight.contiguous(memory_format=torch.channels_last)
                self.weights.append(nn.Parameter(w.to(device, dtype), requires_grad=False))
                for store, value in ((self.lo, lo), (self.hi, hi), (self.shift, b + bias)):
                    store.append(nn.Parameter(value.view(1, -1, 1, 1).to(device, dtype), requires_grad=False))
        self.head_weight = nn.Parameter(model.mood_head.weight.detach().float().clone(), requires_grad=False)
        self.head_bias = nn.Parameter(model.mood_head.bias.detach().float().clone(), requires_grad=False)
        self.eval()

    def _first_block(self, x: torch.Tensor) -> torch.Tensor:
        """Conv (im2col, once per pooling offset) -> max over offsets -> clamp + shift, channels-last.

        One segment at a time: its four (T/2 x F/2, C) fp32 conv outputs stay in cache,
        where a whole batch's would stream through memory several times.
        """
        k, p = self.kernel, self.pool
        (top, bottom), (h2, w2) = _same_padding(k), self.first_out
        lo, hi, shift = (t.view(1, 1, -1) for t in (self.lo[0], self.hi[0], self.shift[0]))
        out = torch.empty((x.shape[0], h2, w2, self.weights[0].shape[1]), dtype=self.dtype, device=x.device)
        padded = F.pad(x.float(), (top, bottom, top, bottom))
        patches = padded.unfold(1, k, 1).unfold(2, k, 1)  # (B, T, F, k, k) views
        for n in range(x.shape[0]):
            best: Optional[torch.Tensor] = None
            for dy in range(p):
                for dx in range(p):
                    z = patches[n, dy: h2 * p: p, dx: w2 * p: p].reshape(-1, k * k) @ self.weights[0]
                    best = z if best is None else torch.maximum(best, z, out=best)
            assert best is not None
            # The bias is folded into the bounds; the result is cast on the way out.
            torch.add(best.view(h2, w2, -1).clamp_(lo, hi), shift, out=out[n])
        return out.permute(0, 3, 1, 2)  # (B, C, H, W) logically, NHWC in memory

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        y = self._first_block(x)
        for i in range(1, len(self.weights)):
            y = F.conv2d(y, self.weights[i], None, padding="same")
            y = F.max_pool2d(y, self.pool)
            y = y.clamp_(self.lo[i], self.hi[i]).add_(self.shift[i])
        return torch.flatten(y, 1).float()

    def forward(self, x: torch.Tensor, with_meta: bool = False) -> tuple[torch.Tensor, None]:
        if x.dim() != 3:
            raise ValueError(f"expected input of shape (batch, frames, mels), got {tuple(x.shape)}")
        feats = torch.cat([self._trunk(x[i: i + self.chunk]) for i in range(0, x.shape[0], self.chunk)]) \
            if x.shape[0] > self.chunk else self._trunk(x)
        return F.linear(feats, self.head_weight, self.head_bias), None


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

    def __init__(self, model: MoodCNN, card: ModelCard, batch_size: int = 256, precision: Precision = "fp32",
                 fused: Optional[bool] = None, channels_last: bool = False,
                 mel_method: MelMethod = "fast") -> None:
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
            self._autocast = _DTYPES[precision] if precision != "fp32" else None
        self._lock = threading.Lock()  # one forward at a time: torch already uses every core

    @classmethod
    def from_checkpoint(cls, directory: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                        batch_size: int = 256, **options: Any) -> "Predictor":
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
            return predict_segment_batches(self._net, segments, self.batch_size, self._autocast)

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

        return self.prediction(features_from_file(Path(path), self.feature_config, self.mel_method), top_k)

    def predict_bytes(self, data: bytes, name: str = "<bytes>", top_k: int = 3) -> Prediction:
        """Same as ``predict_file`` for an in-memory payload (e.g. an HTTP upload)."""
        from mtlmood.features import features_from_bytes

        return self.prediction(features_from_bytes(data, self.feature_config, name, self.mel_method), top_k)

    def predict_files(self, paths: Iterable[Union[str, os.PathLike]], top_k: int = 3, workers: int = 1,
                      min_batch: int = 32) -> Iterator[Prediction]:
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
                probs = self.predict_segments(np.concatenate([seg for _, seg in pending]))
                start = 0
                for features, seg in pending:
                    song = probs[start: start + len(seg)].mean(axis=0)
                    start += len(seg)
                    yield self.make_prediction(song, len(seg), features.shape[0], top_k)
                pending.clear()
