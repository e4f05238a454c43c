"""The serve benchmark's results: the run's facts (model, clips, machine, settings, load), its
Markdown page, and the peer's figure quoted from the inference benchmark's results
(benchmarks/results/inference.json)."""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any, Optional

import numpy as np

from benchmarks.common import AUDIO_SUFFIXES, cpu_model, load_result
from benchmarks.loadgen import Clip, LevelResult


def run_meta(
    args: argparse.Namespace,
    card: Any,
    clips: list[Clip],
    segments: list[int],
    parts: dict[str, float],
    cpu: dict[str, dict[str, float]],
    load_before: list[float],
) -> dict[str, Any]:
    """What the results page says about the run: model, clips, machine, settings, load, breakdowns."""
    import ray
    import torch

    return {
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
        "cpus": os.cpu_count() or 1,
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
        "saturation": max(args.levels),
        # Other work on the machine skews every row; the load average says how much there was.
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "breakdown_ms": parts,
        "peer_context": peer_context(),
        "cpu_ms_per_request": cpu,
        "replica_openblas_threads": args.openblas_threads or "unset",
    }


def peer_context() -> Optional[dict[str, float]]:
    """The peer's files/s (and mtlmood's library path) from the inference benchmark's results, if any."""
    data = load_result("inference.json")
    if data is None:
        return None
    try:
        rows = data["file_level"]
        peer = next(v for k, v in rows.items() if k.startswith("peer"))
        return {
            "peer_files_per_s": peer["files_per_s"],
            "date": data["machine"]["date"],
            "mtlmood_default_files_per_s": rows["fused fp32 + fast mel (default)"]["files_per_s"],
        }
    except (KeyError, StopIteration):
        return None


def markdown(meta: dict, results: list[LevelResult], ratios: dict[str, float]) -> str:
    """The results page: the rows, the ratios at saturation, the time and CPU breakdowns, the peer's figure."""
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
