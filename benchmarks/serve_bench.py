"""Serve endpoint vs direct in-process inference: throughput and latency (run on demand, not in CI).

    .venv/bin/python benchmarks/serve_bench.py                      # paper-width untrained model, real clips
    .venv/bin/python benchmarks/serve_bench.py --checkpoint runs/train/best --duration 30

For each concurrency (1, 4, 16 by default) and each mode it runs a closed loop for a
bounded time (warm-up discarded) and records requests/s and p50/p95/p99 latency:

- ``direct``: ``Predictor.predict_bytes`` from a thread pool in this process (decode in
  parallel, one forward at a time: the library path a user would write);
- ``serve_default``: what ``mtlmood serve`` runs on a CPU node, ServeConfig's defaults
  untouched: two router replicas (0 CPU) in front of two combined ingress replicas
  (decode + batched model, 1 CPU and one torch thread each);
- ``serve_combined`` (one replica decodes and scores, with ``@serve.batch``; the default
  before the router and the second replica), ``serve_split`` (ingress replica -> model
  replica, batched; the GPU-cluster layout) and ``serve_combined_unbatched``: one router
  replica, then one replica per deployment with the CPUs and threads below (so the numbers
  are about topology and batching, not autoscaling).

Every mode answers HTTP POST /predict on loopback.

Everything shares one machine: the HTTP clients, the proxy, both replicas and the
direct path compete for the same cores, as they would on a single node. Results go to
``benchmarks/results/serve_bench.{json,md}``; the summary gives serve/direct at the
highest concurrency ("saturation").

Where the time goes: decode (+ resample), log-mel and the forward pass of one request
are timed in-process on the same clips (interleaved rounds); what the mean latency at
concurrency 1 adds on top of their sum is the path's overhead (HTTP, proxy, handles,
object transfer and batch wait for Serve; thread hand-off for direct). The peer's
files/s comes from benchmarks/results/inference.json when the inference benchmark ran.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/serve_bench.py` from anywhere
    sys.path.insert(0, str(REPO))

# After the sys.path fix above:
from benchmarks.common import RESULTS, free_port, interleaved, publish, shared_data  # noqa: E402
from benchmarks.loadgen import Clip, LevelResult, closed_loop, cpu_per_request, load_clips, summarise  # noqa: E402
from benchmarks.serve_report import markdown, run_meta  # noqa: E402

# (mode, topology, batching on, immediate_when_idle): the first is what `mtlmood serve` runs on a CPU node.
SERVE_MODES = (
    ("serve_default", "auto", True, True),  # ServeConfig() as is: the other fields of the row are ignored
    ("serve_combined", "combined", True, True),
    ("serve_split", "split", True, True),
    ("serve_combined_unbatched", "combined", False, True),
    # Batching without the idle shortcut: every request waits for its batch.
    ("serve_combined_always_batched", "combined", True, False),
)


def bench_direct(
    checkpoint: Path,
    clips: list[Clip],
    segments: list[int],
    levels: list[int],
    duration: float,
    warmup: float,
    precision: str = "fp32",
    cpu: Optional[dict[str, dict[str, float]]] = None,
    cpu_seconds: float = 0.0,
) -> list[LevelResult]:
    """Closed loops of ``Predictor.predict_bytes`` in this process at each level (and its CPU per request)."""
    from mtlmood.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, precision=precision)

    def call(i: int) -> bool:
        name, data, _ = clips[i % len(clips)]
        predictor.predict_bytes(data, name)
        return True

    results = []
    for c in levels:
        lat, idx, err, secs = closed_loop(call, c, duration, warmup)
        results.append(summarise("direct", c, lat, idx, err, secs, segments))
        print(f"  direct          c={c:<3} {results[-1].rps:7.2f} req/s  p50 {results[-1].p50_ms:7.1f} ms", flush=True)
    if cpu_seconds and cpu is not None:
        cpu["direct"] = cpu_per_request(call, max(levels), cpu_seconds)
    return results


def serve_config(
    checkpoint: Path,
    port: int,
    mode: str,
    topology: str,
    batched: bool,
    immediate_when_idle: bool,
    args: argparse.Namespace,
) -> Any:
    """The ServeConfig of one row of SERVE_MODES: the defaults as is for ``serve_default``, else one
    router and one replica per deployment with the benchmark's CPUs, threads and batching."""
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, RouterSettings, ServeConfig

    if mode == "serve_default":
        return ServeConfig(checkpoint=str(checkpoint), port=port, precision=args.precision)
    ingress_slots = max(64, args.max_batch_size)  # a combined replica must fit a whole batch
    return ServeConfig(
        checkpoint=str(checkpoint),
        port=port,
        model_timeout_s=120.0,
        request_timeout_s=180.0,
        max_pending_decodes=256,
        topology=topology,
        precision=args.precision,
        batching=BatchingConfig(
            enabled=batched,
            max_batch_size=args.max_batch_size,
            batch_wait_timeout_s=args.batch_wait_ms / 1000,
            immediate_when_idle=immediate_when_idle,
        ),
        # The clips are a few MB: 8 MiB bodies keep the router's memory reservation (a body per
        # request it holds, serve.config.ServeConfig.router_memory_bytes) within its default ceiling.
        max_body_bytes=8 * 1024 * 1024,
        # Holds every request the ingress can (the config's rule): 64 + 64 covers 128 clients.
        router=RouterSettings(min_replicas=1, max_replicas=1, max_ongoing_requests=ingress_slots + 64),
        # One replica each: the comparison is batching vs not, on the same cores.
        ingress=IngressSettings(
            min_replicas=1,
            max_replicas=1,
            num_cpus=args.ingress_cpus,
            threads=args.decode_threads,
            max_ongoing_requests=ingress_slots,
            max_queued_requests=64,
        ),
        model=ModelSettings(
            min_replicas=1,
            max_replicas=1,
            num_cpus=args.model_cpus,
            threads=args.torch_threads,
            num_gpus=0,
            max_ongoing_requests=max(64, args.max_batch_size),
            max_queued_requests=256,
        ),
    )


