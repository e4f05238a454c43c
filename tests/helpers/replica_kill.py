"""A replica killed under load (``kill_under_load``) and the rule its answers must obey
(``assert_clean_answer``: 200, 4xx JSON, or 503 JSON with Retry-After; never another 5xx).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import requests

from helpers.serve_http import TIMEOUT


@dataclass(frozen=True)
class Outcome:
    """One request of the load: its status (-1: no HTTP answer at all), body, headers (lower-case
    names) and when it ran."""

    status: int
    text: str
    headers: dict[str, str]
    started: float  # time.monotonic()
    ended: float


@dataclass
class KillRun:
    """What happened around the kill: every request, when the replica was killed and when Serve had
    as many running replicas again (the killed one not among them)."""

    outcomes: list[Outcome] = field(default_factory=list)
    killed_at: float = 0.0
    replaced_at: float = 0.0
    killed_pid: int = 0

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts


def _post(session: requests.Session, url: str, clip: bytes) -> Outcome:
    started = time.monotonic()
    try:
        response = session.post(url, data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
    except requests.RequestException as exc:
        return Outcome(-1, f"{type(exc).__name__}: {exc}", {}, started, time.monotonic())
    headers = {key.lower(): value for key, value in response.headers.items()}
    return Outcome(response.status_code, response.text, headers, started, time.monotonic())


def kill_under_load(
    url: str,
    app: str,
    deployment: str,
    clip: bytes,
    clients: int,
    ok_before_kill: int,
    settle_s: float = 3.0,
    max_requests_per_client: int = 200,
    replace_timeout_s: float = 120.0,
    answers_after: int = 3,
    pause_s: float = 0.0,
) -> KillRun:
    """``clients`` threads post ``clip`` to ``url`` in a closed loop. Once ``ok_before_kill`` answers
    were 200, one running replica of ``deployment`` (app ``app``) gets SIGKILL. The load goes on
    until Serve runs as many replicas as before without the killed one, then ``settle_s`` more
    seconds and until ``answers_after`` requests sent a second after that have their answers.
    ``pause_s``: each client's pause between an answer and its next request (0: as fast as
    answers come, which keeps every core busy for the whole run). Bounded: every request has a
    timeout, every client a request cap, the waits a deadline."""
    from benchmarks.load.replicas import running_replicas

    before = running_replicas(app, deployment)
    assert before, f"no running replica of {app}/{deployment}"
    run = KillRun()
    lock = threading.Lock()
    ok = threading.Semaphore(0)
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            for _ in range(max_requests_per_client):
                if stop.is_set():
                    return
                outcome = _post(session, url, clip)
                with lock:
                    run.outcomes.append(outcome)
                if outcome.status == 200:
                    ok.release()
                if pause_s and stop.wait(pause_s):
                    return

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        try:
            for _ in range(ok_before_kill):  # the load is there: requests are in flight
                assert ok.acquire(timeout=TIMEOUT), "no answers before the kill"
            victim = before[0]
            os.kill(victim.pid, signal.SIGKILL)
            run.killed_at, run.killed_pid = time.monotonic(), victim.pid
            deadline = run.killed_at + replace_timeout_s
            while time.monotonic() < deadline:
                now = running_replicas(app, deployment)
                if len(now) >= len(before) and victim.replica_id not in {r.replica_id for r in now}:
                    run.replaced_at = time.monotonic()
                    break
                time.sleep(0.25)
            assert run.replaced_at, (
                f"{app}/{deployment} was not back to {len(before)} replicas in {replace_timeout_s} s"
            )
            time.sleep(settle_s)
            # Then until a few requests sent a second after the replacement have their answers: on
            # a loaded machine (three kills at once) the first ones can take longer than settle_s.
            deadline = time.monotonic() + replace_timeout_s
            while time.monotonic() < deadline:
                with lock:
                    answered = sum(o.started > run.replaced_at + 1.0 for o in run.outcomes)
                if answered >= answers_after:
                    break
                time.sleep(0.25)
        finally:
            stop.set()
            for future in futures:
                future.result(timeout=TIMEOUT + 30)
    unavailable = sorted({o.text for o in run.outcomes if o.status == 503})
    print(  # shown with -s
        f"{app}/{deployment} killed under load: {run.statuses()}, replaced after "
        f"{run.replaced_at - run.killed_at:.1f} s; 503 bodies: {unavailable}"
    )
    return run


def assert_clean_answer(outcome: Outcome) -> Optional[dict]:
    """200 with a prediction, 4xx JSON, or 503 JSON with Retry-After: what a client may get while a
    replica dies. Any other 5xx (Serve's plain-text 500 above all), or no answer, fails."""
    assert outcome.status != -1, outcome.text
    if outcome.status == 200:
        return json.loads(outcome.text)
    assert 400 <= outcome.status < 500 or outcome.status == 503, (outcome.status, outcome.text[:300])
    assert outcome.headers.get("content-type", "").startswith("application/json"), (outcome.status, outcome.text[:300])
    body = json.loads(outcome.text)
    assert set(body) == {"error", "detail"} and "Traceback" not in outcome.text, body
    if outcome.status == 503:
        assert outcome.headers.get("retry-after") == "1", outcome.headers
    return None
