"""Runs an alpha study on Ray: phase 1 (Optuna TPE + ASHA) then phase 2 (seeds), resumable.

Each phase is its own Tune experiment under ``<storage_path>/<name>/``. Re-running the
same study resumes it: a finished phase is read back from disk, an interrupted phase
is restored with ``Tuner.restore`` (Optuna and ASHA state included), finished trials
are neither lost nor re-run, and interrupted trials continue from their last checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mtlmood.config import to_dict
from mtlmood.fileio import atomic_write_json, atomic_write_text
from study.cells import Cell, study_cells
from study.config import StudyConfig, join_storage
from study.results import best_alpha_per_cell, trial_table
from study.space import SEEDED, make_sampler, make_space, n_startup_trials, sampled_trials, seeded_points
from study.trial import driver_resources, make_trial_driver

SEARCH, CONFIRM = "search", "confirm"
TRIALS_FILE = "trials.parquet"
DONE_MARKER = "phase_done.json"


@dataclass
class StudyOutcome:
    run_dir: str
    trials: pd.DataFrame
    best_checkpoint: str


def max_concurrent_trials(study: StudyConfig) -> int:
    """How many trials fit at once in what the cluster has now (at least 1)."""
    import ray

    res = study.resources
    if res.max_concurrent_trials > 0:
        return res.max_concurrent_trials
    available = ray.cluster_resources()
    per_trial_cpu = res.num_workers * res.cpus_per_worker + res.driver_cpus
    fits = math.floor(available.get("CPU", 1) / per_trial_cpu + 1e-9)
    if available.get("GPU", 0) > 0 and res.use_gpu.lower() != "false":
        fits = min(fits, math.floor(available["GPU"] / (res.num_workers * res.gpus_per_worker) + 1e-9))
    return max(1, fits)


def _tuner(study: StudyConfig, phase: str, trainable: Any, param_space: dict[str, Any], tune_config: Any,
           callbacks: list[Any]) -> Any:
    """A new Tuner for a phase, or the restored one when the phase was interrupted."""
    from ray import tune

    path = join_storage(study.run_dir, phase)
    if tune.Tuner.can_restore(path):
        print(f"[{phase}] resuming the interrupted phase from {path}", flush=True)
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True, param_space=param_space)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config,
        run_config=tune.RunConfig(name=phase, storage_path=study.run_dir, callbacks=callbacks, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )


def _phase_done(study: StudyConfig, phase: str) -> bool:
    return Path(join_storage(study.run_dir, phase), DONE_MARKER).exists()


def _finish_phase(study: StudyConfig, phase: str, grid: Any, cells: dict[str, Cell],
                  best_is_heuristic: tuple[str, ...] = ()) -> pd.DataFrame:
    table = trial_table(grid, phase, cells, study)
    if best_is_heuristic:
        table = with_best_aliases(table, best_is_heuristic)
    phase_dir = Path(join_storage(study.run_dir, phase))
    table.to_parquet(phase_dir / TRIALS_FILE)
    atomic_write_json(phase_dir / DONE_MARKER, {"trials": len(table)})
    return table


def search_scheduler(study: StudyConfig) -> Any:
    """ASHA on validation PR-AUC (epochs as time), or FIFO when the scheduler is off.

    With ``scheduler.protect_seeded`` the seeded trials (config key ``seeded``) still enter
    ASHA's rungs but are never stopped: they are the reference arms of the study. The
    subclass is local to keep Ray out of this module's imports; Tune stores the scheduler
    with cloudpickle, which keeps such a class by value, so ``Tuner.restore`` rebuilds it.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    if not study.scheduler.enabled:
        return FIFOScheduler()

    class SeededArmsASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.STOP and (trial.config or {}).get(SEEDED):
                return TrialScheduler.CONTINUE  # its result is in the rung; it just goes on
            return action

    cls = SeededArmsASHA if study.scheduler.protect_seeded else ASHAScheduler
    return cls(time_attr="training_iteration", max_t=study.run.train.max_epochs + 1,
               grace_period=study.scheduler.grace_period, reduction_factor=study.scheduler.reduction_factor)


