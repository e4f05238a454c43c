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
import itertools
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/serve_bench.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.common import cpu_model, publish  # noqa: E402  (after the sys.path fix above)

AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav")
# (mode, topology, batching on, immediate_when_idle): the first is what `mtlmood serve` runs on a CPU node.
SERVE_MODES = (
    ("serve_default", "auto", True, True),  # ServeConfig() as is: the other fields of the row are ignored
    ("serve_combined", "combined", True, True),
    ("serve_split", "split", True, True),
    ("serve_combined_unbatched", "combined", False, True),
    # Batching without the idle shortcut: every request waits for its batch.
    ("serve_combined_always_batched", "combined", True, False),
)
CONTENT_TYPES = {".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".wav": "audio/wav"}


@dataclass
class LevelResult:
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


def summarise(
    mode: str,
    concurrency: int,
    latencies: list[float],
    indices: list[int],
    errors: int,
    seconds: float,
    segments: list[int],
) -> LevelResult:
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


def make_untrained_checkpoint(directory: Path, n_filters: int, n_moods: int = 9, n_meta: int = 50) -> Path:
    """A checkpoint of an untrained model (speed does not depend on the weights)."""
    import torch

    from mtlmood.checkpoint import ModelCard, save_checkpoint
    from mtlmood.config import FeatureConfig, ModelConfig
    from mtlmood.model import MoodCNN

    torch.manual_seed(0)
    config = ModelConfig(n_filters=n_filters)
    model = MoodCNN(config, n_moods, n_meta)
    card = ModelCard(
        mood_names=[f"mood_{i}" for i in range(n_moods)],
        meta_names=[f"artist_{i}" for i in range(n_meta)],
        model=config,
        features=FeatureConfig(),
        alpha=n_moods / n_meta,
    )
    save_checkpoint(directory, model, card)
    return directory


def load_clips(audio_dir: Optional[Path], limit: int) -> list[tuple[str, bytes, str]]:
    """(name, bytes, content type) of the real clips, or generated WAVs when there are none."""
    if audio_dir is not None and audio_dir.is_dir():
        paths = sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)[:limit]
        if paths:
            return [(p.name, p.read_bytes(), CONTENT_TYPES[p.suffix.lower()]) for p in paths]
    import io

    import soundfile as sf

    rng = np.random.default_rng(0)
    clips = []
    for seconds in (5, 12, 29, 40):
        buffer = io.BytesIO()
        sf.write(buffer, (0.1 * rng.standard_normal(int(seconds * 22050))).astype(np.float32), 22050, format="WAV")
        clips.append((f"noise_{seconds}s.wav", buffer.getvalue(), "audio/wav"))
    return clips


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_direct(
    checkpoint: Path,
    clips: list[tuple[str, bytes, str]],
    segments: list[int],
    levels: list[int],
    duration: float,
    warmup: float,
    precision: str = "fp32",
    cpu: Optional[dict[str, dict[str, float]]] = None,
    cpu_seconds: float = 0.0,
) -> list[LevelResult]:
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
    if cpu_seconds:
        cpu["direct"] = cpu_per_request(call, max(levels), cpu_seconds)
    return results


