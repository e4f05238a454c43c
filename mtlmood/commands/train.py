"""`mtlmood train`: one training run -> checkpoint, metrics.json and the resolved config.

    mtlmood train --set dataset.root=runs/synthetic --set train.max_epochs=5 --output runs/train
    mtlmood train --config run.yaml --set train.alpha=0        # the single-task baseline

Needs the dataset's feature cache (`mtlmood prepare`). Prints one line per epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from mtlmood.commands.common import add_config_arguments, run_config_from_args

if TYPE_CHECKING:
    from mtlmood.train_state import EpochResult, TrainState


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train` to the CLI."""
    parser = subparsers.add_parser(
        "train",
        help="train one model (baseline or multi-task) and save its checkpoint",
        description="Train the paper's CNN on the configured dataset. Writes weights.pt, model_card.json, "
        "metrics.json and config.yaml into the output directory.",
    )
    add_config_arguments(parser)
    parser.add_argument("--output", "-o", metavar="DIR", help="output directory (= --set output_dir=DIR)")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Train, printing progress per epoch and a test summary at the end."""
    from mtlmood.train import format_epoch, train_run

    config = run_config_from_args(args)
    if args.output:
        config = dataclasses.replace(config, output_dir=args.output)
    tc = config.train

    def progress(result: EpochResult, state: TrainState) -> None:
        print(format_epoch(result, tc.max_epochs, tc.monitor), flush=True)

    result = train_run(config, config.output_dir, callback=progress)
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
    print(f"checkpoint: {config.output_dir}")
    return 0
