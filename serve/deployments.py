"""The Ray Serve deployments: the HTTP ingress, the model replicas, batching and health.

    split:    HTTP -> MoodIngress (validate, decode, log-mel; CPU work, its own replicas)
                   -> MoodModel   (a BatchedScorer per replica: checkpoint loaded once,
                                   @serve.batch joins the segments of concurrent requests
                                   into one forward)
    combined: HTTP -> MoodIngress (all of the above in one replica: no second hop)

Routes: ``POST /predict`` (raw audio body or multipart field ``file``; ``?top_k=``),
``GET /healthz`` (``?deep=true`` also asks a model replica), ``GET /model`` and the
OpenAPI page at ``/docs``. Errors are ``serve.schemas.ApiError`` rendered as JSON: bad
input 4xx (serve.parsing; undecodable audio or non-finite features or predictions 422,
bad query parameters 422); overload 503 with ``Retry-After: 1`` (the ingress's decode
queue or the model deployment's bounded queue is full); a model replica that dies
mid-request 503, no answer within ``model_timeout_s`` 504 (Serve replaces the replica).
Audio shorter than one 187-frame segment (~3 s) is zero-padded to one segment.
"""

# No `from __future__ import annotations` here: Serve rebuilds the ingress methods'
# signatures for FastAPI, which then cannot resolve string annotations (Request, Optional).
import asyncio
import io
import logging
import math
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import mtlmood
from serve.config import ServeConfig, serve_config_from_mapping, serve_config_to_dict, study_selection
from serve.parsing import audio_from_request
from serve.schemas import (
    ERROR_RESPONSES,
    PREDICT_BODY,
    RETRY_AFTER,
    ApiError,
    ErrorResponse,
    PredictResponse,
    error_response,
    model_summary,
    predict_body,
)
from serve.scorer import Scorer

if TYPE_CHECKING:  # torch is imported by the replicas, not by whoever imports this module
    from mtlmood.inference import Prediction

logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="mtlmood",
    version=mtlmood.__version__,
    description="Music-mood classification (Kumar & Dahiya 2022, multi-task learning with metadata). "
    "POST audio (mp3, ogg, flac, wav) to /predict; the first 29 s are analysed.",
)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}" for err in exc.errors()
    )
    return error_response(422, "invalid_request", detail)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # 404 / 405 from routing: the same JSON shape as our own errors.
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, error, exc.detail, getattr(exc, "headers", None))


