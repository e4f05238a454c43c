"""The Serve application: a FastAPI ingress in front of a batched model.

Two topologies (``ServeConfig.topology``; ``auto`` picks split when the model replicas
get GPUs, combined otherwise):

    split:    HTTP -> MoodIngress (validate, decode, log-mel, segment; CPU work, its own replicas)
                   -> MoodModel   (checkpoint loaded once per replica; @serve.batch joins the
                                   segments of concurrent requests into one forward)
    combined: HTTP -> MoodIngress (all of the above in one replica: no second hop)

Routes: ``POST /predict`` (raw audio body or multipart field ``file``; ``?top_k=``),
``GET /healthz``, ``GET /model`` and the OpenAPI page at ``/docs``.

Every error is JSON ``{"error": <code>, "detail": <message>}`` and never carries a
traceback. Bad input is a 4xx: empty body 400, malformed multipart 400, unsupported
Content-Type 415, body over ``max_body_bytes`` 413 (Content-Length first, then the
bytes actually read), undecodable audio or audio that gives non-finite features or
predictions 422, bad query parameters 422. Overload is 503 (``Retry-After: 1``): the
ingress's decode queue is full, or the model deployment's bounded queue is. (Only if
every ingress replica also has max_ongoing_requests in flight *and* its Serve queue is
full does Serve's proxy refuse the request itself, with a plain-text 503.) A model
replica that dies mid-request gives 503 for the requests it held, and 504 if the
model does not answer within ``model_timeout_s``; Serve replaces the replica.

Audio shorter than one 187-frame segment (~3 s) is zero-padded to one segment (as in
evaluation); silence is a valid input with a valid prediction.
"""

# No `from __future__ import annotations` here: Serve rebuilds the ingress methods'
# signatures for FastAPI, which then cannot resolve string annotations (Request, Optional).
import asyncio
import io
import logging
import math
import time
import wave
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Optional, Union

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import mtlmood
from serve.config import (DeploymentSettings, ServeConfig, resolve_checkpoint, study_selection, serve_config_from_mapping,
                          serve_config_to_dict)

logger = logging.getLogger("ray.serve")

AUDIO_TYPES = ("application/octet-stream",)  # plus every audio/* type
MULTIPART = "multipart/form-data"
RETRY_AFTER = {"Retry-After": "1"}


# --------------------------------------------------------------------------- errors

class ApiError(Exception):
    """A request we refuse, with its HTTP status; rendered as ``{"error", "detail"}``."""

    def __init__(self, status: int, error: str, detail: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.error, self.detail, self.headers)


def error_response(status: int, error: str, detail: Any, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


# ----------------------------------------------------------------- OpenAPI schema

class MoodScore(BaseModel):
    mood: str
    probability: float


class ModelSummary(BaseModel):
    checkpoint_id: str
    dataset: str
    labels: list[str] = Field(description="mood labels, in the model's output order")
    metadata: str = Field(description="metadata task(s) trained alongside the moods ('none' = baseline)")
    n_meta: int
    alpha: float = Field(description="weight of the metadata loss the model was trained with")
    code_version: str


class PredictResponse(BaseModel):
    moods: dict[str, float] = Field(description="probability of every mood label (mean over segments)")
    top: list[MoodScore] = Field(description="the top_k most probable moods, best first")
    n_segments: int = Field(description="187-frame (~3 s) segments averaged; short audio is padded to one")
    duration_s: float = Field(description="seconds of audio analysed (at most the first max_seconds)")
    model: ModelSummary


class ErrorResponse(BaseModel):
    error: str
    detail: Any


_ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "empty body, malformed multipart, or no `file` field",
    413: "body larger than max_body_bytes",
    415: "Content-Type is not audio/*, application/octet-stream or multipart/form-data",
    422: "undecodable audio, non-finite features/predictions, or an invalid query parameter",
    503: "overloaded (queue full) or model replica unavailable; retry after Retry-After seconds",
    504: "the model did not answer within model_timeout_s",
}.items()}

_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "audio/*": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    MULTIPART: {"schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}}},
}}}

api = FastAPI(
    title="mtlmood",
    version=mtlmood.__version__,
    description="Music-mood classification (Kumar & Dahiya 2022, multi-task learning with metadata). "
                "POST audio (mp3, ogg, flac, wav) to /predict; the first 29 s are analysed.")


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}"
                       for err in exc.errors())
    return error_response(422, "invalid_request", detail)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # 404 / 405 from routing: the same JSON shape as our own errors.
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, error, exc.detail, getattr(exc, "headers", None))


