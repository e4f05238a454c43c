"""Dependencies point one way: mtlmood_cli -> study, serve, catalog -> mtlmood, and the core imports no Ray.

The rules are checked on the source with ``ast``: every ``import x`` / ``from x import y``
at any depth (inside functions and ``if TYPE_CHECKING:`` too, since a lazy import is
still a dependency), plus ``importlib.import_module("x")`` / ``__import__("x")`` of a
constant name. A run-time check adds what the source cannot show: importing every core
module loads no Ray, not even through a third-party library.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import mtlmood

REPO = Path(__file__).resolve().parents[2]

# Top-level packages that the code of each package must never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    # The core library knows no layer above it, and no Ray.
    "mtlmood": frozenset({"study", "serve", "catalog", "mtlmood_cli", "ray"}),
    # The Ray layers are used by the command line, never the other way round.
    "study": frozenset({"mtlmood_cli"}),
    # serve stands on the core alone: it reads a study's results from files
    # (best_checkpoint.json), so a study's code never has to be installed next to a server.
    "serve": frozenset({"mtlmood_cli", "study"}),
    # catalog (batch inference on Ray Data) stands on the core alone, like serve.
    "catalog": frozenset({"mtlmood_cli", "study", "serve"}),
}

# Imports that break a rule above on purpose: (importing file, imported module) -> why.
# An entry needs a reason a reviewer can judge.
ALLOWED: dict[tuple[str, str], str] = {}


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the code of ``module``.

    ``from x import y`` yields ``x`` (y may be a function or a submodule, and x is imported
    either way); relative imports are resolved against ``module``'s package.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module or ""
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def source_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def module_name(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def violations(package: str) -> list[str]:
    """``file:line imports module`` for every import of ``package`` that its rule forbids."""
    found = []
    for path in source_files(package):
        module, is_package = module_name(path)
        relative = path.relative_to(REPO).as_posix()
        for line, name in imported_modules(path.read_text(encoding="utf-8"), module, is_package):
            if name.split(".")[0] in FORBIDDEN[package] and (relative, name) not in ALLOWED:
                found.append(f"{relative}:{line} imports {name}")
    return found


def test_the_checker_sees_every_kind_of_import() -> None:
    source = (
        "import os, ray.tune\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from serve.app import build_app\n"
        "class A:\n    def f(self):\n        from study import cli\n"
        "        import importlib\n        importlib.import_module('mtlmood_cli.main')\n"
        "def g():\n    __import__('ray')\n"
        "from . import sibling\nfrom ..datasets import base\n"
    )
    names = sorted(name for _, name in imported_modules(source, "mtlmood.commands.x"))
    assert names == sorted(
        [
            "os",
            "ray.tune",
            "typing",
            "serve.app",
            "study",
            "importlib",
            "mtlmood_cli.main",
            "ray",
            "mtlmood.commands",
            "mtlmood.datasets",
        ]
    )
    assert [n for _, n in imported_modules("from . import y", "mtlmood", is_package=True)] == ["mtlmood"]


def test_every_package_exists_and_is_checked() -> None:
    for package in FORBIDDEN:
        assert source_files(package), f"no source under {package}/"
    assert (REPO / "mtlmood_cli" / "main.py").is_file()


def test_the_core_imports_no_layer_above_it_and_no_ray() -> None:
    assert violations("mtlmood") == []


def test_the_ray_layers_never_import_the_command_line() -> None:
    assert violations("study") == []


def test_serve_imports_no_study_code_and_not_the_command_line() -> None:
    assert violations("serve") == []


def test_catalog_stands_on_the_core_alone() -> None:
    assert violations("catalog") == []


def test_every_allowed_exception_is_still_needed() -> None:
    """An exception whose import is gone must go too, or it silently widens the rule."""
    for (relative, name), reason in ALLOWED.items():
        assert reason.strip(), f"{relative} -> {name} needs a reason"
        path = REPO / relative
        module, is_package = module_name(path)
        assert path.is_file() and name in {n for _, n in imported_modules(path.read_text(), module, is_package)}, (
            f"ALLOWED lists {relative} importing {name}, which it no longer does: remove the entry"
        )


def test_every_mtlmood_module_imports_without_ray() -> None:
    modules = sorted(m.name for m in pkgutil.walk_packages(mtlmood.__path__, prefix="mtlmood."))
    assert "mtlmood.train" in modules and "mtlmood.commands.train" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'study', 'serve', 'mtlmood_cli'))\n"
        "print(','.join(leaked))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing mtlmood loaded: {out.stdout.strip()[:300]}"
