"""Talking to a Serve endpoint under test: a free loopback port, the per-request timeout, and
the checks every answer must pass (a JSON error body, probabilities equal to the library's,
the model replica's scoring counters)."""

from __future__ import annotations

import socket
from typing import Any, Optional

import numpy as np
import requests

TIMEOUT = 60  # seconds per HTTP request; generous for a loaded 2-core machine


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_error(response: requests.Response, status: int, error: Optional[str] = None) -> dict[str, Any]:
    """The response has ``status`` and a JSON {"error", "detail"} body without a traceback."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    if error is not None:
        assert body["error"] == error, body
    return body


def assert_matches(body: dict[str, Any], expected: dict[str, float], tol: float = 1e-5) -> None:
    """The answer's moods are ``expected``'s, in order, each probability within ``tol``."""
    assert list(body["moods"]) == list(expected)
    got = np.array([body["moods"][m] for m in expected])
    np.testing.assert_allclose(got, np.array(list(expected.values())), rtol=0, atol=tol)


def scored_counts(base: str) -> dict[str, int]:
    """What the app's (one) model replica has scored so far: immediate, batches, batched_requests."""
    response = requests.get(f"{base}/healthz?deep=true", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["model"]["scored"]
