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

import numpy as np

from benchmarks.common import CACHE, RESULTS, fmt, machine, machine_line, publish, table
from benchmarks.synthdata import ensure_synthetic

TPE_ARM = "TPE + ASHA (run_search as shipped)"
RANDOM_ARM = "random + FIFO (BasicVariantGenerator)"


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
    return trial_table(search_rows(grid, cells, Path(study.run_dir)))


def trial_seconds(study: Any) -> dict[str, float]:
    """Each search trial's own wall time (Tune's ``time_total_s`` at its last report, Ray Train
    start-up included), read back from the experiment on disk: the same source for every arm."""
    from ray.tune import ExperimentAnalysis

    from study.config import join_storage
    from study.runner import SEARCH

    analysis = ExperimentAnalysis(join_storage(study.run_dir, SEARCH))
    return {str(t.trial_id): float((t.last_result or {}).get("time_total_s", math.nan)) for t in analysis.trials}


def launch_number(trial_id: str) -> int:
    """Tune's trial counter (``abc12_00007`` -> 7): the launch order."""
    tail = str(trial_id).rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def summarise_cell(trials: Any, cell: Any, seconds: dict[str, float]) -> dict[str, Any]:
    """One cell of one arm: its tuned alpha, what it cost to reach it, the cell's totals."""
    from study.results import tuned_alpha_factor

    rows = trials[trials["cell"] == cell.key].copy()
    rows["number"] = [launch_number(t) for t in rows["trial_id"]]
    rows["time_s"] = [seconds.get(str(t), math.nan) for t in rows["trial_id"]]
    rows = rows.sort_values("number").reset_index(drop=True)
    ok = rows[rows["status"] == "TERMINATED"]
    factor = tuned_alpha_factor(trials, cell.key)
    at = (
        int(np.flatnonzero(np.isclose(ok["alpha_factor"].astype(float), factor, rtol=1e-9))[0])
        if factor is not None
        else None
    )
    tuned = ok.iloc[at] if at is not None else None
    upto = rows[rows["number"] <= tuned["number"]] if tuned is not None else rows.iloc[0:0]
    stopped = ok[ok["asha_stopped"].astype(bool)]
    return {
        "label": cell.label,
        "heuristic_alpha": float(cell.heuristic_alpha),
        "trials": int(len(ok)),
        "errored": int(len(rows) - len(ok)),
        "tuned_alpha_factor": factor,
        "tuned_alpha": factor * cell.heuristic_alpha if factor is not None else None,
        "tuned_val_pr_auc": _num(tuned["val_pr_auc"]) if tuned is not None else math.nan,
        "tuned_test_pr_auc": _num(tuned["test_pr_auc"]) if tuned is not None else math.nan,
        "tuned_stopped_by_scheduler": bool(tuned["asha_stopped"]) if tuned is not None else False,
        "trials_to_tuned": int((ok["number"] <= tuned["number"]).sum()) if tuned is not None else 0,
        "compute_to_tuned_s": float(np.nansum(upto["time_s"])),
        "compute_s": float(np.nansum(rows["time_s"])),
        "epochs_total": int(np.nansum(ok["epochs"].astype(float))),
        "mean_epochs": float(np.nanmean(ok["epochs"].astype(float))) if len(ok) else math.nan,
        "stopped_by_scheduler": int(len(stopped)),
        "rows": [
            {
                "trial_number": int(r["number"]),
                "alpha_factor": _num(r["alpha_factor"]),
                "alpha": _num(r["alpha"]),
                "epochs": _num(r["epochs"]),
                "stopped_by_scheduler": bool(r["asha_stopped"]),
                "early_stopped": bool(r["early_stopped"]),
                "status": str(r["status"]),
                "val_pr_auc": _num(r["val_pr_auc"]),
                "test_pr_auc": _num(r["test_pr_auc"]),
                "time_s": _num(r["time_s"]),
                "error": str(r["error"]) if isinstance(r["error"], str) else "",
            }
            for _, r in rows.iterrows()
        ],
    }


def epoch_cost(reference: dict[str, Any]) -> tuple[float, float]:
    """(start-up s, s per epoch) of a trial in one cell: least squares of time_s = a + b * epochs
    over the reference arm's finished trials of that cell."""
    pairs = [
        (r["epochs"], r["time_s"])
        for r in reference["rows"]
        if r["status"] == "TERMINATED" and math.isfinite(r["epochs"]) and math.isfinite(r["time_s"])
    ]
    epochs = np.array([p[0] for p in pairs], dtype=float)
    seconds = np.array([p[1] for p in pairs], dtype=float)
    if len(set(epochs.tolist())) < 2:
        return 0.0, float(seconds.sum() / max(epochs.sum(), 1))
    b, a = np.polyfit(epochs, seconds, 1)
    return float(a), float(b)


def compute_saved(cell: dict[str, Any], reference: dict[str, Any]) -> float:
    """Estimated seconds the scheduler saved in one cell: each stopped trial's missing epochs, up to
    the mean epochs of the reference arm's trials of that cell (each run to its own early stop),
    at the reference's seconds per epoch in that cell."""
    per_epoch = epoch_cost(reference)[1]
    return float(
        sum(
            max(0.0, reference["mean_epochs"] - row["epochs"]) * per_epoch
            for row in cell["rows"]
            if row["stopped_by_scheduler"] and math.isfinite(row["epochs"])
        )
    )


