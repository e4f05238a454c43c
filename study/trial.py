"""One study trial: a Tune driver function that runs mtlmood training in a Ray Train TorchTrainer.

Train V2 way (Ray >= 2.51): the Tune trainable is a *driver* that builds and fits a
TorchTrainer; ``TuneReportCallback`` forwards rank 0's ``ray.train.report`` metrics
to Tune and adds the ``checkpoint_path`` metric. The per-worker loop is a thin
wrapper around ``mtlmood.train.fit``: its epoch callback reports metrics and a
resumable checkpoint, so a restarted worker (FailureConfig) continues from the last
epoch instead of starting over. No copy of the training loop lives here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mtlmood.config import RunConfig, from_dict, to_dict

STATE_FILE = "train_state.pt"
PREDICTIONS_FILE = "test_predictions.npz"
MODEL_DIR = "model"  # a regular mtlmood checkpoint (weights + model card) inside the final Ray checkpoint


def _epoch_metrics(result: Any) -> dict[str, Any]:
    """An mtlmood EpochResult as Tune metrics (``final`` marks the last, tested report; Tune reserves ``done``)."""
    metrics = {k: v for k, v in result.metrics().items() if isinstance(v, (int, float, bool))}
    return {**metrics, "final": False}


def train_worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: resume if a checkpoint exists, fit, report each epoch."""
    import ray.train
    import ray.train.torch

    from mtlmood.checkpoint import ModelCard, load_train_state, save_checkpoint, save_train_state
    from mtlmood.rundata import load_run_data
    from mtlmood.train import fit

    run_config = from_dict(RunConfig, loop_config["run"])
    rank = ray.train.get_context().get_world_rank()
    data = load_run_data(run_config)

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group (FailureConfig) or a restored trial
        with checkpoint.as_directory() as ckpt_dir:
            if (Path(ckpt_dir) / STATE_FILE).exists():
                resume = load_train_state(Path(ckpt_dir) / STATE_FILE)

    last_state: dict[str, Any] = {}

    def report_epoch(result: Any, state: Any) -> None:
        metrics = _epoch_metrics(result)
        if rank != 0:  # every rank must call report; only rank 0 uploads a checkpoint
            ray.train.report(metrics, checkpoint=None)
            return
        last_state["state"] = state.to_dict()
        with tempfile.TemporaryDirectory() as tmp:
            save_train_state(Path(tmp) / STATE_FILE, last_state["state"])
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    fit_result = fit(data, run_config, callback=report_epoch, resume=resume, device=ray.train.torch.get_device())

    # fit restored the best (validation) weights and scored the test split with them;
    # selection never looked at test.
    test = fit_result.test_evaluation
    final = {
        "epoch": int(fit_result.history[-1].epoch) if fit_result.history else 0,
        "best_epoch": int(fit_result.best_epoch),
        "val_roc_auc": float(fit_result.best_val.get("roc_auc", float("nan"))),
        "val_pr_auc": float(fit_result.best_val.get("pr_auc", float("nan"))),
        "test_roc_auc": float(test.scores.get("roc_auc", float("nan"))) if test else float("nan"),
        "test_pr_auc": float(test.scores.get("pr_auc", float("nan"))) if test else float("nan"),
        "test_prevalence": float(test.scores.get("prevalence", float("nan"))) if test else float("nan"),
        "alpha": float(fit_result.alpha),
        "n_meta": int(fit_result.n_meta),
        "stopped_early": bool(fit_result.stopped_early),
        "train_seconds": float(fit_result.seconds),
        "final": True,
    }
    if rank != 0:
        ray.train.report(final, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / MODEL_DIR, fit_result.model, ModelCard.from_fit(fit_result))
        if "state" in last_state:
            # A trial restored after this report (its Tune state lagging behind) resumes here
            # and finishes at once instead of training again.
            save_train_state(Path(tmp) / STATE_FILE, last_state["state"])
        if test is not None:
            np.savez_compressed(Path(tmp) / PREDICTIONS_FILE, song_ids=np.asarray(test.song_ids),
                                y_true=test.y_true, y_prob=test.y_prob)
        ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def make_trial_driver(study_dict: dict[str, Any], heuristics: dict[str, float], phase: str):
    """The Tune trainable of one phase: choose the trial's RunConfig, then fit a TorchTrainer."""

    def trial_driver(config: dict[str, Any]) -> None:
        import ray.train
        import ray.tune
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        from study.config import StudyConfig, join_storage, trial_run_config

        study = from_dict(StudyConfig, study_dict)
        choice = resolve_choice(config, heuristics, study.search.training_seed)
        run_config = trial_run_config(study, choice["n_moods"], choice["metadata"], choice["alpha"],
                                      choice["seed"])
        trial_id = ray.tune.get_context().get_trial_id()
        res = study.resources
        use_gpu = _use_gpu(res.use_gpu)
        worker_resources = {"CPU": res.cpus_per_worker}
        if use_gpu:
            worker_resources["GPU"] = res.gpus_per_worker
        trainer = TorchTrainer(
            train_worker_loop,
            train_loop_config={"run": to_dict(run_config)},
            scaling_config=ray.train.ScalingConfig(num_workers=res.num_workers, use_gpu=use_gpu,
                                                   resources_per_worker=worker_resources),
            run_config=ray.train.RunConfig(
                # Deterministic name: a restored Tune trial resumes its Train run from its
                # last checkpoint instead of starting a new one (see RAY_NOTES).
                name=f"{phase}-{trial_id}",
                storage_path=join_storage(study.run_dir, "train"),
                callbacks=[TuneReportCallback()],
                failure_config=ray.train.FailureConfig(max_failures=study.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            ),
        )
        trainer.fit()

    return trial_driver


def resolve_choice(config: dict[str, Any], heuristics: dict[str, float], default_seed: int) -> dict[str, Any]:
    """Turn a Tune config (search or confirm phase) into (n_moods, metadata, alpha, seed, role).

    Confirm-phase configs hold their choices under ``job`` (one grid entry per job).
    """
    config = {**config.get("job", {}), **{k: v for k, v in config.items() if k != "job"}}
    n_moods = int(config["n_moods"])
    metadata = str(config["metadata"])
    heuristic = heuristics.get(f"{n_moods}|{metadata}", 0.0)
    if metadata == "none":
        alpha = 0.0
    elif "alpha" in config:
        alpha = float(config["alpha"])
    else:
        alpha = float(config.get("alpha_factor", 1.0)) * heuristic
    return {"n_moods": n_moods, "metadata": metadata, "alpha": alpha, "heuristic_alpha": heuristic,
            "seed": int(config.get("seed", default_seed)), "role": str(config.get("role", "search"))}


def _use_gpu(setting: str) -> bool:
    if setting.lower() == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return setting.lower() == "true"


def driver_resources(study: Any) -> dict[str, float]:
    """Resources of the trial driver itself (tiny: it only waits on its TorchTrainer)."""
    resources: dict[str, float] = {"cpu": study.resources.driver_cpus}
    if study.resources.driver_resource:
        resources[study.resources.driver_resource] = 0.01
    return resources


os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
