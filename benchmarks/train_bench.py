"""Training: Ray Train overhead, sampler vs model step rate, bf16 / channels-last on CPU.

    .venv/bin/python -m benchmarks.train_bench [--epochs 4] [--rounds 3] [--out DIR]

All on the synthetic default (benchmarks/.cache/synthetic, made on first use) with the
embedded study's base run (study/configs/synthetic.yaml: its width, mel bands, window,
batches per epoch and torch threads), 6 moods, artist metadata, alpha = the heuristic.

1. **Ray overhead.** The same RunConfig trained by ``mtlmood.train.fit`` in this
   process ("plain") and as a Ray Train trial (a ``TorchTrainer`` running
   ``study.trial.train_worker_loop`` on a one-run job -- ``{"runs": [run], "log_file"}``,
   the run shaped as ``study.trial.job_runs`` shapes a study's -- 1 worker x 1 CPU,
   reporting metrics and a checkpoint every epoch and writing the run's model, test
   predictions and result.json at the end, as a study does), alternating, ``--rounds``
   times each. Steady-state throughput = median ``EpochResult.segments_per_second`` of
   epochs 2.. (for Ray, read back from the training state in the trial's last epoch
   checkpoint); start-up = wall time minus the epochs' own time. A bare hand-written
   PyTorch loop over the same batches is the floor.
2. **Sampler vs model.** Batches/s of ``WindowSampler`` alone vs optimizer steps/s of
   the model (forward + backward + Adam) at width 16 (1 thread) and at paper width 128
   (all cores), on the run's window (its mel bands x segment frames, batch 32).
3. **bf16 / channels-last.** Step time of fp32 NCHW, fp32 channels-last and bf16
   autocast + channels-last (TrainConfig.bf16 / channels_last) at both widths, and a
   quick accuracy check: the same seeded fit in fp32 and in bf16 + channels-last.
4. **Accelerator** (only when CUDA is available, or ``--accelerator cpu`` to check the
   code path): whole training steps at paper width — batch fetch included — with the
   host sampler + copy (the baseline) vs the device-resident sampler, then bf16 autocast,
   channels-last and ``torch.compile`` on top, as ratios to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmarks.common import RESULTS, fmt, interleaved, machine, machine_line, publish, table
from benchmarks.synthdata import ensure_synthetic


def base_config(study: Any, epochs: int, **train: Any) -> Any:
    run = study.run
    return replace(
        run,
        labels=replace(run.labels, n_moods=6, metadata="artist"),
        train=replace(run.train, max_epochs=epochs, patience=epochs + 1, **train),
    )


def steady(history: list[dict[str, Any]]) -> float:
    """Median training throughput of the epochs after the first (warm-up) one."""
    values = [h["segments_per_second"] for h in history[1:]] or [h["segments_per_second"] for h in history]
    return float(np.median(values))


def run_plain(config: Any) -> dict[str, Any]:
    from mtlmood.rundata import load_run_data
    from mtlmood.train import fit

    t0 = time.perf_counter()
    data = load_run_data(config)
    result = fit(data, config)
    wall = time.perf_counter() - t0
    history = [h.to_dict() for h in result.history]
    return {
        "wall_s": wall,
        "epochs_s": sum(h["seconds"] for h in history),
        "history": history,
        "steady_segments_per_s": steady(history),
        "test_pr_auc": result.test["pr_auc"] if result.test else None,
    }


def ray_run(config: Any, out_dir: Path, name: str) -> dict[str, Any]:
    """The one run of a benchmark trial, shaped as ``study.trial.job_runs`` shapes a study's runs."""
    from mtlmood.coerce import to_dict
    from study.cells import cell_key

    n_moods, metadata = config.labels.n_moods, config.labels.metadata
    return {
        "phase": "bench",
        "cell": cell_key(n_moods, metadata),
        "n_moods": n_moods,
        "metadata": metadata,
        "arm": name,
        "alpha_factor": 1.0,  # train.alpha=auto: the heuristic
        "seed": int(config.train.seed),
        "trial_id": name,
        "run_config": to_dict(config),
        "out_dir": str(out_dir),
    }


