"""The core library reads no file that the study writes: mtlmood/ spells none of the study's output
file names, and of the names the layers share (mtlmood.filenames) it uses only those it owns.

A study's evidence reaches mtlmood as data (a StudyRecord the study builds and hands over), never
as files mtlmood finds and parses. Checked on the source with ``ast``, beside test_layering.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The study's outputs that the core once parsed, named whatever module of the study owns them now.
KNOWN_STUDY_OUTPUTS = frozenset({"curves.csv", "study_config.yaml", "best_checkpoint.json", "study_evidence.json"})

# mtlmood.filenames constants that name files a study writes -> the mtlmood modules that may import
# them, and why. An entry needs a reason a reviewer can judge.
SHARED_STUDY_FILES: dict[str, dict[str, str]] = {
    # The study's pointer is the one study output the core still reads: mtlmood.storage resolves a
    # study folder to the checkpoint it chose (`mtlmood serve --study`, `mtlmood predict RUN_DIR`,
    # the catalog), because serve and catalog may not import the study and stand on the core alone.
    "BEST_CHECKPOINTS_FILE": {"mtlmood/storage.py": "resolves a study folder to its chosen checkpoint"},
    # Written by the study beside a chosen checkpoint, read by serve: never by mtlmood.
    "STUDY_EVIDENCE_FILE": {},
}


def _study_owned_names() -> set[str]:
    """Every ``*_FILE = "name"`` constant of the study's source, plus the known outputs."""
    names = set(KNOWN_STUDY_OUTPUTS)
    for path in (REPO / "study").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and any(isinstance(t, ast.Name) and t.id.endswith("_FILE") for t in node.targets)
            ):
                names.add(node.value.value)
    return names


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring (a docstring reads no file)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def _core_sources() -> list[Path]:
    return sorted((REPO / "mtlmood").rglob("*.py"))


def test_the_study_owns_its_output_names() -> None:
    assert {"curves.csv", "study_config.yaml"} <= _study_owned_names()


def test_the_core_spells_no_study_output_file_name() -> None:
    owned = _study_owned_names()
    found = []
    for path in _core_sources():
        if path == REPO / "mtlmood" / "filenames.py":
            continue  # the shared names: checked below by who imports them
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            found += [f"{path.relative_to(REPO)}:{line} names {name}" for name in owned if name in text]
    assert found == []


def test_the_core_imports_only_the_shared_names_it_may_read() -> None:
    found = []
    for path in _core_sources():
        relative = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "mtlmood.filenames":
                for alias in node.names:
                    allowed = SHARED_STUDY_FILES.get(alias.name)
                    if allowed is not None and relative not in allowed:
                        found.append(f"{relative}:{node.lineno} imports {alias.name}")
    assert found == []
    for name, users in SHARED_STUDY_FILES.items():
        for relative, reason in users.items():
            assert reason.strip() and name in (REPO / relative).read_text(), f"{relative} no longer uses {name}"
