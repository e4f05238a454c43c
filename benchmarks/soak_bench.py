"""Soak of the Serve endpoint in its default layout: a steady 70 % of its capacity for 5 minutes
(after 1 minute of warm-up), watching replica memory, p50/p99 latency and errors per minute.

    .venv/bin/python benchmarks/soak_bench.py                    # ~8 min: paper-width untrained model, real clips
    .venv/bin/python benchmarks/soak_bench.py --duration 120 --warmup 30 --window 30   # a quicker look

Steps: start a local Ray (all CPUs) and Serve, deploy ``build_app(ServeConfig(checkpoint=...))``
with every other setting at its default (two routers, two combined ingress replicas on a
2-CPU node), measure its capacity (closed loop, 16 clients), then send ``--load`` x capacity
requests/s open-loop for ``--warmup`` + ``--duration`` seconds (benchmarks.load.soak.run_soak). The
rule (benchmarks.load.soak.judge): first vs last window after the warm-up, each replica's and the
proxy's median RSS within +10 %, p99 within +25 %, at most 1 % errors; a p99 drift while
other processes on the machine used more than 0.25 cores in either window is "inconclusive".

Writes benchmarks/results/soak.{json,md} (per-window table, the verdict, machine and load
average). Exit status: 0 passed, 1 failed, 3 inconclusive.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/soak_bench.py` from anywhere
    sys.path.insert(0, str(REPO))

# After the sys.path fix above:
from benchmarks.common import RESULTS, free_port, machine, machine_line, publish, shared_data  # noqa: E402
from benchmarks.loadgen import load_clips  # noqa: E402

APP = "soak"


def soak_endpoint(
    checkpoint: Path,
    clips: list[tuple[str, bytes, str]],
    load: float,
    duration_s: float,
    warmup_s: float,
    window_s: float,
    capacity_s: float,
    capacity_clients: int = 16,
    num_cpus: Optional[int] = None,
) -> dict:
    """Start Ray + Serve with the default config, measure capacity, soak, and return everything as data.
    Ray is started and shut down here."""
    import ray
    from ray import serve

    from benchmarks.load.replicas import app_processes
    from benchmarks.load.soak import as_json, cpu_seconds, judge, measure_capacity, run_soak, summarise, table
    from serve.app import build_app
    from serve.config import ServeConfig

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(ServeConfig(checkpoint=str(checkpoint), port=port)), name=APP, route_prefix="/")
        url = f"http://127.0.0.1:{port}/predict"
        measure_capacity(url, clips, capacity_clients, min(5.0, capacity_s))  # warm every replica's caches
        busy, own, started = *cpu_seconds(), time.monotonic()
        capacity = measure_capacity(url, clips, capacity_clients, capacity_s)
        # Another job during this half minute lowers the capacity and so the soak's rate: say so.
        busy_end, own_end = cpu_seconds()
        other_during_capacity = max(0.0, (busy_end - busy) - (own_end - own)) / (time.monotonic() - started)
        rate = load * capacity
        print(f"capacity {capacity:.2f} req/s at {capacity_clients} clients; soaking at {rate:.2f} req/s", flush=True)
        run = run_soak(url, clips, rate, warmup_s + duration_s, lambda: app_processes(APP))
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    windows = summarise(run, window_s, warmup_s)
    verdict = judge(windows)
    return {
        **as_json(
            run,
            windows,
            verdict,
            {
                "capacity_rps": capacity,
                "capacity_clients": capacity_clients,
                "capacity_other_cpu_cores": other_during_capacity,
                "load": load,
                "warmup_s": warmup_s,
            },
        ),
        "table": table(windows),
    }


def markdown(result: dict, info: dict, args: argparse.Namespace) -> list[str]:
    verdict = result["verdict"]
    state = "passed" if verdict["passed"] else "failed"
    state = "inconclusive" if verdict["inconclusive"] else state
    growth = ", ".join(f"{k} {v:+.1%}" for k, v in verdict["memory_growth"].items())
    return [
        f"# Soak of the Serve endpoint ({info['date']})",
        "",
        f"Machine: {machine_line(info)}; load average at the end {os.getloadavg()[0]:.1f}. "
        f"Model: {args.model}; clips: {args.n_clips} ({args.clips_source}). Default ServeConfig "
        f"(two routers, two combined ingress replicas). Capacity {result['capacity_rps']:.2f} req/s "
        f"(closed loop, {result['capacity_clients']} clients, {args.capacity_seconds:.0f} s, other processes "
        f"using {result['capacity_other_cpu_cores']:.2f} cores meanwhile); soak at "
        f"{result['load']:.0%} of it = {result['rate_rps']:.2f} req/s open loop for {result['warmup_s']:.0f} s "
        f"warm-up + {args.duration:.0f} s, windows of {args.window:.0f} s; {result['late_starts']} requests "
        "started late (every client thread busy).",
        "",
        "Latency counts from each request's due time; p50/p99 of the 200s, with the p99's 95 % interval "
        "(a bootstrap of 5 s blocks of requests; until 2026-12-06 binomial order statistics). RSS: "
        "median of 2 s samples per process, summed per deployment. Other CPU: cores "
        "used by processes outside this benchmark's Ray.",
        "",
        result["table"],
        "",
        f"Verdict (first vs last window after the warm-up): **{state}**. p99 drift {verdict['p99_drift']:+.1%}; "
        f"other processes' CPU {verdict['other_cpu_change_cores']:+.2f} cores; RSS growth per process: {growth}.",
        *(f"- {reason}" for reason in verdict["reasons"]),
        "",
    ]


def main(argv: Optional[list[str]] = None) -> int:
    """Run the soak, write its results; 0 passed, 1 failed, 3 inconclusive."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint to serve (default: an untrained paper-width model)")
    parser.add_argument("--n-filters", type=int, default=128, help="width of the untrained default model")
    shared = shared_data()
    parser.add_argument("--audio-dir", type=Path, default=shared / "audio", help="clips to send (default: shared)")
    parser.add_argument("--max-clips", type=int, default=16)
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the measured capacity to send")
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds after the warm-up")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the measured part")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per row of the table")
    parser.add_argument("--capacity-seconds", type=float, default=30.0)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="soak", help="results file name (<out>/<name>.json, .md)")
    args = parser.parse_args(argv)
    if not 0 < args.load <= 1 or args.duration < 2 * args.window or args.warmup < 0:
        parser.error("need 0 < --load <= 1, --duration >= 2 x --window (two windows to compare), --warmup >= 0")

    from mtlmood.synth.checkpoints import untrained_checkpoint

    info = machine()
    with tempfile.TemporaryDirectory(prefix="soak-bench-") as tmp:
        # Untrained (speed does not depend on the weights); 9 moods, 50 artists, alpha 9/50 as ever.
        checkpoint = Path(
            args.checkpoint or untrained_checkpoint(Path(tmp) / "ckpt", n_filters=args.n_filters, n_meta=50)
        )
        clips = load_clips(args.audio_dir, args.max_clips)
        args.n_clips = len(clips)
        args.clips_source = "generated noise" if clips[0][0].startswith("noise_") else "real CC clips"
        args.model = args.checkpoint or f"untrained MoodCNN n_filters={args.n_filters}"
        started = time.time()
        result = soak_endpoint(
            checkpoint,
            clips,
            args.load,
            args.duration,
            args.warmup,
            args.window,
            args.capacity_seconds,
            16,
            args.num_cpus,
        )
    result.update(machine=info, loadavg_end=list(os.getloadavg()), wall_s=round(time.time() - started, 1))
    result.update(model=args.model, clips=args.n_clips, clips_source=args.clips_source)
    publish(args.name, result, markdown(result, info, args), args.out)
    verdict = result["verdict"]
    return 0 if verdict["passed"] else (3 if verdict["inconclusive"] else 1)


if __name__ == "__main__":
    sys.exit(main())
