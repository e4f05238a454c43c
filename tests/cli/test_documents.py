"""The documents stay true to the repository: every path, module and make target they name exists.

Checked in README.md, docs/*.md and benchmarks/README.md:
- a repository path in backticks or a relative Markdown link (``mtlmood/train.py``,
  ``docs/STUDY.md``, ``benchmarks/results/``) exists; paths with placeholders (``<name>``, ``*``,
  ``{a,b}``) and paths the code creates at run time (git-ignored: ``runs/``, ``.venv``,
  ``benchmarks/.cache``) are not checked;
- a dotted Python name in backticks that starts with one of the project's packages
  (``mtlmood.train.train``, ``serve.telemetry``) imports, or is an attribute of a module that does;
- ``make <target>`` names a target of the Makefile.
"""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([REPO / "README.md", REPO / "benchmarks" / "README.md", *(REPO / "docs").glob("*.md")])
PACKAGES = ("mtlmood", "mtlmood_cli", "study", "serve", "catalog", "benchmarks")
TOP_LEVEL = {p.name for p in REPO.iterdir() if not p.name.startswith(".git")} - {"runs", ".venv"}

CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
MAKE = re.compile(r"\bmake ([a-z][a-z0-9-]*)")
PLACEHOLDER = re.compile(r"[<>*{}$]|\.\.\.")
DOTTED = re.compile(r"^(?:%s)(?:\.[A-Za-z_][A-Za-z0-9_]*)+$" % "|".join(PACKAGES))


def _path_candidates(text: str) -> set[str]:
    """Backticked words and link targets that name a path inside the repository."""
    found = set()
    for span in CODE_SPAN.findall(text):
        for word in span.split():
            word = word.strip("\"',;:()")
            first = word.split("/")[0]
            if "/" in word or word in TOP_LEVEL or word.endswith((".md", ".py", ".yaml", ".toml", ".sh")):
                if first in TOP_LEVEL and not PLACEHOLDER.search(word):
                    found.add(word.split(":")[0])
    return found


def _ignored(paths: set[str]) -> set[str]:
    """The paths git ignores: folders and files the code makes at run time."""
    if not paths:
        return set()
    # A path named without its trailing slash is tried as a folder too (".venv/" patterns).
    asked = sorted(paths | {p.rstrip("/") + "/" for p in paths})
    done = subprocess.run(["git", "check-ignore", "--no-index", *asked], cwd=REPO, capture_output=True, text=True)
    return {p for p in paths if p in done.stdout.split() or p.rstrip("/") + "/" in done.stdout.split()}


def _link_targets(document: Path, text: str) -> set[Path]:
    return {
        (document.parent / target).resolve()
        for target in LINK.findall(text)
        if "://" not in target and not target.startswith("mailto:") and not PLACEHOLDER.search(target)
    }


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module, or an attribute chain of the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(value, name):
                return False
            value = getattr(value, name)
        return True
    return False


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {match.group(1) for match in re.finditer(r"^([a-z][a-z0-9-]*):", text, re.MULTILINE)}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_a_document_names_exists(document: Path) -> None:
    text = document.read_text()
    absent = {p for p in _path_candidates(text) if not (REPO / p).exists()}
    missing = sorted(absent - _ignored(absent))
    missing += sorted(str(p) for p in _link_targets(document, text) if not p.exists())
    assert not missing, f"{document.relative_to(REPO)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_python_name_a_document_names_resolves(document: Path) -> None:
    names = {span for span in CODE_SPAN.findall(document.read_text()) if DOTTED.match(span.strip())}
    unresolved = sorted(name for name in names if not _resolves(name.strip()))
    assert not unresolved, f"{document.relative_to(REPO)} names Python objects that do not exist: {unresolved}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_make_target_a_document_names_exists(document: Path) -> None:
    missing = sorted(set(MAKE.findall(document.read_text())) - _make_targets())
    assert not missing, f"{document.relative_to(REPO)} names make targets the Makefile lacks: {missing}"


def test_the_checks_find_what_they_look_for() -> None:
    """The parsers see paths, links, names and targets (a check that finds nothing passes vacuously)."""
    text = "Run `make demo`, read `docs/STUDY.md` and `mtlmood/train.py:12`; see [x](docs/RUNBOOK.md)."
    assert {"docs/STUDY.md", "mtlmood/train.py"} <= _path_candidates(text)
    assert _link_targets(REPO / "README.md", text) == {REPO / "docs" / "RUNBOOK.md"}
    assert "demo" in MAKE.findall(text) and {"demo", "test", "test-fast"} <= _make_targets()
    assert _resolves("mtlmood.config.RunConfig") and not _resolves("mtlmood.config.NoSuchThing")
    assert not _path_candidates("`runs/studies/<name>/report.md` and `benchmarks/results/*.json`")
