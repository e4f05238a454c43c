"""One study trial: a Tune driver function that trains one or more runs on Ray Train.

Train V2 way (Ray >= 2.51): the Tune trainable is a *driver* that builds and fits a Ray
Train trainer (a DataParallelTrainer for one worker, a TorchTrainer for several);
``TuneReportCallback`` forwards rank 0's ``ray.train.report`` metrics to Tune. The
per-worker loop wraps ``mtlmood.train.fit``; no copy of the training loop lives here.

A **job** is a cell, an arm (an alpha, or the learned weight) and one or more seeds. A
search trial is one job of one seed; a curve trial trains one or more jobs one after
another: several seeds of the same (cell, arm) (``curve.seeds_per_trial``) and several
arms of the cell (``curve.arms_per_trial``), paying Ray Train's start-up once. Each
finished run writes its model, test predictions and ``result.json`` under
``<run_dir>/runs/...`` (atomically: one folder rename on a file system; on an object store
every file is one PUT and ``result.json`` goes last, so a run is finished exactly when its
``result.json`` exists); a restarted or restored trial skips finished runs and resumes the
unfinished one from its last epoch checkpoint.

Failures that retrying cannot fix (missing data, an invalid config, an empty label set:
``mtlmood.errors.MtlmoodError``) are not raised into Ray, which would retry them: the
trial writes the traceback to ``<run_dir>/logs/<trial>.log`` and reports a ``fatal``
line, and the runner stops the study with that line. Crashes (a killed worker, a lost
node) still raise and are retried up to ``max_failures`` times.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mtlmood import storage
from mtlmood.coerce import from_dict, to_dict
from mtlmood.config import RunConfig
from mtlmood.filenames import TRAIN_STATE_FILE as STATE_FILE

PREDICTIONS_FILE = "test_predictions.npz"
RESULT_FILE = "result.json"
MODEL_DIR = "model"  # a regular mtlmood checkpoint (weights + model card)
FATAL = "fatal"  # metric key of a deterministic failure's one-line reason
LEARNED = "learned"


def arm_slug(arm: str) -> str:
    """A file-name-safe arm name, one path segment: ``"x1/3"`` -> ``"x1_3"`` (the table keeps
    the display name; a "/" would nest a folder per fraction)."""
    return re.sub(r"[^A-Za-z0-9+._-]", "_", arm)


def run_dir_of(study_run_dir: str, phase: str, cell_slug: str, name: str, seed: int) -> str:
    """Where one run's outputs live: by phase, cell, arm (or search trial) and seed, never by
    time; ``name`` is made one file-safe path segment (see :func:`arm_slug`)."""
    return storage.join(study_run_dir, "runs", phase, cell_slug, arm_slug(name), f"seed-{seed}")


def _write_run_outputs(out_dir: str, fit_result: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Model, test predictions and result.json of one finished run: written beside ``out_dir``
    and renamed into place at once, or, on an object store, uploaded with result.json last."""
    from mtlmood.checkpoint import ModelCard, save_checkpoint

    remote = storage.is_uri(out_dir)
    if remote:
        tmp = Path(tempfile.mkdtemp(prefix="mtlmood-run-"))
    else:
        Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{Path(out_dir).name}-", dir=Path(out_dir).parent))
    save_checkpoint(tmp / MODEL_DIR, fit_result.model, ModelCard.from_fit(fit_result))
    test = fit_result.test_evaluation
    if test is not None:
        np.savez_compressed(
            tmp / PREDICTIONS_FILE, song_ids=np.asarray(test.song_ids), y_true=test.y_true, y_prob=test.y_prob
        )
    (tmp / RESULT_FILE).write_text(json.dumps(record, indent=2))
    # A half-finished earlier attempt (its result.json never written) goes first.
    storage.remove(out_dir)
    if remote:
        try:
            storage.upload_dir(tmp, out_dir, last=[RESULT_FILE])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(out_dir)
    return record


def _run_record(fit_result: Any, run: dict[str, Any]) -> dict[str, Any]:
    test = fit_result.test_evaluation
    scores = test.scores if test is not None else {}
    return {
        **{k: run[k] for k in ("phase", "cell", "n_moods", "metadata", "arm", "alpha_factor", "seed", "trial_id")},
        "alpha": float(fit_result.alpha),
        "alpha_mode": str(getattr(fit_result, "alpha_mode", "fixed")),
        "n_mood_labels": int(fit_result.n_moods),
        "n_meta": int(fit_result.n_meta),
        "epochs": int(fit_result.history[-1].epoch) if fit_result.history else 0,
        "best_epoch": int(fit_result.best_epoch),
        "stopped_early": bool(fit_result.stopped_early),
        "val_roc_auc": float(fit_result.best_val.get("roc_auc", float("nan"))),
        "val_pr_auc": float(fit_result.best_val.get("pr_auc", float("nan"))),
        "test_roc_auc": float(scores.get("roc_auc", float("nan"))),
        "test_pr_auc": float(scores.get("pr_auc", float("nan"))),
        "test_prevalence": float(scores.get("prevalence", float("nan"))),
        "train_seconds": float(fit_result.seconds),
        "checkpoint": MODEL_DIR,
        "predictions": PREDICTIONS_FILE if test is not None else "",
    }


