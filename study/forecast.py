"""The cost forecast of `mtlmood study plan`: per cell and in total, the planned runs x epochs x
batches and the GPU-hours they take at the configured packing, from a *measured* throughput.

    GPU-hours = (batches x batch_size / segments_per_s + trials x start-up_s) / 3600 / packing gain

* **Throughput**: training segments/s measured on a GPU by ``benchmarks/gpu_check.sh``
  (``benchmarks/results/gpu/gpu_check.json``; the variant that trains like the run: bf16 or
  fp32, ...). The one measurement so far (H100, 2026-11-26: 8,327 segments/s at batch 32, fp32)
  ran 128 filters on 64 x 32 windows, not the paper's 187 x 96: for other sizes the figure is
  scaled by training FLOPs per segment (study.sizing), a conservative bound. Or ``--measure``:
  a few training steps of the config's own model and batch on this machine.
* **Start-up**: what a trial costs beyond its steps (Ray Train's worker group, loading the
  data): from ``benchmarks/results/gpu/gpu_study.json`` when a GPU run wrote it, else the
  12 s measured on 2 CPU cores (docs/PERFORMANCE.md).
* **Packing gain**: trials per hour at ``resources.trials_per_gpu`` N over trials per hour at 1,
  from the same ``gpu_study.json``; without a GPU measurement of that N, none is assumed
  (GPU-hours as at N = 1).
* **Epochs**: search trials under ASHA run its expected epochs (every trial to the first
  rung, 1/reduction_factor of them on to each next one) up to the cap; curve and extension
  runs the cap ``run.train.max_epochs``, or ``--epochs`` (a typical early stop) in its place:
  at the cap the forecast is a bound. Validation and test scoring (~1-2 % at the paper's sizes) are left out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from mtlmood.config import RunConfig
from mtlmood.sampler import default_batches_per_epoch
from study.cells import Cell
from study.config import StudyConfig
from study.resources import worker_gpus

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu"
GPU_CHECK_FILE = RESULTS / "gpu_check.json"
GPU_STUDY_FILE = RESULTS / "gpu_study.json"
# Ray Train trial vs the plain loop on 2 CPU cores, 2026-11-25 (docs/PERFORMANCE.md): +12 s a trial.
CPU_STARTUP_S = 12.0


@dataclass(frozen=True)
class Throughput:
    """Training segments/s of one worker alone on its device, and what each trial adds."""

    segments_per_s: float
    startup_s: float
    source: str  # where the figures come from, printed with the forecast
    sizes: Optional[dict[str, int]] = None  # the model and batch the figure is for
    packing_gain: Optional[dict[int, float]] = None  # trials/hour at N / trials/hour at 1, measured


SIZE_KEYS = ("n_filters", "n_mels", "segment_frames", "batch_size")


def _sizes(run: RunConfig) -> dict[str, int]:
    m = run.model
    return {
        "n_filters": m.n_filters,
        "n_mels": m.n_mels,
        "segment_frames": m.segment_frames,
        "batch_size": run.train.batch_size,
    }


def _variant(rates: dict[str, float], run: RunConfig) -> str:
    """The measured variant that trains like ``run`` (bf16 or not, CUDA graphs or not, channels-last
    or not, never torch.compile), the slowest of those (a packed trial may lose its device-resident
    frames); any variant when none matches."""
    tc = run.train

    def like(name: str) -> bool:
        return (
            ("bf16" in name) == tc.bf16
            and ("graphs" in name) == tc.cuda_graphs
            and ("channels" in name) == tc.channels_last
            and "compile" not in name
        )

    candidates = [name for name in rates if like(name)] or list(rates)
    return min(candidates, key=lambda name: rates[name])


def measured_throughput(
    run: RunConfig, check_file: Path = GPU_CHECK_FILE, study_file: Path = GPU_STUDY_FILE
) -> Throughput:
    """The GPU check's training figure for the run's sizes and precision, with the study bench's
    start-up and packing gains when it has run on a GPU. A figure measured at other sizes than the
    run's is scaled by the ratio of training FLOPs per segment (study.sizing): a conservative
    bound when the measured size was launch-bound, as the 64 x 32 windows on an H100 were."""
    from mtlmood.config import ModelConfig
    from study.sizing import train_flops

    data = json.loads(check_file.read_text())
    wanted = _sizes(run)
    measurements = data["train"]
    chosen = next((m for m in measurements if {k: m[k] for k in SIZE_KEYS} == wanted), measurements[0])
    sizes = {k: int(chosen[k]) for k in SIZE_KEYS}
    name = _variant(chosen["segments_per_s"], run)
    rate = float(chosen["segments_per_s"][name])
    what = f"{rate:,.0f} segments/s ({name}; {data['card']}, {data['date']}, {check_file.name})"
    if sizes != wanted:
        measured_model = ModelConfig(
            n_filters=sizes["n_filters"], n_mels=sizes["n_mels"], segment_frames=sizes["segment_frames"]
        )
        scale = train_flops(measured_model, 50, 50) / train_flops(run.model, 50, 50)
        rate *= scale
        what += (
            f" measured at {sizes['segment_frames']} x {sizes['n_mels']} windows, {sizes['n_filters']} filters, batch "
            f"{sizes['batch_size']}; scaled by FLOPs x{scale:.3g} to {rate:,.0f} for this study's "
            f"{wanted['segment_frames']} x {wanted['n_mels']}, {wanted['n_filters']}, batch {wanted['batch_size']} "
            "(a bound; --measure on a GPU, or a GPU check at these sizes, replaces it)"
        )
    startup, gains = CPU_STARTUP_S, None
    where = f"{CPU_STARTUP_S:.0f} s start-up a trial (2 CPU cores, docs/PERFORMANCE.md)"
    if study_file.exists():
        bench = json.loads(study_file.read_text())
        if not bench.get("dry_run", True):
            levels = bench["levels"]
            base = levels.get("1", {}).get("trials_per_hour")
            gains = {int(n): level["trials_per_hour"] / base for n, level in levels.items() if base}
            startup = float(levels.get("1", {}).get("startup_s", CPU_STARTUP_S))
            where = (
                f"{startup:.0f} s start-up a trial, packing gains: {study_file.name} ({bench['card']}, {bench['date']})"
            )
    return Throughput(rate, startup, f"{what}; {where}", wanted, gains)


def measure_throughput(run: RunConfig, n_moods: int, n_meta: int, steps: int = 10, device: str = "auto") -> Throughput:
    """Training segments/s of the run's model and batch on this machine: ``steps`` optimiser steps on
    random windows after two warm-up steps (the data path is left out: the samplers outrun the
    step by far, docs/PERFORMANCE.md)."""
    import torch

    from mtlmood.distributed import resolve_device
    from mtlmood.loss import multitask_loss
    from mtlmood.model import MoodCNN

    where = resolve_device(device)
    tc, m = run.train, run.model
    torch.manual_seed(0)
    model = MoodCNN(m, n_moods, n_meta).to(where).train()
    if tc.channels_last:
        model.use_channels_last()
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, eps=tc.eps)
    x = torch.randn(tc.batch_size, m.segment_frames, m.n_mels, device=where)
    moods = (torch.rand(tc.batch_size, n_moods, device=where) < 0.3).float()
    meta = (torch.rand(tc.batch_size, n_meta, device=where) < 0.1).float() if n_meta else None
    alpha = n_moods / n_meta if n_meta else 0.0

    def step() -> None:
        with torch.autocast(where.type, dtype=torch.bfloat16, enabled=tc.bf16):
            mood_logits, meta_logits = model(x)
        total, _, _ = multitask_loss(mood_logits, meta_logits, moods, meta, alpha)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def sync() -> None:
        if where.type == "cuda":
            torch.cuda.synchronize(where)

    for _ in range(2):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    rate = steps * tc.batch_size / (time.perf_counter() - start)
    name = (
        torch.cuda.get_device_name(where)
        if where.type == "cuda"
        else f"{where.type}, {torch.get_num_threads()} threads"
    )
    source = f"{rate:,.1f} segments/s measured now ({steps} steps on {name}); {CPU_STARTUP_S:.0f} s start-up a trial"
    source += " (2 CPU cores, docs/PERFORMANCE.md)"
    return Throughput(rate, CPU_STARTUP_S, source, _sizes(run))


def asha_epochs(max_epochs: int, grace: int, reduction: int) -> float:
    """Expected epochs of a trial under ASHA: all reach the first rung, 1/reduction of them each next."""
    expected, previous, share, rung = 0.0, 0, 1.0, grace
    while rung < max_epochs:
        expected += share * (rung - previous)
        previous, share, rung = rung, share / reduction, rung * reduction
    return expected + share * (max_epochs - previous)


def forecast_table(
    study: StudyConfig, cells: dict[str, Cell], trials: pd.DataFrame, rate: Throughput, epochs: Optional[int] = None
) -> pd.DataFrame:
    """One row per cell of the plan's trials table (``study.plan.plan_table``) and a total row:
    runs, epochs, batches and GPU-hours at the configured packing."""
    tc, res = study.run.train, study.resources
    cap = epochs or tc.max_epochs
    sched = study.scheduler
    search_epochs = asha_epochs(cap, sched.grace_period, sched.reduction_factor) if sched.enabled else float(cap)
    gain = (rate.packing_gain or {}).get(res.trials_per_gpu, 1.0)
    per_trial = max(1, study.curve.seeds_per_trial)
    by_label = {cell.label: cell for cell in cells.values()}
    rows = []
    for _, row in trials.iterrows():
        cell = by_label[row["cell"]]
        batches = default_batches_per_epoch(
            int(cell.facts["songs"]["train"]), tc.epoch_factor, tc.max_batches_per_epoch
        )
        runs = int(row["curve runs"]) + int(row["extension runs"])
        n_trials = int(row["search trials"]) + int(row["curve trials"]) + -(-int(row["extension runs"]) // per_trial)
        total_batches = batches * (int(row["search trials"]) * search_epochs + runs * cap)
        seconds = total_batches * tc.batch_size / rate.segments_per_s + n_trials * rate.startup_s
        rows.append(
            {
                "cell": row["cell"],
                "search trials": int(row["search trials"]),
                "curve + extension runs": runs,
                "epochs (search / curve)": f"{search_epochs:.3g} / {cap}",
                "batches/epoch": batches,
                "batches": round(total_batches),
                "GPU-hours": seconds / 3600 / gain,
            }
        )
    table = pd.DataFrame(rows)
    total = {c: table[c].sum() for c in ("search trials", "curve + extension runs", "batches", "GPU-hours")}
    return pd.concat([table, pd.DataFrame([{"cell": "total", **total}])], ignore_index=True)


def print_forecast(
    study: StudyConfig,
    cells: dict[str, Cell],
    trials: pd.DataFrame,
    measure: bool = False,
    epochs: Optional[int] = None,
) -> pd.DataFrame:
    """Print the forecast table with where its figures come from; returns the table."""
    res = study.resources
    largest = max(cells.values(), key=lambda c: (c.n_mood_labels, c.n_meta))
    rate = (
        measure_throughput(study.run, largest.n_mood_labels, largest.n_meta)
        if measure
        else measured_throughput(study.run)
    )
    table = forecast_table(study, cells, trials, rate, epochs)
    n = res.trials_per_gpu
    gain = (rate.packing_gain or {}).get(n)
    packing = (
        f"{n} trials per GPU, measured gain x{gain:.2f}"
        if gain
        else (
            f"{n} trials per GPU: its gain is not measured on a GPU yet, none assumed" if n > 1 else "1 trial per GPU"
        )
    )
    print(f"\ncost forecast (training steps + trial start-up; {packing}):")
    shown = table.astype(object).where(table.notna(), "")  # the total row has no epochs or batches/epoch
    for column in ("search trials", "curve + extension runs", "batches/epoch", "batches"):
        shown[column] = [f"{int(v):,}" if v != "" else "" for v in shown[column]]
    shown["GPU-hours"] = [f"{v:,.1f}" for v in table["GPU-hours"]]
    print(shown.to_markdown(index=False, colalign=["left"] + ["right"] * (len(shown.columns) - 1)))
    print(f"throughput: {rate.source}")
    if res.max_concurrent_trials > 0:
        gpus = res.max_concurrent_trials * res.num_workers * worker_gpus(res)
        hours = float(table["GPU-hours"].iloc[-1]) / gpus
        print(f"on {gpus:g} GPUs ({res.max_concurrent_trials} trials at a time): ~{hours:,.1f} h of wall-clock time")
    return table
