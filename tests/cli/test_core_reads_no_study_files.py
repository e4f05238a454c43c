"""The core library reads no file that the study writes: mtlmood/ spells none of the study's output
file names, and of the names the layers share (mtlmood.filenames) it uses only those it owns.

A study's evidence reaches mtlmood as data (a StudyRecord the study builds and hands over), never
as files mtlmood finds and parses. The one file of a study that the core reads, the checkpoint
pointer (best_checkpoint.json), is a format the core owns: mtlmood.checkpoint_pointer names it,
writes it and reads it, and the study writes it through that module, so no data flows upward
through a format only the study defines. Checked on the source with ``ast``, beside test_layering.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The study's outputs that the core once parsed, named whatever module of the study owns them now.
KNOWN_STUDY_OUTPUTS = frozenset({"curves.csv", "study_config.yaml", "study_evidence.json"})
# The checkpoint pointer: its name and format belong to the core, which alone spells them.
POINTER_NAME = "best_checkpoint.json"
POINTER_MODULE = "mtlmood/checkpoint_pointer.py"
# Calls that write a file: the study may not write the pointer through them.
FILE_WRITERS = frozenset({"write_json", "write_text", "write_bytes", "atomic_write_json", "atomic_write_text"})

# mtlmood.filenames constants that name files a study writes -> the mtlmood modules that may import
# them, and why. An entry needs a reason a reviewer can judge.
SHARED_STUDY_FILES: dict[str, dict[str, str]] = {
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


def _first_party_sources() -> list[Path]:
    return sorted(
        p for package in ("mtlmood", "study", "serve", "catalog", "mtlmood_cli") for p in (REPO / package).rglob("*.py")
    )


def test_only_the_core_pointer_module_spells_the_pointer_name() -> None:
    """mtlmood owns best_checkpoint.json: every other module (study's writer, serve's and the
    catalog's readers) names the file through mtlmood.checkpoint_pointer.BEST_CHECKPOINTS_FILE."""
    found = []
    for path in _first_party_sources():
        relative = path.relative_to(REPO).as_posix()
        if relative == POINTER_MODULE:
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            # Prose (a --help text, a message) may mention the file; a path or a name may not.
            if POINTER_NAME in text and not any(c.isspace() for c in text):
                found.append(f"{relative}:{line} spells {POINTER_NAME}")
    assert found == []
    assert f'BEST_CHECKPOINTS_FILE = "{POINTER_NAME}"' in (REPO / POINTER_MODULE).read_text()


def test_the_study_writes_the_pointer_through_the_core() -> None:
    """No study module writes the pointer with a file writer of its own (a call naming
    BEST_CHECKPOINTS_FILE); it calls mtlmood.checkpoint_pointer.write_pointer."""
    found, callers = [], []
    for path in sorted((REPO / "study").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func == "write_pointer":
                callers.append(relative)
            names = {n.id for arg in node.args for n in ast.walk(arg) if isinstance(n, ast.Name)}
            if func in FILE_WRITERS and "BEST_CHECKPOINTS_FILE" in names:
                found.append(f"{relative}:{node.lineno} writes the pointer with {func}")
    assert found == [] and callers, (found, callers)
