"""Inference on a CUDA device vs the CPU default path, same clips, same machine, same run.

    python -m benchmarks.cuda_inference_bench [--rounds 5] [--device cuda] [--out DIR]

A paper-width model (untrained weights, BatchNorm statistics randomised; speed does
not depend on the weights) scores the real clips ($MTLMOOD_SHARED_DATA/audio, first
29 s) through ``Predictor``: the CPU default (fused fp32 + fast mel, all cores) is the
baseline; on the device, fp32 and bf16 autocast, per file (``predict_file``) and
batched across files (``predict_files``). Then the network alone on a large batch of
segments (what a busy server or a catalogue job sees). Every variant's song
probabilities are compared with the CPU baseline (max |Δp|); cuDNN's TF32 convolutions
make fp32 on the GPU differ in the 4th decimal.

``--device cpu`` runs the same code path on the CPU (to check it without a GPU).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmarks.common import (
    RESULTS,
    fmt,
    interleaved,
    machine,
    machine_line,
    publish,
    require_audio_files,
    table,
    untrained_predictor_parts,
)


def device_facts(device: str) -> dict[str, Any]:
    import torch

    if not device.startswith("cuda"):
        return {"device": device}
    props = torch.cuda.get_device_properties(torch.device(device))
    return {
        "device": device,
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n-filters", type=int, default=128)
    parser.add_argument("--batch", type=int, default=512, help="segments per forward in the network-only rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from mtlmood.inference import Predictor

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu to check the code path")
    info = machine()
    files = require_audio_files()
    model, card = untrained_predictor_parts(args.n_filters)
    baseline_name = "CPU: fused fp32 + fast mel (default)"
    cpu = Predictor(copy.deepcopy(model), card)
    predictors = {
        f"{args.device}: fp32": Predictor(copy.deepcopy(model).to(args.device), card),
        f"{args.device}: bf16 autocast": Predictor(copy.deepcopy(model).to(args.device), card, precision="bf16"),
    }
    expected = [np.array(list(p.probabilities.values())) for p in cpu.predict_files(files)]

    def worst(predictions: Any) -> float:
        got = [np.array(list(p.probabilities.values())) for p in predictions]
        return float(max(np.abs(a - b).max() for a, b in zip(got, expected)))

    variants: dict[str, Callable[[], Any]] = {baseline_name: lambda: list(cpu.predict_files(files))}
    accuracy: dict[str, float] = {baseline_name: 0.0}
    for name, p in predictors.items():
        variants[f"{name}, predict_file"] = lambda p=p: [p.predict_file(f) for f in files]
        variants[f"{name}, predict_files"] = lambda p=p: list(p.predict_files(files))
        accuracy[f"{name}, predict_file"] = worst(p.predict_file(f) for f in files)
        accuracy[f"{name}, predict_files"] = worst(p.predict_files(files))
    n_files = len(files)
    print(f"cuda inference: {n_files} clips on {args.device}", flush=True)
    files_t = interleaved(variants, args.rounds, warmup=1, progress="files")

    rng = np.random.default_rng(0)
    batch = rng.random((args.batch, card.model.segment_frames, card.model.n_mels), dtype=np.float32)
    net_variants: dict[str, Callable[[], Any]] = {"CPU: fused fp32 (default)": lambda: cpu.predict_segments(batch)}
    for name, p in predictors.items():
        net_variants[name] = lambda p=p: p.predict_segments(batch)
    net_t = interleaved(net_variants, args.rounds, warmup=1, progress="network")

    base = files_t.median(baseline_name)
    rows, results = [], {}
    for name in variants:
        s = files_t.median(name)
        results[name] = {"median_s": s, "iqr_s": files_t.spread(name), "files_per_s": n_files / s}
        results[name].update({"vs_cpu": base / s, "max_abs_dprob": accuracy[name]})
        rows.append([name, fmt(n_files / s, 2), f"{base / s:.2f}×", f"{accuracy[name]:.1e}"])
    net_base = net_t.median("CPU: fused fp32 (default)")
    net_rows, net_results = [], {}
    for name in net_variants:
        s = net_t.median(name)
        net_results[name] = {"median_s": s, "iqr_s": net_t.spread(name), "segments_per_s": args.batch / s}
        net_rows.append([name, fmt(args.batch / s, 0), f"{net_base / s:.2f}×"])
    facts = device_facts(args.device)
    md = [
        "# Inference on an accelerator",
        "",
        machine_line(info) + f"; device {facts}",
        "",
        f"## Whole path, {n_files} real clips (first 29 s), medians of {args.rounds} interleaved rounds",
        "",
        table(["path", "files/s", "vs CPU default", "max abs Δp vs CPU"], rows),
        "",
        f"## Network only, {args.batch} segments per forward (n_filters {args.n_filters})",
        "",
        table(["network", "segments/s", "vs CPU default"], net_rows),
    ]
    payload = {"machine": info, "device": facts, "files": results, "network": net_results, "rounds": args.rounds}
    return publish("cuda_inference", payload, md, args.out)


if __name__ == "__main__":
    main()
