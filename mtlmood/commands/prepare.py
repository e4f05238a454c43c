"""`mtlmood prepare`: compute a dataset's log-mel features once into its feature cache.

    mtlmood prepare --set dataset.name=mtg-jamendo --set dataset.root=data/mtg-jamendo \
        --set dataset.audio_root=/audio/mtg-jamendo --workers 8
    mtlmood prepare --config run.yaml --rebuild   # after changing the feature settings

Interrupt it at any time: finished songs are kept, and a re-run computes only the rest.
The cache goes to ``cache_dir`` (default ``<dataset.root>/features``).
"""

from __future__ import annotations

import argparse
import dataclasses

from mtlmood.commands.common import add_config_arguments, run_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `prepare` to the CLI."""
    parser = subparsers.add_parser(
        "prepare", help="compute and cache log-mel features (parallel, resumable)",
        description="Decode every song of the configured dataset, compute its log-mel features and "
                    "store them in the feature cache. Resumable; failures are listed, not fatal.")
    add_config_arguments(parser)
    parser.add_argument("--workers", "-j", type=int, default=0, metavar="N",
                        help="worker processes (default 0 = every available core)")
    parser.add_argument("--cache-dir", metavar="DIR", help="= --set cache_dir=DIR")
    parser.add_argument("--rebuild", action="store_true",
                        help="discard the existing cache first (needed after changing feature settings)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    """Load the dataset's songs, prepare their features, print a summary.

    Exit code 0, or 1 when no song could be computed or found in the cache.
    """
    from mtlmood.cache import default_cache_dir
    from mtlmood.datasets import load_run_songs
    from mtlmood.errors import ConfigError
    from mtlmood.prepare import prepare_features

    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = every core), got {args.workers}")
    config = run_config_from_args(args)
    if args.cache_dir:
        config = dataclasses.replace(config, cache_dir=args.cache_dir)
    songs = load_run_songs(config)
    if not songs:
        print(f"dataset {config.dataset.name!r} at {config.dataset.root} has no songs; nothing to prepare")
        return 1
    cache_dir = default_cache_dir(config)
    report = prepare_features(songs, cache_dir, config.features, workers=args.workers,
                              progress=not args.no_progress, rebuild=args.rebuild)
    print(report.summary())
    return 1 if report.computed + report.skipped == 0 else 0