def _log_fatal(log_file: str, exc: BaseException, where: str) -> str:
    """Write the traceback to the trial's log; return the one line the study stops with."""
    storage.append_text(log_file, f"{where}\n{''.join(traceback.format_exception(exc))}\n")
    return f"{type(exc).__name__}: {exc}"


def worker_device() -> tuple[Any, float]:
    """(the torch device this Ray Train worker trains on, the GPU share Ray gave it).

    Ray's device is the worker's GPU whenever Ray gave it one, CUDA or not: a Ray node can
    offer "GPU" resources that are not CUDA devices (``ray.init(num_gpus=1)`` on a machine
    without one, as the packing test does). Without CUDA the worker trains on the CPU instead
    of failing at its first CUDA call."""
    import ray
    import ray.train.torch
    import torch

    gpus = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    device = ray.train.torch.get_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        logging.getLogger(__name__).warning(
            "Ray gave this worker %g GPU but torch sees no CUDA device: training on the CPU", gpus
        )
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # what TorchTrainer's setup does; a one-worker trial has none
    return device, gpus


def _final_report(last: dict[str, Any], runs: int) -> dict[str, Any]:
    """The trial's last report: the numbers of its last run's record, ``final`` and the run count."""
    final: dict[str, Any] = {k: v for k, v in last.items() if isinstance(v, (int, float, bool))}
    final.update({"final": True, "runs": runs})
    return final


