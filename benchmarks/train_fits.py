"""The training benchmark's whole fits: the study's base run trained by ``mtlmood.train.fit`` in this
process, as a Ray Train trial shaped as a study's, and by a bare hand-written PyTorch loop (the Ray
overhead, section 1 of benchmarks/train_bench.py); and the same seeded fit in fp32 and in bf16 +
channels-last (the accuracy check, section 3)."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np


def base_config(study: Any, epochs: int, **train: Any) -> Any:
    """The study's base run with 6 moods and artist metadata, ``epochs`` epochs and no early stop."""
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
    """``mtlmood.train.fit`` in this process: wall time, the epochs' own time, history, steady throughput."""
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
    """The same run as a Ray Train trial (``study.trial.train_worker_loop``, 1 worker x 1 CPU)."""
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
    """Plain fit vs Ray Train trial, alternating ``rounds`` times, with the bare loop as the floor."""
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
