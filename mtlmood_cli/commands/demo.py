"""`mtlmood demo`: the main job on the embedded default (study.demo.run_demo), then where its results are.

    mtlmood demo                                  # everything under runs/demo
    mtlmood demo --output /tmp/demo --num-cpus 2

Ray is imported inside the run function only, so `mtlmood --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mtlmood_cli.arguments import add_override_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo` to the CLI."""
    demo = subparsers.add_parser(
        "demo",
        help="the main job on the embedded default: synthesize, prepare, "
        "run a small study on local Ray, write the report",
    )
    demo.add_argument("--output", default="runs/demo", help="where data, study and report go")
    add_override_argument(demo, "curve.seeds=[1,2,3]")
    demo.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    # Ctrl-C line (mtlmood_cli.main prints it): every step resumes.
    demo.set_defaults(
        func=cmd_demo, interrupted="interrupted; finished steps are kept; re-run the same command to resume"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """synth -> prepare -> study -> report under --output, then print where the results are."""
    from mtlmood_cli.commands.study import print_outcome
    from study.demo import run_demo

    outcome = run_demo(Path(args.output), args.overrides, args.num_cpus)
    print_outcome(outcome.run_dir, outcome.best_checkpoint)
    return 0
