"""`mtlmood train`: one training run -> checkpoint, metrics.json and the resolved config.

    mtlmood train --set dataset.root=runs/synthetic --set train.max_epochs=5 --output runs/train
    mtlmood train --config run.yaml --set train.alpha=0        # the single-task baseline

Needs the dataset's feature cache (`mtlmood prepare`). Prints one line per epoch.

Nothing breaks a run: after every epoch the full training state goes to
``<output>/train_state.pt`` (atomically), so re-running the same command after a crash,
a kill or Ctrl-C resumes after the last finished epoch and ends with the same weights as
an uninterrupted run. The same command on a finished run says so and does nothing; other
settings in the same directory are refused, naming the settings that differ
(``--restart`` discards the directory's run and starts over). One process at a time
writes a directory (``mtlmood.runlock``): a second `mtlmood train` on it is refused at
once, naming the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import TYPE_CHECKING

from mtlmood_cli.arguments import add_config_arguments, run_config_from_args

if TYPE_CHECKING:
    from mtlmood.train_state import EpochResult, TrainState

# Ctrl-C (see mtlmood_cli.main): every finished epoch's state is already on disk.
INTERRUPTED = "interrupted; finished epochs are kept, re-run the same command to resume"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` to the CLI."""
    parser = subparsers.add_parser(
        "train",
        help="train one model (baseline or multi-task) and save its checkpoint",
        description="Train the paper's CNN on the configured dataset. Writes weights.pt, model_card.json, "
        "metrics.json and config.yaml into the output directory, and train_state.pt after every epoch: "
        "re-running the same command resumes an interrupted run.",
    )
    add_config_arguments(parser)
    parser.add_argument("--output", "-o", metavar="DIR", help="output directory (= --set output_dir=DIR)")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the run already in the output directory (finished or not) and train from scratch",
    )
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume), printing progress per epoch and a test summary at the end."""
    from mtlmood.errors import ConfigError
    from mtlmood.runlock import RunLock
    from mtlmood.train_output import clear_output_dir, format_epoch, inspect_output_dir, train_run

    config = run_config_from_args(args)
    if args.output:
        config = dataclasses.replace(config, output_dir=args.output)
    tc = config.train
    out = config.output_dir

    def progress(result: EpochResult, state: TrainState) -> None:
        print(format_epoch(result, tc.max_epochs, tc.monitor), flush=True)

    with RunLock(out):
        if args.restart:
            removed = clear_output_dir(out)
            if removed:
                print(f"--restart: removed {', '.join(removed)} from {out}")
        found = inspect_output_dir(config, out)
        if found.differences:
            raise ConfigError(
                f"{out} holds a run with other settings: {'; '.join(found.differences)}; "
                "use the same settings to resume it, --restart to discard it, or another --output"
            )
        if found.finished:
            metrics = found.metrics
            test = metrics.get("test") or {}
            pr_auc = test.get("pr_auc") if isinstance(test, dict) else None
            facts = f"best epoch {metrics.get('best_epoch', '?')}" + (
                f", test PR-AUC {pr_auc:.2f}%" if isinstance(pr_auc, (int, float)) and not math.isnan(pr_auc) else ""
            )
            print(f"{out} already holds this finished run ({facts}); nothing to do (--restart trains it again)")
            return 0
        if found.state is not None:
            state = found.state
            print(
                f"resuming {out} after epoch {state['epoch']}/{tc.max_epochs} "
                f"(best epoch {state['best_epoch']}, {state['bad_epochs']} without {tc.monitor} gain)",
                flush=True,
            )
        result = train_run(config, out, callback=progress, resume=found.state)
    test = result.test or {}
    how = "early stopping" if result.stopped_early else "max epochs"
    print(
        f"best epoch {result.best_epoch} ({how}); alpha={result.alpha:.4g}, {result.n_moods} moods, "
        f"{result.n_meta} metadata labels, {result.seconds:.0f}s"
    )
    print(
        f"test (song-level macro, %): ROC-AUC {test.get('roc_auc', float('nan')):.2f}  "
        f"PR-AUC {test.get('pr_auc', float('nan')):.2f}  (chance PR-AUC {test.get('prevalence', float('nan')):.2f})"
    )
    print(f"checkpoint: {out}")
    return 0
