"""Runs an alpha study on Ray: search (per cell) -> curve (fresh seeds) -> reference -> report; resumable.

Each Tune phase is its own experiment under ``<storage_path>/<name>/``, a local or shared
path or an object store URI (``s3://bucket/studies``: every file below goes through
mtlmood.storage, and Tune and Train write there themselves). Re-running the
same study resumes it: a finished phase is read back from disk, an interrupted phase is
restored with ``Tuner.restore`` (each cell's Optuna study and ASHA rungs included; the
studies themselves live in Optuna's storage, study.optuna_store),
finished runs are never re-trained (their ``result.json`` is on disk) and interrupted
ones continue from their last epoch checkpoint.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import yaml
from ray import tune

from mtlmood import storage
from mtlmood.coerce import to_dict
from mtlmood.errors import ConfigError, MtlmoodError
from mtlmood.remote_cache import lock_directory
from mtlmood.runlock import RunLock, held_here
from study.cells import CELLS_FILE, Cell, metadata_cells, study_cells
from study.config import StudyConfig, join_storage
from study.curve_jobs import curve_jobs, curve_trials, seed_chunks, unreported_trials
from study.extension import EXTENSIONS_FILE, extension_jobs, extension_summary
from study.filenames import STUDY_CONFIG_FILE
from study.optuna_store import check_resumable, fresh_storage, publish_studies, storage_url
from study.optuna_urls import cell_study_name
from study.results import curve_rows, job_name, search_rows, trial_table
from study.space import CellSearchGenerator, make_cell_scheduler, make_cell_searcher
from study.trial import FATAL, driver_resources, job_runs, make_trial_driver

SEARCH, CURVE = "search", "curve"
TRIALS_FILE = "trials.parquet"
DONE_MARKER = "phase_done.json"
# One round of the curve (the grid in "curve", extension k in "curve-ext<k>"): its own rows
# and done marker; the phase's TRIALS_FILE/DONE_MARKER come once every round is done.
ROUND_TRIALS_FILE = "round_trials.parquet"
ROUND_DONE_MARKER = "round_done.json"
# How often a curve round runs the trials its resumed experiment never ran before it gives up
# and lists their runs as unfinished (each try is one more kill survived).
LOST_TRIAL_ROUNDS = 3
CELLS_DIR = "cells"


class StudyFailed(MtlmoodError):
    """A trial failed for a reason that retrying cannot fix (data, config, labels)."""


@dataclass
class StudyOutcome:
    run_dir: str
    trials: pd.DataFrame
    best_checkpoint: str


# A trial's driver only builds and waits on its Ray Train trainer, so the next trial can run in the
# same process: no new Python, no second import of Ray Train and torch (a no-op trial: 11.1 s
# instead of 13.5 s on 2 cores, 2026-12-06). A driver still inside a stopped trial's fit() is
# not reused: Tune waits 2 s for its thread, then replaces the actor as before.
REUSE_DRIVERS = True


def max_concurrent_trials(study: StudyConfig) -> int:
    """How many trials fit at once in what the cluster has now (at least 1). A trial's GPU
    share is fractional when trials share GPUs (``resources.trials_per_gpu``: 1/N per worker),
    so N trials fit on each GPU."""
    import ray

    from study.resources import worker_gpus

    res = study.resources
    if res.max_concurrent_trials > 0:
        return res.max_concurrent_trials
    available = ray.cluster_resources()
    per_trial_cpu = res.num_workers * res.cpus_per_worker + res.driver_cpus
    fits = math.floor(available.get("CPU", 1) / per_trial_cpu + 1e-9)
    per_trial_gpu = res.num_workers * worker_gpus(res)
    if available.get("GPU", 0) > 0 and res.use_gpu.lower() != "false" and per_trial_gpu > 0:
        fits = min(fits, math.floor(available["GPU"] / per_trial_gpu + 1e-9))
    return max(1, fits)


class FatalStopper(tune.Stopper):
    """Stops the whole experiment at the first deterministic failure (see study/trial.py)."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if FATAL in result:
            self.seen = True
        return FATAL in result

    def stop_all(self) -> bool:
        return self.seen


