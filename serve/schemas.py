"""What the endpoint answers: the response models, the error shape and its OpenAPI text.

Every answer of the endpoint has one of two shapes. Success on ``/predict`` is
``PredictResponse`` (built by ``mtlmood.records.response_body`` from a
``mtlmood.inference.Prediction`` and ``model_summary(card)``: the record of mtlmood.records,
which `mtlmood predict --output` writes too, so an HTTP answer and a batch row share one schema);
every error, ours or FastAPI's, is ``ErrorResponse``: ``{"error": <code>, "detail": <message>}``
with the HTTP status, raised as ``ApiError`` anywhere in a request. An ingress replica
hands its outcome to the router as an ``Answer`` (plain data: it crosses a Ray handle),
which the router renders. No traceback ever reaches a client. ``SERVICE_ERRORS`` lists
every 5xx code; ``API_DESCRIPTION`` says what a client gets, including the two answers
that come from Serve's proxy rather than from us.
"""

# No `from __future__ import annotations`: FastAPI reads these models' annotations at route time.
from dataclasses import dataclass
from typing import Any, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mtlmood.records import PREDICTION_FIELDS

MULTIPART = "multipart/form-data"
RETRY_AFTER = {"Retry-After": "1"}  # sent with every 503: overload is short-lived
MARKDOWN = "text/markdown; charset=utf-8"
# The key under which build_app hands the router the rendered MODEL_CARD.md, inside the card dict
# (GET /model/card answers it; GET /model links it instead).
CARD_MARKDOWN_KEY = "model_card_markdown"
MODEL_CARD_ROUTE = "/model/card"


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
        """The JSON response a client gets."""
        return error_response(self.status, self.error, self.detail, self.headers)

    def answer(self) -> "Answer":
        """The same refusal as plain data, to send from an ingress replica to the router."""
        return Answer(self.status, {"error": self.error, "detail": self.detail}, self.headers)


@dataclass(frozen=True)
class Answer:
    """An ingress replica's outcome for one request: HTTP status, JSON body and headers.
    A value, not an exception: it pickles as is and the router only has to render it."""

    status: int
    body: dict[str, Any]
    headers: Optional[dict[str, str]] = None

    def response(self) -> JSONResponse:
        """The JSON response a client gets."""
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def error_response(status: int, error: str, detail: Any, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    """``{"error": error, "detail": detail}`` with ``status`` (and ``headers``, e.g. Retry-After)."""
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
    """The fields of mtlmood.records (shared with `mtlmood predict --output` rows) + the model summary."""

    moods: dict[str, float] = Field(description=PREDICTION_FIELDS["moods"])
    top: list[MoodScore] = Field(description=PREDICTION_FIELDS["top"])
    n_segments: int = Field(description=PREDICTION_FIELDS["n_segments"])
    duration_s: float = Field(description=PREDICTION_FIELDS["duration_s"])
    model: ModelSummary


class ErrorResponse(BaseModel):
    error: str
    detail: Any


# Every 5xx the endpoint itself sends: (status, error code, when). Every 503 carries Retry-After.
SERVICE_ERRORS = (
    (500, "internal_error", "a bug in the service (the replica log has the traceback)"),
    (500, "model_error", "the model's forward pass failed on this request"),
    (503, "overloaded", "a bounded queue is full (decoding, the ingress or the model replicas)"),
    (
        503,
        "replica_unavailable",
        "the replica holding the request stopped (killed, out of memory, crashed) or none is up yet; "
        "Serve starts a new one, the other replicas keep answering",
    ),
    (503, "model_unavailable", "the model replica's device failed; Serve replaces the replica"),
    (504, "model_timeout", "the model did not answer within model_timeout_s"),
    (504, "timeout", "the ingress did not answer within request_timeout_s"),
)


def _service_errors(status: int) -> str:
    return "; ".join(f"`{code}`: {when}" for s, code, when in SERVICE_ERRORS if s == status)


# The type FastAPI's ``responses=`` takes (keys may also be ranges such as "4XX").
ERROR_RESPONSES: dict[Union[int, str], dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "empty body, malformed multipart, or no `file` field",
        401: "API keys are on (`auth`) and the request has no valid `Authorization: Bearer <key>`",
        413: "body larger than max_body_bytes",
        415: "Content-Type is not audio/*, application/octet-stream or multipart/form-data",
        422: "undecodable audio, non-finite features/predictions, or an invalid query parameter",
        500: _service_errors(500),
        503: _service_errors(503) + ". Retry after `Retry-After` seconds (1); the request was not completed.",
        504: _service_errors(504),
    }.items()
}

API_DESCRIPTION = (
    "Music-mood classification (Kumar & Dahiya 2022, multi-task learning with metadata). "
    "POST audio (mp3, ogg, flac, wav) to /predict; the first 29 s are analysed.\n\n"
    'Every answer of this service is JSON: a prediction, or `{"error": code, "detail": message}` with a 4xx '
    "(bad input) or 5xx status. Every 503 carries `Retry-After: 1`: the request was not completed "
    "and can be sent again. A replica that dies while it holds a request (decoding or scoring it) "
    "makes that request a 503 `replica_unavailable`; the other replicas keep answering and Serve "
    "replaces the dead one. Two answers come from Ray Serve's proxy, not from this service, and are "
    "plain text: a 500 when a *router* replica (the thin HTTP front, which decodes nothing) dies "
    "with the request, and a 503 when every router replica is full (the config keeps the routers "
    "larger than the queues behind them, so the JSON 503 `overloaded` comes first).\n\n"
    "A deployment with API keys answers every route but /healthz and this description with 401 "
    "`unauthorized` (and `WWW-Authenticate: Bearer`) unless the request sends `Authorization: Bearer <key>`."
)

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
