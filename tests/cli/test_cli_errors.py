"""What `mtlmood` prints when a command cannot run or is interrupted: one line each, true for that command.

A command module that fails to import leaves its commands listed and makes running
one exit 2 with ``mtlmood: command 'NAME' is unavailable: REASON``; the other commands
still run. Ctrl-C prints the command's own line (resumable or not) and exits 130.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mtlmood.prepare
from mtlmood_cli.main import CommandModule, build_parser, interrupted_message, main

REPO = Path(__file__).resolve().parents[2]
SYNTH = CommandModule("mtlmood_cli.commands.synth", ("synth",))


def _module(folder: Path, name: str, body: str) -> str:
    """Write an importable command module ``name`` into ``folder`` (already on sys.path)."""
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return name


# --- unavailable commands ---------------------------------------------------------------


def test_a_blocked_module_is_an_error_that_names_its_command_end_to_end() -> None:
    """`python -m mtlmood_cli` with mtlmood_cli.commands.serve unimportable (as if its dependencies were
    missing): `serve` fails in exactly one line, exit 2; the rest of the CLI works."""
    code = textwrap.dedent("""\
        import runpy, sys
        class Block:  # a meta-path finder that fails the import of one module
            def find_spec(self, name, path=None, target=None):
                if name == "mtlmood_cli.commands.serve":
                    raise ModuleNotFoundError("No module named 'fastapi'", name="fastapi")
        sys.meta_path.insert(0, Block())
        runpy.run_module("mtlmood_cli", run_name="__main__", alter_sys=True)
        """)

    def mtlmood(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120
        )

    for args in (["serve", "--checkpoint", "x"], ["serve", "--help"], ["serve"]):
        failed = mtlmood(*args)
        assert failed.returncode == 2, failed.stderr
        assert failed.stdout == ""
        assert failed.stderr.splitlines() == [
            "mtlmood: command 'serve' is unavailable: mtlmood_cli.commands.serve failed to import "
            "(ModuleNotFoundError: No module named 'fastapi')"
        ]
    listing = mtlmood("--help")
    assert listing.returncode == 0 and "(unavailable: mtlmood_cli.commands.serve failed to import" in listing.stdout
    assert mtlmood("synth", "--help").returncode == 0
    assert mtlmood("study", "--help").returncode == 0


def test_a_missing_module_in_the_table_makes_its_commands_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    modules = (SYNTH, CommandModule("no_such_package.cli", ("bogus", "other")))
    for command in ("bogus", "other"):
        assert main([command, "--flag", "value"], modules=modules) == 2
        err = capsys.readouterr().err
        assert err == (
            f"mtlmood: command '{command}' is unavailable: no_such_package.cli failed to import "
            "(ModuleNotFoundError: No module named 'no_such_package')\n"
        )
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"], modules=modules)
    assert exit_info.value.code == 0


def test_a_module_that_crashes_on_import_says_where_to_see_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _module(tmp_path, "broken_commands_x1", "raise RuntimeError('bad table\\nsecond line')\n")
    assert main(["broken"], modules=(CommandModule(name, ("broken",)),)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "second line" not in err
    assert err.startswith(
        f"mtlmood: command 'broken' is unavailable: {name} failed to import (RuntimeError: bad table); "
    )
    assert f"python -c 'import {name}'" in err


def test_a_table_out_of_step_with_register_is_a_programming_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _module(
        tmp_path,
        "renamed_commands_x1",
        """\
        def register(subparsers):
            subparsers.add_parser("new-name")
        """,
    )
    with pytest.raises(RuntimeError, match="did not add the command"):
        build_parser((CommandModule(name, ("old-name",)),))


# --- Ctrl-C -------------------------------------------------------------------------------


def test_prepare_interrupted_says_finished_songs_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.csv").write_text("song_id,path,moods\na,a.wav,calm\n")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mtlmood.prepare, "prepare_features", interrupted)
    code = main(["prepare", "--set", "dataset.name=csv", "--set", f"dataset.root={tmp_path}", "--no-progress"])
    assert code == 130
    assert capsys.readouterr().err == "mtlmood prepare: interrupted; finished songs are cached, re-run to continue\n"


def _message(*argv: str) -> str:
    return interrupted_message(build_parser().parse_args(list(argv)))


def test_each_command_says_what_is_true_of_it() -> None:
    assert _message("prepare") == "interrupted; finished songs are cached, re-run to continue"
    assert (
        _message("study", "run", "synthetic")
        == "interrupted; finished runs are kept; re-run the same command to resume"
    )
    assert _message("demo") == "interrupted; finished steps are kept; re-run the same command to resume"
    assert _message("serve") == "stopped"
    assert _message("predict", "ckpt", "song.mp3") == "interrupted; no files were written"
    # `mtlmood train` saves its full state after every epoch and resumes from it.
    assert _message("train") == "interrupted; finished epochs are kept, re-run the same command to resume"
    for argv in (["data", "stats"], ["evaluate", "ckpt"], ["study", "plan", "synthetic"], ["synth"]):
        assert _message(*argv).startswith("interrupted"), argv


def test_the_most_specific_message_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A parser's own default beats its module's INTERRUPTED, which beats plain 'interrupted'."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = _module(
        tmp_path,
        "interrupting_commands_x1",
        """\
        INTERRUPTED = "interrupted; module default"

        def stop(args):
            raise KeyboardInterrupt

        def register(subparsers):
            outer = subparsers.add_parser("outer")
            actions = outer.add_subparsers(dest="action")
            actions.add_parser("own").set_defaults(func=stop, interrupted="interrupted; its own line")
            actions.add_parser("inherits").set_defaults(func=stop)
            subparsers.add_parser("plain").set_defaults(func=stop, interrupted="stopped")
        """,
    )
    plain = _module(
        tmp_path,
        "plain_commands_x1",
        """\
        def register(subparsers):
            subparsers.add_parser("bare").set_defaults(func=lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
        """,
    )
    modules = (CommandModule(name, ("outer", "plain")), CommandModule(plain, ("bare",)))
    expected = {
        ("outer", "own"): "mtlmood outer: interrupted; its own line",
        ("outer", "inherits"): "mtlmood outer: interrupted; module default",
        ("plain",): "mtlmood plain: stopped",
        ("bare",): "mtlmood bare: interrupted",
    }
    for argv, line in expected.items():
        assert main(list(argv), modules=modules) == 130
        assert capsys.readouterr().err == line + "\n"
