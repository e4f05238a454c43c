"""The default layout under stress: a replica killed under load, and a short soak.

Issue 14 item 5: with the old default (one combined replica) and 16 clients, SIGKILL of the
replica mid-load gave 16 of 240 requests Serve's plain-text 500. The default now runs two
router replicas (0 CPU) in front of two ingress replicas (1 CPU each on a 2-CPU node); this
module deploys exactly that, ServeConfig's defaults but for the checkpoint, on a Ray of its
own with 2 CPUs (the shared apps of test_serve_http.py and test_serve_load.py would not leave room for it).

Item 6: a 46 s soak at 30 % of the measured capacity (benchmarks/soak_bench.py runs the same
code at 70 % for 5 minutes with the paper-size model), judged by benchmarks.load.soak.judge: replica and
proxy RSS within +10 %, p99 within +25 % or within its interval (the two 20 s windows after
6 s of warm-up), at most 1 % errors. This test's model is tiny (8 filters), so at 70 % the
2 cores went mostly to Serve's proxy and routers, and one CI run (2026-12-06) saw p99 grow
298 -> 697 ms while p50 held at 45 ms. At half the capacity two of three suite runs on
2026-12-06 still saw p99 climb from one 20 s window to the next (919 -> 1,220 ms; 49 -> 72 ms,
p50 21 -> 27 ms), with nothing else running: the 2 cores also carry the load generator's
threads, Serve's proxy and the routers, so "half" left little headroom. At 30 % the test
judges the service, not the machine's saturation; the 5-minute and one-hour runs of
benchmarks/soak_bench.py judge it at 70 % on a quiet machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import requests

from helpers.audio import tone, wav_bytes
from helpers.replica_kill import assert_clean_answer, kill_under_load
from helpers.serve_apps import MOODS
from helpers.serve_http import TIMEOUT, free_port
from mtlmood.synth.checkpoints import untrained_checkpoint

APP = "default"


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Ray (2 CPUs) + Serve on a free loopback port, running build_app(ServeConfig(checkpoint=...))."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    checkpoint = untrained_checkpoint(tmp_path_factory.mktemp("serve-death") / "ckpt", n_filters=8, moods=MOODS)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(ServeConfig(checkpoint=str(checkpoint))), name=APP, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        # Ray's shutdown ends the whole local cluster, Serve's actors with it: no graceful drain of
        # replicas first (serve.shutdown() cost 3-7 s per module). Ray 2.60 drops a Serve client
        # cached from an earlier driver session by itself.
        ray.shutdown()


def test_default_layout_runs_two_ingress_replicas_behind_routers(default_app: str) -> None:
    from benchmarks.load.replicas import running_replicas
    from serve.config import ServeConfig

    defaults = ServeConfig()
    assert len(running_replicas(APP, "MoodIngress")) == defaults.ingress.min_replicas == 2
    assert len(running_replicas(APP, "MoodRouter")) == defaults.router.min_replicas == 2
    assert running_replicas(APP, "MoodModel") == []  # no GPU here: combined topology
    assert requests.get(f"{default_app}/model", timeout=TIMEOUT).json()["serving"]["topology"] == "combined"


def test_sigkill_of_a_replica_under_load_gives_json_503s_and_recovers(default_app: str, tmp_path: Path) -> None:
    """16 clients; one ingress replica gets SIGKILL mid-load. Every answer is 200, 4xx JSON or 503
    JSON with Retry-After (none of Serve's plain-text 500s), the other replica goes on answering
    while Serve starts a new one, and once it runs every answer is 200 again."""
    from benchmarks.load.replicas import running_replicas

    clip = tone(4.0, seed=7)
    # Once in a while (1 of 2 full-suite runs on 2026-11-26) the killed replica held no request, or Serve
    # re-sent them, and every answer was 200: then kill once more, so the 503 path is exercised.
    for _attempt in range(2):
        run = kill_under_load(f"{default_app}/predict", APP, "MoodIngress", clip, clients=16, ok_before_kill=32)
        for outcome in run.outcomes:
            assert_clean_answer(outcome)
        statuses = run.statuses()
        assert len(run.outcomes) >= 100, statuses
        # The kill hit requests in flight (16 clients on 2 replicas): they are the 503s ...
        unavailable = [o for o in run.outcomes if o.status == 503 and '"replica_unavailable"' in o.text]
        if unavailable:
            break
    assert unavailable, statuses
    # ... and only the dead replica's share: the survivor answered while the new one started.
    survived = [o for o in run.outcomes if o.status == 200 and run.killed_at < o.started and o.ended < run.replaced_at]
    assert survived, (statuses, run.replaced_at - run.killed_at)
    after = [o for o in run.outcomes if o.started > run.replaced_at + 1.0]
    assert after and all(o.status == 200 for o in after), [(o.status, o.text[:200]) for o in after]
    assert len(running_replicas(APP, "MoodIngress")) == 2
    assert requests.get(f"{default_app}/healthz?deep=true", timeout=TIMEOUT).status_code == 200


def test_short_soak_holds_memory_and_p99(default_app: str) -> None:
    """30 % of the capacity for 46 s: no replica's (or the proxy's) memory grows > 10 %, p99 does not
    drift > 25 % beyond its interval, errors <= 1 %. An inconclusive verdict (other processes used
    > 0.25 cores) fails with its reason: the test needs a quiet machine to say anything.

    A p99 drift alone must show in two soaks one after the other. Two 20 s windows of one steady
    service are called a drift ~7-9 % of the time (tests/serve/test_soak_tail_interval.py: a
    window holds a few stalls, and no interval from one window knows how many the next gets),
    and one full-suite run on 2026-12-07 failed so (p99 47 -> 63 ms while the memory held);
    twice in a row is under 1 % (0.085 squared if independent; 0 of 100 simulated pairs, against
    0.17 for a doubled tail). A memory, error or process failure fails at once."""
    import numpy as np

    from benchmarks.load.replicas import app_processes
    from benchmarks.load.soak import judge, measure_capacity, run_soak, summarise, table

    quiet = wav_bytes(0.05 * np.random.default_rng(1).standard_normal(16000 * 8).astype(np.float32), 16000)
    clips = [("tone.wav", tone(4.0, seed=8), "audio/wav"), ("noise.wav", quiet, "audio/wav")]
    url = f"{default_app}/predict"
    capacity = measure_capacity(url, clips, concurrency=16, seconds=6.0)
    assert capacity > 1.0, capacity
    for soak in (1, 2):
        # 6 s warm-up (a slow start only makes the first window's p99 the higher), then two 20 s
        # windows to compare (p99 of ~500 requests each).
        run = run_soak(url, clips, 0.3 * capacity, 46.0, lambda: app_processes(APP), sample_s=1.0)
        windows = summarise(run, window_s=20.0, warmup_s=6.0)
        verdict = judge(windows)
        print(f"soak {soak}: capacity {capacity:.1f} req/s, soak at {run.rate_rps:.1f} req/s, {run.late} late starts")
        print(table(windows))  # shown with -s
        print(verdict)
        assert {label.split(" ")[0] for label in windows[-1].rss_mb} >= {"MoodRouter", "MoodIngress", "proxy"}
        drift_alone = all(r.startswith(("p99 drifted", "inconclusive")) for r in verdict.reasons)
        if verdict.passed or not drift_alone:
            break
    assert verdict.passed, verdict.reasons
