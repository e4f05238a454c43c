"""The deployments behind the router: ingress replicas (decode, featurise, score) and model replicas.

    split:    MoodRouter -> MoodIngress (decode, log-mel; CPU work, its own replicas)
                         -> MoodModel   (a BatchedScorer per replica: checkpoint loaded once,
                                         @serve.batch joins the segments of concurrent requests)
    combined: MoodRouter -> MoodIngress (decode, log-mel and a BatchedScorer of its own)

The router (serve.router) owns HTTP; an ingress replica gets the audio bytes and answers an
``Answer`` (a prediction body or an error), never an exception: undecodable audio or
non-finite features or predictions 422; its decode queue full 503 ``overloaded``; the model
replica it called died 503 ``replica_unavailable`` (serve.remote), its device failed 503
``model_unavailable``; no forward within ``model_timeout_s`` 504 ``model_timeout``. Audio
shorter than one 187-frame segment (~3 s) is zero-padded to one segment.
"""

import asyncio
import io
import logging
import math
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from mtlmood.records import model_summary, response_body
from serve.batching import BatchedScorer
from serve.config import REPLICA_LIFECYCLE, ServeConfig, serve_config_from_mapping
from serve.remote import call_deployment
from serve.schemas import RETRY_AFTER, Answer, ApiError
from serve.telemetry import endpoint_metrics

if TYPE_CHECKING:  # torch is imported by the replicas, not by whoever imports this module
    from mtlmood.inference import Prediction

logger = logging.getLogger("ray.serve")


@serve.deployment(
    name="MoodModel",
    **REPLICA_LIFECYCLE,
)
class MoodModel:
    """The model deployment of the ``split`` topology: a BatchedScorer per replica."""

    def __init__(self, checkpoint: str, config: Mapping[str, Any]) -> None:
        from mtlmood.checkpoint_pointer import local_checkpoint

        checkpoint = str(local_checkpoint(checkpoint))  # a URI: this node's copy, downloaded once
        cfg = serve_config_from_mapping(config)
        self.scorer = BatchedScorer(checkpoint, cfg)
        loaded = self.scorer.scorer
        logger.info(
            "MoodModel loaded %s (%s, %d moods) on %s, batching=%s",
            checkpoint,
            loaded.predictor.card.checkpoint_id,
            len(loaded.predictor.mood_names),
            loaded.device,
            cfg.batching,
        )

    async def predict(self, features: np.ndarray, top_k: int, caller_busy: bool = False) -> "Prediction":
        """One song's prediction from its (t, F) log-mel features."""
        return await self.scorer.score(features, top_k, caller_busy)

    def check_health(self) -> None:
        """Called by Serve every health_check_period_s; raising makes Serve replace the replica."""
        self.scorer.check_health()

    def info(self) -> dict[str, Any]:
        """How this replica runs the model."""
        return self.scorer.info()


def _silence_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


