"""The soak's p99 rule (benchmarks/load/soak.py: drift > 25 % and the two windows' 95 % intervals
apart) by simulation, in a service whose slow requests come in bursts: a stall delays every
request in flight, so a 20 s window's p99 rests on one or two stalls. Two windows of one
steady service must seldom be called a drift, and a tail that doubled must be called one
more often than that. The intervals are benchmarks/load/tail_interval.py's block bootstrap;
the binomial interval it replaced (requests taken for independent) is shown beside it.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from benchmarks.load.soak import Sent, SoakRun, judge, summarise

RATE, WINDOW_S, PAIRS = 27.0, 20.0, 200  # the suite's soak: ~27 req/s, two 20 s windows


def _window(rng: np.random.Generator, start: float, stall_rate: float = 0.15, stall_mean_s: float = 0.6) -> list[Sent]:
    """20 s of requests: ~30 ms each, plus Poisson stalls (exponential lengths) that hold every
    request due during them until the stall ends."""
    due = start + np.arange(0, WINDOW_S, 1 / RATE)
    latency = np.exp(rng.normal(np.log(0.030), 0.3, due.size))
    n = rng.poisson(stall_rate * WINDOW_S)
    for begin, length in zip(start + rng.uniform(0, WINDOW_S, n), rng.exponential(stall_mean_s, n)):
        held = (due >= begin) & (due < begin + length)
        latency[held] += begin + length - due[held]
    return [Sent(float(d), float(s), 200) for d, s in zip(due, latency)]


def _drift_called(rng: np.random.Generator, **last: float) -> bool:
    """judge() on a run of no warm-up and two windows, the second drawn with ``last``'s stalls."""
    run = SoakRun(rate_rps=RATE, duration_s=2 * WINDOW_S)
    run.sent = _window(rng, 0.0) + _window(rng, WINDOW_S, **last)
    return any("p99 drifted" in reason for reason in judge(summarise(run, WINDOW_S, 0.0)).reasons)


def _binomial_interval(latency_ms: np.ndarray, q: float = 0.99) -> tuple[float, float]:
    ordered, n = np.sort(latency_ms), len(latency_ms)
    lo, hi = int(binom.ppf(0.025, n, q)), int(binom.ppf(0.975, n, q)) + 1
    return float(ordered[max(lo, 1) - 1]), float(ordered[min(hi, n) - 1])


def test_the_p99_rule_seldom_calls_a_steady_bursty_service_drifting_and_sees_a_doubled_tail() -> None:
    rng = np.random.default_rng(7)
    steady = np.array([_drift_called(rng) for _ in range(PAIRS)])
    tail = np.array([_drift_called(rng, stall_rate=0.3, stall_mean_s=1.2) for _ in range(PAIRS)])
    false_alarms, doubled = steady.mean(), tail.mean()
    # The suite's short soak (test_serve_default_layout.py) calls a p99 drift only when two soaks
    # in a row show one: consecutive simulated soaks, paired.
    replicated, doubled_twice = np.mean(steady[::2] & steady[1::2]), np.mean(tail[::2] & tail[1::2])
    print(f"drift called: steady {false_alarms:.3f} (twice {replicated:.3f})", end=", ")  # shown with -s
    print(f"doubled tail {doubled:.3f} (twice {doubled_twice:.3f})")
    # Measured 2026-12-06: 0.085 and 0.43; above a 5 % test's rate: two 20 s windows
    # hold a few stalls each, and no interval drawn from one window knows how many the next gets.
    # 2026-12-07: twice in a row 0 of 100 pairs and 0.17.
    assert false_alarms <= 0.10
    assert doubled >= 2 * false_alarms and doubled >= 0.25
    assert replicated <= 0.03 and doubled_twice >= 0.1

    # The interval it replaced, on the same kind of windows: far more false alarms.
    iid = 0
    for _ in range(PAIRS):
        first = np.array([s.latency_s for s in _window(rng, 0.0)]) * 1000
        last = np.array([s.latency_s for s in _window(rng, WINDOW_S)]) * 1000
        drift = np.percentile(last, 99) / np.percentile(first, 99) - 1
        iid += drift > 0.25 and _binomial_interval(last)[0] > _binomial_interval(first)[1]
    assert iid / PAIRS >= 2 * false_alarms + 0.1, (iid / PAIRS, false_alarms)
