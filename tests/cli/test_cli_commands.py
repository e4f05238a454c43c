"""`mtlmood` offers every command of every layer, each with a working --help, and its help stays Ray-free."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from mtlmood_cli.main import COMMAND_MODULES, build_parser

REPO = Path(__file__).resolve().parents[2]
COMMANDS = (
    "synth",
    "prepare",
    "data",
    "train",
    "evaluate",
    "predict",
    "export",
    "model-card",
    "study",
    "demo",
    "serve",
)


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every (sub)command below ``parser``, e.g. ("study",), ("study", "run")."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(path + (name,))
                paths += _command_paths(sub, path + (name,))
    return paths


def test_help_lists_every_command_in_order() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mtlmood_cli", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ") and line.split()]
    assert [name for name in listed if name in COMMANDS] == list(COMMANDS)
    assert "unavailable" not in out.stdout


PATHS = _command_paths(build_parser())


def test_every_layer_contributes_its_commands() -> None:
    assert {path for path in PATHS if len(path) == 1} == {(name,) for name in COMMANDS}
    assert {("data", "stats"), ("study", "run"), ("study", "plan"), ("study", "report")} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS, ids=" ".join)
def test_every_subcommand_help_exits_0(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    assert f"mtlmood {' '.join(path)}" in capsys.readouterr().out


def test_the_command_table_names_what_each_module_registers() -> None:
    """COMMAND_MODULES writes each module's commands down (so a module that fails to import
    still names them): the list must match what its register() really adds."""
    for entry in COMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(entry.module).register(subparsers)
        assert tuple(subparsers.choices) == entry.commands, entry.module


def test_help_stays_ray_free() -> None:
    """Building the parser imports every command module: none may import Ray at import time."""
    code = (
        "import sys\nfrom mtlmood_cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))[:5])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
