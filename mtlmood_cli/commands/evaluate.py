"""`mtlmood evaluate`: score a checkpoint on a split of its dataset (song-level, %).

    mtlmood evaluate runs/train                       # the data the checkpoint was trained on
    mtlmood evaluate runs/train --set split.seed=1 --split validation --json

The data settings come from the checkpoint's card (its resolved run config);
--config replaces them, --set overrides single keys.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING

from mtlmood_cli.arguments import add_config_arguments

if TYPE_CHECKING:
    from mtlmood.metrics import Scores


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `evaluate` to the CLI."""
    parser = subparsers.add_parser(
        "evaluate",
        help="song-level ROC-AUC / PR-AUC of a checkpoint on its test set",
        description="Score a checkpoint on a split of the dataset it was trained on (or another one "
        "given with --config/--set). Scores are macro averages over the mood labels, in percent.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (weights.pt + model_card.json)")
    add_config_arguments(parser)
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.set_defaults(func=run_evaluate)


def _fmt(value: float) -> str:
    return "   n/a" if value is None or math.isnan(value) else f"{value:6.2f}"


def render_scores(scores: Scores, title: str) -> str:
    """A text table: macro scores, then one row per mood label."""
    lines = [title, f"{'label':<28} {'ROC-AUC %':>9} {'PR-AUC %':>9} {'positives':>9}"]
    for name, s in scores.get("per_label", {}).items():
        lines.append(f"{name[:28]:<28} {_fmt(s['roc_auc']):>9} {_fmt(s['pr_auc']):>9} {s['positives']:>9}")
    lines.append(
        f"{'macro (' + str(scores.get('n_labels', 0)) + ' labels)':<28} "
        f"{_fmt(scores.get('roc_auc', math.nan)):>9} {_fmt(scores.get('pr_auc', math.nan)):>9}"
    )
    lines.append(f"{'chance (mean prevalence)':<28} {'':>9} {_fmt(scores.get('prevalence', math.nan)):>9}")
    if scores.get("excluded_labels"):
        lines.append(f"excluded (no positive or no negative song): {', '.join(scores['excluded_labels'])}")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    """Load the checkpoint and the data, score the split, print a table (or JSON)."""
    from mtlmood.checkpoint import load_checkpoint
    from mtlmood.coerce import apply_overrides, from_dict
    from mtlmood.config import RunConfig
    from mtlmood.config_io import load_config
    from mtlmood.distributed import resolve_device
    from mtlmood.errors import CheckpointError
    from mtlmood.metrics import json_safe
    from mtlmood.rundata import load_run_data
    from mtlmood.train import evaluate_split

    model, card = load_checkpoint(args.checkpoint)
    if args.config:
        config = load_config(RunConfig, args.config, args.overrides)
    else:
        config = apply_overrides(
            from_dict(RunConfig, card.run_config) if card.run_config else RunConfig(), args.overrides
        )
    model = model.to(resolve_device(config.train.device))
    data = load_run_data(config)
    if data.mood_names != card.mood_names:
        raise CheckpointError(
            f"the checkpoint predicts moods {card.mood_names}, but this data's labels are "
            f"{data.mood_names}; check labels.n_moods and the dataset"
        )
    scores = evaluate_split(model, data, args.split, config).scores
    if args.json:
        print(
            json.dumps(
                json_safe(
                    {
                        "checkpoint": str(args.checkpoint),
                        "checkpoint_id": card.checkpoint_id,
                        "split": args.split,
                        **scores,
                    }
                ),
                indent=2,
            )
        )
    else:
        print(
            render_scores(
                scores, f"{args.split} set, {scores['n_songs']} songs, checkpoint {card.checkpoint_id} (song-level, %)"
            )
        )
    return 0