def run_ray(config: Any, storage: Path, name: str) -> dict[str, Any]:
    import ray.train
    from ray.train.torch import TorchTrainer

    from mtlmood.checkpoint import load_train_state
    from mtlmood.filenames import TRAIN_STATE_FILE
    from study.trial import train_worker_loop

    t0 = time.perf_counter()
    trainer = TorchTrainer(
        train_worker_loop,
        train_loop_config={
            "runs": [ray_run(config, storage / "runs" / name, name)],
            "log_file": str(storage / "logs" / f"{name}.log"),
        },
        scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage), checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)
        ),
    )
    result = trainer.fit()
    wall = time.perf_counter() - t0
    if result.checkpoint is None:  # a deterministic failure reports one line and no checkpoint
        log = storage / "logs" / f"{name}.log"
        raise RuntimeError(f"the Ray Train trial {name} wrote no checkpoint: {log.read_text() if log.exists() else ''}")
    with result.checkpoint.as_directory() as ckpt:
        state = load_train_state(Path(ckpt) / TRAIN_STATE_FILE)
    history = list(state["history"])
    return {
        "wall_s": wall,
        "epochs_s": sum(h["seconds"] for h in history),
        "history": history,
        "steady_segments_per_s": steady(history),
    }


def bare_loop(config: Any, batches: int) -> Callable[[], float]:
    """A hand-written PyTorch loop over the same sampler and model; returns segments/s."""
    import torch

    from mtlmood.loss import resolve_alpha
    from mtlmood.model import MoodCNN
    from mtlmood.rundata import load_run_data
    from mtlmood.sampler import WindowSampler

    data = load_run_data(config)
    ids = data.song_ids("train")
    mood, meta = data.targets("train")
    sampler = WindowSampler(
        data.cache,
        ids,
        mood,
        meta,
        config.train.batch_size,
        config.model.segment_frames,
        batches_per_epoch=batches,
        seed=0,
    )
    torch.manual_seed(0)
    model = MoodCNN(config.model, data.n_moods, data.n_meta)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    alpha = resolve_alpha("auto", data.n_moods, data.n_meta)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def run() -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(config.train.num_threads or threads)
        try:
            model.train()
            t0 = time.perf_counter()
            for x, m, a in sampler.epoch(1):
                mood_logits, meta_logits = model(torch.from_numpy(x))
                loss = bce(mood_logits, torch.from_numpy(m)) + alpha * bce(meta_logits, torch.from_numpy(a))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return batches * config.train.batch_size / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)

    return run


def ray_overhead(study: Any, epochs: int, rounds: int) -> dict[str, Any]:
    from study.ray_session import init_ray

    config = base_config(study, epochs)
    t0 = time.perf_counter()
    init_ray(None, num_cpus=len(os.sched_getaffinity(0)))
    ray_init_s = time.perf_counter() - t0
    bare = bare_loop(config, config.train.max_batches_per_epoch)
    bare()  # warm-up
    plain, ray_runs, bare_rates = [], [], []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as storage:
        for r in range(rounds):
            print(f"  [train] round {r + 1}/{rounds}: plain fit", flush=True)
            plain.append(run_plain(config))
            print(f"  [train] round {r + 1}/{rounds}: Ray Train trial", flush=True)
            ray_runs.append(run_ray(config, Path(storage), f"bench-{r}"))
            bare_rates += [bare() for _ in range(2)]
    import ray

    ray.shutdown()
    plain_rate = float(np.median([p["steady_segments_per_s"] for p in plain]))
    ray_rate = float(np.median([p["steady_segments_per_s"] for p in ray_runs]))
    startup = {
        kind: float(np.median([p["wall_s"] - p["epochs_s"] for p in runs]))
        for kind, runs in (("plain", plain), ("ray", ray_runs))
    }
    return {
        "config": {
            "n_filters": config.model.n_filters,
            "epochs": epochs,
            "batches_per_epoch": config.train.max_batches_per_epoch,
            "batch_size": config.train.batch_size,
            "torch_threads": config.train.num_threads,
        },
        "ray_init_s": ray_init_s,
        "plain": plain,
        "ray": ray_runs,
        "bare_loop_segments_per_s": bare_rates,
        "plain_steady_segments_per_s": plain_rate,
        "ray_steady_segments_per_s": ray_rate,
        "bare_segments_per_s": float(np.median(bare_rates)),
        "ray_overhead_fraction": 1 - ray_rate / plain_rate,
        "startup_s": startup,
        "ray_extra_startup_s": startup["ray"] - startup["plain"],
    }


