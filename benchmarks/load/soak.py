"""Soak the endpoint: a steady load for a bounded time, and whether memory or tail latency drifted.

    capacity = measure_capacity(url, clips, concurrency=16, seconds=30)        # req/s, closed loop
    run = run_soak(url, clips, rate_rps=0.7 * capacity, duration_s=360, processes=lambda: app_processes("mtlmood"))
    windows = summarise(run, window_s=60, warmup_s=60)
    verdict = judge(windows)                                                   # .passed, .reasons

The load is open-loop: request i is due at ``i / rate_rps`` seconds whatever the earlier ones
did, and its latency counts from that due time, so a server that falls behind shows it in
the latency instead of slowing the load down. Every ``sample_s`` the run records the
resident memory of each process ``processes()`` names (the app's replicas and the proxy)
and how much CPU the rest of the machine used (everything outside this process and its
descendants, i.e. outside the local Ray this process started), so that a latency drift
caused by someone else's job can be told from one the service caused.

The rule (``judge``), comparing the first and the last window after the warm-up:
memory: each process's median RSS in the last window must be within +10 % of the first
(a process that disappears or appears, i.e. a replica that died or was added, fails too);
latency: p99 of the last window must be within +25 % of the first (only growth counts), or
the two windows' 95 % intervals of the p99 must overlap;
errors: at most 1 % of the measured requests.

Other load on the machine can break the last two, and the first through a backlog (requests
waiting in the service hold their bodies): at 70 % of capacity the service needs most of
both cores, and on this shared machine another job's ~0.9 cores made p99 of one 10 s window
4x that of the next, and in a 5-minute run made the service fall behind (72 s p99, routers
+30 % RSS). So when the rest of the machine used more than 0.25 cores in either compared
window, the verdict is "inconclusive" instead of "failed" if every failure is one that load
explains: a p99 drift; errors or memory growth while the requests in flight grew (median of
the last window > 2 x first + 2). Memory growth without a backlog, or a replica that died,
fails whatever the load.

Each window's p99 comes with a 95 % interval from a bootstrap of 5 s blocks of requests
(benchmarks/load/tail_interval.py): slow requests come in bursts (one stall delays every
request in flight), and an interval that took them for independent ones was too narrow.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from benchmarks.load.replicas import rss_bytes
from benchmarks.load.tail_interval import block_quantile_ci

Clip = tuple[str, bytes, str]  # (name, audio bytes, Content-Type)
TIMEOUT_S = 60.0  # per request


@dataclass(frozen=True)
class Sent:
    """One request: when it was due (s since the start), its latency from then, its HTTP status (-1: none)."""

    due_s: float
    latency_s: float
    status: int


@dataclass(frozen=True)
class Sample:
    """Resident memory of each watched process (bytes) and the machine's CPU use, at ``at_s``."""

    at_s: float
    rss: dict[str, int]
    busy_s: float  # CPU seconds the whole machine has been busy (from /proc/stat)
    own_s: float  # CPU seconds of this process and its descendants (the local Ray)
    in_flight: int = 0  # requests sent and not yet answered


@dataclass
class SoakRun:
    """What a soak recorded: every request (sorted by due time) and every sample."""

    rate_rps: float
    duration_s: float
    sent: list[Sent] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    late: int = 0  # requests that started late because every client thread was busy


@dataclass
class Window:
    """One row of the soak's table: a span of due times and what happened in it."""

    index: int
    start_s: float
    end_s: float
    warmup: bool
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    p99_ci_ms: tuple[float, float]
    rss_mb: dict[str, float]  # median per process
    other_cpu_cores: float  # CPU the rest of the machine used, in cores
    in_flight: float = 0.0  # median of the samples: requests sent and not yet answered


@dataclass
class Verdict:
    """The soak's outcome: passed, or failed with reasons; inconclusive (and not passed) when other
    processes used the machine and every reason is one their load explains."""

    passed: bool
    inconclusive: bool
    reasons: list[str]
    memory_growth: dict[str, float]  # per process, last vs first measured window
    p99_drift: float
    other_cpu_change_cores: float


# ------------------------------------------------------------------------ load


def _client(url: str, clips: Sequence[Clip]) -> Callable[[int], int]:
    """A function posting clip i (round robin) on this thread's keep-alive session; returns the status."""
    import requests

    local = threading.local()

    def post(i: int) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        _, data, content_type = clips[i % len(clips)]
        try:
            return session.post(url, data=data, headers={"Content-Type": content_type}, timeout=TIMEOUT_S).status_code
        except requests.RequestException:
            return -1

    return post


