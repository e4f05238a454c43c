"""Arguments shared by several subcommands: a config file plus dotted overrides."""

from __future__ import annotations

import argparse

from mtlmood.config import RunConfig, load_config, resolve_run_paths


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and repeated --set section.key=value."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML run config (defaults = the paper)")
    parser.add_argument(
        "--set",
        "-s",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one setting, e.g. --set train.max_epochs=3 (repeatable)",
    )


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults <- YAML file <- --set overrides, relative paths resolved against the working directory."""
    return resolve_run_paths(load_config(RunConfig, args.config, args.overrides))
