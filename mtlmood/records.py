"""The prediction record: one schema for what ``POST /predict`` answers and what
``mtlmood predict --output`` writes, so a row of a batch file reads like an HTTP answer.

    prediction_fields(prediction)       # {"moods", "top", "n_segments", "duration_s"}: shared by both
    response_body(prediction, summary)  # HTTP: those + "model" (model_summary(card))
    batch_record(path, prediction, id)  # batch: "path" + those + "checkpoint_id" + "error" (None)
    failure_record(path, reason, id)    # batch: a track that could not be scored (prediction fields None)

A batch row is the HTTP body with the model summary reduced to its ``checkpoint_id`` (the
whole summary is the same on every row) and two columns HTTP does not need: ``path``, the
track's key (absolute path; a re-run skips paths already in the output), and ``error``,
None when scored, else why not. File formats: Parquet and JSON Lines keep the nesting
(``moods`` a struct / object of one probability per mood, ``top`` a list of
{mood, probability}); CSV flattens ``moods`` to one ``moods.<name>`` column per mood and
``top`` to a JSON string (``flat_row`` / ``nested_row``).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:
    import pyarrow as pa

    from mtlmood.checkpoint import ModelCard
    from mtlmood.inference import Prediction

# Field -> description, in output order. The HTTP response (serve/schemas.PredictResponse) has
# PREDICTION_FIELDS + "model"; a batch row has BATCH_FIELDS.
PREDICTION_FIELDS: dict[str, str] = {
    "moods": "probability of every mood label (mean over segments)",
    "top": "the top_k most probable moods, best first",
    "n_segments": "187-frame (~3 s) segments averaged; short audio is padded to one",
    "duration_s": "seconds of audio analysed (at most the first max_seconds)",
}
MODEL_FIELD = "model"  # HTTP only: the model summary
KEY_FIELD = "path"  # batch only: the track (absolute path of its file), the key a re-run skips on
BATCH_FIELDS: dict[str, str] = {
    KEY_FIELD: "absolute path of the audio file (the key: a re-run skips paths already in the output)",
    **PREDICTION_FIELDS,
    "checkpoint_id": "the model's checkpoint_id (hash of its weights), as in the HTTP answer's model summary",
    "error": "why the track could not be scored; empty when it was (then the prediction fields are empty)",
}
ERROR_FIELD = "error"
MOODS_PREFIX = "moods."  # CSV: one column per mood


def prediction_fields(prediction: "Prediction") -> dict[str, Any]:
    """The fields an HTTP answer and a batch row share, from a ``mtlmood.inference.Prediction``."""
    return {
        "moods": dict(prediction.probabilities),
        "top": [{"mood": mood, "probability": probability} for mood, probability in prediction.top],
        "n_segments": prediction.n_segments,
        "duration_s": prediction.duration_s,
    }


def model_summary(card: "ModelCard") -> dict[str, Any]:
    """The HTTP answer's ``model`` field: which model scored the audio."""
    return {
        "checkpoint_id": card.checkpoint_id,
        "dataset": card.dataset.name,
        "labels": list(card.mood_names),
        "metadata": card.labels.metadata,
        "n_meta": card.n_meta,
        "alpha": float(card.alpha),
        "code_version": card.code_version,
    }


def response_body(prediction: "Prediction", summary: dict[str, Any]) -> dict[str, Any]:
    """The body of a successful ``POST /predict``: the prediction fields and the model summary."""
    return {**prediction_fields(prediction), MODEL_FIELD: summary}


def batch_record(path: str, prediction: "Prediction", checkpoint_id: str) -> dict[str, Any]:
    """One scored track of a batch output."""
    return {KEY_FIELD: path, **prediction_fields(prediction), "checkpoint_id": checkpoint_id, ERROR_FIELD: None}


def failure_record(path: str, reason: str, checkpoint_id: str) -> dict[str, Any]:
    """One track of a batch output that could not be scored, and why."""
    return {
        KEY_FIELD: path,
        **{name: None for name in PREDICTION_FIELDS},
        "checkpoint_id": checkpoint_id,
        ERROR_FIELD: reason or "unknown error",
    }


# ------------------------------------------------------------------ Arrow / Parquet


def arrow_schema(mood_names: Sequence[str]) -> "pa.Schema":
    """The Arrow schema of batch rows for a model with these moods (``moods`` is a struct
    with one float64 field per mood, in the model's output order)."""
    import pyarrow as pa

    score = pa.struct([pa.field("mood", pa.string()), pa.field("probability", pa.float64())])
    return pa.schema(
        [
            pa.field(KEY_FIELD, pa.string(), nullable=False),
            pa.field("moods", pa.struct([pa.field(name, pa.float64()) for name in mood_names])),
            pa.field("top", pa.list_(score)),
            pa.field("n_segments", pa.int32()),
            pa.field("duration_s", pa.float64()),
            pa.field("checkpoint_id", pa.string()),
            pa.field(ERROR_FIELD, pa.string()),
        ]
    )


def to_table(records: Sequence[dict[str, Any]], mood_names: Sequence[str]) -> "pa.Table":
    """Batch rows as an Arrow table with ``arrow_schema(mood_names)``."""
    import pyarrow as pa

    return pa.Table.from_pylist(list(records), schema=arrow_schema(mood_names))


def mood_names_of(schema: "pa.Schema") -> list[str]:
    """The mood names of a batch table's schema (the fields of its ``moods`` struct)."""
    moods = schema.field("moods").type
    return [moods.field(i).name for i in range(moods.num_fields)]


# ------------------------------------------------------------------ CSV (flat rows)


def flat_row(record: dict[str, Any], mood_names: Sequence[str]) -> dict[str, Any]:
    """A batch row for CSV: ``moods.<name>`` columns, ``top`` as a JSON string, None as ""."""
    moods = record.get("moods") or {}
    row: dict[str, Any] = {KEY_FIELD: record[KEY_FIELD]}
    row.update({f"{MOODS_PREFIX}{name}": moods.get(name) for name in mood_names})
    top = record.get("top")
    row["top"] = json.dumps(top) if top is not None else None
    for name in ("n_segments", "duration_s", "checkpoint_id", ERROR_FIELD):
        row[name] = record.get(name)
    return row


def nested_row(row: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``flat_row`` (a CSV row as read by pandas, NaN for empty cells)."""

    def value(x: Any) -> Optional[Any]:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) or x == "" else x

    moods = {k[len(MOODS_PREFIX) :]: value(v) for k, v in row.items() if k.startswith(MOODS_PREFIX)}
    error = value(row.get(ERROR_FIELD))
    top = value(row.get("top"))
    n_segments = value(row.get("n_segments"))
    duration = value(row.get("duration_s"))
    checkpoint_id = value(row.get("checkpoint_id"))
    return {
        KEY_FIELD: str(row[KEY_FIELD]),
        "moods": None if error is not None else {k: float(v) for k, v in moods.items() if v is not None},
        "top": json.loads(top) if top is not None else None,
        "n_segments": int(n_segments) if n_segments is not None else None,
        "duration_s": float(duration) if duration is not None else None,
        "checkpoint_id": str(checkpoint_id) if checkpoint_id is not None else None,
        ERROR_FIELD: str(error) if error is not None else None,
    }
