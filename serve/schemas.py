"""What the endpoint answers: the response models, the error shape and its OpenAPI text.

Every answer of the endpoint has one of two shapes. Success on ``/predict`` is
``PredictResponse`` (built by ``predict_body`` from a ``mtlmood.inference.Prediction``);
every error, ours or FastAPI's, is ``ErrorResponse``: ``{"error": <code>, "detail": <message>}``
with the HTTP status, raised as ``ApiError`` anywhere in a request and rendered once by
the ingress. No traceback ever reaches a client.
"""

# No `from __future__ import annotations`: FastAPI reads these models' annotations at route time.
from typing import TYPE_CHECKING, Any, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from mtlmood.checkpoint import ModelCard
    from mtlmood.inference import Prediction

MULTIPART = "multipart/form-data"
RETRY_AFTER = {"Retry-After": "1"}  # sent with every 503: overload is short-lived


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


# The type FastAPI's ``responses=`` takes (keys may also be ranges such as "4XX").
ERROR_RESPONSES: dict[Union[int, str], dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "empty body, malformed multipart, or no `file` field",
        413: "body larger than max_body_bytes",
        415: "Content-Type is not audio/*, application/octet-stream or multipart/form-data",
        422: "undecodable audio, non-finite features/predictions, or an invalid query parameter",
        503: "overloaded (queue full) or model replica unavailable; retry after Retry-After seconds",
        504: "the model did not answer within model_timeout_s",
    }.items()
}

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


# ------------------------------------------------------------------ response bodies


def model_summary(card: "ModelCard") -> dict[str, Any]:
    """The ``model`` field of every prediction (a ``ModelSummary``) from a ``ModelCard``."""
    return {
        "checkpoint_id": card.checkpoint_id,
        "dataset": card.dataset.name,
        "labels": list(card.mood_names),
        "metadata": card.labels.metadata,
        "n_meta": card.n_meta,
        "alpha": float(card.alpha),
        "code_version": card.code_version,
    }


def predict_body(prediction: "Prediction", summary: dict[str, Any]) -> dict[str, Any]:
    """A ``PredictResponse`` from a ``mtlmood.inference.Prediction`` and the model summary."""
    return {
        "moods": dict(prediction.probabilities),
        "top": [{"mood": mood, "probability": probability} for mood, probability in prediction.top],
        "n_segments": prediction.n_segments,
        "duration_s": prediction.duration_s,
        "model": summary,
    }
