"""Dynamic batching around a Scorer: ``@serve.batch`` joins the segments of concurrent requests.

    scorer = BatchedScorer(checkpoint, config)         # in a replica's constructor
    prediction = await scorer.score(features, top_k)   # from many requests at once

A request that finds the replica idle is scored at once (``immediate_when_idle``); the
others share forwards of up to ``max_batch_size`` requests. Used by the MoodModel replicas
(``split`` topology) and by the ingress replicas themselves (``combined``).
"""

import asyncio
import time
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from ray import serve

from serve.config import ServeConfig
from serve.scorer import Scorer
from serve.telemetry import endpoint_metrics

if TYPE_CHECKING:  # torch is imported by the replicas, not by whoever imports this module
    from mtlmood.inference import Prediction


class BatchedScorer:
    """A Scorer whose forwards ``@serve.batch`` shares between concurrent requests. Lives in the
    MoodModel replica (``split`` topology) or inside the ingress replica itself (``combined``)."""

    def __init__(self, checkpoint: str, cfg: ServeConfig) -> None:
        self.scorer = Scorer(
            checkpoint, cfg.device, cfg.precision, cfg.model.threads or max(1, int(round(cfg.model.num_cpus)))
        )
        self.batching = cfg.batching
        self.scoring = 0  # requests inside score() now: waiting in a batch or in a forward
        # What this replica has done (in /healthz?deep=true): requests scored at once because
        # the replica was idle, forwards of batches, the requests in them, the largest batch.
        self.counts = {"immediate": 0, "batches": 0, "batched_requests": 0, "largest_batch": 0}
        self._batched.set_max_batch_size(cfg.batching.max_batch_size)  # type: ignore[attr-defined]  # Ray stubs omit it
        self._batched.set_batch_wait_timeout_s(cfg.batching.batch_wait_timeout_s)  # type: ignore[attr-defined]  # ditto

    async def score(self, features: np.ndarray, top_k: int, caller_busy: bool = False) -> "Prediction":
        """One song's prediction from its (t, F) features, its segments' forward shared when batching.

        ``caller_busy``: the ingress that sends this request has others in flight (still
        decoding, say), so a batch partner is likely on its way."""
        # Cut and checked here, per request: inside a batch one bad item would fail its neighbours.
        segments = self.scorer.segments(features)
        metrics = endpoint_metrics()
        metrics.segments(len(segments))
        # A request that finds the replica idle is scored at once: waiting batch_wait_timeout_s
        # for company that is not coming only adds latency. "Idle" needs the caller's view
        # too: under load the scoring stage can be empty for a moment while the next requests
        # are still being decoded, and scoring those one by one would forgo batching
        # (measured: saturation throughput fell to the unbatched level).
        idle = self.scoring == 0 and not caller_busy
        self.scoring += 1
        try:
            if self.batching.enabled and not (idle and self.batching.immediate_when_idle):
                probs = await self._batched(segments)
            else:
                self.counts["immediate"] += 1
                started = time.perf_counter()
                probs = (await asyncio.to_thread(self.scorer.score_songs, [segments]))[0]
                metrics.forward(1, "immediate", time.perf_counter() - started)
        finally:
            self.scoring -= 1
        return self.scorer.prediction(probs, len(segments), len(features), top_k)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)  # reset from the config in __init__
    async def _batched(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """One forward for the segments of many requests, split back per request."""
        self.counts["batches"] += 1
        self.counts["batched_requests"] += len(items)
        self.counts["largest_batch"] = max(self.counts["largest_batch"], len(items))
        started = time.perf_counter()
        # In a thread: the event loop stays free for health checks and new arrivals.
        probs = await asyncio.to_thread(self.scorer.score_songs, items)
        endpoint_metrics().forward(len(items), "batched", time.perf_counter() - started)
        return probs

    @property
    def failure(self) -> Optional[str]:
        """Why the model can no longer score here (a device error), or None."""
        return self.scorer.failure

    def check_health(self) -> None:
        """Raise when the model can no longer score here (Serve then replaces the replica)."""
        self.scorer.check_health()

    def info(self) -> dict[str, Any]:
        """How this replica runs the model, what it has scored and how it batches."""
        return {
            **self.scorer.info(),
            "scored": dict(self.counts),
            "batching": {
                "enabled": self.batching.enabled,
                "max_batch_size": self.batching.max_batch_size,
                "batch_wait_timeout_s": self.batching.batch_wait_timeout_s,
                "immediate_when_idle": self.batching.immediate_when_idle,
            },
        }
