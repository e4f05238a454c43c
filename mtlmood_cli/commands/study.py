"""`mtlmood study run|plan|report`: run, plan or report an alpha study, and say where its results are.

The work is study's (study.runner, study.plan, study.report.writer); this module parses the
arguments and prints the outcome. Ray is imported inside the run functions only, so
`mtlmood --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtlmood import storage
from mtlmood.errors import ConfigError
from mtlmood_cli.arguments import add_override_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `study` (with its `run`, `plan` and `report` actions) to the CLI."""
    study = subparsers.add_parser("study", help="run or report an alpha study (Ray Tune + Optuna over Ray Train)")
    actions = study.add_subparsers(dest="study_command", metavar="ACTION")

    run = actions.add_parser("run", help="run (or resume) a study from a YAML config")
    run.add_argument("config", help="study YAML, or a name from study/configs (e.g. synthetic)")
    add_override_argument(run, "search.trials_per_cell=8")
    run.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: 'auto' inside a cluster / Ray job; default starts local Ray",
    )
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    # Ctrl-C lines (mtlmood_cli.main prints them): what a re-run of each command does.
    run.set_defaults(func=cmd_run, interrupted="interrupted; finished runs are kept; re-run the same command to resume")

    plan = actions.add_parser(
        "plan",
        help="dry run: print the cells (labels, N_meta, heuristic, splits) and the planned trials without training",
    )
    plan.add_argument("config", help="study YAML, or a name from study/configs (e.g. mtg-jamendo)")
    plan.add_argument(
        "--pilot",
        metavar="STUDY",
        help="a finished study whose curve runs give the variance components of the power forecast",
    )
    plan.add_argument(
        "--measure",
        action="store_true",
        help="time a few training steps of the config's model and batch on this machine for the cost forecast "
        "(default: the GPU check's measured throughput, benchmarks/results/gpu/gpu_check.json)",
    )
    plan.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="epochs a run is planned at in the cost forecast, e.g. a typical early stop (default: "
        "run.train.max_epochs, the cap: a bound); search trials run ASHA's expected share of them",
    )
    add_override_argument(plan, "search.trials_per_cell=16")
    plan.set_defaults(func=cmd_plan)

    report = actions.add_parser("report", help="write the trial table, Table 1 with CIs, verdicts and plots")
    report.add_argument("run_dir", help="the study's directory (<storage_path>/<name>; a path or e.g. s3://bucket/...)")
    report.set_defaults(
        func=cmd_report, interrupted="interrupted; the report may be incomplete, re-run the same command to write it"
    )
    study.set_defaults(func=lambda args: study.print_help() or 2)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def print_outcome(run_dir: str | Path, best: str) -> None:
    """Where the report, tables and checkpoint are, and the verdict lines."""
    from study.report.summary import verdict_summary

    summary = verdict_summary(run_dir)
    if summary:
        print("\nlearning check and primary verdict (adjusted as the config declares; see the report for the rest):")
        print("  " + summary.replace("\n", "\n  "))
    print(
        f"\nreport:          {storage.join(run_dir, 'report', 'report.md')}  (HTML: report.html, plots in report/plots)"
    )
    print(f"trial table:     {storage.join(run_dir, 'report', 'trials.csv')}")
    if best:
        print(f"best checkpoint: {best}")
        print(f"serve it:        mtlmood serve --study {run_dir}")


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) the study under its run-directory lock on Ray, then print the outcome."""
    from mtlmood.datasets import load_run_songs
    from mtlmood.remote_cache import lock_directory
    from mtlmood.runlock import RunLock
    from study.config import load_study_config
    from study.ray_session import init_ray
    from study.runner import run_study

    study = load_study_config(args.config, args.overrides)
    load_run_songs(study.run)  # a missing or malformed dataset is one line, before a lock or Ray
    # One writer per study directory, refused before Ray starts (run_study sees the lock held).
    # A study on an object store is locked on this machine (mtlmood.remote_cache.lock_directory).
    with RunLock(lock_directory(study.run_dir), command="mtlmood study run"):
        init_ray(args.address, args.num_cpus)
        outcome = run_study(study)
    print_outcome(outcome.run_dir, outcome.best_checkpoint)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report of a study directory (local or a URI) from its finished phases."""
    from study.config import load_study_config
    from study.filenames import STUDY_CONFIG_FILE
    from study.report.writer import write_study_report
    from study.runner import load_trials

    run_dir = storage.normalize(args.run_dir)
    if not storage.is_uri(run_dir):
        run_dir = str(Path(run_dir).expanduser().resolve())
    config_file = storage.join(run_dir, STUDY_CONFIG_FILE)
    if not storage.is_file(config_file):
        raise ConfigError(f"{run_dir} is not a study directory (no {STUDY_CONFIG_FILE})")
    # The study is where it is now: a copied or synced study reports from its new place.
    study = load_study_config(config_file, [f"storage_path={storage.parent(run_dir)}", f"name={storage.name(run_dir)}"])
    best = write_study_report(study, load_trials(run_dir))
    print_outcome(run_dir, best)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the cells, planned trials, cost and power forecasts of a study config (no study is run)."""
    from study.config import load_study_config
    from study.plan import print_plan

    print_plan(load_study_config(args.config, args.overrides), args.pilot, args.measure, args.epochs)
    return 0
