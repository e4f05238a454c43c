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
from typing import Collection, Iterator, Mapping, Optional, Sequence

import mtlmood

REPO = Path(__file__).resolve().parents[2]

# Top-level packages that the code of each package must never import. No installed package
# imports ``benchmarks`` (the load and fault tools of benchmarks/load included): it is not
# shipped (pyproject.toml packages), only run from the repository.
FORBIDDEN: dict[str, frozenset[str]] = {
    # The core library knows no layer above it, and no Ray.
    "mtlmood": frozenset({"study", "serve", "catalog", "mtlmood_cli", "ray", "benchmarks"}),
    # The Ray layers are used by the command line, never the other way round.
    "study": frozenset({"mtlmood_cli", "benchmarks"}),
    # serve stands on the core alone: it reads a study's results from files
    # (best_checkpoint.json), so a study's code never has to be installed next to a server.
    "serve": frozenset({"mtlmood_cli", "study", "benchmarks"}),
    # catalog (batch inference on Ray Data) stands on the core alone, like serve.
    "catalog": frozenset({"mtlmood_cli", "study", "serve", "benchmarks"}),
    # The command line sits on top of the shipped packages.
    "mtlmood_cli": frozenset({"benchmarks"}),
}

# Imports that break a rule above on purpose: (importing file, imported module) -> why.
# An entry needs a reason a reviewer can judge.
ALLOWED: dict[tuple[str, str], str] = {}


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the code of ``module``.

    ``from x import y`` yields ``x`` (y may be a function or a submodule, and x is imported
    either way); relative imports are resolved against ``module``'s package.
    """
    for line, name, _ in _imports(source, module, is_package):
        yield line, name


def _imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, names) of every import: the names of ``from x import a, b``, else ()."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, _from_module(node, package), tuple(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value, ()


def _from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of ``from <module> import ...`` (relative ones resolved against ``package``)."""
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


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
    names = sorted(name for _, name in imported_modules(source, "mtlmood.synth.x"))
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
            "mtlmood.synth",
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


def test_the_command_line_uses_no_benchmark_code() -> None:
    assert violations("mtlmood_cli") == []


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
    assert "mtlmood.train" in modules and "mtlmood.synth.worlds" in modules
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


# --- no import circles ------------------------------------------------------------------

# The packages whose modules form the graph: every first-party package with runtime code.
GRAPH_PACKAGES = ("mtlmood", "study", "serve", "catalog", "mtlmood_cli")
# Circles that exist on purpose or await their owner's fix: the modules of one circle -> why.
# Like ALLOWED, an entry needs a reason a reviewer can judge; a gone circle must leave.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def _known(name: str, modules: Collection[str]) -> Optional[str]:
    """The longest prefix of ``name`` that is a module of the graph (None: a third-party one)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_edges(source: str, module: str, is_package: bool, modules: Collection[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` (the code of ``module``) imports, at any depth.

    The same imports as ``imported_modules`` finds, resolved to the module that runs:
    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module (a submodule
    imported by name), else to ``pkg``; ``import a.b.c`` is an edge to ``a.b.c``.

    Package ``__init__`` files (decided here): an edge from a module to one of its own
    ancestor packages is dropped. Python runs ``p/__init__.py`` before any ``p.m`` whatever
    ``m`` says, so such an edge adds no order to the imports, and counting it would turn every
    ``__init__`` that imports its own submodules into false circles with them
    (``mtlmood/datasets/__init__.py`` imports its adapters to register them, and
    ``mtlmood.datasets.base.get_adapter`` imports the package to make sure they are). Edges
    between siblings, or to a package that is not an ancestor, count as usual; the implicit
    load of ``p/__init__.py`` when importing ``p.m`` is no edge either. A module importing
    itself (``from . import x`` in an ``__init__``, x not a submodule) is no edge.
    """
    targets: set[Optional[str]] = set()
    for _, name, names in _imports(source, module, is_package):
        submodules = [f"{name}.{n}" for n in names if f"{name}.{n}" in modules]
        # `from pkg import f, sub`: pkg (for f) and pkg.sub; `from pkg import sub`: pkg.sub only.
        targets.update(submodules)
        if len(submodules) < len(names) or not names:
            targets.add(_known(name, modules))
    return {t for t in targets if t is not None and t != module and not module.startswith(f"{t}.")}


def module_graph(packages: Sequence[str] = GRAPH_PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules it imports, over every source file of ``packages``."""
    files = {}
    for package in packages:
        for path in source_files(package):
            name, is_package = module_name(path)
            files[name] = (path, is_package)
    return {
        name: import_edges(path.read_text(encoding="utf-8"), name, is_package, files)
        for name, (path, is_package) in files.items()
    }


def import_cycles(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (a circle), each sorted,
    plus one concrete circle through its first module to show in a message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs here are a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def _a_circle(graph: Mapping[str, Collection[str]], component: list[str]) -> list[str]:
    """One path a -> ... -> a inside ``component`` (breadth-first from its first module)."""
    members, start = set(component), component[0]
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if succ in members and succ not in previous:
                previous[succ] = node
                queue.append(succ)
    return component


def test_the_cycle_finder_sees_a_circle_and_the_graph_resolves_submodules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert _a_circle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    modules = {"p", "p.m", "p.n", "p.sub", "p.sub.x", "q", "q.k", "q.n"}
    source = "from p import m, helper\nfrom . import n\nimport p.sub.x.attr\nimport os\nfrom p.sub import x\n"
    assert import_edges(source, "q.k", False, modules) == {"p", "p.m", "q.n", "p.sub.x"}
    # An __init__ importing its submodules, and a submodule importing a sibling by name: no circle.
    assert import_edges("from p import m\nfrom . import n\n", "p", True, modules) == {"p.m", "p.n"}
    assert import_edges("from p import n\n", "p.m", False, modules) == {"p.n"}
    # Its own package's __init__ is loaded first anyway: no edge (see import_edges); another package's is one.
    assert import_edges("from p import helper\nimport p\n", "p.sub.x", False, modules) == set()
    assert import_edges("from p.sub import helper\n", "p.m", False, modules) == {"p.sub"}


def test_no_import_circles() -> None:
    """No module of the first-party packages imports itself through others, at any depth
    (an import inside a function, made to break a circle at run time, still counts)."""
    graph = module_graph()
    assert "mtlmood_cli.main" in graph and "serve.build" in graph
    circles = [
        " -> ".join(_a_circle(graph, c)) + f"  (all of: {', '.join(c)})"
        for c in import_cycles(graph)
        if frozenset(c) not in KNOWN_CIRCLES
    ]
    assert circles == [], "import circles:\n" + "\n".join(circles)


def test_every_known_circle_is_still_one() -> None:
    """A circle listed as known that is gone must leave KNOWN_CIRCLES, or it would hide a new one."""
    found = {frozenset(c) for c in import_cycles(module_graph())}
    for members, reason in KNOWN_CIRCLES.items():
        assert reason.strip(), f"{sorted(members)} needs a reason"
        assert members in found, f"KNOWN_CIRCLES lists {sorted(members)}, which is no circle any more: remove it"
