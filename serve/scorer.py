"""Decoded features in, a song's mood prediction out: a thin layer over ``mtlmood.inference.Predictor``.

    scorer = Scorer(checkpoint, device="cpu", precision="fp32", threads=1)
    segments = scorer.segments(features)           # Predictor.segments: (n, T, F) windows of one song
    probs = scorer.score_songs([segments, ...])    # one forward for many songs, a mean per song
    prediction = scorer.prediction(probs[0], len(segments), len(features), top_k=3)  # Predictor.make_prediction

Every number comes from Predictor, so the endpoint answers exactly what ``mtlmood
predict`` does. No Ray here: the Serve deployments (serve.deployments) batch requests
around a Scorer, and tests can use one directly. A device error that poisons a CUDA
context is remembered, so the replica's health check can have Serve replace it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from mtlmood.inference import Prediction


class Scorer:
    """A checkpoint loaded once on one device (``auto``: cuda when visible), with one warm-up forward."""

    def __init__(self, checkpoint: str, device: str = "auto", precision: str = "fp32", threads: int = 1) -> None:
        import torch

        from mtlmood.inference import Predictor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            # Say it explicitly rather than trust OMP_NUM_THREADS: replicas sharing a node
            # must not each start one thread per core.
            torch.set_num_threads(max(1, threads))
        self.predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
        self.device = device
        self.failure: Optional[str] = None  # set by a device error the process cannot recover from
        shape = (self.predictor.segment_frames, self.predictor.feature_config.n_mels)
        # One forward now, so the first request does not pay for lazy kernel setup.
        self.predictor.predict_segments(np.zeros((1, *shape), dtype=np.float32))

    def segments(self, features: np.ndarray) -> np.ndarray:
        """(n >= 1, T, F) windows of one song's (t, F) features; ValueError for another shape."""
        # Arrays from the object store are read-only; torch wants writable memory (copy if so).
        return self.predictor.segments(np.require(features, dtype=np.float32, requirements=["C", "W"]))

    def score_songs(self, songs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each song's (N_mood,) probabilities, all songs in shared forwards (``Predictor.predict_songs``)."""
        try:
            return self.predictor.predict_songs(songs)
        except RuntimeError as exc:
            # A CUDA error (illegal access, device-side assert, lost GPU) poisons the context for
            # good: mark the replica so check_health has Serve replace it. (An OOM is not one.)
            if "CUDA error" in str(exc):
                self.failure = f"{type(exc).__name__}: {exc}"
            raise

    def prediction(self, probabilities: np.ndarray, n_segments: int, n_frames: int, top_k: int) -> "Prediction":
        """Named probabilities, the top moods and the seconds analysed (``Predictor.make_prediction``)."""
        return self.predictor.make_prediction(probabilities, n_segments, n_frames, top_k)

    def check_health(self) -> None:
        """Raise when this scorer can no longer score (Serve then replaces its replica)."""
        if self.failure is not None:
            raise RuntimeError(f"model replica unusable after a device error: {self.failure}")

    def info(self) -> dict[str, Any]:
        """How the model runs here."""
        import torch

        return {"device": self.device, "torch_threads": torch.get_num_threads(), "precision": self.predictor.precision}
