"""The `mtlmood` command: build one parser from every layer's commands, dispatch, and turn
user errors, unavailable commands and Ctrl-C into one line each.

    mtlmood --help              # the console script (pyproject.toml [project.scripts])
    python -m mtlmood_cli --help

Each command lives in a module with a ``register(subparsers)`` function;
``COMMAND_MODULES`` says which modules, in --help order. Those modules import their
heavy dependencies (torch, Ray) inside their run functions, so `mtlmood --help` stays fast.

A module that fails to import is never a silently missing command: its commands are
still listed (their help says why they are unavailable), and running one prints
``mtlmood: command 'study' is unavailable: <reason>`` and exits 2, while every other
command keeps working.

Ctrl-C prints what is true of the interrupted command: its parser's ``interrupted``
default (``parser.set_defaults(interrupted=...)``, for a module whose commands differ),
else its module's ``INTERRUPTED`` string, else plain "interrupted", which promises nothing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Optional, Sequence

from mtlmood.errors import MtlmoodError

USAGE_ERROR = 2  # argparse's status for bad usage; also bad input and unavailable commands
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
DEFAULT_INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class CommandModule:
    """A module whose ``register(subparsers)`` adds the top-level ``commands``.

    The names are written here rather than read from the module so that a module that
    cannot be imported still names the commands it would have offered.
    """

    module: str
    commands: tuple[str, ...]


# Order = order in --help. Every command lives in mtlmood_cli.commands, one module per
# command family; the functions they call live in mtlmood (the core), study and serve.
COMMAND_MODULES: tuple[CommandModule, ...] = (
    CommandModule("mtlmood_cli.commands.synth", ("synth",)),
    CommandModule("mtlmood_cli.commands.prepare", ("prepare",)),
    CommandModule("mtlmood_cli.commands.data", ("data",)),
    CommandModule("mtlmood_cli.commands.train", ("train",)),
    CommandModule("mtlmood_cli.commands.evaluate", ("evaluate",)),
    CommandModule("mtlmood_cli.commands.predict", ("predict",)),
    CommandModule("mtlmood_cli.commands.export", ("export", "model-card")),
    CommandModule("mtlmood_cli.commands.study", ("study",)),
    CommandModule("mtlmood_cli.commands.demo", ("demo",)),
    CommandModule("mtlmood_cli.commands.serve", ("serve",)),
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def import_failure(module: str, exc: BaseException) -> str:
    """Why ``module``'s commands are unavailable, in one line."""
    reason = f"{module} failed to import ({type(exc).__name__}: {_first_line(exc)})"
    if not isinstance(exc, ImportError):  # a bug, not a missing dependency: say where to see it
        reason += f"; `python -c 'import {module}'` shows the traceback"
    return reason


def _add_unavailable(subparsers: argparse._SubParsersAction, command: str, reason: str) -> None:
    """List ``command`` with the reason it cannot run, and accept any arguments after it
    (``--help`` included), so that running it reaches main's one-line error, not argparse's."""
    # prefix_chars that no argument starts with: every token, "--help" too, is a positional.
    parser = subparsers.add_parser(command, help=f"(unavailable: {reason})", add_help=False, prefix_chars="\0")
    parser.add_argument("arguments", nargs="*")
    parser.set_defaults(unavailable=reason)


def build_parser(modules: Sequence[CommandModule] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The `mtlmood` parser with the commands of ``modules``; one that fails to import
    contributes placeholders that report why (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="mtlmood", description="Music-mood classification with multi-task learning on metadata."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in modules:
        try:
            module = importlib.import_module(entry.module)
        except Exception as exc:  # a missing dependency or a bug: only these commands are lost
            for command in entry.commands:
                _add_unavailable(subparsers, command, import_failure(entry.module, exc))
            continue
        module.register(subparsers)
        missing = [command for command in entry.commands if command not in subparsers.choices]
        if missing:  # the table above is out of date: a programming error, not a user's
            raise RuntimeError(
                f"{entry.module}.register() did not add the command(s) {missing} that COMMAND_MODULES lists for it"
            )
        default = getattr(module, "INTERRUPTED", None)
        for command in entry.commands:
            # A parser's own default wins; argparse lets a sub-subparser's (e.g. `study run`)
            # override its parent's, so the most specific message is the one printed.
            if default and subparsers.choices[command].get_default("interrupted") is None:
                subparsers.choices[command].set_defaults(interrupted=default)
    return parser


def interrupted_message(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves behind for the parsed command (see the module docstring)."""
    return getattr(args, "interrupted", None) or DEFAULT_INTERRUPTED


def main(argv: Optional[Sequence[str]] = None, modules: Sequence[CommandModule] = COMMAND_MODULES) -> int:
    """Run one `mtlmood` command; returns the process exit status. ``modules``: see build_parser."""
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if getattr(args, "unavailable", None):
        print(f"mtlmood: command {args.command!r} is unavailable: {args.unavailable}", file=sys.stderr)
        return USAGE_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE_ERROR
    try:
        return int(args.func(args) or 0)
    except MtlmoodError as exc:
        print(f"mtlmood {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"mtlmood {args.command}: {interrupted_message(args)}", file=sys.stderr)
        return INTERRUPTED_STATUS


if __name__ == "__main__":
    sys.exit(main())
