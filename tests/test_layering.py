"""The core library imports no Ray: study/ and serve/ are thin layers over it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import mtlmood

REPO = Path(__file__).resolve().parents[1]


def test_every_mtlmood_module_imports_without_ray() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(mtlmood.__path__, prefix="mtlmood."))
    assert "mtlmood.train" in modules and "mtlmood.commands.train" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "leaked = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "print(','.join(leaked))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"mtlmood imported Ray modules: {out.stdout.strip()[:300]}"


def test_cli_help_lists_every_command_and_stays_ray_free() -> None:
    code = ("import sys\nfrom mtlmood.cli import build_parser\n"
            "build_parser().format_help()\n"
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
    help_text = subprocess.run([sys.executable, "-m", "mtlmood.cli", "--help"], cwd=REPO, capture_output=True,
                               text=True, timeout=120).stdout
    for command in ("synth", "prepare", "data", "train", "evaluate", "predict", "study", "demo", "serve"):
        assert command in help_text
