"""Study efficiency, per cell: Optuna TPE + ASHA (the study's search phase) vs random search + FIFO.

    .venv/bin/python -m benchmarks.study_bench [--trials 8] [--tpe-startup 0] [--out DIR]

On the synthetic default (benchmarks/.cache/synthetic; the embedded study config,
study/configs/synthetic.yaml: its cells, its alpha range, its epochs and patience,
trials on Ray Train), with ``--trials`` search trials **per cell** in every arm:

- ``TPE + ASHA``: ``study.runner.run_search`` exactly as a study runs it: one Optuna TPE
  study per cell (``study.space.make_cell_searcher``, the heuristic first) and one set of
  ASHA rungs per cell (``make_cell_scheduler``), on validation PR-AUC;
- ``random + FIFO``: the same trial driver, cells, alpha range and per-cell budget, drawn by
  Tune's BasicVariantGenerator (a grid over the cells x ``--trials`` samples: the
  heuristic first in every cell, then alpha factors drawn log-uniformly), every trial
  trained to its own early stop (no scheduler).

Cells are never compared with each other (PR-AUC of different cells lives on different
scales): each cell gets, per arm, its tuned alpha (``study.results.tuned_alpha_factor``,
the study's own choice on validation at equal budgets) with that trial's validation and
test PR-AUC, the trials (launch order) and compute (sum of trial times) spent until that
trial, the cell's compute, and for ASHA the trials it stopped with an estimate of the
compute that saved (stopped trials' missing epochs, up to the random arm's mean epochs in
the same cell, at that cell's seconds per epoch). Totals per arm add up seconds and
trials only: compute, wall time, stopped trials.

``--tpe-startup N`` adds a third arm with ``search.n_startup_trials=N`` (same everything
else; e.g. 10, Optuna's own default, which makes a short search random sampling plus ASHA).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from benchmarks.common import CACHE, RESULTS, fmt, machine, publish
from benchmarks.study_report import RANDOM_ARM, add_compute_saved, alpha_text, markdown, summarise_arm
from benchmarks.synthdata import ensure_synthetic

TPE_ARM = "TPE + ASHA (run_search as shipped)"


def bench_study(study: Any, name: str, trials_per_cell: int) -> Any:
    """The synthetic study renamed into the benchmark's own storage: search only, ``trials_per_cell``."""
    return replace(
        study,
        name=name,
        storage_path=str(CACHE / "studies"),
        search=replace(study.search, trials_per_cell=trials_per_cell),
        curve=replace(study.curve, enabled=False),
    )


def fresh(study: Any) -> None:
    shutil.rmtree(study.run_dir, ignore_errors=True)  # never resume an earlier benchmark run


def run_tpe_asha(study: Any, cells: dict[str, Any], startup: Optional[int] = None) -> Any:
    """study.runner.run_search as shipped, or with ``search.n_startup_trials=startup``."""
    from study.runner import run_search

    if startup is not None:
        study = replace(study, search=replace(study.search, n_startup_trials=startup))
    return run_search(study, cells)