# ------------------------------------------------------------------- model scoring

class SegmentScorer:
    """The checkpoint loaded once, scoring one request's segments; ``@serve.batch`` joins the
    segments of concurrent requests into one forward. Lives in the MoodModel replica
    (``split`` topology) or inside the ingress replica itself (``combined``)."""

    def __init__(self, checkpoint: str, cfg: ServeConfig) -> None:
        import torch

        from mtlmood.inference import Predictor

        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            # Say it explicitly rather than trust OMP_NUM_THREADS: replicas sharing a node
            # must not each start one thread per core.
            torch.set_num_threads(cfg.model.threads or max(1, int(round(cfg.model.num_cpus))))
        self.predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=cfg.precision)
        self.device = device
        self.batching = cfg.batching
        self.shape = (self.predictor.segment_frames, self.predictor.feature_config.n_mels)
        self.failure: Optional[str] = None
        self.scoring = 0  # requests inside score() now: waiting in a batch or in a forward
        # What this replica has done (in /healthz?deep=true): requests scored at once because
        # the replica was idle, forwards of batches, the requests in them, the largest batch.
        self.counts = {"immediate": 0, "batches": 0, "batched_requests": 0, "largest_batch": 0}
        self._batched.set_max_batch_size(cfg.batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(cfg.batching.batch_wait_timeout_s)
        # One forward now, so the first request does not pay for lazy kernel setup.
        self.predictor.predict_segments(np.zeros((1, *self.shape), dtype=np.float32))

    async def score(self, segments: np.ndarray, caller_busy: bool = False) -> np.ndarray:
        """(N_mood,) song probabilities: the mean of the segments' sigmoid outputs.

        ``caller_busy``: the ingress that sends this request has others in flight (still
        decoding, say), so a batch partner is likely on its way."""
        # Arrays from the object store are read-only; torch wants writable memory (copy if so).
        segments = np.require(segments, dtype=np.float32, requirements=["C", "W"])
        # Checked here, per request: inside a batch one bad item would fail its neighbours.
        if segments.ndim != 3 or segments.shape[1:] != self.shape or len(segments) == 0:
            raise ValueError(f"expected segments of shape (n>=1, {self.shape[0]}, {self.shape[1]}), "
                             f"got {segments.shape}")
        # A request that finds the replica idle is scored at once: waiting batch_wait_timeout_s
        # for company that is not coming only adds latency. "Idle" needs the caller's view
        # too: under load the scoring stage can be empty for a moment while the next requests
        # are still being decoded, and scoring those one by one would forgo batching
        # (measured: saturation throughput fell to the unbatched level).
        idle = self.scoring == 0 and not caller_busy
        self.scoring += 1
        try:
            if self.batching.enabled and not (idle and self.batching.immediate_when_idle):
                return await self._batched(segments)
            self.counts["immediate"] += 1
            probs = await asyncio.to_thread(self._forward, segments)
            return probs.mean(axis=0)
        finally:
            self.scoring -= 1

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)  # reset from the config in __init__
    async def _batched(self, items: list[np.ndarray]) -> list[np.ndarray]:
        """One forward for the segments of many requests, split back per request."""
        self.counts["batches"] += 1
        self.counts["batched_requests"] += len(items)
        self.counts["largest_batch"] = max(self.counts["largest_batch"], len(items))
        counts = [len(item) for item in items]
        # In a thread: the event loop stays free for health checks and new arrivals.
        probs = await asyncio.to_thread(self._forward, np.concatenate(items) if len(items) > 1 else items[0])
        return [part.mean(axis=0) for part in np.split(probs, np.cumsum(counts)[:-1])]

    def _forward(self, segments: np.ndarray) -> np.ndarray:
        try:
            return self.predictor.predict_segments(segments)
        except RuntimeError as exc:
            # A CUDA error (illegal access, device-side assert, lost GPU) poisons the context for
            # good: mark the replica so check_health has Serve replace it. (An OOM is not one.)
            if "CUDA error" in str(exc):
                self.failure = f"{type(exc).__name__}: {exc}"
            raise

    def check_health(self) -> None:
        """Raise when the replica can no longer score (Serve then replaces it)."""
        if self.failure is not None:
            raise RuntimeError(f"model replica unusable after a device error: {self.failure}")

    def info(self) -> dict[str, Any]:
        """How this replica runs the model."""
        import torch

        return {"device": self.device, "torch_threads": torch.get_num_threads(),
                "precision": self.predictor.precision, "scored": dict(self.counts),
                "batching": {"enabled": self.batching.enabled, "max_batch_size": self.batching.max_batch_size,
                             "batch_wait_timeout_s": self.batching.batch_wait_timeout_s,
                             "immediate_when_idle": self.batching.immediate_when_idle}}


