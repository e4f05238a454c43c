"""Study efficiency: Optuna TPE + ASHA (the study's search phase) vs random search, same budget.

    .venv/bin/python -m benchmarks.study_bench [--trials 8] [--tpe-startup 0]

On the synthetic default (benchmarks/.cache/synthetic; the embedded study config:
16 filters, 6 moods, metadata none / artist / artist+year, alpha factor log-uniform
in [0.05, 20] x the heuristic, max 8 epochs with patience 2, trials on Ray Train):

- ``TPE + ASHA``: ``study.runner.run_search`` exactly as a study runs it (OptunaSearch
  seeded with the baseline and heuristic-alpha points, ASHA on validation PR-AUC);
- ``random + FIFO``: the same trainable, space, seeded points and trial budget, drawn
  by Tune's BasicVariantGenerator (random search), every trial trained to its own
  early stop (no scheduler).

Per arm: best validation PR-AUC found and its (metadata, alpha), the trials (launch
order) and compute (sum of trial times) spent until that trial, total compute and
wall time; for ASHA, the trials it stopped and an estimate of the compute it saved
(stopped trials' missing epochs x their own seconds per epoch, up to the mean epochs
of the trials that ran to the end).

TPE models the results once ``search.n_startup_trials`` trials have finished ("auto"
= the seeded points: 3 here, so 5 of 8 trials are TPE's). ``--tpe-startup N`` adds a
third arm with ``n_startup_trials=N`` (same everything else; e.g. 10, Optuna's own
default, which makes an 8-trial search random sampling plus ASHA).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import replace
from typing import Any, Optional

import numpy as np

from benchmarks.common import CACHE, fmt, machine, machine_line, publish, table
from benchmarks.synthdata import ensure_synthetic


def bench_study(study: Any, name: str, trials: int) -> Any:
    """The synthetic study renamed into the benchmark's own storage, with ``trials`` search trials."""
    search = replace(study.search, num_samples=trials)
    return replace(
        study,
        name=name,
        storage_path=str(CACHE / "studies"),
        search=search,
        confirm=replace(study.confirm, enabled=False),
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
    """Random search (BasicVariantGenerator) + FIFO over the same space, points and trainable."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from mtlmood.config import to_dict
    from study.results import trial_table
    from study.runner import SEARCH, max_concurrent_trials
    from study.space import seeded_points
    from study.trial import driver_resources, make_trial_driver

    heuristics = {key: cell.heuristic_alpha for key, cell in cells.items()}
    space = {
        "n_moods": tune.choice([int(n) for n in study.search.n_moods]),
        "metadata": tune.choice(["none", *study.search.metadata]),
        "alpha_factor": tune.loguniform(study.search.alpha_factor_low, study.search.alpha_factor_high),
    }
    searcher = BasicVariantGenerator(
        points_to_evaluate=seeded_points(study),
        random_state=study.search.optuna_seed,
        max_concurrent=max_concurrent_trials(study),
    )
    trainable = tune.with_resources(make_trial_driver(to_dict(study), heuristics, SEARCH), driver_resources(study))
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_pr_auc",
            mode="max",
            search_alg=searcher,
            scheduler=FIFOScheduler(),
            num_samples=study.search.num_samples,
        ),
        run_config=tune.RunConfig(name=SEARCH, storage_path=study.run_dir, verbose=0),
    )
    return trial_table(tuner.fit(), SEARCH, cells, study)


def summarise(trials: Any, wall_s: float, n_seeded: int = 0) -> dict[str, Any]:
    """Best trial, trials/compute to reach it, totals (compute saved is filled in by ``compute_saved``)."""
    t = trials.sort_values("trial_number").reset_index(drop=True)
    t = t[t["status"] == "TERMINATED"]
    best_i = int(t["val_pr_auc"].idxmax())
    best = t.loc[best_i]
    upto = t[t["trial_number"] <= best["trial_number"]]
    stopped = t[t["early_stopped"].astype(bool)]
    # The same (metadata, alpha) trained again (e.g. the baseline, which has no alpha to vary): wasted budget.
    duplicates = int(t.duplicated(subset=["n_moods", "metadata", "alpha"]).sum())
    return {
        "trials": int(len(t)),
        "errored": int((trials["status"] != "TERMINATED").sum()),
        "best_val_pr_auc": float(best["val_pr_auc"]),
        "best_metadata": str(best["metadata"]),
        "best_alpha": float(best["alpha"]),
        "best_test_pr_auc": float(best["test_pr_auc"]),
        "trials_to_best": int(best["trial_number"]) + 1,
        "compute_to_best_s": float(upto["time_s"].sum()),
        "compute_s": float(t["time_s"].sum()),
        "wall_s": wall_s,
        "epochs_total": int(t["epochs"].sum()),
        "stopped_by_scheduler": int(len(stopped)),
        "mean_epochs": float(t["epochs"].mean()),
        "duplicate_configs": duplicates,
        # The seeded baseline / heuristic points are what the study compares against: were they cut short?
        "seeded_stopped": [
            f"{r['metadata']} (epoch {int(r['epochs'])}, val {r['val_pr_auc']:.1f})"
            for _, r in t[t["trial_number"] < n_seeded].iterrows()
            if r["early_stopped"]
        ],
        "rows": t[
            ["trial_number", "metadata", "alpha", "epochs", "early_stopped", "val_pr_auc", "test_pr_auc", "time_s"]
        ].to_dict(orient="records"),
    }


def epoch_cost(reference: dict[str, Any]) -> tuple[float, float]:
    """(start-up s, s per epoch) of a trial: least squares of time_s = a + b * epochs over the reference arm."""
    epochs = np.array([r["epochs"] for r in reference["rows"]], dtype=float)
    seconds = np.array([r["time_s"] for r in reference["rows"]], dtype=float)
    if len(set(epochs.tolist())) < 2:
        return 0.0, float(seconds.sum() / max(epochs.sum(), 1))
    b, a = np.polyfit(epochs, seconds, 1)
    return float(a), float(b)


def compute_saved(arm: dict[str, Any], reference: dict[str, Any]) -> float:
    """Estimated seconds the scheduler saved: each stopped trial's missing epochs, up to the mean epochs
    of the reference arm's trials (each run to its own early stop), at the reference's seconds per epoch."""
    per_epoch = epoch_cost(reference)[1]
    return float(
        sum(
            max(0.0, reference["mean_epochs"] - row["epochs"]) * per_epoch
            for row in arm["rows"]
            if row["early_stopped"]
        )
    )


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="trial budget per arm")
    parser.add_argument(
        "--tpe-startup",
        type=int,
        default=None,
        help="also run TPE + ASHA with this search.n_startup_trials (default: no such arm)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    info = machine()
    base, prep_s = ensure_synthetic()

    from study.cells import study_cells
    from study.ray_session import init_ray
    from study.space import seeded_points

    init_ray(None, num_cpus=len(os.sched_getaffinity(0)))
    arms: dict[str, dict[str, Any]] = {}
    plan = [
        ("TPE + ASHA (run_search as shipped)", "bench-tpe-asha", lambda s, c: run_tpe_asha(s, c)),
        ("random + FIFO (BasicVariantGenerator)", "bench-random", run_random),
    ]
    if args.tpe_startup is not None:
        plan.append(
            (
                f"TPE (n_startup_trials={args.tpe_startup}) + ASHA",
                "bench-tpe-startup",
                lambda s, c: run_tpe_asha(s, c, args.tpe_startup),
            )
        )
    try:
        for label, name, runner in plan:
            study = bench_study(base, name, args.trials)
            fresh(study)
            cells = study_cells(study)
            print(f"study: {label}, {args.trials} trials", flush=True)
            t0 = time.perf_counter()
            trials = runner(study, cells)
            arms[label] = summarise(trials, time.perf_counter() - t0, len(seeded_points(study)))
    finally:
        import ray

        ray.shutdown()

    ref = arms["random + FIFO (BasicVariantGenerator)"]
    for a in arms.values():
        a["estimated_compute_saved_s"] = compute_saved(a, ref)
    rows = []
    for label, a in arms.items():
        rows.append(
            [
                label,
                a["trials"],
                f"{a['best_val_pr_auc']:.2f}",
                f"{a['best_metadata']}, α={a['best_alpha']:.3g}",
                f"{a['best_test_pr_auc']:.2f}",
                a["trials_to_best"],
                fmt(a["compute_to_best_s"], 0),
                fmt(a["compute_s"], 0),
                f"{a['compute_s'] / ref['compute_s']:.2f}×",
                fmt(a["wall_s"], 0),
                a["epochs_total"],
                a["duplicate_configs"],
                f"{a['stopped_by_scheduler']} (≈{a['estimated_compute_saved_s']:.0f} s saved)",
            ]
        )
    md = [
        "# Study efficiency benchmark",
        "",
        machine_line(info),
        "",
        f"Synthetic default (embedded study config, 16 filters, 6 moods, max {base.run.train.max_epochs} epochs, "
        f"patience {base.run.train.patience}); {args.trials} trials per arm, the 3 seeded points (baseline, "
        f"heuristic α per metadata set) included; Ray Train trials, "
        f"{base.resources.cpus_per_worker:g} CPU each. Compute = sum of trial times.",
        "",
        table(
            [
                "arm",
                "trials",
                "best val PR-AUC %",
                "best (metadata, α)",
                "its test PR-AUC %",
                "trials to best",
                "compute to best s",
                "compute s",
                "compute vs random",
                "wall s",
                "epochs",
                "repeated configs",
                "stopped by scheduler (est. compute saved)",
            ],
            rows,
        ),
        "",
        f"Compute saved is estimated per stopped trial: its missing epochs up to the random arm's mean "
        f"({ref['mean_epochs']:.1f} epochs per trial, each run to its own early stop) x "
        f"{epoch_cost(ref)[1]:.1f} s per epoch (fit of trial time = start-up + epochs x per-epoch over the "
        f"random arm; start-up ≈ {max(0.0, epoch_cost(ref)[0]):.0f} s per trial).",
        "",
        "Seeded points (baseline, heuristic α) stopped by the scheduler: "
        + "; ".join(f"{label}: {', '.join(a['seeded_stopped']) or 'none'}" for label, a in arms.items())
        + ".",
        "",
        "The shipped search: the seeded points run first and are never stopped by ASHA; TPE models the "
        "results from then on (search.n_startup_trials=auto); sampled trials never repeat the baseline. "
        "The random arm draws metadata none / artist / artist+year and α uniformly, as a hand-written "
        "random search would.",
    ]
    payload = {"machine": info, "trials_per_arm": args.trials, "prepare_s": prep_s, "arms": arms}
    return publish("study", payload, md)


if __name__ == "__main__":
    main()
    sys.exit(0)
