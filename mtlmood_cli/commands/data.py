"""`mtlmood data stats`: song counts, mood labels, metadata coverage, split sizes and facts, missing audio.

    mtlmood data stats --dataset mtg-jamendo --root ../shared/data/mtg-jamendo --n-moods 3
    mtlmood data stats --config run.yaml --set split.method=official --json

The short flags are sugar for ``--set``: ``--dataset X`` = ``--set dataset.name=X``,
and they win over ``--set`` and the config file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from mtlmood.config import METADATA_SETS, RunConfig
from mtlmood_cli.arguments import add_config_arguments, run_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data` (with its `stats` subcommand) to the CLI."""
    data = subparsers.add_parser(
        "data",
        help="inspect a dataset's metadata, labels and splits",
        description="Inspect a dataset's metadata, labels and splits.",
    )
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: _help(data))

    stats = actions.add_parser(
        "stats",
        help="songs, mood labels, metadata coverage, split sizes, missing audio",
        description="Print what a run config's dataset, labels and split come to (no audio is read).",
    )
    add_config_arguments(stats)
    stats.add_argument(
        "--dataset", metavar="NAME", help="= --set dataset.name=NAME (mtg-jamendo, magnatagatune, csv, synthetic)"
    )
    stats.add_argument("--root", metavar="PATH", help="= --set dataset.root=PATH")
    stats.add_argument("--audio-root", metavar="PATH", help="= --set dataset.audio_root=PATH")
    stats.add_argument("--tag-set", choices=("moods", "all"), help="= --set dataset.tag_set=...")
    stats.add_argument("--n-moods", type=int, metavar="N", help="= --set labels.n_moods=N")
    stats.add_argument("--metadata", choices=METADATA_SETS, help="= --set labels.metadata=...")
    stats.add_argument("--split", choices=("random", "official"), help="= --set split.method=...")
    stats.add_argument("--json", action="store_true", help="print the numbers as JSON")
    stats.set_defaults(func=run_stats)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """--config / --set, then the short flags (applied directly, so paths are never YAML-parsed)."""
    config = run_config_from_args(args)
    dataset = {
        key: value
        for key, value in (
            ("name", args.dataset),
            ("root", args.root),
            ("audio_root", args.audio_root),
            ("tag_set", args.tag_set),
        )
        if value is not None
    }
    labels = {
        key: value for key, value in (("n_moods", args.n_moods), ("metadata", args.metadata)) if value is not None
    }
    split = {"method": args.split} if args.split else {}
    return dataclasses.replace(
        config,
        dataset=dataclasses.replace(config.dataset, **dataset),
        labels=dataclasses.replace(config.labels, **labels),
        split=dataclasses.replace(config.split, **split),
    )


def run_stats(args: argparse.Namespace) -> int:
    """Print the stats report (or JSON) for the resolved config."""
    from mtlmood.dataset_stats import dataset_stats, render_stats

    stats = dataset_stats(config_from_args(args))
    print(json.dumps(stats.to_dict(), indent=2) if args.json else render_stats(stats))
    return 0