# ------------------------------------------------------------------- model scoring


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
                probs = (await asyncio.to_thread(self.scorer.score_songs, [segments]))[0]
        finally:
            self.scoring -= 1
        return self.scorer.prediction(probs, len(segments), len(features), top_k)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)  # reset from the config in __init__
    async def _batched(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """One forward for the segments of many requests, split back per request."""
        self.counts["batches"] += 1
        self.counts["batched_requests"] += len(items)
        self.counts["largest_batch"] = max(self.counts["largest_batch"], len(items))
        # In a thread: the event loop stays free for health checks and new arrivals.
        return await asyncio.to_thread(self.scorer.score_songs, items)

    @property
    def failure(self) -> Optional[str]:
        return self.scorer.failure

    def check_health(self) -> None:
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


@serve.deployment(
    name="MoodModel", health_check_period_s=10.0, health_check_timeout_s=30.0, graceful_shutdown_timeout_s=10.0
)
class MoodModel:
    """The model deployment of the ``split`` topology: a BatchedScorer per replica."""

    def __init__(self, checkpoint: str, config: Mapping[str, Any]) -> None:
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

    def card(self) -> dict[str, Any]:
        """The model card of the loaded checkpoint."""
        return self.scorer.scorer.predictor.card.to_dict()

    def info(self) -> dict[str, Any]:
        """How this replica runs the model."""
        return self.scorer.info()


# -------------------------------------------------------------------------- ingress


def _silence_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()


@serve.deployment(
    name="MoodIngress", health_check_period_s=10.0, health_check_timeout_s=30.0, graceful_shutdown_timeout_s=10.0
)
@serve.ingress(api)
class MoodIngress:
    """HTTP front: validates the request, decodes and featurises the audio, then scores it.

    ``model`` is the MoodModel handle (``split`` topology), or None (``combined``): the
    replica then loads the checkpoint itself and batches its own requests' segments, which
    saves the hop to a second replica (a copy of every request's features through the
    object store and two more event-loop passes) — the better trade on CPU-only nodes,
    where both halves compete for the same cores anyway.
    """

    def __init__(self, model: Optional[DeploymentHandle], checkpoint: str, config: Mapping[str, Any]) -> None:
        from mtlmood.checkpoint import read_card

        self.config: ServeConfig = serve_config_from_mapping(config)
        self.model = model
        self.scorer: Optional[BatchedScorer] = None if model is not None else BatchedScorer(checkpoint, self.config)
        self.topology = "split" if model is not None else "combined"
        self.card = read_card(checkpoint)
        # Decoding releases the GIL for most of its time, so threads use the replica's CPUs.
        threads = self.config.ingress.threads or max(1, int(math.ceil(self.config.ingress.num_cpus)))
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mtlmood-decode")
        self.pending_decodes = 0
        self.in_flight = 0  # /predict requests in this replica now (any stage)
        self.summary = model_summary(self.card)
        # Decode once now: imports librosa and sets up the resampler before the first request.
        self._features(_silence_wav(), "<warm-up>")
        logger.info("MoodIngress for %s (%s topology, %d decode threads)", checkpoint, self.topology, threads)

    def _features(self, data: bytes, name: str) -> np.ndarray:
        from mtlmood.features import features_from_bytes

        # The fast log-mel, as Predictor uses by default: same features within 1e-5 of librosa's.
        return features_from_bytes(data, self.card.features, name, method="fast")

    def check_health(self) -> None:
        """Called by Serve every health_check_period_s; raising makes Serve replace the replica."""
        if self.scorer is not None:
            self.scorer.check_health()

    async def _decode(self, data: bytes, name: str) -> np.ndarray:
        """Log-mel features in the decode thread pool; ApiError for undecodable or non-finite audio."""
        from mtlmood.errors import AudioDecodeError

        if self.pending_decodes >= self.config.max_pending_decodes:
            raise ApiError(503, "overloaded", "too many requests are waiting to be decoded; retry shortly", RETRY_AFTER)
        self.pending_decodes += 1
        try:
            features = await asyncio.get_running_loop().run_in_executor(self.executor, self._features, data, name)
        except AudioDecodeError as exc:
            raise ApiError(422, "undecodable_audio", exc.reason) from None
        except Exception as exc:  # decoders raise assorted types on hostile input; it is still bad input
            logger.warning("decoding %s failed: %s: %s", name, type(exc).__name__, exc)
            raise ApiError(422, "undecodable_audio", f"the audio could not be decoded ({type(exc).__name__})") from None
        finally:
            self.pending_decodes -= 1
        if not np.isfinite(features).all():
            raise ApiError(
                422, "non_finite_features", "the audio gives non-finite log-mel features (samples far outside [-1, 1]?)"
            )
        return features

    async def _score(self, features: np.ndarray, top_k: int) -> "Prediction":
        """The model deployment's prediction; ApiError 503/504 when it cannot answer."""
        if self.scorer is not None:
            return await self._score_here(features, top_k)
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        assert self.model is not None
        response = self.model.predict.remote(features, top_k, self.in_flight > 1)

        async def wait() -> "Prediction":
            return await response

        try:
            prediction = await asyncio.wait_for(wait(), timeout=self.config.model_timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(
                504, "model_timeout", f"the model did not answer within {self.config.model_timeout_s} s"
            ) from None
        except BackPressureError:
            raise ApiError(503, "overloaded", "the model's request queue is full; retry shortly", RETRY_AFTER) from None
        except (RayActorError, DeploymentUnavailableError) as exc:
            logger.warning("model replica unavailable: %s", type(exc).__name__)
            raise ApiError(
                503, "model_unavailable", "the model replica handling this request failed; retry", RETRY_AFTER
            ) from None
        except RayTaskError as exc:
            logger.error("model call failed: %s", exc)
            raise ApiError(500, "model_error", "the model failed on this request") from None
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

    @api.post(
        "/predict",
        response_model=PredictResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=PREDICT_BODY,
        summary="Mood probabilities of an audio file",
    )
    async def predict(
        self,
        request: Request,
        top_k: Optional[int] = Query(
            None, ge=0, le=10_000, description="length of the `top` list (default from config)"
        ),
    ) -> Union[JSONResponse, dict[str, Any]]:
        """Send the audio as the raw body (``Content-Type: audio/*`` or ``application/octet-stream``)
        or as a multipart upload in the field ``file``. Only the first 29 s are analysed; audio
        shorter than one ~3 s segment is zero-padded."""
        started = time.perf_counter()
        self.in_flight += 1
        try:
            data, name = await audio_from_request(request, self.config.max_body_bytes)
            features = await self._decode(data, name)
            prediction = await self._score(features, self.config.top_k if top_k is None else top_k)
        except ApiError as exc:
            return exc.response()
        except Exception:  # a bug, not bad input: log it here, answer without the traceback
            logger.exception("unexpected error in /predict")
            return error_response(500, "internal_error", "unexpected server error; see the replica log")
        finally:
            self.in_flight -= 1
        logger.debug("predicted %s in %.3f s", name, time.perf_counter() - started)
        return predict_body(prediction, self.summary)

    @api.get(
        "/healthz",
        response_model=None,
        responses={503: {"model": ErrorResponse}},
        summary="Liveness (deep=true: model too)",
    )
    async def healthz(
        self, deep: bool = Query(False, description="also ask a model replica (2 s timeout)")
    ) -> Union[JSONResponse, dict[str, Any]]:
        """200 when the ingress is up; with ``deep=true`` only when a model replica answers too,
        and then with how that replica runs the model and what it has scored (``model``)."""
        answer: dict[str, Any] = {"status": "ok", "checkpoint_id": self.card.checkpoint_id}
        if deep:
            try:
                answer["model"] = await asyncio.wait_for(self._info(), timeout=2.0)
            except Exception as exc:
                return error_response(
                    503, "model_unavailable", f"no model replica answered ({type(exc).__name__})", RETRY_AFTER
                )
        return answer

    async def _info(self) -> dict[str, Any]:
        if self.scorer is not None:
            self.scorer.check_health()
            return self.scorer.info()
        assert self.model is not None
        return await self.model.info.remote()

    @api.get("/model", summary="The model card of the served checkpoint")
    async def model_card(self) -> dict[str, Any]:
        """Labels, configs, alpha, dataset, metrics and provenance of the checkpoint, plus serving settings."""
        card = self.card.to_dict()
        card["serving"] = {
            "max_body_bytes": self.config.max_body_bytes,
            "top_k": self.config.top_k,
            "topology": self.topology,
            "precision": self.config.precision,
            "batching": serve_config_to_dict(self.config)["batching"],
        }
        if self.config.study:  # which cell and arm of the study this model is, and why
            card["study"] = study_selection(Path(self.config.study), self.config.cell)
        return card