def _finished_report(runs: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The final report of a trial whose runs all wrote their result.json, else None."""
    last: dict[str, Any] = {}
    for run in runs:
        result_file = storage.join(str(run["out_dir"]), RESULT_FILE)
        if not storage.exists(result_file):
            return None
        last = json.loads(storage.read_text(result_file))
    return _final_report(last, len(runs)) if runs else None


def train_worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: each run of the job in turn, resuming where a checkpoint left off."""
    import ray.train

    from mtlmood.checkpoint import load_train_state, save_train_state
    from mtlmood.errors import MtlmoodError
    from mtlmood.rundata import load_run_data
    from mtlmood.train import fit

    rank = ray.train.get_context().get_world_rank()
    device, gpus = worker_device()
    resume_state: Optional[dict[str, Any]] = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group (FailureConfig) or a restored trial
        with checkpoint.as_directory() as ckpt_dir:
            if (Path(ckpt_dir) / STATE_FILE).exists():
                resume_state = load_train_state(Path(ckpt_dir) / STATE_FILE)
                resume_state["_run_index"] = json.loads((Path(ckpt_dir) / "run.json").read_text())["run_index"]

    last: dict[str, Any] = {}
    for index, run in enumerate(loop_config["runs"]):
        out_dir = str(run["out_dir"])
        result_file = storage.join(out_dir, RESULT_FILE)
        if storage.exists(result_file):  # finished before a restart
            last = json.loads(storage.read_text(result_file))
            continue
        try:
            run_config = from_dict(RunConfig, run["run_config"])
            data = load_run_data(run_config)
        except MtlmoodError as exc:
            reason = _log_fatal(loop_config["log_file"], exc, f"run {run['arm']} seed {run['seed']}")
            ray.train.report({FATAL: reason, "final": True}, checkpoint=None)
            return
        resume = resume_state if resume_state and resume_state.get("_run_index") == index else None
        if resume is not None:
            resume = {k: v for k, v in resume.items() if k != "_run_index"}

        def report_epoch(result: Any, state: Any, index: int = index, run: dict[str, Any] = run) -> None:
            metrics = {k: v for k, v in result.metrics().items() if isinstance(v, (int, float, bool))}
            metrics.update({"final": False, "run_index": index, "seed": int(run["seed"])})
            if rank != 0:  # every rank must call report; only rank 0 uploads a checkpoint
                ray.train.report(metrics, checkpoint=None)
                return
            with tempfile.TemporaryDirectory() as tmp:
                save_train_state(Path(tmp) / STATE_FILE, state.to_dict())
                (Path(tmp) / "run.json").write_text(json.dumps({"run_index": index}))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

        started = time.time()
        fit_result = fit(
            data,
            run_config,
            callback=report_epoch,
            resume=resume,
            device=device,
            bank_budget=loop_config.get("bank_budget"),
        )
        record = {
            **_run_record(fit_result, run),
            # Where and when it trained: the packing of trials on GPUs can be read back from these.
            "device": str(device),
            "worker_gpus": gpus,
            # Training segments/s of its epochs (median): a packed trial's share of the GPU's throughput.
            "segments_per_second": float(np.median([h.segments_per_second for h in fit_result.history]))
            if fit_result.history
            else float("nan"),
            "started_unix": started,
            "finished_unix": time.time(),
        }
        if rank == 0:
            _write_run_outputs(out_dir, fit_result, record)
        last = record
    ray.train.report(_final_report(last, len(loop_config["runs"])), checkpoint=None)


def job_runs(study: Any, job: dict[str, Any], cell: dict[str, Any], phase: str, trial_id: str) -> list[dict[str, Any]]:
    """The runs (one per seed) of one job, each with its RunConfig and output folder."""
    from study.cells import cell_slug
    from study.config import trial_run_config

    arm = str(job["arm"])
    alpha: Any = LEARNED if arm == LEARNED else float(job["alpha"])
    name = arm if phase != "search" else trial_id
    runs = []
    for seed in job["seeds"]:
        run_config = trial_run_config(study, cell["n_moods"], cell["metadata"], alpha, int(seed))
        runs.append(
            {
                "phase": phase,
                "cell": job["cell"],
                "n_moods": cell["n_moods"],
                "metadata": cell["metadata"],
                "arm": arm,
                "alpha_factor": float(job.get("alpha_factor", float("nan"))),
                "seed": int(seed),
                "trial_id": trial_id,
                "run_config": to_dict(run_config),
                "out_dir": run_dir_of(
                    study.run_dir, phase, cell_slug(cell["n_moods"], cell["metadata"]), name, int(seed)
                ),
            }
        )
    return runs


def search_job(
    config: dict[str, Any], cells: dict[str, dict[str, Any]], seeds: list[int], trial_number: int
) -> dict[str, Any]:
    """A search trial's job: its cell, alpha = factor x the cell's heuristic, a search seed."""
    key = str(config["cell"])
    factor = float(config["alpha_factor"])
    return {
        "cell": key,
        "arm": "search",
        "alpha_factor": factor,
        "alpha": factor * cells[key]["heuristic_alpha"],
        "seeds": [seeds[trial_number % len(seeds)]],
    }


def make_trial_driver(
    study_dict: dict[str, Any], cells: dict[str, dict[str, Any]], phase: str, label: Optional[str] = None
):
    """The Tune trainable of one phase: turn the trial's job into runs, then fit its Ray Train trainer.

    ``label`` (default: the phase) names the trial's Train run and log: the Tune experiment,
    e.g. "curve-ext1", so that trials of two experiments of one phase never share a Train run."""
    name = label or phase

    def trial_driver(config: dict[str, Any]) -> None:
        import ray.train
        import ray.tune
        from ray.tune.integration.ray_train import TuneReportCallback

        from study.config import StudyConfig, join_storage
        from study.resources import device_bank_budget, worker_gpus
        from study.trainer import trainer_class

        study = from_dict(StudyConfig, study_dict)
        context = ray.tune.get_context()
        trial_id = context.get_trial_id()
        if phase == "search":
            number = int(trial_id.rsplit("_", 1)[-1]) if trial_id.rsplit("_", 1)[-1].isdigit() else 0
            jobs = [search_job(config, cells, study.search.seeds, number)]
        else:
            jobs = [dict(job) for job in config["jobs"]]
        runs = [run for job in jobs for run in job_runs(study, job, cells[job["cell"]], phase, trial_id)]
        finished = _finished_report(runs) if phase != "search" else None
        if finished is not None:
            # Every run of this curve trial finished before a restart (the round was not yet
            # recorded): report what the last one wrote, as its worker did, without paying Ray
            # Train's ~9 s start-up per trial. (Search trials go through Tune's scheduler, which
            # expects their epochs: a restored search trial always resumes on Ray Train.)
            ray.tune.report(finished)
            return
        res = study.resources
        use_gpu = _use_gpu(res.use_gpu)
        worker_resources = {"CPU": res.cpus_per_worker}
        if use_gpu:
            worker_resources["GPU"] = worker_gpus(res)  # 1/N of a GPU with resources.trials_per_gpu N
        trainer = trainer_class(torch_process_group=res.num_workers > 1)(
            train_worker_loop,
            train_loop_config={
                "runs": runs,
                "log_file": join_storage(study.run_dir, "logs", f"{name}-{trial_id}.log"),
                "bank_budget": device_bank_budget(study) if use_gpu else None,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=res.num_workers, use_gpu=use_gpu, resources_per_worker=worker_resources
            ),
            run_config=ray.train.RunConfig(
                # Deterministic name: a restored Tune trial resumes its Train run from its
                # last checkpoint instead of starting a new one.
                name=f"{name}-{trial_id}",
                storage_path=join_storage(study.run_dir, "train"),
                callbacks=[TuneReportCallback()],  # type: ignore[list-item]  # a Train V2 callback; stubs say V1
                failure_config=ray.train.FailureConfig(max_failures=study.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            ),
        )
        trainer.fit()

    return trial_driver


def _use_gpu(setting: str) -> bool:
    if setting.lower() == "auto":
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0
    return setting.lower() == "true"


def driver_resources(study: Any) -> dict[str, float]:
    """Resources of the trial driver itself (tiny: it only waits on its Ray Train trainer)."""
    resources: dict[str, float] = {"cpu": study.resources.driver_cpus}
    if study.resources.driver_resource:
        resources[study.resources.driver_resource] = 0.01
    return resources
