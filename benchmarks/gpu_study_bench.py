"""Trials per GPU: the same short study trials at 1, 2, 4 and 8 trials per GPU.

    python -m benchmarks.gpu_study_bench                 # on a GPU machine (benchmarks/gpu_check.sh runs it)
    python -m benchmarks.gpu_study_bench --dry-run       # on a CPU: a logical Ray GPU, tiny settings

Each level N is a curve phase of its own (study.runner.run_curve, as a study runs it) with
``resources.trials_per_gpu=N``: the trials are the baseline and the grid multiples x1/3, x1, x3
of one cell (``--grid``), each over ``--seeds`` seeds (4 x 2 = 8 trials), on a synthetic dataset at the
paper's window (187 x 96) and width (128 filters) by default. Level 1 runs only the baseline
and the heuristic of the first seed: one at a time, its rate needs no more trials. Per level:

* trials per hour (wall clock of the level) and start-up per trial (level 1: wall per trial
  minus its fit's own seconds);
* each trial's training segments/s (its epochs' median) and the throughput gain for long
  trials, N x that rate over the rate alone: what N trials training side by side get out of
  the GPU, start-ups aside (what the cost forecast of `mtlmood study plan` divides by);
* GPU utilisation (mean, peak) and peak memory, sampled every second (benchmarks.gpu_sampling);
* each trial's best validation PR-AUC: packing must not change results (max |difference| to
  the same (arm, seed) at the lowest level that ran it).

Writes OUT/gpu_study.json and gpu_study.md (default benchmarks/results/gpu; a dry run writes
to runs/gpu-study-dry-run, never over a GPU's figures). ``--budget-s`` skips a level that
would not finish in time (levels run in the order given: the baseline first).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import REPO, RESULTS, table, write_results
from benchmarks.gpu_sampling import GpuSampler, gpu_facts

DRY_RUN_OUT = REPO / "runs" / "gpu-study-dry-run"


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,4,8", help="trials per GPU to measure, in this order")
    parser.add_argument("--grid", default="[1/3,1,3]", help="multiples of the heuristic: with the baseline, the arms")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per arm: arms x seeds trials per level")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (no early stopping)")
    parser.add_argument("--batches", type=int, default=200, help="batches per epoch")
    parser.add_argument("--songs", type=int, default=400, help="synthetic songs (40 %% train, 15 %% validation)")
    parser.add_argument("--filters", type=int, default=128)
    parser.add_argument("--mels", type=int, default=96)
    parser.add_argument("--frames", type=int, default=187, help="window length in frames")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--budget-s", type=float, default=0.0, help="skip levels that would end after this (0: none)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, a logical Ray GPU, tiny settings, levels 1,2")
    parser.add_argument("--out", type=Path, default=None, help="where gpu_study.json/.md go")
    args = parser.parse_args(argv)
    if args.dry_run:  # tiny: a minute or two on 2 cores
        args.levels, args.grid, args.seeds, args.epochs, args.batches, args.songs = "1,2", "[1]", 1, 2, 6, 60
        args.filters, args.mels, args.frames = 8, 32, 64
    args.out = args.out or (DRY_RUN_OUT if args.dry_run else RESULTS / "gpu")
    return args


def make_data(root: Path, args: argparse.Namespace) -> Path:
    """A synthetic dataset of ``args.songs`` songs (the demo's world) with its features."""
    from dataclasses import replace

    from mtlmood.synth import synthesize
    from mtlmood.synth.worlds import world_config

    data = root / "data"
    synthesize(data, replace(world_config("metadata-costs"), n_songs=args.songs), workers=min(8, os.cpu_count() or 1))
    return data


def study_for(level: int, args: argparse.Namespace, data: Path, storage: Path, cpus_per_worker: float) -> Any:
    """The study config of one level: the same trials at every level (level 1: the first two)."""
    from study.config import load_study_config

    seeds = list(range(1, args.seeds + 1))
    grid, seeds = ("[1]", seeds[:1]) if level == 1 else (args.grid, seeds)
    overrides = [
        f"name=pack-{level}",
        f"storage_path={storage}",
        f"run.dataset.root={data}",
        f"run.features.n_mels={args.mels}",
        f"run.model.n_mels={args.mels}",
        f"run.model.segment_frames={args.frames}",
        f"run.model.n_filters={args.filters}",
        f"run.train.max_epochs={args.epochs}",
        f"run.train.min_epochs={args.epochs}",
        f"run.train.patience={args.epochs}",
        f"run.train.max_batches_per_epoch={args.batches}",
        f"run.train.bf16={str(args.bf16).lower()}",
        "run.train.num_threads=1",
        "search.trials_per_cell=0",
        "search.n_moods=[3]",
        "search.n_artists=[]",
        f"curve.grid={grid}",
        f"curve.seeds=[{','.join(map(str, seeds))}]",
        "curve.seeds_per_trial=1",
        "curve.tuned=false",
        "curve.learned=false",
        "curve.max_extensions=0",
        "report.reference=false",
        "resources.use_gpu=true",
        f"resources.trials_per_gpu={level}",
        f"resources.cpus_per_worker={cpus_per_worker}",
        "resources.driver_cpus=0.1",
        f"resources.max_concurrent_trials={level}",
    ]
    facts = gpu_facts()
    if facts["memory_gib"]:
        overrides.append(f"resources.gpu_memory_gb={facts['memory_gib']:.1f}")
    return load_study_config("synthetic", overrides)


def run_level(
    level: int, args: argparse.Namespace, data: Path, storage: Path, cpus_per_worker: float
) -> dict[str, Any]:
    """One level's trials on the GPU, sampled; its figures and each trial's record."""
    import json

    from mtlmood.cache import default_cache_dir
    from mtlmood.datasets import load_run_songs
    from mtlmood.prepare import prepare_features
    from study.cells import study_cells
    from study.results import trial_table
    from study.runner import run_curve

    study = study_for(level, args, data, storage, cpus_per_worker)
    prepare_features(load_run_songs(study.run), default_cache_dir(study.run), study.run.features, progress=False)
    cells = study_cells(study)
    start = time.monotonic()
    with GpuSampler() as samples:
        table = run_curve(study, trial_table([]), cells)
    wall = time.monotonic() - start
    records = [json.loads(p.read_text()) for p in sorted(Path(study.run_dir).glob("runs/curve/**/result.json"))]
    finished = table[table["status"] == "TERMINATED"]
    rates = sorted(r["segments_per_second"] for r in records)
    fits = [r["train_seconds"] for r in records]
    return {
        "trials": len(table),
        "finished": len(finished),
        "wall_s": wall,
        "trials_per_hour": len(finished) / wall * 3600 if wall > 0 else math.nan,
        "startup_s": wall / max(1, len(records)) - sum(fits) / max(1, len(fits)) if level == 1 else None,
        "segments_per_s_per_trial": rates[len(rates) // 2] if rates else math.nan,
        "worker_gpus": sorted({r["worker_gpus"] for r in records}),
        "devices": sorted({r["device"] for r in records}),
        **samples.summary(),
        "gpu_sampler": samples.source,
        "val_pr_auc": {f"{r['arm']} seed {r['seed']}": r["val_pr_auc"] for r in records},
    }


def compare(levels: dict[str, dict[str, Any]]) -> None:
    """Throughput gain over level 1 and each trial's score against its first measurement, in place."""
    base = levels.get("1", {}).get("segments_per_s_per_trial")
    first: dict[str, float] = {}
    for name, level in levels.items():
        n = int(name)
        rate = level["segments_per_s_per_trial"]
        level["throughput_gain"] = n * rate / base if base and math.isfinite(rate) else None
        diffs = []
        for trial, score in level["val_pr_auc"].items():
            first.setdefault(trial, score)
            diffs.append(abs(score - first[trial]))
        level["val_pr_auc_max_abs_diff"] = max(diffs) if diffs else None


def markdown(payload: dict[str, Any]) -> list[str]:
    levels = payload["levels"]
    lines = [
        f"# Trials per GPU{' (dry run on a CPU: a logical GPU, tiny settings)' if payload['dry_run'] else ''}",
        "",
        f"{payload['date']}; {payload['card']}; {payload['cpus']} CPU cores, {payload['cpus_per_worker']} per worker; "
        f"{payload['settings']}",
        "",
    ]
    rows = []
    for name, lv in levels.items():

        def f(key: str, fmt: str, lv: dict[str, Any] = lv) -> str:
            return "n/a" if lv.get(key) is None else format(lv[key], fmt)

        rows.append(
            [
                name,
                f"{lv['finished']}/{lv['trials']}",
                f"{lv['wall_s']:.0f}",
                f("trials_per_hour", ",.0f"),
                f("segments_per_s_per_trial", ",.0f"),
                f("throughput_gain", ".2f"),
                f("gpu_util_mean", ".0f"),
                f("memory_peak_mib", ",.0f"),
                f("val_pr_auc_max_abs_diff", ".2f"),
                ", ".join(f"{g:g}" for g in lv["worker_gpus"]) + " on " + ", ".join(lv["devices"]),
            ]
        )
    header = [
        "trials per GPU",
        "finished",
        "wall s",
        "trials/hour",
        "segments/s per trial",
        "throughput gain",
        "GPU util % (mean)",
        "peak GPU MiB",
        "max abs Δ val PR-AUC",
        "GPU share, device",
    ]
    lines += [table(header, rows), ""]
    lines.append("Validation PR-AUC (%) per trial and level:")
    lines.append("")
    trials = sorted({t for lv in levels.values() for t in lv["val_pr_auc"]})
    score_rows = [[t] + [f"{lv['val_pr_auc'].get(t, math.nan):.2f}" for lv in levels.values()] for t in trials]
    lines += [table(["trial"] + [f"N={n}" for n in levels], score_rows), ""]
    if payload.get("skipped"):
        lines.append(f"Skipped (time budget): levels {', '.join(payload['skipped'])}.")
    return lines


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run every level, write gpu_study.{json,md}; returns what was written."""
    import ray

    from study.ray_session import init_ray

    args = parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    args.out.mkdir(parents=True, exist_ok=True)
    levels_wanted = [int(n) for n in args.levels.split(",")]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    most = max(levels_wanted)
    # The same CPUs per worker at every level, so that only the GPU is shared differently.
    cpus_per_worker = math.floor((cpus - 0.1 * most) / most * 10) / 10
    if cpus_per_worker <= 0:
        raise SystemExit(f"{cpus} CPUs cannot hold {most} trials at once")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mtlmood-gpu-study-"))
    facts = gpu_facts()
    payload: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "card": facts["card"],
        "dry_run": bool(args.dry_run),
        "cpus": cpus,
        "cpus_per_worker": cpus_per_worker,
        "settings": (
            f"{args.filters} filters, {args.frames} x {args.mels} windows, batch 32, {args.epochs} epochs x "
            f"{args.batches} batches, {'bf16' if args.bf16 else 'fp32'}, {args.songs} synthetic songs"
        ),
        "levels": {},
        "skipped": [],
    }
    try:
        data = make_data(root, args)
        init_ray(None, num_cpus=cpus, num_gpus=1 if args.dry_run else None)
        per_trial = None
        for level in levels_wanted:
            trials = 2 if level == 1 else (1 + len(args.grid.strip("[]").split(","))) * args.seeds
            if args.budget_s and per_trial is not None:
                expected = per_trial * math.ceil(trials / level)  # waves of one trial's time
                if time.monotonic() - started + expected > args.budget_s:
                    payload["skipped"].append(str(level))
                    continue
            print(f"[gpu-study] {level} trial(s) per GPU: {trials} trials", flush=True)
            result = run_level(level, args, data, root / "studies", cpus_per_worker)
            payload["levels"][str(level)] = result
            per_trial = per_trial or result["wall_s"] / max(1, result["trials"])
            compare(payload["levels"])
            write_results("gpu_study", payload, "\n".join(markdown(payload)), out_dir=args.out)  # after each level
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(markdown(payload)), flush=True)
    print(f"-> {args.out / 'gpu_study.md'}", flush=True)
    return payload


if __name__ == "__main__":
    main()
    sys.exit(0)