def summarise_arm(trials: Any, cells: list[Any], seconds: dict[str, float], wall_s: float) -> dict[str, Any]:
    """Per cell, and totals of seconds and trials only (never a score across cells)."""
    per_cell = {cell.key: summarise_cell(trials, cell, seconds) for cell in cells}
    return {
        "trials": sum(c["trials"] for c in per_cell.values()),
        "errored": sum(c["errored"] for c in per_cell.values()),
        "compute_s": sum(c["compute_s"] for c in per_cell.values()),
        "wall_s": wall_s,
        "epochs_total": sum(c["epochs_total"] for c in per_cell.values()),
        "stopped_by_scheduler": sum(c["stopped_by_scheduler"] for c in per_cell.values()),
        "cells": per_cell,
    }


def _alpha_text(c: dict[str, Any]) -> str:
    if c["tuned_alpha_factor"] is None:
        return "–"
    return f"×{c['tuned_alpha_factor']:.3g} (α={c['tuned_alpha']:.3g})"


def _ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}×" if y and math.isfinite(x) and math.isfinite(y) else "–"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
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
                    f"  {cell.label}: tuned {_alpha_text(c)}, val PR-AUC {fmt(c['tuned_val_pr_auc'], 2)} "
                    f"after {c['trials_to_tuned']} trials / {c['compute_to_tuned_s']:.0f} s; "
                    f"cell compute {c['compute_s']:.0f} s, {c['stopped_by_scheduler']} stopped",
                    flush=True,
                )
    finally:
        import ray

        ray.shutdown()

    ref = arms[RANDOM_ARM]
    for a in arms.values():
        for key, c in a["cells"].items():
            c["estimated_compute_saved_s"] = compute_saved(c, ref["cells"][key])
        a["estimated_compute_saved_s"] = sum(c["estimated_compute_saved_s"] for c in a["cells"].values())

    cell_rows = []
    for cell in searched:
        r = ref["cells"][cell.key]
        for label, a in arms.items():
            c = a["cells"][cell.key]
            cell_rows.append(
                [
                    f"{cell.label} (heuristic α={cell.heuristic_alpha:.3g})",
                    label,
                    c["trials"],
                    _alpha_text(c),
                    fmt(c["tuned_val_pr_auc"], 2),
                    fmt(c["tuned_test_pr_auc"], 2),
                    c["trials_to_tuned"],
                    fmt(c["compute_to_tuned_s"], 0),
                    fmt(c["compute_s"], 0),
                    _ratio(c["compute_s"], r["compute_s"]),
                    c["epochs_total"],
                    f"{c['stopped_by_scheduler']} (≈{c['estimated_compute_saved_s']:.0f} s saved)",
                ]
            )
    total_rows = [
        [
            label,
            a["trials"],
            a["errored"],
            fmt(a["compute_s"], 0),
            _ratio(a["compute_s"], ref["compute_s"]),
            fmt(a["wall_s"], 0),
            a["epochs_total"],
            f"{a['stopped_by_scheduler']} (≈{a['estimated_compute_saved_s']:.0f} s saved)",
        ]
        for label, a in arms.items()
    ]
    train = base.run.train
    md = [
        "# Study efficiency benchmark",
        "",
        machine_line(info),
        "",
        f"Synthetic default (embedded study config: {base.run.model.n_filters} filters, max {train.max_epochs} "
        f"epochs, patience {train.patience}, α factor log-uniform in [{base.search.alpha_factor_low:g}, "
        f"{base.search.alpha_factor_high:g}] × the heuristic); {len(searched)} cells × {args.trials} trials per "
        f"arm, the heuristic first in every cell; ASHA grace {base.scheduler.grace_period} epochs, reduction "
        f"{base.scheduler.reduction_factor}; Ray Train trials, {base.resources.cpus_per_worker:g} CPU each. "
        "Compute = sum of trial times (Ray Train start-up included).",
        "",
        "## Per cell (arms compared within a cell only; cells are never compared)",
        "",
        table(
            [
                "cell",
                "arm",
                "trials",
                "tuned α (× heuristic)",
                "its val PR-AUC %",
                "its test PR-AUC %",
                "trials to tuned",
                "compute to tuned s",
                "cell compute s",
                "vs random",
                "epochs",
                "stopped by scheduler (est. compute saved)",
            ],
            cell_rows,
        ),
        "",
        "## Totals per arm (seconds and trials only)",
        "",
        table(
            ["arm", "trials", "errored", "compute s", "vs random", "wall s", "epochs", "stopped (est. saved)"],
            total_rows,
        ),
        "",
        "The tuned α is the study's own choice (`study.results.tuned_alpha_factor`): the best validation "
        "PR-AUC within the deepest epoch at least two of the cell's trials reached; its test PR-AUC is blank "
        "when ASHA stopped that trial. Compute saved is estimated per stopped trial: its missing epochs up "
        "to the random arm's mean epochs in the same cell (each trial run to its own early stop) × that "
        "cell's seconds per epoch (fit of trial time = start-up + epochs × per-epoch over the random arm's "
        "trials of the cell).",
    ]
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