def _tuner(
    study: StudyConfig,
    phase: str,
    trainable: Any,
    param_space: dict[str, Any],
    tune_config: Callable[[], Any],
    callbacks: list[Any],
) -> Any:
    """A new Tuner for a phase, or the restored one when the phase was interrupted.
    ``tune_config`` is called for a new Tuner only: a restored one brings its own search
    algorithm back (a fresh search's Optuna studies must not be opened for a restore)."""
    path = join_storage(study.run_dir, phase)
    if tune.Tuner.can_restore(path):
        print(f"[{phase}] resuming the interrupted phase from {path}", flush=True)
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True, param_space=param_space)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune_config(),
        run_config=tune.RunConfig(
            name=phase,
            storage_path=study.run_dir,
            callbacks=callbacks,
            verbose=0,
            stop=FatalStopper(),
            # Crashes only: deterministic failures never raise into Ray.
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
        ),
    )


def _phase_file(study: StudyConfig, phase: str, name: str) -> str:
    return storage.join(join_storage(study.run_dir, phase), name)


def _read_table(location: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(location)))


def _stop_on_fatal(study: StudyConfig, phase: str, grid: Any) -> None:
    """Raise one line naming the first deterministic failure; its Tune state is set aside so
    that a re-run after the fix starts the phase afresh (finished runs stay on disk)."""
    for result in grid:
        metrics = result.metrics or {}
        if FATAL in metrics:
            config = result.config or {}
            what = config.get("cell") or " + ".join(map(job_name, config["jobs"])) if config else "?"
            trial = storage.name(result.path or "")
            logs = join_storage(study.run_dir, "logs")
            aside = join_storage(study.run_dir, f"{phase}.failed-{time.strftime('%Y%m%d-%H%M%S')}")
            storage.move(join_storage(study.run_dir, phase), aside)
            raise StudyFailed(
                f"trial {trial} ({what}) failed: {metrics[FATAL]} -- not retried, it would fail "
                f"again; traceback in {logs}/"
            )