@serve.deployment(name="MoodModel", health_check_period_s=10.0, health_check_timeout_s=30.0,
                  graceful_shutdown_timeout_s=10.0)
class MoodModel:
    """The model deployment of the ``split`` topology: a SegmentScorer per replica."""

    def __init__(self, checkpoint: str, config: Mapping[str, Any]) -> None:
        cfg = serve_config_from_mapping(config)
        self.scorer = SegmentScorer(checkpoint, cfg)
        logger.info("MoodModel loaded %s (%s, %d moods) on %s, batching=%s", checkpoint,
                    self.scorer.predictor.card.checkpoint_id, len(self.scorer.predictor.mood_names),
                    self.scorer.device, cfg.batching)

    async def predict(self, segments: np.ndarray, caller_busy: bool = False) -> np.ndarray:
        """(N_mood,) song probabilities: the mean of the segments' sigmoid outputs."""
        return await self.scorer.score(segments, caller_busy)

    def check_health(self) -> None:
        """Called by Serve every health_check_period_s; raising makes Serve replace the replica."""
        self.scorer.check_health()

    def card(self) -> dict[str, Any]:
        """The model card of the loaded checkpoint."""
        return self.scorer.predictor.card.to_dict()

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


def _media_type(request: Request) -> Optional[str]:
    raw = request.headers.get("content-type")
    return raw.split(";", 1)[0].strip().lower() if raw else None