def measure_capacity(url: str, clips: Sequence[Clip], concurrency: int = 16, seconds: float = 30.0) -> float:
    """Requests/s answered 200 by a closed loop of ``concurrency`` clients over ``seconds``.

    The clients take the clips in one shared rotation, as the soak's open loop does: with a
    clip per client the short clips, answered sooner, would be sent more often and the
    capacity would be that of a lighter mix than the soak then sends."""
    post = _client(url, clips)
    end = time.monotonic() + seconds
    done = [0] * concurrency
    counter = itertools.count()
    lock = threading.Lock()

    def loop(worker: int) -> None:
        while time.monotonic() < end:
            with lock:
                i = next(counter)
            done[worker] += post(i) == 200

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(loop, range(concurrency)))
    return sum(done) / (time.monotonic() - started)


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its descendants)."""
    import psutil  # bundled with Ray, on sys.path once ray is imported

    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait (guest is in user)
    own = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            own += times.user + times.system
        except psutil.Error:  # ended between listing and reading
            pass
    return busy, own


def run_soak(
    url: str,
    clips: Sequence[Clip],
    rate_rps: float,
    duration_s: float,
    processes: Callable[[], dict[str, int]],
    sample_s: float = 2.0,
    max_clients: int = 64,
) -> SoakRun:
    """Send ``rate_rps`` requests/s to ``url`` for ``duration_s`` seconds (open loop), sampling the
    RSS of ``processes()`` (label -> pid) and the machine's CPU every ``sample_s`` seconds.
    Bounded: no request starts after ``duration_s``; each has a timeout of TIMEOUT_S."""
    if rate_rps <= 0 or duration_s <= 0:
        raise ValueError(f"rate_rps and duration_s must be > 0, got {rate_rps}, {duration_s}")
    run = SoakRun(rate_rps=rate_rps, duration_s=duration_s)
    post = _client(url, clips)
    lock = threading.Lock()
    free = threading.Semaphore(max_clients)
    stop = threading.Event()
    start = time.monotonic()
    in_flight = [0]  # due and not answered yet, counting those waiting for a client thread

    def sampler() -> None:
        watched: dict[str, int] = {}
        last_listed = -1e9
        while True:
            now = time.monotonic() - start
            if now - last_listed >= 10.0:  # replicas rarely change: ask the controller every 10 s
                watched, last_listed = processes(), now
            rss = {label: size for label, pid in watched.items() if (size := rss_bytes(pid)) is not None}
            busy, own = cpu_seconds()
            run.samples.append(Sample(now, rss, busy, own, in_flight[0]))
            if stop.wait(sample_s):
                return

    def one(i: int, due: float) -> None:
        status = -1
        try:
            status = post(i)
        finally:
            with lock:
                run.sent.append(Sent(due - start, time.monotonic() - due, status))
                in_flight[0] -= 1
            free.release()

    watcher = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
    watcher.start()
    with ThreadPoolExecutor(max_workers=max_clients) as pool:
        i = 0
        while (due := start + i / rate_rps) < start + duration_s:
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with lock:
                in_flight[0] += 1
            if not free.acquire(blocking=False):  # every client busy: this one starts late
                run.late += 1
                free.acquire()
            pool.submit(one, i, due)
            i += 1
    stop.set()
    watcher.join(timeout=30)
    run.sent.sort(key=lambda s: s.due_s)
    return run


# ------------------------------------------------------------------- windows, rule


def summarise(run: SoakRun, window_s: float, warmup_s: float) -> list[Window]:
    """The warm-up (``[0, warmup_s)``, one window) and then windows of ``window_s`` seconds (by
    due time; the last may be shorter): requests, errors (anything but 200), p50/p99 of the
    200s with the p99's 95 % interval, median RSS per process, the rest of the machine's CPU."""
    edges = [0.0, warmup_s] if warmup_s > 0 else [0.0]
    while edges[-1] < run.duration_s - 1e-9:
        edges.append(min(edges[-1] + window_s, run.duration_s))
    windows = []
    for index, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        sent = [s for s in run.sent if lo <= s.due_s < hi]
        answered = [s for s in sent if s.status == 200]
        latency_ms = np.array([s.latency_s * 1000 for s in answered])
        ok = np.sort(latency_ms)
        samples = [s for s in run.samples if lo <= s.at_s <= hi]
        labels = sorted({label for s in samples for label in s.rss})
        rss = {label: float(np.median([s.rss[label] for s in samples if label in s.rss])) / 2**20 for label in labels}
        other = 0.0
        if len(samples) >= 2:
            first, last = samples[0], samples[-1]
            other = max(0.0, (last.busy_s - first.busy_s) - (last.own_s - first.own_s)) / (last.at_s - first.at_s)
        windows.append(
            Window(
                index=index + 1,
                start_s=lo,
                end_s=hi,
                warmup=warmup_s > 0 and index == 0,
                requests=len(sent),
                errors=sum(s.status != 200 for s in sent),
                p50_ms=float(np.percentile(ok, 50)) if len(ok) else float("nan"),
                p99_ms=float(np.percentile(ok, 99)) if len(ok) else float("nan"),
                p99_ci_ms=block_quantile_ci(latency_ms, np.array([s.due_s for s in answered])),
                rss_mb=rss,
                other_cpu_cores=other,
                in_flight=float(np.median([s.in_flight for s in samples])) if samples else 0.0,
            )
        )
    return windows


def judge(
    windows: list[Window],
    memory_limit: float = 0.10,
    p99_limit: float = 0.25,
    error_limit: float = 0.01,
    other_cpu_limit: float = 0.25,
) -> Verdict:
    """The soak's rule (see the module docstring): first vs last window after the warm-up."""
    measured = [w for w in windows if not w.warmup]
    if len(measured) < 2:
        raise ValueError(f"need at least two windows after the warm-up, got {len(measured)}")
    first, last = measured[0], measured[-1]
    # The service fell behind: requests waiting in it hold their bodies, and wait, so memory,
    # latency and timeouts all grow with the backlog rather than with time.
    backlog = last.in_flight > 2 * first.in_flight + 2
    failures: list[tuple[str, bool]] = []  # (reason, whether other load on the machine can explain it)
    growth: dict[str, float] = {}
    for label in sorted(set(first.rss_mb) | set(last.rss_mb)):
        if label not in last.rss_mb or label not in first.rss_mb:
            where = "gone by" if label in first.rss_mb else "new in"
            failures.append((f"process {label} {where} the last window (a replica died or was added)", False))
            continue
        growth[label] = last.rss_mb[label] / first.rss_mb[label] - 1
        if growth[label] > memory_limit:
            text = f"{label} RSS grew {growth[label]:+.1%} ({first.rss_mb[label]:.0f} -> {last.rss_mb[label]:.0f} MB)"
            failures.append((text, backlog))
    requests = sum(w.requests for w in measured)
    errors = sum(w.errors for w in measured)
    if requests == 0 or errors > error_limit * requests:
        failures.append((f"{errors} of {requests} measured requests failed (limit {error_limit:.0%})", backlog))
    drift = last.p99_ms / first.p99_ms - 1 if first.p99_ms > 0 else float("nan")
    # A drift counts when it is over the limit and the two windows' p99 intervals do not overlap:
    # a p99 of a few hundred requests rests on its few slowest ones, and one slow second moves it.
    separated = not last.p99_ci_ms[0] <= first.p99_ci_ms[1]  # NaN bounds count as separated
    if not drift <= p99_limit and separated:  # NaN (no successes in a window) fails too
        failures.append(
            (
                f"p99 drifted {drift:+.1%} ({first.p99_ms:.0f} -> {last.p99_ms:.0f} ms; 95 % intervals "
                f"{first.p99_ci_ms[0]:.0f}-{first.p99_ci_ms[1]:.0f} and "
                f"{last.p99_ci_ms[0]:.0f}-{last.p99_ci_ms[1]:.0f})",
                True,
            )
        )
    reasons = [text for text, _ in failures]
    busy = max(first.other_cpu_cores, last.other_cpu_cores) > other_cpu_limit
    inconclusive = busy and bool(failures) and all(excusable for _, excusable in failures)
    if inconclusive:
        reasons.append(
            f"inconclusive: other processes used {first.other_cpu_cores:.2f} / {last.other_cpu_cores:.2f} cores "
            f"in those windows (requests in flight {first.in_flight:.0f} / {last.in_flight:.0f})"
        )
    other_change = last.other_cpu_cores - first.other_cpu_cores
    return Verdict(not failures, inconclusive, reasons, growth, drift, other_change)