@serve.deployment(
    name="MoodIngress",
    **REPLICA_LIFECYCLE,
)
class MoodIngress:
    """Decodes and featurises the audio the router relays, then scores it.

    ``model`` is the MoodModel handle (``split`` topology), or None (``combined``): the
    replica then loads the checkpoint itself and batches its own requests' segments, which
    saves the hop to a second replica (a copy of every request's features through the
    object store and two more event-loop passes) — the better trade on CPU-only nodes,
    where both halves compete for the same cores anyway. (The name predates the router:
    it is the first stage that works on the audio, configured by ``ingress``.)
    """

    def __init__(self, model: Optional[DeploymentHandle], checkpoint: str, config: Mapping[str, Any]) -> None:
        from mtlmood.checkpoint import read_card
        from mtlmood.checkpoint_pointer import local_checkpoint

        checkpoint = str(local_checkpoint(checkpoint))  # a URI: this node's copy, downloaded once
        self.config: ServeConfig = serve_config_from_mapping(config)
        self.model = model
        self.scorer: Optional[BatchedScorer] = None if model is not None else BatchedScorer(checkpoint, self.config)
        self.card = read_card(checkpoint)
        # Decoding releases the GIL for most of its time, so threads use the replica's CPUs.
        threads = self.config.ingress.threads or max(1, int(math.ceil(self.config.ingress.num_cpus)))
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mtlmood-decode")
        self.pending_decodes = 0
        self.in_flight = 0  # predict() calls in this replica now (any stage)
        self.summary = model_summary(self.card)
        # Decode once now: imports librosa and sets up the resampler before the first request.
        self._features(_silence_wav(), "<warm-up>")
        topology = "split" if model is not None else "combined"
        logger.info("MoodIngress for %s (%s topology, %d decode threads)", checkpoint, topology, threads)

    def _features(self, data: bytes, name: str, seconds: Optional[dict[str, float]] = None) -> np.ndarray:
        """features_from_bytes in its two stages, each timed into ``seconds`` (decode, features)."""
        from mtlmood.audio import load_audio_bytes
        from mtlmood.features import log_mel

        seconds = {} if seconds is None else seconds
        started = time.perf_counter()
        samples = load_audio_bytes(data, self.card.features, name)
        decoded = time.perf_counter()
        seconds["decode"] = decoded - started
        # The fast log-mel, as Predictor uses by default: same features within 1e-5 of librosa's.
        features = log_mel(samples, self.card.features, method="fast")
        seconds["features"] = time.perf_counter() - decoded
        return features

    def check_health(self) -> None:
        """Called by Serve every health_check_period_s; raising makes Serve replace the replica."""
        if self.scorer is not None:
            self.scorer.check_health()

    async def predict(self, data: bytes, name: str, top_k: int) -> Answer:
        """The answer to one /predict request whose body the router has checked: a prediction
        (200) or an error (4xx/5xx), as data. Never raises (a bug becomes a 500 answer)."""
        self.in_flight += 1
        try:
            features = await self._decode(data, name)
            started = time.perf_counter()
            prediction = await self._score(features, top_k)
            endpoint_metrics().stage("model", time.perf_counter() - started)
            return Answer(200, response_body(prediction, self.summary))
        except ApiError as exc:
            return exc.answer()
        except Exception:  # a bug, not bad input: log it here, answer without the traceback
            logger.exception("unexpected error in predict")
            return Answer(500, {"error": "internal_error", "detail": "unexpected server error; see the replica log"})
        finally:
            self.in_flight -= 1

    async def _decode(self, data: bytes, name: str) -> np.ndarray:
        """Log-mel features in the decode thread pool; ApiError for undecodable or non-finite audio."""
        from mtlmood.errors import AudioDecodeError

        if self.pending_decodes >= self.config.max_pending_decodes:
            raise ApiError(503, "overloaded", "too many requests are waiting to be decoded; retry shortly", RETRY_AFTER)
        self.pending_decodes += 1
        seconds: dict[str, float] = {}  # the stages' work in the decode thread (not its queue)
        try:
            features = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._features, data, name, seconds
            )
        except AudioDecodeError as exc:
            raise ApiError(422, "undecodable_audio", exc.reason) from None
        except Exception as exc:  # decoders raise assorted types on hostile input; it is still bad input
            logger.warning("decoding %s failed: %s: %s", name, type(exc).__name__, exc)
            raise ApiError(422, "undecodable_audio", f"the audio could not be decoded ({type(exc).__name__})") from None
        finally:
            self.pending_decodes -= 1
            for stage, took in list(seconds.items()):  # the stages that finished, even if the next failed
                endpoint_metrics().stage(stage, took)
        if not np.isfinite(features).all():
            raise ApiError(
                422, "non_finite_features", "the audio gives non-finite log-mel features (samples far outside [-1, 1]?)"
            )
        return features

    async def _score(self, features: np.ndarray, top_k: int) -> "Prediction":
        """The model's prediction, here (combined) or from a model replica (split); ApiError 5xx when it fails."""
        if self.scorer is not None:
            return await self._score_here(features, top_k)
        assert self.model is not None
        prediction = await call_deployment(
            self.model.predict.remote(features, top_k, self.in_flight > 1),
            self.config.model_timeout_s,
            "model",
            timeout_error="model_timeout",
            failure_error="model_error",
        )
        return self._checked(prediction)

    async def _score_here(self, features: np.ndarray, top_k: int) -> "Prediction":
        """The combined topology: this replica's own (batched) forward, with the same 504/503/500."""
        assert self.scorer is not None
        try:
            prediction = await asyncio.wait_for(
                self.scorer.score(features, top_k, self.in_flight > 1), timeout=self.config.model_timeout_s
            )
        except asyncio.TimeoutError:
            raise ApiError(
                504, "model_timeout", f"the model did not answer within {self.config.model_timeout_s} s"
            ) from None
        except Exception as exc:
            if self.scorer.failure is not None:  # the device is gone: Serve replaces this replica
                raise ApiError(503, "model_unavailable", "the model replica failed; retry", RETRY_AFTER) from None
            logger.error("model call failed: %s: %s", type(exc).__name__, exc)
            raise ApiError(500, "model_error", "the model failed on this request") from None
        return self._checked(prediction)

    @staticmethod
    def _checked(prediction: "Prediction") -> "Prediction":
        if not np.isfinite(np.fromiter(prediction.probabilities.values(), dtype=np.float64)).all():
            raise ApiError(422, "non_finite_prediction", "the audio gives non-finite model outputs")
        return prediction

    async def info(self) -> dict[str, Any]:
        """How the model runs behind this replica (raises when it cannot score: the router's
        deep health check then answers 503)."""
        if self.scorer is not None:
            self.scorer.check_health()
            return self.scorer.info()
        assert self.model is not None
        return await self.model.info.remote()