def run_random(study: Any, cells: dict[str, Any]) -> Any:
    """Random search + FIFO, per cell: ``trials_per_cell`` trials in every searched cell, the
    heuristic first, through the study's own search trial driver (rows as ``run_search``'s)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from mtlmood.coerce import to_dict
    from study.cells import metadata_cells
    from study.progress import ProgressTable
    from study.results import search_rows, trial_table
    from study.runner import SEARCH, FatalStopper, max_concurrent_trials
    from study.space import CELL
    from study.trial import driver_resources, make_trial_driver

    keys = [cell.key for cell in metadata_cells(cells)]
    per_cell = study.search.trials_per_cell
    # A grid over the cells x num_samples: every cell gets exactly ``per_cell`` trials. The
    # preset point replaces the first sample of every cell: the heuristic, as in run_search.
    space = {
        CELL: tune.grid_search(keys),
        "alpha_factor": tune.loguniform(study.search.alpha_factor_low, study.search.alpha_factor_high),
    }
    searcher = BasicVariantGenerator(
        points_to_evaluate=[{"alpha_factor": 1.0}],
        random_state=study.search.optuna_seed,
        max_concurrent=max_concurrent_trials(study),
    )
    cells_dict = {key: vars(cell) for key, cell in cells.items()}
    trainable = tune.with_resources(make_trial_driver(to_dict(study), cells_dict, SEARCH), driver_resources(study))
    print(f"[search] random + FIFO: {len(keys)} cells x {per_cell} trials (heuristic first)", flush=True)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=FIFOScheduler(), num_samples=per_cell),
        run_config=tune.RunConfig(
            name=SEARCH,
            storage_path=study.run_dir,
            callbacks=[ProgressTable(SEARCH, len(keys) * per_cell)],
            verbose=0,
            stop=FatalStopper(),
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
        ),
    )
    grid = tuner.fit()
    return trial_table(search_rows(grid, cells, study.run_dir))


def trial_seconds(study: Any) -> dict[str, float]:
    """Each search trial's own wall time (Tune's ``time_total_s`` at its last report, Ray Train
    start-up included), read back from the experiment on disk: the same source for every arm."""
    from ray.tune import ExperimentAnalysis

    from study.config import join_storage
    from study.runner import SEARCH

    analysis = ExperimentAnalysis(join_storage(study.run_dir, SEARCH))
    return {str(t.trial_id): float((t.last_result or {}).get("time_total_s", math.nan)) for t in analysis.trials}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run every arm on the synthetic study, write study.{json,md}; returns what was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--trials", type=int, default=8, help="search trials per cell in every arm (search.trials_per_cell)"
    )
    parser.add_argument(
        "--tpe-startup",
        type=int,
        default=None,
        help="also run TPE + ASHA with this search.n_startup_trials (default: no such arm)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where study.json / study.md go")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    info = machine()
    base, prep_s = ensure_synthetic()

    from study.cells import metadata_cells, study_cells
    from study.ray_session import init_ray

    init_ray(None, num_cpus=len(os.sched_getaffinity(0)))
    plan: list[tuple[str, str, Callable[[Any, dict[str, Any]], Any]]] = [
        (TPE_ARM, "bench-tpe-asha", lambda s, c: run_tpe_asha(s, c)),
        (RANDOM_ARM, "bench-random", run_random),
    ]
    if args.tpe_startup is not None:
        plan.append(
            (
                f"TPE (n_startup_trials={args.tpe_startup}) + ASHA",
                "bench-tpe-startup",
                lambda s, c: run_tpe_asha(s, c, args.tpe_startup),
            )
        )
    arms: dict[str, dict[str, Any]] = {}
    searched: list[Any] = []
    try:
        for label, name, runner in plan:
            study = bench_study(base, name, args.trials)
            fresh(study)
            cells = study_cells(study)
            searched = metadata_cells(cells)
            print(f"study: {label}, {len(searched)} cells x {args.trials} trials", flush=True)
            t0 = time.perf_counter()
            trials = runner(study, cells)
            wall = time.perf_counter() - t0
            arms[label] = summarise_arm(trials, searched, trial_seconds(study), wall)
            for cell in searched:
                c = arms[label]["cells"][cell.key]
                print(
                    f"  {cell.label}: tuned {alpha_text(c)}, val PR-AUC {fmt(c['tuned_val_pr_auc'], 2)} "
                    f"after {c['trials_to_tuned']} trials / {c['compute_to_tuned_s']:.0f} s; "
                    f"cell compute {c['compute_s']:.0f} s, {c['stopped_by_scheduler']} stopped",
                    flush=True,
                )
    finally:
        import ray

        ray.shutdown()

    add_compute_saved(arms)
    md = markdown(info, base, searched, arms, args.trials)
    payload = {
        "machine": info,
        "trials_per_cell": args.trials,
        "cells": [cell.key for cell in searched],
        "trials_per_arm": args.trials * len(searched),
        "prepare_s": prep_s,
        "arms": arms,
    }
    return publish("study", payload, md, out_dir=args.out)


if __name__ == "__main__":
    main()
    sys.exit(0)