def steps(study: Any, rounds: int) -> dict[str, Any]:
    """Sampler batches/s vs optimizer steps/s, and the bf16 / channels-last step times."""
    import torch

    from mtlmood.loss import multitask_loss, resolve_alpha
    from mtlmood.model import MoodCNN
    from mtlmood.rundata import load_run_data
    from mtlmood.sampler import WindowSampler

    config = base_config(study, 1)
    data = load_run_data(config)
    ids = data.song_ids("train")
    mood, meta = data.targets("train")
    frames = config.model.segment_frames  # the run's window: the model's head is sized for it
    sampler = WindowSampler(data.cache, ids, mood, meta, 32, frames, batches_per_epoch=10_000, seed=0)
    batch = sampler.batch(1, 0)
    n_sampler = 200

    def sample() -> None:
        for i in range(n_sampler):
            sampler.batch(2, i)

    alpha = resolve_alpha("auto", data.n_moods, data.n_meta)
    x, m, a = (torch.from_numpy(t) for t in batch)
    variants: dict[str, Callable[[], Any]] = {"sampler: 200 batches": sample}
    n_steps = {16: 6, 128: 2}
    threads = {16: 1, 128: torch.get_num_threads()}

    def make_step(width: int, bf16: bool, cl: bool) -> Callable[[], Any]:
        torch.manual_seed(0)
        model = MoodCNN(replace(config.model, n_filters=width), data.n_moods, data.n_meta).train()
        if cl:
            model.use_channels_last()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

        def step() -> None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads[width])
            try:
                for _ in range(n_steps[width]):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        mood_logits, meta_logits = model(x)
                    total, _, _ = multitask_loss(mood_logits, meta_logits, m, a, alpha)
                    opt.zero_grad(set_to_none=True)
                    total.backward()
                    opt.step()
            finally:
                torch.set_num_threads(before)

        return step

    kinds = {
        "fp32 NCHW": (False, False),
        "fp32 channels-last": (False, True),
        "bf16 autocast + channels-last": (True, True),
    }
    for width in (16, 128):
        for kind, (bf16, cl) in kinds.items():
            variants[f"step width {width}: {kind}"] = make_step(width, bf16, cl)
    t = interleaved(variants, rounds, warmup=1, progress="steps")
    sampler_rate = n_sampler / t.median("sampler: 200 batches")
    out: dict[str, Any] = {
        "sampler_batches_per_s": sampler_rate,
        "n_mels": config.model.n_mels,
        "segment_frames": frames,
        "steps": {},
    }
    for width in (16, 128):
        base = None
        for kind in kinds:
            name = f"step width {width}: {kind}"
            rate = n_steps[width] / t.median(name)
            base = base or rate
            out["steps"][name] = {
                "steps_per_s": rate,
                "segments_per_s": rate * 32,
                "vs_fp32_nchw": rate / base,
                "sampler_over_step": sampler_rate / rate,
                "torch_threads": threads[width],
            }
    return out


