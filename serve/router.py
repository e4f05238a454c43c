"""The HTTP front of the endpoint: routes, request checks, and an answer even when a replica behind it dies.

    HTTP -> Serve proxy -> MoodRouter (this module: FastAPI, no model, no decoding, 0 CPU)
                         -> MoodIngress replicas (serve.deployments) -> MoodModel (split only)

Routes: ``POST /predict`` (raw audio body or multipart field ``file``; ``?top_k=``),
``GET /healthz`` (``?deep=true`` also asks an ingress replica, and through it the model),
``GET /model``, ``GET /model/card`` (the MODEL_CARD.md) and the OpenAPI page at ``/docs``.
The router checks the request (serve.parsing: 400/413/415 before any replica behind it is
bothered), relays the audio bytes to an ingress
replica and renders its ``Answer``. When that replica dies with the request, or its queue is
full, or it does not answer in ``request_timeout_s``, the router answers for it: 503 JSON with
``Retry-After`` (or 504), see serve.remote. Without the router, Serve's proxy would answer the
requests of a dead replica with a plain-text 500.

The router is the one replica whose own death Serve's proxy still answers (plain-text 500 for
the requests it held); it does the least work of any, so it is the least likely to die.

With ``auth.enabled`` every route but ``/healthz`` and the API description needs an API key
(serve.auth): the middleware refuses a request before any route sees it.
"""

# No `from __future__ import annotations` here: Serve rebuilds the ingress methods'
# signatures for FastAPI, which then cannot resolve string annotations (Request, Optional).
import logging
import time
from typing import Any, Mapping, Optional, Union

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import mtlmood
from serve.auth import ApiKeyAuth, ApiKeys, install_keys
from serve.config import REPLICA_LIFECYCLE, ServeConfig, serve_config_from_mapping, serve_config_to_dict
from serve.parsing import audio_from_request
from serve.remote import call_deployment
from serve.schemas import (
    API_DESCRIPTION,
    CARD_MARKDOWN_KEY,
    ERROR_RESPONSES,
    MARKDOWN,
    MODEL_CARD_ROUTE,
    PREDICT_BODY,
    RETRY_AFTER,
    ApiError,
    ErrorResponse,
    PredictResponse,
    error_response,
)
from serve.telemetry import RequestMetrics

logger = logging.getLogger("ray.serve")

api = FastAPI(title="mtlmood", version=mtlmood.__version__, description=API_DESCRIPTION)
# Open without a key when auth is on: liveness for load balancers and probes, and the API description.
OPEN_PATHS = ("/healthz", api.docs_url, api.openapi_url, api.swagger_ui_oauth2_redirect_url, api.redoc_url)
# Added here, before @serve.ingress freezes a copy of the app; it reads the keys the replica installs.
api.add_middleware(ApiKeyAuth, open_paths=[p for p in OPEN_PATHS if p])
# Every request counted and timed by route and status (Prometheus, serve.telemetry), 404s and 401s
# included: added last, so it is the outer middleware.
api.add_middleware(RequestMetrics)


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