def bench_serve(
    checkpoint: Path,
    clips: list[tuple[str, bytes, str]],
    segments: list[int],
    levels: list[int],
    duration: float,
    warmup: float,
    args: argparse.Namespace,
    cpu: dict[str, dict[str, float]],
) -> list[LevelResult]:
    import requests
    from ray import serve

    from serve.app import build_app
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, RouterSettings, ServeConfig

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results = []
    for mode, topology, batched, immediate_when_idle in SERVE_MODES:
        if args.modes and mode not in args.modes:
            continue
        config = ServeConfig(
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
            router=RouterSettings(min_replicas=1, max_replicas=1),
            # One replica each: the comparison is batching vs not, on the same cores.
            ingress=IngressSettings(
                min_replicas=1,
                max_replicas=1,
                num_cpus=args.ingress_cpus,
                threads=args.decode_threads,
                max_ongoing_requests=256,
                max_queued_requests=256,
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
        if mode == "serve_default":
            config = ServeConfig(checkpoint=str(checkpoint), port=port, precision=args.precision)
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


def breakdown(checkpoint: Path, clips: list[tuple[str, bytes, str]], rounds: int = 5) -> dict[str, float]:
    """Mean ms per request of decode, log-mel and forward, in-process (interleaved rounds over the clips)."""
    from benchmarks.common import interleaved
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


def peer_context() -> Optional[dict[str, float]]:
    """The peer's files/s (and mtlmood's library path) from the inference benchmark's results, if any."""
    path = REPO / "benchmarks" / "results" / "inference.json"
    try:
        data = json.loads(path.read_text())
        rows = data["file_level"]
        peer = next(v for k, v in rows.items() if k.startswith("peer"))
        return {
            "peer_files_per_s": peer["files_per_s"],
            "date": data["machine"]["date"],
            "mtlmood_default_files_per_s": rows["fused fp32 + fast mel (default)"]["files_per_s"],
        }
    except (OSError, KeyError, StopIteration, ValueError):
        return None


def markdown(meta: dict, results: list[LevelResult], ratios: dict[str, float]) -> str:
    lines = [
        f"# Serve benchmark ({meta['date']})",
        "",
        f"Model: {meta['model']}; clips: {meta['n_clips']} ({meta['clips_source']}), "
        f"{meta['mean_segments']:.1f} segments per request on average; machine: {meta['cpus']} CPUs "
        f"({meta['processor'] or meta['machine']}), torch {meta['torch']}, ray {meta['ray']}.",
        f"Closed loop, {meta['duration_s']} s measured per row after {meta['warmup_s']} s warm-up. "
        "Serve: default = ServeConfig() as is (two routers, two combined ingress replicas of 1 CPU and "
        "one torch thread each); the others behind one router: "
        f"split = one ingress replica ({meta['ingress_cpus']} CPU) + one model replica "
        f"({meta['model_cpus']} CPU), combined = one replica with both; {meta['torch_threads'] or 'auto'} "
        f"torch threads, precision {meta.get('precision', 'fp32')}, "
        f"batch ≤ {meta['max_batch_size']} requests / {meta['batch_wait_ms']} ms. "
        f"Load average before/after: {meta['loadavg_before'][0]:.1f} / {meta['loadavg_after'][0]:.1f}.",
        "",
        "| mode | concurrency | req/s | segments/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.concurrency} | {r.rps:.2f} | {r.segments_per_s:.1f} | {r.p50_ms:.0f} | "
            f"{r.p95_ms:.0f} | {r.p99_ms:.0f} | {r.errors} |"
        )
    lines += [
        "",
        f"At saturation (concurrency {meta['saturation']}), throughput relative to direct in-process "
        "inference: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()),
        "",
    ]
    parts = meta.get("breakdown_ms")
    if parts:
        work = sum(parts.values())
        rows = [[name, f"{ms:.1f}"] for name, ms in parts.items()] + [["sum (the work itself)", f"{work:.1f}"]]
        for r in results:
            if r.concurrency == 1:
                rows.append(
                    [
                        f"{r.mode} mean latency at c=1 (overhead = latency − work)",
                        f"{r.mean_ms:.1f} (overhead {r.mean_ms - work:+.1f})",
                    ]
                )
        lines += (
            ["## Where a request's time goes (ms per request, clips in rotation)", "", "| part | ms |", "|---|---|"]
            + [f"| {a} | {b} |" for a, b in rows]
            + [""]
        )
    cpu = meta.get("cpu_ms_per_request")
    if cpu:
        modes = list(cpu)
        roles = sorted({role for per in cpu.values() for role in per if role != "total"})
        lines += [
            f"## CPU per request at saturation (concurrency {meta['saturation']}; ms of CPU, all threads, from /proc)",
            "",
            "| process | " + " | ".join(modes) + " |",
            "|---" * (len(modes) + 1) + "|",
        ]
        for role in roles + ["total"]:
            lines.append(f"| {role} | " + " | ".join(f"{cpu[m].get(role, 0.0):.1f}" for m in modes) + " |")
        lines += [
            "",
            "On 2 cores a path's throughput is bounded by about 2000 / total req/s: CPU Serve spends beyond "
            "the direct path is what its ratio loses.",
            "",
        ]
    peer = meta.get("peer_context")
    if peer:
        lines += [
            f"Context: the peer (musicnn MTT_vgg, one TF session, one file at a time) did "
            f"{peer['peer_files_per_s']:.1f} files/s and mtlmood's library path (Predictor.predict_file, "
            f"default) {peer['mtlmood_default_files_per_s']:.1f} files/s in the inference benchmark of "
            f"{peer['date']} (benchmarks/results/inference.md).",
            "",
        ]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark and write its results; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint to serve (default: an untrained paper-width model)")
    parser.add_argument("--n-filters", type=int, default=128, help="width of the untrained default model")
    shared = Path(os.environ.get("MTLMOOD_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--audio-dir",
        type=Path,
        default=shared / "audio",
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
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="serve_bench", help="results file name (<out>/<name>.json, .md)")
    args = parser.parse_args(argv)
    cpus = os.cpu_count() or 1
    # Like the direct path (torch and decoding use every core), unless told otherwise.
    args.decode_threads = args.decode_threads or cpus
    args.torch_threads = args.torch_threads or cpus
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - {m for m, *_ in SERVE_MODES}
    if unknown:
        parser.error(f"unknown --modes {sorted(unknown)}")
    load_before = list(os.getloadavg())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray
    import torch

    from mtlmood.features import features_from_bytes
    from mtlmood.inference import Predictor

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        checkpoint = (
            Path(args.checkpoint) if args.checkpoint else make_untrained_checkpoint(Path(tmp) / "ckpt", args.n_filters)
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
    card = predictor.card
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model": f"MoodCNN n_filters={card.model.n_filters}, "
        f"{card.n_moods} moods ({'given checkpoint' if args.checkpoint else 'untrained'})",
        "n_clips": len(clips),
        "clips": [n for n, _, _ in clips],
        "segments": segments,
        "clips_source": "real CC clips"
        if clips[0][0].endswith(AUDIO_SUFFIXES) and not clips[0][0].startswith("noise_")
        else "generated",
        "mean_segments": float(np.mean(segments)),
        "cpus": cpus,
        "processor": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "ingress_cpus": args.ingress_cpus,
        "model_cpus": args.model_cpus,
        "torch_threads": args.torch_threads,
        "decode_threads": args.decode_threads,
        "direct_torch_threads": torch.get_num_threads(),
        "max_batch_size": args.max_batch_size,
        "precision": args.precision,
        "batch_wait_ms": args.batch_wait_ms,
        "saturation": saturation,
        # Other work on the machine skews every row; the load average says how much there was.
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "breakdown_ms": parts,
        "peer_context": peer_context(),
        "cpu_ms_per_request": cpu,
        "replica_openblas_threads": args.openblas_threads or "unset",
    }
    publish(
        args.name,
        {"meta": meta, "results": [asdict(r) for r in results], "ratio_at_saturation": ratios},
        [markdown(meta, results, ratios)],
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