def accelerator_steps(
    study: Any, device_name: str, n_steps: int, rounds: int, compile_model: bool = True
) -> dict[str, Any]:
    """Paper-width training steps/s on ``device_name`` with each data path and precision option."""
    import torch

    from mtlmood.loss import multitask_loss, resolve_alpha
    from mtlmood.model import MoodCNN
    from mtlmood.rundata import load_run_data
    from mtlmood.sampler import DeviceWindowSampler, WindowSampler

    device = torch.device(device_name)
    config = base_config(study, 1)
    data = load_run_data(config)
    ids = data.song_ids("train")
    mood, meta = data.targets("train")
    kwargs = dict(batch_size=32, segment_frames=config.model.segment_frames, batches_per_epoch=100_000, seed=0)
    host = WindowSampler(data.cache, ids, mood, meta, **kwargs)
    on_device = DeviceWindowSampler(data.cache, ids, mood, meta, device=device, **kwargs)
    alpha = resolve_alpha("auto", data.n_moods, data.n_meta)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def make(sampler_kind: str, bf16: bool, cl: bool, compiled: bool) -> Callable[[], Any]:
        torch.manual_seed(0)
        model = MoodCNN(replace(config.model, n_filters=128), data.n_moods, data.n_meta).to(device).train()
        if cl:
            model.use_channels_last()
        net = torch.compile(model) if compiled else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        cursor = [0]

        def batches() -> Any:
            start = cursor[0]
            cursor[0] += n_steps
            for i in range(start, start + n_steps):
                if sampler_kind == "device":
                    yield on_device.batch(1, i)
                else:
                    x, m, a = host.batch(1, i)
                    yield (
                        torch.from_numpy(x).to(device, non_blocking=True),
                        torch.from_numpy(m).to(device, non_blocking=True),
                        torch.from_numpy(a).to(device, non_blocking=True),
                    )

        def run() -> None:
            for x, m, a in batches():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    mood_logits, meta_logits = net(x)
                total, _, _ = multitask_loss(mood_logits, meta_logits, m, a, alpha)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
            sync()

        return run

    variants = {
        "host sampler + copy, fp32 (baseline)": ("host", False, False, False),
        "device sampler, fp32": ("device", False, False, False),
        "device sampler, bf16 autocast": ("device", True, False, False),
        "device sampler, bf16 + channels-last": ("device", True, True, False),
    }
    if compile_model:
        variants["device sampler, bf16 + channels-last + torch.compile"] = ("device", True, True, True)
    runs = {name: make(*spec) for name, spec in variants.items()}
    t = interleaved(runs, rounds, warmup=1, progress="accelerator")  # the warm-up pays for compilation
    base = None
    out: dict[str, Any] = {"device": str(device), "n_steps": n_steps, "steps": {}}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    for name in variants:
        rate = n_steps * 32 / t.median(name)
        base = base or rate
        out["steps"][name] = {"segments_per_s": rate, "vs_baseline": rate / base}
    return out