def run_search(study: StudyConfig, cells: dict[str, Cell]) -> pd.DataFrame:
    """Phase 1: Optuna TPE (seeded) over n_moods x metadata x alpha, ASHA on val PR-AUC."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    phase_dir = Path(join_storage(study.run_dir, SEARCH))
    if _phase_done(study, SEARCH):
        return pd.read_parquet(phase_dir / TRIALS_FILE)
    heuristics = {key: cell.heuristic_alpha for key, cell in cells.items()}
    points = seeded_points(study)
    concurrency = max_concurrent_trials(study)
    # The seed goes to the sampler: OptunaSearch ignores its own seed= when given a sampler.
    searcher = OptunaSearch(make_space(study), metric="val_pr_auc", mode="max",
                            points_to_evaluate=points, sampler=make_sampler(study))
    # Every sampled trial picks a metadata set: the baselines run once, as seeded points.
    sampled = sampled_trials(study)
    num_samples = len(points) + sampled
    trainable = tune.with_resources(make_trial_driver(to_dict(study), heuristics, SEARCH), driver_resources(study))
    tune_config = tune.TuneConfig(metric="val_pr_auc", mode="max",
                                  search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                                  scheduler=search_scheduler(study), num_samples=num_samples,
                                  time_budget_s=study.search.time_budget_s or None)
    tpe = f", TPE once {n_startup_trials(study)} have finished" if sampled else ""
    print(f"[search] {num_samples} trials ({len(points)} seeded: baseline + heuristic alpha per cell; "
          f"{sampled} sampled{tpe}), {concurrency} at a time", flush=True)
    from study.progress import ProgressTable

    tuner = _tuner(study, SEARCH, trainable, {}, tune_config, [ProgressTable(SEARCH, num_samples)])
    grid = tuner.fit()
    return _finish_phase(study, SEARCH, grid, cells)


def best_is_heuristic(search: pd.DataFrame, cells: dict[str, Cell]) -> tuple[str, ...]:
    """Cells whose best alpha found is the heuristic itself: their "best" arm reuses the
    heuristic's runs (same alpha, same seeds, same deterministic result) instead of
    training them again."""
    best = best_alpha_per_cell(search)
    return tuple(sorted(key for key, alpha in best.items()
                        if key in cells and math.isclose(alpha, cells[key].heuristic_alpha, rel_tol=1e-9)))


def with_best_aliases(confirm: pd.DataFrame, cell_keys: tuple[str, ...]) -> pd.DataFrame:
    """Add role="best" rows that point at the heuristic runs of the given cells."""
    keys = confirm["n_moods"].astype(int).astype(str) + "|" + confirm["metadata"]
    heuristic = confirm[(confirm["role"] == "heuristic") & keys.isin(cell_keys)]
    return pd.concat([confirm, heuristic.assign(role="best")], ignore_index=True)


def confirm_jobs(study: StudyConfig, search: pd.DataFrame, cells: dict[str, Cell]) -> list[dict[str, Any]]:
    """Phase 2 jobs: baseline, heuristic alpha and best alpha found per cell, each over every seed
    (no separate best-alpha jobs where the best alpha found is the heuristic)."""
    best = best_alpha_per_cell(search)
    aliased = best_is_heuristic(search, cells)
    jobs: list[dict[str, Any]] = []
    for n in study.search.n_moods:
        for seed in study.confirm.seeds:
            jobs.append({"n_moods": int(n), "metadata": "none", "alpha": 0.0, "seed": int(seed), "role": "baseline"})
        for meta in study.search.metadata:
            cell = cells[f"{int(n)}|{meta}"]
            roles = [("heuristic", cell.heuristic_alpha)]
            found = best.get(cell.key)
            if found is not None and cell.key not in aliased:
                roles.append(("best", float(found)))
            for role, alpha in roles:
                for seed in study.confirm.seeds:
                    jobs.append({"n_moods": int(n), "metadata": meta, "alpha": float(alpha),
                                 "seed": int(seed), "role": role})
    return jobs


def run_confirm(study: StudyConfig, search: pd.DataFrame, cells: dict[str, Cell]) -> pd.DataFrame:
    """Phase 2: fixed jobs (grid), every one trained to its own early stop; no scheduler."""
    from ray import tune

    phase_dir = Path(join_storage(study.run_dir, CONFIRM))
    if _phase_done(study, CONFIRM):
        return pd.read_parquet(phase_dir / TRIALS_FILE)
    jobs = confirm_jobs(study, search, cells)
    heuristics = {key: cell.heuristic_alpha for key, cell in cells.items()}
    concurrency = max_concurrent_trials(study)
    trainable = tune.with_resources(make_trial_driver(to_dict(study), heuristics, CONFIRM),
                                    driver_resources(study))
    tune_config = tune.TuneConfig(metric="val_pr_auc", mode="max", max_concurrent_trials=concurrency)
    aliased = best_is_heuristic(search, cells)
    note = f"; best alpha = heuristic in {', '.join(aliased)}: reusing its runs" if aliased else ""
    print(f"[confirm] {len(jobs)} trials (baseline, heuristic and best alpha x {len(study.confirm.seeds)} seeds{note}), "
          f"{concurrency} at a time", flush=True)
    from study.progress import ProgressTable

    tuner = _tuner(study, CONFIRM, trainable, {"job": tune.grid_search(jobs)}, tune_config,
                   [ProgressTable(CONFIRM, len(jobs))])
    grid = tuner.fit()
    return _finish_phase(study, CONFIRM, grid, cells, best_is_heuristic(search, cells))


def run_study(study: StudyConfig) -> StudyOutcome:
    """Both phases, then the trial table, the report and the best checkpoint pointer.

    Ray must already be initialised (``ray.init``) by the caller.
    """
    from study.report_writer import write_study_report

    run_dir = Path(study.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from mtlmood.config import save_config

    save_config(study, run_dir / "study_config.yaml")
    cells = study_cells(study)
    atomic_write_text(run_dir / "cells.json", json.dumps({k: vars(c) for k, c in cells.items()}, indent=2))
    search = run_search(study, cells)
    tables = [search]
    if study.confirm.enabled:
        tables.append(run_confirm(study, search, cells))
    trials = pd.concat(tables, ignore_index=True)
    best = write_study_report(study, trials)
    return StudyOutcome(run_dir=str(run_dir), trials=trials, best_checkpoint=best)
