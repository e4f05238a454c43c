"""`mtlmood prepare`: compute a dataset's log-mel features once into its feature cache,
with local processes (the core, no Ray) or, with ``--address``, as Ray tasks on a cluster.

    mtlmood prepare --set dataset.name=mtg-jamendo --set dataset.root=data/mtg-jamendo \
        --set dataset.audio_root=/audio/mtg-jamendo --workers 8
    mtlmood prepare --config run.yaml --rebuild   # after changing the feature settings
    mtlmood prepare --config study/configs/mtg-jamendo.yaml --address auto   # on a Ray cluster

Interrupt it at any time: finished songs are kept, and a re-run computes only the rest.
The cache goes to ``cache_dir`` (default ``<dataset.root>/features``). One prepare at a
time writes a cache (``mtlmood.runlock``, on any host): a second is refused at once,
naming the first.

``--config`` also takes a study config: its ``run:`` section is used, so the cache is
exactly the one the study's trials read. ``--address`` computes the songs as Ray tasks
(study/prepare_ray.py; the audio and the cache must be on storage every node mounts at
the same path); without it, local processes and no Ray.

It combines two layers: ``mtlmood.prepare`` does the work either way and
``study.prepare_ray`` supplies the Ray runner; only the CLI package may import both.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from mtlmood.config import RunConfig
from mtlmood_cli.arguments import add_config_arguments, run_config_from_args

if TYPE_CHECKING:  # imported for real inside the run functions: `mtlmood --help` stays fast
    from mtlmood.datasets.base import SongRecord
    from mtlmood.prepare import PrepareReport

# Ctrl-C (see mtlmood_cli.main): each finished song's shard is already on disk.
INTERRUPTED = "interrupted; finished songs are cached, re-run to continue"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `prepare` to the CLI."""
    parser = subparsers.add_parser(
        "prepare",
        help="compute and cache log-mel features (parallel, resumable)",
        description="Decode every song of the configured dataset, compute its log-mel features and "
        "store them in the feature cache. Resumable; failures are listed, not fatal.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--workers", "-j", type=int, default=0, metavar="N", help="worker processes (default 0 = every available core)"
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="= --set cache_dir=DIR")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="discard the existing cache first (needed after changing feature settings)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--address",
        metavar="ADDR",
        default=None,
        help="compute on a Ray cluster: 'auto' inside it (e.g. a `ray job submit` job), "
        "ray://HEAD:10001 from outside; audio and cache_dir must be on storage every "
        "node mounts at the same path. Default: local processes, no Ray",
    )
    parser.add_argument(
        "--songs-per-task", type=int, default=8, metavar="N", help="songs per Ray task with --address (default 8)"
    )
    parser.add_argument(
        "--max-tasks",
        type=int,
        default=0,
        metavar="N",
        help="Ray tasks queued at once with --address (default 0 = twice the cluster's "
        "CPUs, which lets an autoscaler grow it; a small N keeps it on few nodes)",
    )
    parser.set_defaults(func=run_prepare)


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The run config from --config/--set; a study config (a YAML with a ``run:`` mapping)
    contributes its ``run`` section, so `prepare` fills the cache its trials will read."""
    import yaml

    from mtlmood.coerce import apply_overrides, from_dict
    from mtlmood.errors import ConfigError

    if args.config and Path(args.config).is_file():
        try:
            loaded = yaml.safe_load(Path(args.config).read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {args.config} is not valid YAML: {exc}") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("run"), dict):
            return apply_overrides(from_dict(RunConfig, loaded["run"]), args.overrides)
    return run_config_from_args(args)


def run_prepare(args: argparse.Namespace) -> int:
    """Load the dataset's songs, prepare their features, print a summary.

    Exit code 0, or 1 when no song could be computed or found in the cache.
    """
    from mtlmood.cache import default_cache_dir
    from mtlmood.datasets import load_run_songs
    from mtlmood.errors import ConfigError
    from mtlmood.prepare import prepare_features
    from mtlmood.runlock import RunLock

    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0 = every core), got {args.workers}")
    if args.songs_per_task < 1 or args.max_tasks < 0:
        raise ConfigError(
            f"--songs-per-task must be >= 1 and --max-tasks >= 0, got {args.songs_per_task} and {args.max_tasks}"
        )
    config = _run_config(args)
    if args.cache_dir:
        config = dataclasses.replace(config, cache_dir=args.cache_dir)
    songs = load_run_songs(config)
    if not songs:
        print(f"dataset {config.dataset.name!r} at {config.dataset.root} has no songs; nothing to prepare")
        return 1
    cache_dir = default_cache_dir(config)
    # One writer per cache, on any host; taken before Ray starts, so a second prepare is
    # refused at once (prepare_features sees that this process holds it).
    with RunLock(cache_dir):
        if args.address:
            report = _prepare_on_ray(args, songs, cache_dir, config)
        else:
            report = prepare_features(
                songs,
                cache_dir,
                config.features,
                workers=args.workers,
                progress=not args.no_progress,
                rebuild=args.rebuild,
            )
    print(report.summary())
    return 1 if report.computed + report.skipped == 0 else 0


def _prepare_on_ray(
    args: argparse.Namespace, songs: list[SongRecord], cache_dir: Path, config: RunConfig
) -> PrepareReport:
    """prepare_features with Ray tasks doing the songs; Ray is imported only when asked for."""
    from study.prepare_ray import prepare_on_ray

    return prepare_on_ray(
        args.address,
        songs,
        cache_dir,
        config.features,
        songs_per_task=args.songs_per_task,
        max_in_flight=args.max_tasks,
        progress=not args.no_progress,
        rebuild=args.rebuild,
    )
