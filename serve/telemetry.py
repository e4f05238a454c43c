"""The endpoint's own Prometheus metrics and its optional JSON access log.

    api.add_middleware(RequestMetrics)         # serve.router: every HTTP request, counted and timed
    endpoint_metrics().stage("decode", 0.012)  # serve.deployments / serve.batching: the stages

Recorded through ``ray.serve.metrics`` (Serve adds the tags ``deployment``, ``replica`` and
``application``); each node's Ray metrics agent serves them on its metrics export port with
Ray's prefix ``ray_`` (counters also get ``_total``), beside Ray's and Serve's own metrics.
The exported names are in ``EXPORTED`` and in docs/RUNBOOK.md ("Serve metrics and access log").

Recording never breaks a request: a metric that cannot be created or recorded is logged
once (WARNING, with the traceback) and then skipped.

``MTLMOOD_ACCESS_LOG=json`` in a router replica's environment (e.g. the application's
``runtime_env.env_vars``) adds one JSON line per HTTP request to the replica log: method,
route, path, status, latency_ms, bytes (response body), request_bytes, request_id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, MutableMapping, Optional

logger = logging.getLogger("ray.serve")

ACCESS_LOG_ENV = "MTLMOOD_ACCESS_LOG"  # "json" turns the access log on; unset or "off": off
UNMATCHED_ROUTE = "unmatched"  # the route tag of requests no route matched (404): never the raw path
STAGES = ("decode", "features", "model")

# Seconds: a decode or a CPU forward takes ms to 100s of ms; a loaded endpoint seconds.
LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
# Ray 2.60 exports a histogram's _sum as if every value sat at its bucket's midpoint. Bounds at
# half-integers make each small count its own bucket with the count as midpoint, so the _sum of
# these two (and _sum / _count, the mean) is exact: le="2.5" holds the requests of 1 and 2 segments.
SEGMENT_BUCKETS = [k + 0.5 for k in range(10)]  # a song's first 29 s give at most 9 segments
BATCH_BUCKETS = [k + 0.5 for k in range(17)] + [32.5, 64.5, 128.5]  # requests per forward (default max 16)

# Our names -> what Ray's Prometheus endpoint calls them (checked by tests/serve/test_serve_telemetry.py).
EXPORTED = {
    "mtlmood_requests": "ray_mtlmood_requests_total",
    "mtlmood_request_duration_seconds": "ray_mtlmood_request_duration_seconds",
    "mtlmood_stage_duration_seconds": "ray_mtlmood_stage_duration_seconds",
    "mtlmood_segments_per_request": "ray_mtlmood_segments_per_request",
    "mtlmood_batch_size": "ray_mtlmood_batch_size",
    "mtlmood_forward_duration_seconds": "ray_mtlmood_forward_duration_seconds",
}

# Ray 2.60 annotates tag_keys as Tuple[str] (exactly one key): typed Any so that three pass mypy.
REQUEST_TAGS: Any = ("route", "method", "status")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class EndpointMetrics:
    """The endpoint's metrics in one replica process (create it there: Serve takes the
    deployment, replica and application tags from the replica's context)."""

    def __init__(self) -> None:
        self._failed: set[str] = set()
        self._metrics: dict[str, Any] = {}
        self._safely("create", self._create)

    def _create(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self._metrics = {
            "requests": Counter(
                "mtlmood_requests",
                description="HTTP requests answered by the router, by route template, method and status code.",
                tag_keys=REQUEST_TAGS,
            ),
            "latency": Histogram(
                "mtlmood_request_duration_seconds",
                description="End-to-end time of an HTTP request in the router (request in to response sent), s.",
                boundaries=LATENCY_BUCKETS_S,
                tag_keys=REQUEST_TAGS,
            ),
            "stage": Histogram(
                "mtlmood_stage_duration_seconds",
                description="Time of one stage of a successful /predict: decode, features (log-mel), model, s.",
                boundaries=LATENCY_BUCKETS_S,
                tag_keys=("stage",),
            ),
            "segments": Histogram(
                "mtlmood_segments_per_request",
                description="Segments (~3 s windows) scored per /predict request.",
                boundaries=SEGMENT_BUCKETS,
            ),
            "batch": Histogram(
                "mtlmood_batch_size",
                description="Requests per model forward (mode: batched by @serve.batch, or immediate).",
                boundaries=BATCH_BUCKETS,
                tag_keys=("mode",),
            ),
            "forward": Histogram(
                "mtlmood_forward_duration_seconds",
                description="Time of one model forward (all requests of a batch), s.",
                boundaries=LATENCY_BUCKETS_S,
                tag_keys=("mode",),
            ),
        }

    def _safely(self, what: str, record: Callable[[], None]) -> None:
        """Run ``record``; an error is logged (once per ``what``), never raised."""
        try:
            record()
        except Exception:
            if what not in self._failed:
                self._failed.add(what)
                logger.warning("metric %s not recorded (later failures of it are not logged)", what, exc_info=True)

    def _observe(self, key: str, value: float, tags: Optional[dict[str, str]] = None) -> None:
        metric = self._metrics.get(key)
        if metric is not None:
            self._safely(key, lambda: metric.observe(value, tags=tags))

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered (by the router)."""
        tags = {"route": route, "method": method, "status": str(status)}
        counter = self._metrics.get("requests")
        if counter is not None:
            self._safely("requests", lambda: counter.inc(tags=tags))
        self._observe("latency", seconds, tags)

    def stage(self, stage: str, seconds: float) -> None:
        """One stage of a /predict request finished: ``decode``, ``features`` or ``model``."""
        self._observe("stage", seconds, {"stage": stage})

    def segments(self, count: int) -> None:
        """The segments of one request, cut for scoring."""
        self._observe("segments", float(count))

    def forward(self, requests: int, mode: str, seconds: float) -> None:
        """One model forward over ``requests`` requests; ``mode`` is ``batched`` or ``immediate``."""
        self._observe("batch", float(requests), {"mode": mode})
        self._observe("forward", seconds, {"mode": mode})


_metrics: Optional[EndpointMetrics] = None
_lock = threading.Lock()


def endpoint_metrics() -> EndpointMetrics:
    """This process's EndpointMetrics, created on first use (inside the replica, so that Serve's
    tags are there)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = EndpointMetrics()
    return _metrics