def bench_serve(
    checkpoint: Path,
    clips: list[Clip],
    segments: list[int],
    levels: list[int],
    duration: float,
    warmup: float,
    args: argparse.Namespace,
    cpu: dict[str, dict[str, float]],
) -> list[LevelResult]:
    """Closed loops over HTTP against each Serve mode in turn (and the CPU per request of the main three)."""
    import requests
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results = []
    for mode, topology, batched, immediate_when_idle in SERVE_MODES:
        if args.modes and mode not in args.modes:
            continue
        config = serve_config(checkpoint, port, mode, topology, batched, immediate_when_idle, args)
        serve.run(
            build_app(config),
            name="bench",
            route_prefix="/",
            logging_config=None if args.access_log else {"enable_access_log": False},
        )
        local = threading.local()
        url = f"http://127.0.0.1:{port}/predict"

        def call(i: int, local: threading.local = local, url: str = url) -> bool:
            session = getattr(local, "session", None)
            if session is None:  # keep-alive per client thread, like a real client pool
                session = local.session = requests.Session()
            name, data, content_type = clips[i % len(clips)]
            try:
                response = session.post(url, data=data, headers={"Content-Type": content_type}, timeout=120)
            except requests.RequestException:
                return False
            return response.status_code == 200

        for c in levels:
            lat, idx, err, secs = closed_loop(call, c, duration, warmup)
            results.append(summarise(mode, c, lat, idx, err, secs, segments))
            print(
                f"  {mode:<15} c={c:<3} {results[-1].rps:7.2f} req/s  p50 {results[-1].p50_ms:7.1f} ms  errors {err}",
                flush=True,
            )
        if args.cpu_seconds and mode in ("serve_default", "serve_combined", "serve_split"):
            cpu[mode] = cpu_per_request(call, max(levels), args.cpu_seconds)
        serve.delete("bench")
    return results