def group_rss(rss_mb: dict[str, float]) -> dict[str, float]:
    """Per-process RSS summed by the part of a label before the first space (the deployment)."""
    grouped: dict[str, float] = {}
    for label, mb in rss_mb.items():
        key = label.split(" ", 1)[0]
        grouped[key] = grouped.get(key, 0.0) + mb
    return grouped


def table(windows: list[Window]) -> str:
    """A Markdown table: one row per window, RSS summed per deployment (MB)."""
    groups = sorted({g for w in windows for g in group_rss(w.rss_mb)})
    header = ["window", "s", "requests", "errors", "p50 ms", "p99 ms (95 % CI)", *(f"{g} MB" for g in groups)]
    header += ["in flight", "other CPU (cores)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for w in windows:
        grouped = group_rss(w.rss_mb)
        cells = [
            f"{w.index}{' (warm-up)' if w.warmup else ''}",
            f"{w.start_s:.0f}-{w.end_s:.0f}",
            str(w.requests),
            str(w.errors),
            f"{w.p50_ms:.0f}",
            f"{w.p99_ms:.0f} ({w.p99_ci_ms[0]:.0f}-{w.p99_ci_ms[1]:.0f})",
            *(f"{grouped.get(g, float('nan')):.0f}" for g in groups),
            f"{w.in_flight:.0f}",
            f"{w.other_cpu_cores:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def as_json(run: SoakRun, windows: list[Window], verdict: Verdict, extra: Optional[dict[str, Any]] = None) -> dict:
    """Everything about a soak as plain data (for benchmarks/results/*.json)."""
    return {
        **(extra or {}),
        "rate_rps": run.rate_rps,
        "duration_s": run.duration_s,
        "requests": len(run.sent),
        "late_starts": run.late,
        "windows": [asdict(w) for w in windows],
        "verdict": asdict(verdict),
    }
