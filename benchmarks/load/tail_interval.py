"""A 95 % interval for a latency quantile (the soak's p99) when slow requests come in bursts.

A stall of the service (a garbage collection, a replica busy with a large batch, a burst of
other work on the machine) delays every request in flight at once: at 27 req/s a 1 s stall
makes some 27 slow requests, so the ~5 slowest of a 20 s window, the ones its p99 rests on,
come from one or two events. An interval that treats requests as independent (binomial
order statistics) is then far too narrow: in a suite run on 2026-12-06 the soak's two 20 s
windows of one steady service gave p99 919 and 1,220 ms with such intervals 857-1,046 and
1,141-1,441, "separated", and the test failed.

This interval resamples *blocks* of requests instead: the window is cut into ``block_s``
seconds of due time, the blocks are drawn with replacement (as many as the window has), and
the quantile of each resample is read from the requests the drawn blocks hold (a weighted
quantile: no copies are made). A burst stays whole inside a block, so the interval is about as
wide as the bursts make the quantile vary. tests/serve/test_soak_tail_interval.py checks the
soak's p99 rule with it by simulation, in a world of ~1 s stalls (2026-12-06): two 20 s
windows of one steady service are called a drift in 8.5 % of 200 pairs (binomial intervals:
~38 %), a doubled tail in 43 %. That is still above a 5 % test's rate: a window holds a few
stalls, and no interval drawn from one window knows how many the next one gets.
"""

from __future__ import annotations

import numpy as np

BLOCK_S = 5.0  # several stalls long (~1 s seen): a stall seldom spans two blocks
N_BOOT = 1000


def block_quantile_ci(
    latency_ms: np.ndarray,
    due_s: np.ndarray,
    q: float = 0.99,
    level: float = 0.95,
    block_s: float = BLOCK_S,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """The ``level`` percentile interval of the ``q``-quantile of ``latency_ms`` (one value per
    request, due at ``due_s``) by a bootstrap of ``block_s``-second blocks of due time.
    (nan, nan) without requests; with a single block, the range of the quantile is unknown
    and the interval is (min, max) of the latencies."""
    latency = np.asarray(latency_ms, dtype=float)
    due = np.asarray(due_s, dtype=float)
    if latency.size == 0:
        return float("nan"), float("nan")
    blocks = np.floor((due - due.min()) / block_s).astype(int)
    _, block_of = np.unique(blocks, return_inverse=True)
    n_blocks = int(block_of.max()) + 1
    if n_blocks < 2:
        return float(latency.min()), float(latency.max())
    order = np.argsort(latency, kind="stable")
    sorted_latency, sorted_block = latency[order], block_of[order]
    rng = np.random.default_rng(seed)
    # counts[b, k]: how often resample b drew block k; each request weighs its block's count.
    draws = rng.integers(0, n_blocks, size=(n_boot, n_blocks))
    counts = np.zeros((n_boot, n_blocks))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    weights = counts[:, sorted_block]
    cumulative = np.cumsum(weights, axis=1)
    total = cumulative[:, -1:]
    # The weighted q-quantile: the first sorted latency whose cumulative weight reaches q of the total.
    index = np.argmax(cumulative >= q * total - 1e-9, axis=1)
    quantiles = sorted_latency[index]
    alpha = (1 - level) / 2
    return float(np.quantile(quantiles, alpha)), float(np.quantile(quantiles, 1 - alpha))