def accuracy_check(study: Any, epochs: int) -> dict[str, Any]:
    """The same seeded fit in fp32 and in bf16 + channels-last (study width)."""
    out = {}
    for name, train in (("fp32", {}), ("bf16 + channels-last", {"bf16": True, "channels_last": True})):
        result = run_plain(base_config(study, epochs, **train))
        best = max(result["history"], key=lambda h: h["val"].get("pr_auc", -1))
        out[name] = {
            "best_val_pr_auc": best["val"].get("pr_auc"),
            "best_val_roc_auc": best["val"].get("roc_auc"),
            "test_pr_auc": result["test_pr_auc"],
            "steady_segments_per_s": result["steady_segments_per_s"],
            "final_train_loss": result["history"][-1]["train_loss"],
        }
    return out


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (no early stopping)")
    parser.add_argument("--rounds", type=int, default=3, help="plain/Ray alternations")
    parser.add_argument("--step-rounds", type=int, default=3)
    parser.add_argument("--accuracy-epochs", type=int, default=6)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument(
        "--accelerator",
        default="auto",
        help="device of the accelerator section: auto (cuda when available, else skipped), "
        "cuda[:N], cpu (checks the code path), none",
    )
    parser.add_argument("--accelerator-steps", type=int, default=50, help="training steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variant")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where train.json / train.md go")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    info = machine()
    study, prep_s = ensure_synthetic()
    print(f"train: synthetic data ready ({prep_s:.0f} s)", flush=True)
    overhead = None if args.skip_ray else ray_overhead(study, args.epochs, args.rounds)
    step = steps(study, args.step_rounds)
    accuracy = accuracy_check(study, args.accuracy_epochs)
    import torch

    accel_device = args.accelerator
    if accel_device == "auto":
        accel_device = "cuda" if torch.cuda.is_available() else "none"
    accel = (
        None
        if accel_device == "none"
        else accelerator_steps(
            study, accel_device, args.accelerator_steps, args.step_rounds, compile_model=not args.no_compile
        )
    )

    md = ["# Training benchmark", "", machine_line(info), ""]
    if overhead:
        c = overhead["config"]
        md += [
            f"## Ray Train trial vs plain fit (synthetic default, {c['n_filters']} filters, {c['epochs']} epochs x "
            f"{c['batches_per_epoch']} batches of {c['batch_size']}, {c['torch_threads']} torch thread)",
            "",
            table(
                ["path", "steady segments/s (median of epochs 2..)", "vs plain", "start-up s (wall − epochs)"],
                [
                    [
                        "bare hand-written PyTorch loop",
                        fmt(overhead["bare_segments_per_s"]),
                        f"{overhead['bare_segments_per_s'] / overhead['plain_steady_segments_per_s']:.2f}×",
                        "–",
                    ],
                    [
                        "mtlmood fit (plain)",
                        fmt(overhead["plain_steady_segments_per_s"]),
                        "1.00×",
                        fmt(overhead["startup_s"]["plain"]),
                    ],
                    [
                        "Ray Train trial (TorchTrainer, 1 worker)",
                        fmt(overhead["ray_steady_segments_per_s"]),
                        f"{overhead['ray_steady_segments_per_s'] / overhead['plain_steady_segments_per_s']:.2f}×",
                        fmt(overhead["startup_s"]["ray"]),
                    ],
                ],
            ),
            "",
            f"Ray steady-state overhead: {100 * overhead['ray_overhead_fraction']:.1f} % (target ≤ 10 %); "
            f"extra start-up per trial {overhead['ray_extra_startup_s']:.1f} s; "
            f"ray.init {overhead['ray_init_s']:.1f} s.",
            "",
        ]
    rows = []
    for name, s in step["steps"].items():
        rows.append(
            [
                name,
                str(s["torch_threads"]),
                fmt(s["segments_per_s"]),
                f"{s['vs_fp32_nchw']:.2f}×",
                f"{s['sampler_over_step']:.0f}×",
            ]
        )
    md += [
        f"## Sampler vs model step; bf16 / channels-last (batch 32, {step['n_mels']} mel bands x "
        f"{step['segment_frames']} frames)",
        "",
        f"WindowSampler: {step['sampler_batches_per_s']:,.0f} batches/s (one thread).",
        "",
        table(["optimizer step", "threads", "segments/s", "vs fp32 NCHW", "sampler / step rate"], rows),
        "",
        f"## Accuracy quick check ({args.accuracy_epochs} epochs, same seed, study width)",
        "",
        table(
            ["precision", "best val PR-AUC %", "best val ROC-AUC %", "test PR-AUC %", "segments/s"],
            [
                [
                    k,
                    fmt(v["best_val_pr_auc"], 2),
                    fmt(v["best_val_roc_auc"], 2),
                    fmt(v["test_pr_auc"], 2),
                    fmt(v["steady_segments_per_s"]),
                ]
                for k, v in accuracy.items()
            ],
        ),
    ]
    if accel:
        md += [
            "",
            f"## Accelerator: paper-width training steps on {accel.get('device_name', accel['device'])} "
            f"(batch 32, {accel['n_steps']} steps per round, batch fetch included)",
            "",
            table(
                ["data path / precision", "segments/s", "vs baseline"],
                [[k, fmt(v["segments_per_s"]), f"{v['vs_baseline']:.2f}×"] for k, v in accel["steps"].items()],
            ),
        ]
    else:
        md += ["", "Accelerator section skipped: no CUDA device (run with --accelerator cuda on a GPU machine)."]
    payload = {
        "machine": info,
        "prepare_s": prep_s,
        "ray_overhead": overhead,
        "steps": step,
        "accuracy": accuracy,
        "accelerator": accel,
    }
    return publish("train", payload, md, out_dir=args.out)


if __name__ == "__main__":
    main()
    sys.exit(0)
