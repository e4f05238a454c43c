"""The default layout loses a replica under load: what clients get, and that the service recovers.

Issue 14 item 5: with the old default (one combined replica) and 16 clients, SIGKILL of the
replica mid-load gave 16 of 240 requests Serve's plain-text 500. The default now runs two
router replicas (0 CPU) in front of two ingress replicas (1 CPU each on a 2-CPU node); this
module deploys exactly that, ServeConfig's defaults but for the checkpoint, on a Ray of its
own with 2 CPUs (the shared apps of test_serve.py would not leave room for it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import requests
from serve_helpers import TIMEOUT, assert_clean_answer, free_port, kill_under_load, make_checkpoint, tone

APP = "default"


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Ray (2 CPUs) + Serve on a free loopback port, running build_app(ServeConfig(checkpoint=...))."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    checkpoint = make_checkpoint(tmp_path_factory.mktemp("serve-death") / "ckpt", n_filters=8)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(ServeConfig(checkpoint=str(checkpoint))), name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def test_default_layout_runs_two_ingress_replicas_behind_routers(default_app: str) -> None:
    from serve.config import ServeConfig
    from serve.replicas import running_replicas

    defaults = ServeConfig()
    assert len(running_replicas(APP, "MoodIngress")) == defaults.ingress.min_replicas == 2
    assert len(running_replicas(APP, "MoodRouter")) == defaults.router.min_replicas == 2
    assert running_replicas(APP, "MoodModel") == []  # no GPU here: combined topology
    assert requests.get(f"{default_app}/model", timeout=TIMEOUT).json()["serving"]["topology"] == "combined"


def test_sigkill_of_a_replica_under_load_gives_json_503s_and_recovers(default_app: str, tmp_path: Path) -> None:
    """16 clients; one ingress replica gets SIGKILL mid-load. Every answer is 200, 4xx JSON or 503
    JSON with Retry-After (none of Serve's plain-text 500s), the other replica goes on answering
    while Serve starts a new one, and once it runs every answer is 200 again."""
    from serve.replicas import running_replicas

    clip = tone(4.0, seed=7)
    run = kill_under_load(f"{default_app}/predict", APP, "MoodIngress", clip, clients=16, ok_before_kill=32)
    for outcome in run.outcomes:
        assert_clean_answer(outcome)
    statuses = run.statuses()
    assert len(run.outcomes) >= 100, statuses
    # The kill hit requests in flight (16 clients on 2 replicas): they are the 503s ...
    unavailable = [o for o in run.outcomes if o.status == 503 and '"replica_unavailable"' in o.text]
    assert unavailable, statuses
    # ... and only the dead replica's share: the survivor answered while the new one started.
    survived = [o for o in run.outcomes if o.status == 200 and run.killed_at < o.started and o.ended < run.replaced_at]
    assert survived, (statuses, run.replaced_at - run.killed_at)
    after = [o for o in run.outcomes if o.started > run.replaced_at + 1.0]
    assert after and all(o.status == 200 for o in after), [(o.status, o.text[:200]) for o in after]
    assert len(running_replicas(APP, "MoodIngress")) == 2
    assert requests.get(f"{default_app}/healthz?deep=true", timeout=TIMEOUT).status_code == 200
