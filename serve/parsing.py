"""From an HTTP request to audio bytes, or a clear 4xx: Content-Type, size limit, multipart.

    data, name = await audio_from_request(request, limit)   # raises ApiError

Accepted: a raw body (``audio/*``, ``application/octet-stream`` or no Content-Type at
all) or a ``multipart/form-data`` upload in the field ``file``. Refused: another
Content-Type 415; a body over ``limit`` bytes 413 (from Content-Length before reading,
then by counting the bytes actually received); an empty body or file, a malformed
multipart body or one without ``file`` 400. Nothing here decodes audio.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import Request

from serve.schemas import MULTIPART, ApiError

AUDIO_TYPES = ("application/octet-stream",)  # plus every audio/* type


def media_type(request: Request) -> Optional[str]:
    """The request's Content-Type without parameters, lower case; None when absent."""
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
    kind = media_type(request)
    is_multipart = kind == MULTIPART
    # A missing Content-Type is taken as raw bytes (some clients send none).
    if not (is_multipart or kind is None or kind in AUDIO_TYPES or kind.startswith("audio/")):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {kind!r} is not supported; send the audio as audio/* or "
            f"application/octet-stream, or as multipart/form-data with a 'file' field",
        )
    body = await read_body_limited(request, limit)
    if not body:
        raise ApiError(400, "empty_body", "the request body is empty; send an audio file")
    if not is_multipart:
        return body, "<request body>"
    return await _uploaded_file(request, body, limit)


async def _uploaded_file(request: Request, body: bytes, limit: int) -> tuple[bytes, str]:
    """The ``file`` field of a multipart body that has already been read."""

    async def replay() -> dict[str, Any]:  # hand the bytes we hold to the form parser
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