def _finish_phase(study: StudyConfig, phase: str, rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    table = trial_table(rows)
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    storage.write_bytes(_phase_file(study, phase, TRIALS_FILE), buffer.getvalue())
    storage.write_json(_phase_file(study, phase, DONE_MARKER), {"runs": len(table)})  # written last: the phase is done
    return table


def _progress(phase: str, total: int) -> list[Any]:
    from study.progress import ProgressTable

    return [ProgressTable(phase, total)]


def run_search(study: StudyConfig, cells: dict[str, Cell]) -> pd.DataFrame:
    """Phase 1: per cell, Optuna TPE over alpha (heuristic first) with ASHA rungs of its own."""
    if storage.exists(_phase_file(study, SEARCH, DONE_MARKER)):
        return _read_table(_phase_file(study, SEARCH, TRIALS_FILE))
    searched = metadata_cells(cells)
    total = len(searched) * study.search.trials_per_cell
    if total == 0:
        return trial_table([])
    concurrency = max_concurrent_trials(study)
    keys = [cell.key for cell in searched]
    if tune.Tuner.can_restore(join_storage(study.run_dir, SEARCH)):
        check_resumable(study)  # its Optuna studies must be where Tune's saved state says
    cells_dict = {key: vars(cell) for key, cell in cells.items()}
    trainable = tune.with_resources(make_trial_driver(to_dict(study), cells_dict, SEARCH), driver_resources(study))

    def tune_config() -> Any:
        # Each cell's Optuna study in its database (study.optuna_store), empty: a new search.
        searcher = make_cell_searcher(study, keys, fresh_storage(study, keys), max_concurrent=concurrency)
        publish_studies(study, keys)
        return tune.TuneConfig(
            # The searcher limits the concurrency and ends the search itself (its counts are
            # the ones a resume corrects: study.space.CellSearcher), so Tune samples "forever":
            # past sys.maxsize, which Tune's console table shows as "infinite" (-1 it shows as
            # the 19-digit sys.maxsize).
            search_alg=CellSearchGenerator(searcher),
            scheduler=make_cell_scheduler(study),
            num_samples=sys.maxsize + 1,
            time_budget_s=study.search.time_budget_s or None,
            reuse_actors=REUSE_DRIVERS,
        )

    print(
        f"[search] {len(searched)} cells x {study.search.trials_per_cell} trials (each cell its own TPE study "
        f"and ASHA rungs, starting at the heuristic), {concurrency} at a time; Optuna studies "
        f'"{cell_study_name(study.name, "<cell>")}" in {storage_url(study)}',
        flush=True,
    )
    grid = _tuner(study, SEARCH, trainable, {}, tune_config, _progress(SEARCH, total)).fit()
    _stop_on_fatal(study, SEARCH, grid)
    publish_studies(study, keys)  # before the done marker: a study on an object store gets its copy
    return _finish_phase(study, SEARCH, search_rows(grid, cells, study.run_dir))


def _curve_round(
    study: StudyConfig, experiment: str, jobs: list[dict[str, Any]], cells: dict[str, Cell], what: str
) -> pd.DataFrame:
    """One round of the curve as the Tune experiment ``experiment``; read back when done.
    Its runs live under runs/curve/ and its rows say phase "curve", whatever the round."""
    if storage.exists(_phase_file(study, experiment, ROUND_DONE_MARKER)):
        return _read_table(_phase_file(study, experiment, ROUND_TRIALS_FILE))
    concurrency = max_concurrent_trials(study)
    cells_dict = {key: vars(cell) for key, cell in cells.items()}
    driver = make_trial_driver(to_dict(study), cells_dict, CURVE, label=experiment)
    trainable = tune.with_resources(driver, driver_resources(study))
    tune_config = tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=REUSE_DRIVERS)
    trials = curve_trials(jobs, study.curve.arms_per_trial)
    runs = sum(len(job["seeds"]) for job in jobs)
    print(f"[{experiment}] {len(trials)} trials, {runs} runs ({what}), {concurrency} at a time", flush=True)
    results: list[Any] = []
    pending = trials
    for attempt in range(LOST_TRIAL_ROUNDS + 1):
        # Trials a resumed experiment never ran (study.curve_jobs.unreported_trials) run in an
        # experiment of their own, named so that a study killed meanwhile resumes that one too.
        name = f"{experiment}-again{attempt}" if attempt else experiment
        if attempt:
            print(
                f"[{experiment}] {len(pending)} trial(s) the resumed experiment never ran: again as {name}", flush=True
            )
        grid = _tuner(
            study,
            name,
            trainable,
            {"jobs": tune.grid_search(pending)},
            lambda: tune_config,
            _progress(name, len(pending)),
        ).fit()
        _stop_on_fatal(study, name, grid)
        results.extend(grid)
        pending = unreported_trials(pending, [r.config.get("jobs", []) for r in grid if r.config])
        if not pending:
            break
    errors = {
        job_name(job): str(r.error).splitlines()[0][:300]
        for r in results
        if r.error is not None and r.config
        for job in r.config.get("jobs", ())
    }

    def runs_of(job: dict[str, Any]) -> list[dict[str, Any]]:
        return job_runs(study, job, cells_dict[job["cell"]], CURVE, "")

    table = trial_table(curve_rows(jobs, runs_of, cells, study.run_dir, errors))
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    storage.write_bytes(_phase_file(study, experiment, ROUND_TRIALS_FILE), buffer.getvalue())
    storage.write_json(_phase_file(study, experiment, ROUND_DONE_MARKER), {"runs": len(table)})  # last
    return table