async def read_body_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed ``limit`` bytes.

    Content-Length is checked before reading anything; the bytes actually received are
    counted too, for chunked uploads and for clients whose Content-Length is wrong.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body of {size} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, "payload_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def audio_from_request(request: Request, limit: int) -> tuple[bytes, str]:
    """(audio bytes, a name for messages) from a raw or multipart body; ApiError when unusable."""
    media_type = _media_type(request)
    is_multipart = media_type == MULTIPART
    # A missing Content-Type is taken as raw bytes (some clients send none).
    if not (is_multipart or media_type is None or media_type in AUDIO_TYPES or media_type.startswith("audio/")):
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {media_type!r} is not supported; send the audio as audio/* or "
                       f"application/octet-stream, or as multipart/form-data with a 'file' field")
    body = await read_body_limited(request, limit)
    if not body:
        raise ApiError(400, "empty_body", "the request body is empty; send an audio file")
    if not is_multipart:
        return body, "<request body>"

    async def replay() -> dict[str, Any]:  # the body is already read: hand it to the form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=limit)
    except Exception as exc:  # starlette raises HTTPException or MultiPartException on malformed bodies
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {detail}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "missing_file", "multipart body has no file field named 'file'")
        data = await upload.read()
        name = upload.filename or "<upload>"
    finally:
        await form.close()
    if not data:
        raise ApiError(400, "empty_body", f"the uploaded file {name!r} is empty")
    return data, name


@serve.deployment(name="MoodIngress", health_check_period_s=10.0, health_check_timeout_s=30.0,
                  graceful_shutdown_timeout_s=10.0)
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
        self.scorer: Optional[SegmentScorer] = None if model is not None else SegmentScorer(checkpoint, self.config)
        self.topology = "split" if model is not None else "combined"
        self.card = read_card(checkpoint)
        # Decoding releases the GIL for most of its time, so threads use the replica's CPUs.
        threads = self.config.ingress.threads or max(1, int(math.ceil(self.config.ingress.num_cpus)))
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mtlmood-decode")
        self.pending_decodes = 0
        self.in_flight = 0  # /predict requests in this replica now (any stage)
        features = self.card.features
        self.segment_frames = self.card.model.segment_frames
        # The same window as Predictor.max_frames: the first max_seconds of the song.
        self.max_frames = int(features.max_seconds * features.frames_per_second)
        self.summary = {
            "checkpoint_id": self.card.checkpoint_id, "dataset": self.card.dataset.name,
            "labels": list(self.card.mood_names), "metadata": self.card.labels.metadata,
            "n_meta": self.card.n_meta, "alpha": float(self.card.alpha), "code_version": self.card.code_version}
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
            raise ApiError(503, "overloaded", "too many requests are waiting to be decoded; retry shortly",
                           RETRY_AFTER)
        self.pending_decodes += 1
        try:
            features = await asyncio.get_running_loop().run_in_executor(self.executor, self._features, data, name)
        except AudioDecodeError as exc:
            raise ApiError(422, "undecodable_audio", exc.reason) from None
        except Exception as exc:  # decoders raise assorted types on hostile input; it is still bad input
            logger.warning("decoding %s failed: %s: %s", name, type(exc).__name__, exc)
            raise ApiError(422, "undecodable_audio", f"the audio could not be decoded ({type(exc).__name__})") \
                from None
        finally:
            self.pending_decodes -= 1
        if not np.isfinite(features).all():
            raise ApiError(422, "non_finite_features",
                           "the audio gives non-finite log-mel features (samples far outside [-1, 1]?)")
        return features

    async def _score(self, segments: np.ndarray) -> np.ndarray:
        """The model deployment's (N_mood,) probabilities; ApiError 503/504 when it cannot answer."""
        if self.scorer is not None:
            return await self._score_here(segments)
        from ray.exceptions import RayActorError, RayTaskError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        assert self.model is not None
        response = self.model.predict.remote(segments, self.in_flight > 1)

        async def wait() -> np.ndarray:
            return await response

        try:
            probs = await asyncio.wait_for(wait(), timeout=self.config.model_timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(504, "model_timeout", f"the model did not answer within {self.config.model_timeout_s} s") \
                from None
        except BackPressureError:
            raise ApiError(503, "overloaded", "the model's request queue is full; retry shortly", RETRY_AFTER) \
                from None
        except (RayActorError, DeploymentUnavailableError) as exc:
            logger.warning("model replica unavailable: %s", type(exc).__name__)
            raise ApiError(503, "model_unavailable", "the model replica handling this request failed; retry",
                           RETRY_AFTER) from None
        except RayTaskError as exc:
            logger.error("model call failed: %s", exc)
            raise ApiError(500, "model_error", "the model failed on this request") from None
        return self._checked(probs)

    async def _score_here(self, segments: np.ndarray) -> np.ndarray:
        """The combined topology: this replica's own (batched) forward, with the same 504/503/500."""
        assert self.scorer is not None
        try:
            probs = await asyncio.wait_for(self.scorer.score(segments, self.in_flight > 1),
                                           timeout=self.config.model_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "model_timeout", f"the model did not answer within {self.config.model_timeout_s} s") \
                from None
        except Exception as exc:
            if self.scorer.failure is not None:  # the device is gone: Serve replaces this replica
                raise ApiError(503, "model_unavailable", "the model replica failed; retry", RETRY_AFTER) from None
            logger.error("model call failed: %s: %s", type(exc).__name__, exc)
            raise ApiError(500, "model_error", "the model failed on this request") from None
        return self._checked(probs)

    @staticmethod
    def _checked(probs: Any) -> np.ndarray:
        probs = np.asarray(probs)
        if not np.isfinite(probs).all():
            raise ApiError(422, "non_finite_prediction", "the audio gives non-finite model outputs")
        return probs

    @api.post("/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_PREDICT_BODY,
              summary="Mood probabilities of an audio file")
    async def predict(self, request: Request,
                      top_k: Optional[int] = Query(None, ge=0, le=10_000,
                                                   description="length of the `top` list (default from config)")
                      ) -> Union[JSONResponse, dict[str, Any]]:
        """Send the audio as the raw body (``Content-Type: audio/*`` or ``application/octet-stream``)
        or as a multipart upload in the field ``file``. Only the first 29 s are analysed; audio
        shorter than one ~3 s segment is zero-padded."""
        from mtlmood.metrics import segment_song

        started = time.perf_counter()
        self.in_flight += 1
        try:
            data, name = await audio_from_request(request, self.config.max_body_bytes)
            features = await self._decode(data, name)
            segments = segment_song(features, self.segment_frames, self.max_frames)
            probs = await self._score(segments)
        except ApiError as exc:
            return exc.response()
        except Exception:  # a bug, not bad input: log it here, answer without the traceback
            logger.exception("unexpected error in /predict")
            return error_response(500, "internal_error", "unexpected server error; see the replica log")
        finally:
            self.in_flight -= 1
        k = self.config.top_k if top_k is None else top_k
        names = self.summary["labels"]
        order = np.argsort(-probs, kind="stable")[: min(k, len(names))]  # same order as Predictor
        # Same as Predictor.make_prediction (tests compare): centred framing adds one frame.
        analysed = min(max(features.shape[0] - 1, 0), self.max_frames) / self.card.features.frames_per_second
        logger.debug("predicted %s in %.3f s", name, time.perf_counter() - started)
        return {"moods": {n: float(p) for n, p in zip(names, probs)},
                "top": [{"mood": names[i], "probability": float(probs[i])} for i in order],
                "n_segments": int(len(segments)), "duration_s": round(float(analysed), 3),
                "model": self.summary}

    @api.get("/healthz", response_model=None, responses={503: {"model": ErrorResponse}},
             summary="Liveness (deep=true: model too)")
    async def healthz(self, deep: bool = Query(False, description="also ask a model replica (2 s timeout)")
                      ) -> Union[JSONResponse, dict[str, Any]]:
        """200 when the ingress is up; with ``deep=true`` only when a model replica answers too,
        and then with how that replica runs the model and what it has scored (``model``)."""
        answer: dict[str, Any] = {"status": "ok", "checkpoint_id": self.card.checkpoint_id}
        if deep:
            try:
                answer["model"] = await asyncio.wait_for(self._info(), timeout=2.0)
            except Exception as exc:
                return error_response(503, "model_unavailable", f"no model replica answered ({type(exc).__name__})",
                                      RETRY_AFTER)
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
        card["serving"] = {"max_body_bytes": self.config.max_body_bytes, "top_k": self.config.top_k,
                           "topology": self.topology,
                           "precision": self.config.precision,
                           "batching": serve_config_to_dict(self.config)["batching"]}
        if self.config.study:  # which cell and arm of the study this model is, and why
            card["study"] = study_selection(Path(self.config.study), self.config.cell)
        return card


# ------------------------------------------------------------------------ building

def _resolved_gpus(config: ServeConfig) -> float:
    """model.num_gpus, with -1 (auto) = 1 when the Ray cluster has GPUs right now, else 0."""
    if config.model.num_gpus >= 0:
        return config.model.num_gpus
    import ray

    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1
    return 1.0 if has_gpu and config.device != "cpu" else 0.0


def resolved_topology(config: ServeConfig, num_gpus: float) -> str:
    """``auto`` -> ``split`` when the model replicas get GPUs (the CPU-heavy decoding then
    scales on its own, on CPU nodes), else ``combined`` (one replica does everything)."""
    if config.topology != "auto":
        return config.topology
    return "split" if num_gpus > 0 else "combined"


def build_app(args: Union[ServeConfig, Mapping[str, Any], None] = None) -> serve.Application:
    """The bound application for ``serve.run`` or a Serve config's ``import_path``.

    ``args`` is a ServeConfig, or a mapping of its fields (the ``args:`` of a Serve
    config file). The checkpoint comes from ``checkpoint``, ``study`` (its best
    checkpoint) or the env vars MTLMOOD_SERVE_CHECKPOINT / MTLMOOD_SERVE_STUDY.

    ``split``: MoodIngress replicas (``ingress`` settings) call MoodModel replicas
    (``model`` settings). ``combined``: MoodIngress replicas score requests themselves;
    each gets the CPUs of both sections, the GPUs, replica counts and autoscaling of
    ``model``, and the request limits of ``ingress`` (it is the HTTP-facing one).
    """
    config = args if isinstance(args, ServeConfig) else serve_config_from_mapping(dict(args or {}))
    config = config.validate()
    checkpoint = str(resolve_checkpoint(config))
    as_dict = serve_config_to_dict(config)
    num_gpus = _resolved_gpus(config)
    if resolved_topology(config, num_gpus) == "combined":
        options = _deployment_options(config.model, config.ingress, config.ingress.num_cpus + config.model.num_cpus,
                                      max(num_gpus, config.ingress.num_gpus))
        return MoodIngress.options(**options).bind(None, checkpoint, as_dict)
    model = MoodModel.options(**_deployment_options(config.model, config.model, config.model.num_cpus, num_gpus)
                              ).bind(checkpoint, as_dict)
    options = _deployment_options(config.ingress, config.ingress, config.ingress.num_cpus, config.ingress.num_gpus)
    return MoodIngress.options(**options).bind(model, checkpoint, as_dict)


def _deployment_options(scaling: DeploymentSettings, limits: DeploymentSettings, num_cpus: float,
                        num_gpus: float) -> dict[str, Any]:
    """``Deployment.options``: replica counts and autoscaling of ``scaling``, request limits
    of ``limits``, and one replica's CPUs and GPUs (the GPU key only when there are any)."""
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus > 0:
        actor["num_gpus"] = num_gpus
    return {"autoscaling_config": scaling.autoscaling(), "max_ongoing_requests": limits.max_ongoing_requests,
            "max_queued_requests": limits.max_queued_requests, "ray_actor_options": actor}
