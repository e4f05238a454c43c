"""The endpoint's metrics on Ray's Prometheus endpoint, and its JSON access log.

Without Ray: the request middleware (route templates, statuses, the access-log line) and that
a metric that fails to record never fails the request. With Ray: a Ray of this module's own
(2 CPUs, a known metrics export port, a 1 s report interval) runs the
split topology (router -> ingress -> model, one replica each); after a known traffic the
test scrapes ``http://127.0.0.1:<port>/metrics`` until the counts are there (bounded: 60 s)
and reads the router replica's log for the access-log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import requests

from helpers.audio import tone
from helpers.serve_apps import MOODS
from helpers.serve_http import TIMEOUT, free_port
from mtlmood.synth.checkpoints import untrained_checkpoint
from serve.telemetry import EXPORTED

APP = "metrics"
SCRAPE_DEADLINE_S = 60.0  # Ray's agent exports every report interval (1 s here, 10 s by default)


# ------------------------------------------------------------------ Prometheus text


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(family -> type, [(sample name, labels, value)]) of a Prometheus text exposition."""
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind.strip()
            continue
        match = re.match(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if match is None or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return types, samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels`` (all replicas)."""
    return sum(v for n, got, v in samples if n == name and labels.items() <= got.items())


# ------------------------------------------------------------ without Ray: middleware


class FakeMetrics:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int]] = []

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((route, method, status))


def call(app: Any, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    async def send() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


def test_middleware_counts_route_templates_and_writes_json_access_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.serve  # noqa: F401  # its first import replaces the ray.serve logger's handlers: before ours
    from fastapi import FastAPI

    import serve.telemetry as telemetry

    fake = FakeMetrics()
    monkeypatch.setattr(telemetry, "_metrics", fake)
    monkeypatch.setenv(telemetry.ACCESS_LOG_ENV, "json")
    app = FastAPI()
    app.add_middleware(telemetry.RequestMetrics)

    @app.get("/items/{item}")
    async def item(item: str) -> dict[str, str]:
        return {"item": item}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("ray.serve").addHandler(handler)
    try:
        assert call(app, "GET", "/items/a").status_code == 200
        assert call(app, "GET", "/items/b").status_code == 200
        assert call(app, "POST", "/items/c").status_code == 405
        assert call(app, "GET", "/scanner/probe.php").status_code == 404
        with pytest.raises(RuntimeError):  # the app's bug still surfaces; it is counted as a 500
            call(app, "GET", "/boom")
    finally:
        logging.getLogger("ray.serve").removeHandler(handler)
    # Route templates, never raw paths: one series per route, not per URL.
    assert fake.requests == [
        ("/items/{item}", "GET", 200),
        ("/items/{item}", "GET", 200),
        ("/items/{item}", "POST", 405),
        ("unmatched", "GET", 404),
        ("/boom", "GET", 500),
    ]
    records = [json.loads(line) for line in lines]
    assert [(r["route"], r["path"], r["status"]) for r in records][:2] == [
        ("/items/{item}", "/items/a", 200),
        ("/items/{item}", "/items/b", 200),
    ]
    first = records[0]
    assert set(first) == {
        "time",
        "method",
        "route",
        "path",
        "status",
        "latency_ms",
        "bytes",
        "request_bytes",
        "request_id",
    }
    assert first["bytes"] == len(b'{"item":"a"}') and first["latency_ms"] >= 0


def test_a_failing_metric_never_fails_the_request() -> None:
    from serve.telemetry import EndpointMetrics

    class Broken:
        def inc(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("exporter gone")

        observe = inc

    metrics = EndpointMetrics()  # imports ray.serve (which resets the ray.serve logger) before our handler
    metrics._metrics = {key: Broken() for key in metrics._metrics}
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = warnings.append  # type: ignore[method-assign]
    logging.getLogger("ray.serve").addHandler(handler)
    try:
        for _ in range(3):
            metrics.request("/predict", "POST", 200, 0.1)
            metrics.stage("decode", 0.01)
            metrics.segments(2)
            metrics.forward(4, "batched", 0.05)
    finally:
        logging.getLogger("ray.serve").removeHandler(handler)
    # Logged once per metric, then skipped.
    assert sorted(r.args[0] for r in warnings) == sorted(
        ["requests", "latency", "stage", "segments", "batch", "forward"]
    )


# ------------------------------------------------------------------- with Ray


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Ray with a known metrics port, the split topology deployed, the access log on."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve.app import build_app
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, RouterSettings, ServeConfig

    checkpoint = untrained_checkpoint(tmp_path_factory.mktemp("serve-metrics") / "ckpt", n_filters=8, moods=MOODS)
    # Read by the processes ray.init starts (raylet, metrics agent, replicas): export every
    # second instead of every 10 s, and the router's JSON access log.
    env = {"RAY_AUTH_MODE": "disabled", "RAY_metrics_report_interval_ms": "1000", "MTLMOOD_ACCESS_LOG": "json"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    http_port, metrics_port = free_port(), free_port()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
        _metrics_export_port=metrics_port,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": http_port})
        config = ServeConfig(
            checkpoint=str(checkpoint),
            max_body_bytes=4 * 1024 * 1024,
            topology="split",
            model_timeout_s=20.0,
            batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.01),
            router=RouterSettings(min_replicas=1, max_replicas=1),
            ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.5),
            model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.5, num_gpus=0),
        )
        serve.run(build_app(config), name=APP, route_prefix="/")
        yield {
            "url": f"http://127.0.0.1:{http_port}",
            "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
            "logs": Path(ray._private.worker._global_node.get_logs_dir_path()),
        }
    finally:
        # Ray's shutdown ends the whole local cluster, Serve's actors with it: no graceful drain of
        # replicas first (serve.shutdown() cost 3-7 s per module). Ray 2.60 drops a Serve client
        # cached from an earlier driver session by itself.
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def scrape_until(url: str, done: Any) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """Scrape ``url`` until ``done(samples)`` holds or SCRAPE_DEADLINE_S passes (then the last scrape)."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    parsed: tuple[dict[str, str], list[tuple[str, dict[str, str], float]]] = ({}, [])
    while time.monotonic() < deadline:
        try:
            parsed = parse_prometheus(requests.get(url, timeout=10).text)
        except requests.RequestException:
            pass
        if done(parsed[1]):
            break
        time.sleep(1.0)
    return parsed


def access_lines(logs: Path) -> list[dict[str, Any]]:
    """The JSON access-log lines of the router replica(s), from their log files."""
    found = []
    for path in sorted((logs / "serve").glob(f"replica_{APP}_MoodRouter_*.log")):
        for line in path.read_text(errors="replace").splitlines():
            start = line.find('{"time":')
            if start >= 0:
                found.append(json.loads(line[start:]))
    return found


def test_metrics_reach_rays_prometheus_endpoint_with_the_right_counts(served: dict[str, Any]) -> None:
    url = f"{served['url']}/predict"
    clips = [tone(2.0, seed=1), tone(7.0, seed=2), tone(4.0, rate=16000, stereo=False, seed=3)]
    n_ok = 9

    def post(i: int) -> requests.Response:
        return requests.post(url, data=clips[i % 3], headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=3) as pool:  # concurrent: some requests share a forward
        answers = list(pool.map(post, range(n_ok)))
    assert [a.status_code for a in answers] == [200] * n_ok, [a.text[:200] for a in answers]
    segments = sum(a.json()["n_segments"] for a in answers)
    refused = requests.post(url, data=b"{}", headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    junk = requests.post(url, data=b"not audio" * 100, headers={"Content-Type": "audio/mpeg"}, timeout=TIMEOUT)
    missing = requests.get(f"{served['url']}/no/such/page", timeout=TIMEOUT)
    health = requests.get(f"{served['url']}/healthz", timeout=TIMEOUT)
    assert (refused.status_code, junk.status_code, missing.status_code, health.status_code) == (415, 422, 404, 200)

    requests_total = "ray_mtlmood_requests_total"
    predict = {"route": "/predict", "method": "POST"}

    def complete(samples: list[tuple[str, dict[str, str], float]]) -> bool:
        return (
            total(samples, requests_total, **predict, status="200") >= n_ok
            and total(samples, requests_total, route="/healthz") >= 1
            and total(samples, "ray_mtlmood_stage_duration_seconds_count", stage="model") >= n_ok
            and total(samples, "ray_mtlmood_batch_size_sum") >= n_ok
        )

    types, samples = scrape_until(served["metrics"], complete)
    ours = [(name, labels, value) for name, labels, value in samples if "mtlmood" in name and "_bucket" not in name]
    assert complete(samples), f"not all counts on {served['metrics']} after {SCRAPE_DEADLINE_S} s: {ours}"
    print("exported:", sorted({name for name, _, _ in samples if "mtlmood" in name}))  # shown with -s

    # Requests by route template and status: what the client got.
    assert total(samples, requests_total, **predict, status="200") == n_ok
    assert total(samples, requests_total, **predict, status="415") == 1
    assert total(samples, requests_total, **predict, status="422") == 1
    assert total(samples, requests_total, route="unmatched", method="GET", status="404") == 1
    assert total(samples, requests_total, route="/healthz", method="GET", status="200") == 1
    latency = "ray_mtlmood_request_duration_seconds"
    assert total(samples, f"{latency}_count", **predict, status="200") == n_ok
    assert 0 < total(samples, f"{latency}_sum", **predict, status="200") < n_ok * TIMEOUT
    assert total(samples, f"{latency}_bucket", **predict, status="200", le="+Inf") == n_ok
    # Serve's own tags come with every series.
    series = [labels for name, labels, _ in samples if name == requests_total]
    assert all(s.get("application") == APP and s.get("deployment") == "MoodRouter" and s.get("replica") for s in series)

    # Stages: decode, features and model of each successful request. The junk request failed
    # in decoding (no stage finished); the 415 never reached the ingress.
    for stage in ("decode", "features", "model"):
        assert total(samples, "ray_mtlmood_stage_duration_seconds_count", stage=stage) == n_ok, stage
    stage_series = [labels for name, labels, _ in samples if name == "ray_mtlmood_stage_duration_seconds_count"]
    assert {s["deployment"] for s in stage_series} == {"MoodIngress"}
    assert total(samples, "ray_mtlmood_segments_per_request_count") == n_ok
    assert total(samples, "ray_mtlmood_segments_per_request_sum") == segments
    # Every scored request is in exactly one forward: the batch sizes add up to the requests.
    batches = total(samples, "ray_mtlmood_batch_size_count")
    assert batches > 0 and total(samples, "ray_mtlmood_batch_size_sum") == n_ok
    assert total(samples, "ray_mtlmood_forward_duration_seconds_count") == batches
    assert {s["deployment"] for n, s, _ in samples if n == "ray_mtlmood_batch_size_count"} == {"MoodModel"}

    # The names and types serve.telemetry.EXPORTED (and the RUNBOOK) promise; no gauge copy of the counter.
    exported = {name: kind for name, kind in types.items() if "mtlmood" in name}
    assert exported == {
        EXPORTED[name]: "counter" if name == "mtlmood_requests" else "histogram" for name in EXPORTED
    }, exported

    # The JSON access log: one line per request the router answered, with Serve's request id.
    lines = access_lines(served["logs"])
    assert sorted(line["status"] for line in lines) == sorted([200] * n_ok + [415, 422, 404, 200]), lines
    by_id = {line["request_id"]: line for line in lines}
    line: Optional[dict[str, Any]] = by_id.get(refused.headers.get("x-request-id", ""))
    assert line is not None, (refused.headers, lines[:3])
    assert (line["method"], line["route"], line["status"]) == ("POST", "/predict", 415)
    assert line["request_bytes"] == 2 and line["bytes"] == len(refused.content) and line["latency_ms"] > 0