@serve.deployment(
    name="MoodRouter",
    **REPLICA_LIFECYCLE,
)
@serve.ingress(api)
class MoodRouter:
    """HTTP front: checks requests, relays them to the ingress replicas, answers for them when they fail.

    ``card`` is the served checkpoint's model card as a dict (read once by ``build_app``), so
    this replica never loads torch or the checkpoint; ``topology`` is the resolved one; ``study``
    what the study's pointer said about the served model when the app was built (None: no study).
    With ``auth.enabled`` it loads the API keys now: no usable key stops the replica.
    """

    def __init__(
        self,
        ingress: DeploymentHandle,
        card: Mapping[str, Any],
        config: Mapping[str, Any],
        topology: str,
        study: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.ingress = ingress
        self.card = dict(card)
        self.config: ServeConfig = serve_config_from_mapping(config)
        self.topology = topology
        self.study = None if study is None else dict(study)
        keys = ApiKeys.load(self.config.auth) if self.config.auth.enabled else None
        install_keys(keys)
        logger.info(
            "MoodRouter for %s (%s topology, API keys: %s)",
            self.card.get("checkpoint_id"),
            topology,
            "off" if keys is None else f"{len(keys)} accepted",
        )

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
    ) -> JSONResponse:
        """Send the audio as the raw body (``Content-Type: audio/*`` or ``application/octet-stream``)
        or as a multipart upload in the field ``file``. Only the first 29 s are analysed; audio
        shorter than one ~3 s segment is zero-padded."""
        started = time.perf_counter()
        try:
            data, name = await audio_from_request(request, self.config.max_body_bytes)
            k = self.config.top_k if top_k is None else top_k
            answer = await call_deployment(
                self.ingress.predict.remote(data, name, k), self.config.request_timeout_s, "ingress"
            )
        except ApiError as exc:
            return exc.response()
        except Exception:  # a bug, not bad input: log it here, answer without the traceback
            logger.exception("unexpected error in /predict")
            return error_response(500, "internal_error", "unexpected server error; see the replica log")
        logger.debug("answered %s with %d in %.3f s", name, answer.status, time.perf_counter() - started)
        return answer.response()

    @api.get(
        "/healthz",
        response_model=None,
        responses={503: {"model": ErrorResponse}},
        summary="Liveness (deep=true: an ingress replica and the model too)",
    )
    async def healthz(
        self, deep: bool = Query(False, description="also ask an ingress replica and its model (2 s timeout)")
    ) -> Union[JSONResponse, dict[str, Any]]:
        """200 when the router is up; with ``deep=true`` only when an ingress replica and the model
        behind it answer too, and then with how that replica runs the model and what it has scored
        (``model``)."""
        answer: dict[str, Any] = {"status": "ok", "checkpoint_id": self.card.get("checkpoint_id")}
        if deep:
            try:
                answer["model"] = await call_deployment(self.ingress.info.remote(), 2.0, "ingress")
            except ApiError as exc:
                return error_response(503, "model_unavailable", f"no model replica answered: {exc.detail}", RETRY_AFTER)
        return answer

    @api.get("/model", summary="The model card of the served checkpoint")
    async def model_card(self, request: Request) -> dict[str, Any]:
        """Labels, configs, alpha, dataset, metrics and provenance of the checkpoint, plus serving settings."""
        card = dict(self.card)
        card.pop(CARD_MARKDOWN_KEY, None)  # answered by GET /model/card, linked here
        # Below the app's route prefix, which Serve hands the app as its ASGI root_path.
        card["model_card"] = str(request.scope.get("root_path", "")).rstrip("/") + MODEL_CARD_ROUTE
        card["serving"] = {
            "max_body_bytes": self.config.max_body_bytes,
            "top_k": self.config.top_k,
            "topology": self.topology,
            "precision": self.config.precision,
            "batching": serve_config_to_dict(self.config)["batching"],
        }
        if self.study is not None:  # which cell and arm of the study this model is, and why
            card["study"] = dict(self.study)  # as the pointer said at build time: the model loaded
        return card

    @api.get(
        MODEL_CARD_ROUTE,
        response_class=PlainTextResponse,
        response_model=None,
        responses={200: {"content": {"text/markdown": {}}}, 404: {"model": ErrorResponse}},
        summary="MODEL_CARD.md of the served checkpoint (Markdown)",
    )
    async def model_card_markdown(self) -> Union[PlainTextResponse, JSONResponse]:
        """The human-readable model card: intended use, training data, alpha, evaluation (with the
        study's evidence when a study chose this model), preprocessing contract, limitations."""
        markdown = self.card.get(CARD_MARKDOWN_KEY)
        if not isinstance(markdown, str):
            return error_response(404, "not_found", "this deployment has no rendered model card")
        return PlainTextResponse(markdown, media_type=MARKDOWN)
