"""Arguments shared by several subcommands: a config file plus dotted overrides."""

from __future__ import annotations

import argparse

from mtlmood.config import RunConfig
from mtlmood.config_io import load_config, resolve_run_paths


def add_override_argument(parser: argparse.ArgumentParser, example: str = "train.max_epochs=3") -> None:
    """Repeated --set section.key=value (every command that reads a config takes it)."""
    parser.add_argument(
        "--set",
        "-s",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help=f"override one setting, e.g. --set {example} (repeatable)",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config FILE and repeated --set section.key=value."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML run config (defaults = the paper)")
    add_override_argument(parser)


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults <- YAML file <- --set overrides, relative paths resolved against the working directory."""
    return resolve_run_paths(load_config(RunConfig, args.config, args.overrides))
