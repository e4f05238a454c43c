"""CUDA graphs of the training step (``train.cuda_graphs``) against the eager step, on one GPU.

    python -m benchmarks.gpu_graphs_bench [--out DIR]      (benchmarks/gpu_check.sh runs it)

Training segments/s of 128-filter steps at batch 32, eager and replayed from a CUDA graph
(mtlmood.train_graphs, the code ``fit`` runs), fp32 and bf16 autocast, at the paper's
187 x 96 window and at the 64 x 32 window of the training benchmark's accelerator section;
batches already on the device (as the device sampler gives them), rounds interleaved,
medians. And whether they train alike: from the same weights over the same batches and
dropout seed, the largest loss difference per step and weight difference at the end
(the CUDA tests compare whole fits: tests/mtlmood/test_train_graphs.py). Writes
gpu_graphs.json and .md to ``--out``. Without CUDA (``--device cpu``, the GPU check's dry
run) it times the eager step alone and says the graphs were not run.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.common import RESULTS, interleaved, table, write_results

SIZES = {"187 x 96 (paper)": (187, 96), "64 x 32 (training benchmark)": (64, 32)}


@dataclass
class Parts:
    """mtlmood.train_graphs.StepParts without a dataset."""

    net: Any
    optimizer: Any
    device: Any
    alpha: float
    n_meta: int
    weighting: Any = None
    distributed: bool = False
    world: int = 1


def _parts(frames: int, mels: int, device: Any, graphs: bool, n_moods: int = 50, n_meta: int = 50) -> Parts:
    import torch

    from mtlmood.config import ModelConfig
    from mtlmood.model import MoodCNN

    torch.manual_seed(0)
    model = MoodCNN(ModelConfig(n_filters=128, segment_frames=frames, n_mels=mels), n_moods, n_meta).to(device).train()
    capturable = graphs and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, capturable=capturable)
    return Parts(net=model, optimizer=optimizer, device=device, alpha=n_moods / n_meta, n_meta=n_meta)


def _batches(frames: int, mels: int, device: Any, count: int = 16) -> list[tuple[Any, Any, Any]]:
    import torch

    g = torch.Generator(device="cpu").manual_seed(1)
    out = []
    for _ in range(count):
        x = torch.randn(32, frames, mels, generator=g)
        moods = (torch.rand(32, 50, generator=g) < 0.2).float()
        meta = (torch.rand(32, 50, generator=g) < 0.05).float()
        out.append((x.to(device), moods.to(device), meta.to(device)))
    return out


def _stepper(parts: Parts, bf16: bool, graphs: bool) -> Callable[[Any, Any, Any], None]:
    import torch

    from mtlmood.config import TrainConfig
    from mtlmood.train_graphs import GraphedStep, eager_step

    tc = replace(TrainConfig(), bf16=bf16, cuda_graphs=graphs)
    if graphs:
        return GraphedStep(parts, tc)  # type: ignore[arg-type]  # Parts has what StepParts names
    sums = torch.zeros(3, dtype=torch.float64, device=parts.device)
    return lambda x, m, a: eager_step(parts, tc, x, m, a, sums)  # type: ignore[arg-type]


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(device: Any, steps: int, rounds: int, modes: list[bool]) -> dict[str, Any]:
    """Segments/s per (size, precision, eager/graphs), interleaved rounds, medians."""
    out: dict[str, Any] = {}
    for size, (frames, mels) in SIZES.items():
        data = _batches(frames, mels, device)
        runs: dict[str, Callable[[], Any]] = {}
        for bf16 in (False, True):
            for graphs in modes:
                step = _stepper(_parts(frames, mels, device, graphs), bf16, graphs)

                def run(step: Callable[[Any, Any, Any], None] = step, data: list[Any] = data) -> None:
                    for i in range(steps):
                        step(*data[i % len(data)])
                    _sync(device)

                name = f"{'cuda graphs' if graphs else 'eager'}, {'bf16 autocast' if bf16 else 'fp32'}"
                runs[name] = run
        t = interleaved(runs, rounds, warmup=1, progress=f"graphs {size}")  # the warm-up round captures
        out[size] = {name: steps * 32 / t.median(name) for name in runs}
    return out


def agreement(device: Any, steps: int) -> dict[str, Any]:
    """Eager vs graphed from the same weights over the same batches: max |Δ loss| per step, max |Δ weight|."""
    import torch

    from mtlmood.config import TrainConfig
    from mtlmood.train_graphs import GraphedStep, step_losses

    out: dict[str, Any] = {}
    frames, mels = SIZES["187 x 96 (paper)"]
    data = _batches(frames, mels, device)
    for bf16 in (False, True):
        losses, weights = {}, {}
        for graphs in (False, True):
            parts = _parts(frames, mels, device, graphs)
            tc = replace(TrainConfig(), bf16=bf16, cuda_graphs=graphs)
            step = _stepper(parts, bf16, graphs)
            torch.manual_seed(7)  # the same dropout stream
            trail = []
            for i in range(steps):
                step(*data[i % len(data)])
                with torch.no_grad():  # the loss after each step, on a fixed batch in eval mode
                    parts.net.eval()
                    trail.append(float(step_losses(parts, tc, *data[0])[0]))  # type: ignore[arg-type]
                    parts.net.train()
            losses[graphs] = trail
            weights[graphs] = [p.detach().clone() for p in parts.net.parameters()]
            assert not graphs or isinstance(step, GraphedStep)
        out["bf16 autocast" if bf16 else "fp32"] = {
            "steps": steps,
            "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses[False], losses[True])),
            "max_abs_weight_diff": max(float((a - b).abs().max()) for a, b in zip(weights[False], weights[True])),
            "final_loss": {"eager": losses[False][-1], "cuda graphs": losses[True][-1]},
        }
    return out


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Time and compare, write gpu_graphs.{json,md}; returns what was written."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=50, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check-steps", type=int, default=30, help="steps of the eager/graphs agreement check")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # as fit() sets it on CUDA
    started = time.monotonic()
    rates = timings(device, args.steps, args.rounds, [False, True] if cuda else [False])
    check = agreement(device, args.check_steps) if cuda else None
    card = torch.cuda.get_device_name(device) if cuda else f"{device} (no CUDA: graphs not run)"
    payload = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "card": card,
        "torch": torch.__version__,
        "n_filters": 128,
        "batch_size": 32,
        "steps_per_round": args.steps,
        "segments_per_s": rates,
        "agreement": check,
        "seconds": time.monotonic() - started,
    }
    lines = [f"# CUDA graphs of the training step, {payload['date']}", "", f"{card}; torch {torch.__version__}", ""]
    rows = []
    for size, variants in rates.items():
        for name, rate in variants.items():
            eager = variants[name.replace("cuda graphs", "eager")]
            rows.append([size, name, f"{rate:,.0f}", f"{rate / eager:.2f}x"])
    lines += [table(["window", "step", "segments/s", "vs eager"], rows), ""]
    if check:
        rows = [
            [k, v["steps"], f"{v['max_abs_loss_diff']:.1e}", f"{v['max_abs_weight_diff']:.1e}"]
            for k, v in check.items()
        ]
        lines += ["Eager vs graphed, same weights, batches and dropout seed:", ""]
        lines += [table(["precision", "steps", "max abs Δ loss", "max abs Δ weight"], rows)]
    write_results("gpu_graphs", payload, "\n".join(lines), out_dir=args.out)
    print("\n".join(lines), flush=True)
    return payload


if __name__ == "__main__":
    main()
    sys.exit(0)
