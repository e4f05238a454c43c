"""Helpers of the Serve tests: real checkpoints and audio made on the spot, free ports, and a
load that kills a replica mid-way (``kill_under_load``) with the rule its answers must obey
(``assert_clean_answer``: 200, 4xx JSON, or 503 JSON with Retry-After; never another 5xx).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import requests
import soundfile as sf

from mtlmood.checkpoint import ModelCard, save_checkpoint
from mtlmood.config import FeatureConfig, LabelConfig, ModelConfig

MOODS = ["happy", "sad", "energetic", "calm", "dark"]
TIMEOUT = 60  # seconds per HTTP request; generous for a loaded 2-core machine


def make_checkpoint(directory: Path, n_filters: int, seed: int = 0) -> Path:
    """A real checkpoint of an untrained MoodCNN (seeded): enough to test serving exactly."""
    import torch

    from mtlmood.model import MoodCNN

    torch.manual_seed(seed)
    config = ModelConfig(n_filters=n_filters)
    model = MoodCNN(config, len(MOODS), 3)
    card = ModelCard(
        mood_names=list(MOODS),
        meta_names=["artist_a", "artist_b", "artist_c"],
        model=config,
        features=FeatureConfig(),
        alpha=5 / 3,
        labels=LabelConfig(n_moods=len(MOODS)),
    )
    save_checkpoint(directory, model, card)
    return directory


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int = 22050, stereo: bool = True, seed: int = 0) -> bytes:
    """A chord plus a little noise, stereo at 22.05 kHz (exercises downmix and resampling)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 277 * t) + 0.02 * rng.standard_normal(t.size)
    samples = np.stack([left, right], axis=1) if stereo else left
    return wav_bytes(samples.astype(np.float32), rate)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------- a replica dies under load


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
) -> KillRun:
    """``clients`` threads post ``clip`` to ``url`` in a closed loop. Once ``ok_before_kill`` answers
    were 200, one running replica of ``deployment`` (app ``app``) gets SIGKILL. The load goes on
    until Serve runs as many replicas as before without the killed one, then ``settle_s`` more
    seconds. Bounded: every request has a timeout, every client a request cap, the wait a deadline."""
    from serve.replicas import running_replicas

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