def access_log_enabled() -> bool:
    """Whether ``MTLMOOD_ACCESS_LOG=json`` asks for the JSON access log."""
    return os.environ.get(ACCESS_LOG_ENV, "").strip().lower() == "json"


def _request_id() -> str:
    """Serve's id of the current request (the ``X-Request-Id`` the client gets back)."""
    try:
        from ray.serve.context import _get_serve_request_context  # no public accessor in 2.60

        return str(_get_serve_request_context().request_id)
    except Exception:
        return ""


def access_line(
    scope: Scope, route: str, status: int, seconds: float, response_bytes: int, request_id: str
) -> dict[str, Any]:
    """The access-log record of one request (JSON-ready)."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
    length = headers.get("content-length", "")
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "method": scope.get("method", ""),
        "route": route,
        "path": scope.get("path", ""),
        "status": status,
        "latency_ms": round(seconds * 1000.0, 3),
        "bytes": response_bytes,
        "request_bytes": int(length) if length.isdigit() else None,
        "request_id": request_id,
    }


def route_of(scope: Scope) -> str:
    """The template of the route that handled the request ("/predict"), not its raw path: raw
    paths (scanners' 404s, say) would make a time series per URL."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request of the app it wraps (status as sent;
    500 when the app raised, 499 when the request was cancelled before an answer), and writes
    the JSON access-log line when ``MTLMOOD_ACCESS_LOG=json``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.access_log = access_log_enabled()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent: dict[str, int] = {"status": 0, "bytes": 0}

        async def counting_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                sent["status"] = int(message.get("status", 0))
            elif message.get("type") == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        cancelled = False
        try:
            await self.app(scope, receive, counting_send)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            status = sent["status"] or (499 if cancelled else 500)
            self._record(scope, status, time.perf_counter() - started, sent["bytes"])

    def _record(self, scope: Scope, status: int, seconds: float, response_bytes: int) -> None:
        try:
            route = route_of(scope)
            endpoint_metrics().request(route, str(scope.get("method", "")), status, seconds)
            if self.access_log:
                line = access_line(scope, route, status, seconds, response_bytes, _request_id())
                logger.info(json.dumps(line, separators=(",", ":")))
        except Exception:  # never let observability break the answer
            logger.warning("request metrics not recorded", exc_info=True)
