"""Load generation for the serving benchmarks: the clips to send, a bounded closed loop of
requests, its latency summary, and the CPU each process role spends per request (/proc)."""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from benchmarks.common import AUDIO_SUFFIXES

CONTENT_TYPES = {".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".wav": "audio/wav"}
Clip = tuple[str, bytes, str]  # (name, bytes, content type)


@dataclass
class LevelResult:
    """One row of a closed-loop run: a mode at a concurrency."""

    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    segments_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


def load_clips(audio_dir: Optional[Path], limit: int) -> list[Clip]:
    """(name, bytes, content type) of the real clips, or generated WAVs when there are none."""
    if audio_dir is not None and audio_dir.is_dir():
        paths = sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)[:limit]
        if paths:
            return [(p.name, p.read_bytes(), CONTENT_TYPES[p.suffix.lower()]) for p in paths]
    import soundfile as sf

    rng = np.random.default_rng(0)
    clips = []
    for seconds in (5, 12, 29, 40):
        buffer = io.BytesIO()
        sf.write(buffer, (0.1 * rng.standard_normal(int(seconds * 22050))).astype(np.float32), 22050, format="WAV")
        clips.append((f"noise_{seconds}s.wav", buffer.getvalue(), "audio/wav"))
    return clips


def closed_loop(
    call: Callable[[int], bool], concurrency: int, duration_s: float, warmup_s: float
) -> tuple[list[float], list[int], int, float]:
    """Run ``call(i)`` from ``concurrency`` workers: warm-up, then ``duration_s`` measured.

    Returns (latencies of measured successes, their request indices, measured errors,
    measured seconds). A call is measured when it starts inside the window; workers stop
    starting calls at its end, so the run is bounded by duration + one call.
    """
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    indices: list[int] = []
    errors = [0]
    start = time.perf_counter()
    window = (start + warmup_s, start + warmup_s + duration_s)
    last_end = [window[0]]

    def worker() -> None:
        while True:
            began = time.perf_counter()
            if began >= window[1]:
                return
            i = next(counter)
            ok = call(i)
            ended = time.perf_counter()
            if began >= window[0]:
                with lock:
                    if ok:
                        latencies.append(ended - began)
                        indices.append(i)
                    else:
                        errors[0] += 1
                    last_end[0] = max(last_end[0], ended)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return latencies, indices, errors[0], last_end[0] - window[0]


def summarise(
    mode: str,
    concurrency: int,
    latencies: list[float],
    indices: list[int],
    errors: int,
    seconds: float,
    segments: list[int],
) -> LevelResult:
    """Throughput and latency percentiles of one closed-loop run (``segments``: per clip, for segments/s)."""
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    n = len(latencies)
    seconds = max(seconds, 1e-9)
    return LevelResult(
        mode=mode,
        concurrency=concurrency,
        requests=n,
        errors=errors,
        seconds=round(seconds, 2),
        rps=round(n / seconds, 3),
        segments_per_s=round(sum(segments[i % len(segments)] for i in indices) / seconds, 2),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p95_ms=round(float(np.percentile(ms, 95)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        mean_ms=round(float(ms.mean()), 1),
    )


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system, all threads) used so far, summed by role: this process
    (HTTP clients or the direct path), Serve's proxy, its replicas, its controller, and
    Ray's own daemons. Read from /proc (Linux); processes that ended are not counted."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    roles: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == me:
            role = "benchmark process (clients / direct path)"
        elif "ProxyActor" in cmd:
            role = "Serve proxy"
        elif "ServeReplica" in cmd:
            role = "Serve replica(s)"
        elif "ServeController" in cmd:
            role = "Serve controller"
        elif any(name in cmd for name in ("raylet", "gcs_server", "ray/", "ray::", "dashboard")):
            role = "Ray daemons and idle workers"
        else:
            continue
        # utime and stime are fields 14 and 15 of /proc/PID/stat (11, 12 after the command name).
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return roles


def cpu_per_request(call: Callable[[int], bool], concurrency: int, seconds: float) -> dict[str, float]:
    """ms of CPU per completed request, by role, over a closed loop at ``concurrency``."""
    before = process_cpu_seconds()
    latencies, _, _, _ = closed_loop(call, concurrency, seconds, 0.0)
    after = process_cpu_seconds()
    n = max(1, len(latencies))
    out = {role: round(1000 * (after[role] - before.get(role, 0.0)) / n, 1) for role in after}
    out = {role: ms for role, ms in out.items() if ms > 0.05}
    out["total"] = round(sum(out.values()), 1)
    return out