def breakdown(checkpoint: Path, clips: list[Clip], rounds: int = 5) -> dict[str, float]:
    """Mean ms per request of decode, log-mel and forward, in-process (interleaved rounds over the clips)."""
    from mtlmood.audio import load_audio_bytes
    from mtlmood.features import log_mel
    from mtlmood.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    cfg = predictor.feature_config
    waves = [load_audio_bytes(data, cfg, name) for name, data, _ in clips]
    segments = [predictor.segments(log_mel(w, cfg, "fast")) for w in waves]
    timings = interleaved(
        {
            "decode + resample": lambda: [load_audio_bytes(data, cfg, name) for name, data, _ in clips],
            "log-mel (fast)": lambda: [log_mel(w, cfg, "fast") for w in waves],
            "forward": lambda: [predictor.predict_segments(s) for s in segments],
        },
        rounds,
        warmup=1,
    )
    return {name: 1000 * timings.median(name) / len(clips) for name in timings.seconds}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """The command line; threads left at 0 become all CPUs, ``--modes`` a list, ``levels`` the concurrencies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint to serve (default: an untrained paper-width model)")
    parser.add_argument("--n-filters", type=int, default=128, help="width of the untrained default model")
    parser.add_argument(
        "--audio-dir",
        type=Path,
        default=shared_data() / "audio",
        help="clips to send (default: the shared CC clips; generated noise when absent)",
    )
    parser.add_argument("--max-clips", type=int, default=16)
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=3.0, help="discarded seconds before each row")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray")
    parser.add_argument("--ingress-cpus", type=float, default=0.5)
    parser.add_argument("--model-cpus", type=float, default=1.5)
    parser.add_argument("--decode-threads", type=int, default=0, help="ingress decode threads (0 = all CPUs)")
    parser.add_argument("--torch-threads", type=int, default=0, help="model replica torch threads (0 = all CPUs)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        default=10.0,
        help="length of the CPU-accounting run at saturation per path (0 = skip it)",
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="turn Serve's per-request access log off in the app's replicas",
    )
    parser.add_argument(
        "--modes",
        default="",
        help="comma-separated Serve modes to run (default: all of " + ", ".join(m for m, *_ in SERVE_MODES) + ")",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="model precision, the same for the direct path and Serve",
    )
    parser.add_argument(
        "--openblas-threads",
        type=int,
        default=0,
        help="set OPENBLAS_NUM_THREADS in the replicas' environment (0 = leave it unset)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="serve_bench", help="results file name (<out>/<name>.json, .md)")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    # Like the direct path (torch and decoding use every core), unless told otherwise.
    args.decode_threads = args.decode_threads or cpus
    args.torch_threads = args.torch_threads or cpus
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - {m for m, *_ in SERVE_MODES}
    if unknown:
        parser.error(f"unknown --modes {sorted(unknown)}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark and write its results; returns 0."""
    args = parse_args(argv)
    levels = args.levels
    load_before = list(os.getloadavg())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from mtlmood.features import features_from_bytes
    from mtlmood.inference import Predictor
    from mtlmood.synth.checkpoints import untrained_checkpoint

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        # Untrained (speed does not depend on the weights); 9 moods, 50 artists, alpha 9/50 as ever.
        checkpoint = Path(
            args.checkpoint or untrained_checkpoint(Path(tmp) / "ckpt", n_filters=args.n_filters, n_meta=50)
        )
        predictor = Predictor.from_checkpoint(checkpoint)
        clips = load_clips(args.audio_dir, args.max_clips)
        segments = [len(predictor.segments(features_from_bytes(d, predictor.feature_config, n))) for n, d, _ in clips]
        print(f"{len(clips)} clips, segments per clip {segments}; concurrency {levels}", flush=True)

        parts = breakdown(checkpoint, clips)
        print("  breakdown (ms/request): " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()), flush=True)
        results: list[LevelResult] = []
        cpu: dict[str, dict[str, float]] = {}  # mode -> role -> ms CPU per request at saturation
        if not args.skip_direct:
            results += bench_direct(
                checkpoint, clips, segments, levels, args.duration, args.warmup, args.precision, cpu, args.cpu_seconds
            )
        env = {"OPENBLAS_NUM_THREADS": str(args.openblas_threads)} if args.openblas_threads else {}
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": env} if env else None,
        )
        try:
            results += bench_serve(checkpoint, clips, segments, levels, args.duration, args.warmup, args, cpu)
        finally:
            from ray import serve

            serve.shutdown()
            ray.shutdown()

    saturation = max(levels)
    by_mode = {r.mode: r for r in results if r.concurrency == saturation}
    ratios = {
        f"{mode}/direct": round(by_mode[mode].rps / by_mode["direct"].rps, 3)
        for mode, *_ in SERVE_MODES
        if mode in by_mode and "direct" in by_mode
    }
    meta = run_meta(args, predictor.card, clips, segments, parts, cpu, load_before)
    publish(
        args.name,
        {"meta": meta, "results": [asdict(r) for r in results], "ratio_at_saturation": ratios},
        [markdown(meta, results, ratios)],
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
