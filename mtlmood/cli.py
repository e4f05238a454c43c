"""The `mtlmood` command. Each subcommand lives in its own module with a ``register``
function; this file only dispatches and turns user errors into one clear line.

Subcommand modules import their heavy dependencies (torch, Ray) inside their run
functions, so `mtlmood --help` stays fast and the core never imports Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from mtlmood.errors import MtlmoodError

# Order = order in --help. study/serve are the thin Ray layers; they are imported
# only to register their parsers (their modules import Ray lazily).
COMMAND_MODULES = (
    "mtlmood.commands.synth",
    "mtlmood.commands.prepare",
    "mtlmood.commands.data",
    "mtlmood.commands.train",
    "mtlmood.commands.evaluate",
    "mtlmood.commands.predict",
    "study.cli",
    "serve.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtlmood",
        description="Music-mood classification with multi-task learning on metadata.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module: surface it
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MtlmoodError as exc:
        print(f"mtlmood {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mtlmood {args.command}: interrupted; finished work is kept, re-run to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