def run_curve(study: StudyConfig, search: pd.DataFrame, cells: dict[str, Cell]) -> pd.DataFrame:
    """Phase 2: the alpha-response curve, fixed jobs over fresh seeds, each run to its own early
    stop; then extension rounds while a cell's best grid multiple is at an end of its grid
    (study.extension). The phase's table holds every round's rows (column ``curve_round``);
    ``curve_extensions.json`` says per cell whether alpha* is bracketed or at the limit."""
    if storage.exists(_phase_file(study, CURVE, DONE_MARKER)):
        return _read_table(_phase_file(study, CURVE, TRIALS_FILE))
    jobs = curve_jobs(study, search, cells)
    storage.write_json(storage.join(study.run_dir, "curve_plan.json"), jobs)
    extras = [name for name, on in (("tuned", study.curve.tuned), ("learned", study.curve.learned)) if on]
    what = (
        f"per cell: alpha = 0, {len(study.curve.grid)} multiples of the heuristic"
        f"{''.join(', ' + name for name in extras)}; seeds {list(study.curve.seeds)}"
    )
    tables = [_curve_round(study, CURVE, jobs, cells, what)]
    for number in range(1, study.curve.max_extensions + 1):
        # Decided from the rounds before it, all on disk: a resumed study decides the same.
        extra = extension_jobs(pd.concat(tables, ignore_index=True), cells, seed_chunks(study), number)
        if not extra:
            break
        beyond = sorted({f"{job['cell']} {job['arm']}" for job in extra})
        tables.append(
            _curve_round(study, f"{CURVE}-ext{number}", extra, cells, f"alpha* at the grid's end: {', '.join(beyond)}")
        )
    table = trial_table(pd.concat(tables, ignore_index=True))
    summary = extension_summary(table, cells, study.curve.max_extensions)
    storage.write_json(storage.join(study.run_dir, EXTENSIONS_FILE), summary)
    at_limit = [key for key, cell in summary["cells"].items() if cell["limit_reached"]]
    if at_limit:
        print(
            f"[curve] alpha* still at the grid's end after {study.curve.max_extensions} extension round(s): "
            f"{', '.join(at_limit)} (a bound)",
            flush=True,
        )
    return _finish_phase(study, CURVE, table)


def run_study(study: StudyConfig) -> StudyOutcome:
    """Search, curve, the non-deep reference, then the trial table, the report and the best checkpoints.

    Ray must already be initialised (``ray.init``) by the caller. Holds the run
    directory's lock (``mtlmood.runlock.RunLock``, unless the caller holds it already)
    throughout: RunDirInUse when another process runs this study. The lock of a study on
    an object store is a local one, keyed on its URI (``mtlmood.remote_cache.lock_directory``).
    """
    from study.reference import run_references
    from study.report.writer import write_study_report

    run_dir = study.run_dir
    lock_dir = lock_directory(run_dir)
    # One driver per study directory (mtlmood.runlock): a second `study run` is refused,
    # naming the first; a killed driver's lock is taken over by the next run. A caller may
    # take it first (e.g. before starting Ray, to refuse at once).
    with nullcontext() if held_here(lock_dir) else RunLock(lock_dir):
        storage.write_text(
            storage.join(run_dir, STUDY_CONFIG_FILE), yaml.safe_dump(to_dict(study), sort_keys=False)
        )  # as mtlmood.config_io.save_config writes it, to any location
        cells = study_cells(study, write_to=storage.join(run_dir, CELLS_DIR))
        storage.write_json(storage.join(run_dir, CELLS_FILE), {k: vars(c) for k, c in cells.items()})
        search = run_search(study, cells)
        tables = [search]
        if study.curve.enabled:
            tables.append(run_curve(study, search, cells))
        if study.report.reference:
            run_references(study, cells)
        trials = pd.concat([t for t in tables if not t.empty], ignore_index=True)
        best = write_study_report(study, trials)
    return StudyOutcome(run_dir=run_dir, trials=trials, best_checkpoint=best)


def load_trials(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The trial tables of a study's finished phases (a run directory or URI)."""
    tables = []
    for phase in (SEARCH, CURVE):
        try:
            tables.append(pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(run_dir, phase, TRIALS_FILE)))))
        except FileNotFoundError:
            continue
    if not tables:
        raise ConfigError(f"{run_dir} holds no finished study phase; run `mtlmood study run` to start or resume it")
    return pd.concat(tables, ignore_index=True)
