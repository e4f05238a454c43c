"""Shared fixtures. Real data is found through one setting, MTLMOOD_SHARED_DATA
(default ../shared/data beside the repository); tests that need it skip with a
clear reason when it is absent (a user's fresh clone has no ../shared)."""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from helpers import shared_ray
from study.ray_session import API_SERVER_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTLMOOD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local test clusters need no token
# Two Ray Train helpers no test uses, ~1.2 CPU-s a trial together (4-trial study: 78.6 -> 73.8
# CPU-s, 2026-12-06): the watcher of node drains (an actor per trial; no test drains a node,
# the node-loss tests kill one) and Train's Prometheus metrics. Studies outside the tests keep both.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set MTLMOOD_SHARED_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (MTG-Jamendo, MagnaTagATune metadata, CC audio clips)."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def real_audio_dir() -> Path:
    """Real CC-licensed music clips (ogg, mp3, flac, wav)."""
    return _require(SHARED_DATA / "audio")


@pytest.fixture(scope="session")
def mtg_jamendo_dir() -> Path:
    return _require(SHARED_DATA / "mtg-jamendo")


@pytest.fixture(scope="session")
def magnatagatune_dir() -> Path:
    return _require(SHARED_DATA / "magnatagatune")


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trained multi-task checkpoint (8 filters, 48 x 32 input, 3 moods, 6 artists, alpha
    auto, 2 epochs of `mtlmood train` on helpers.train_cli's synthetic set), trained once per
    session, for tests that need trained weights (real BatchNorm statistics, a metadata head) but
    are not about training. Shared: copy it before writing into it."""
    from helpers.train_cli import train_small_model

    return train_small_model(tmp_path_factory.mktemp("trained"))


# ------------------------------------------------------------------ test tiers
# `make test-fast` runs `-m "not ray and not slow"`. A test is marked `ray` automatically when its
# own code or any fixture it uses (fixtures of fixtures included) names one of these ways of
# starting Ray; `_ray_guard` below then fails any unmarked test that started a Ray session of this
# process anyway, so the fast tier cannot silently grow a Ray start.
RAY_STARTS = (
    "ray.init(",
    "init_ray(",
    "serve.start(",
    "serve.run(",
    "run_study(",
    '"study", "run"',
    '"--ray"',
    "RayCluster",
    "LocalCluster(",
    "shared_ray.shared(",
)


def _source(function: object) -> str:
    try:
        return inspect.getsource(function)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _starts_ray(item: pytest.Item) -> bool:
    sources = [_source(getattr(item, "obj", None))]
    fixture_info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for definition in fixture_info.name2fixturedefs.get(name, ()) if fixture_info else ():
            sources.append(_source(definition.func))
    return any(start in source for source in sources for start in RAY_STARTS)


RAY_MODULES: set[str] = set()  # modules with a test that starts Ray (filled at collection)


def _run_group(item: pytest.Item) -> str:
    """The shared kind of Ray the item's module declares (helpers.shared_ray), else its own file."""
    module = getattr(item, "module", None)
    kind = getattr(module, shared_ray.KIND_ATTRIBUTE, None) if module is not None else None
    return kind or item.path.as_posix()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts Ray (see RAY_STARTS) with ``ray``, and the statistical
    simulations (files ``test_*_simulation.py``: hundreds of simulated studies each) ``slow``.

    Then run the modules that share one kind of Ray (helpers.shared_ray) one after another,
    where the first of them fell in pytest-randomly's order: a stable sort, so the random
    order still holds within the group and between everything else."""
    for item in items:
        if _starts_ray(item):
            item.add_marker(pytest.mark.ray)
            RAY_MODULES.add(item.path.as_posix())
        if item.path.name.endswith("_simulation.py"):
            item.add_marker(pytest.mark.slow)
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(_run_group(item), index)
    items.sort(key=lambda item: first[_run_group(item)])


def _ray_sessions_of_this_process() -> set[str]:
    # Ray names each session directory after the driver's pid: session_<date>_<time>_<usec>_<pid>.
    root = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"
    return {path.name for path in root.glob(f"session_*_{os.getpid()}")} if root.is_dir() else set()


@pytest.fixture(autouse=True)
def _ray_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """An unmarked test that starts Ray fails: it would slow the fast tier down unnoticed."""
    if request.node.get_closest_marker("ray") is not None:
        yield
        return
    before = _ray_sessions_of_this_process()
    yield
    started = _ray_sessions_of_this_process() - before
    if started:
        pytest.fail(
            f"this test started a Ray session ({sorted(started)}) but is not marked `ray`: "
            f"start Ray in a way tests/conftest.py's RAY_STARTS names, or add it there"
        )


@pytest.fixture(autouse=True, scope="session")
def _shared_ray_stops_at_the_end() -> Iterator[None]:
    yield
    shared_ray.release()


@pytest.fixture(autouse=True, scope="module")
def _ray_environment_of_the_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each module's Ray is its own, or the shared one of its kind (helpers.shared_ray): a module
    that starts a Ray of its own first stops a shared one left running by the module before it.
    What a study's Ray session put in this process's environment (its dashboard's address) is
    taken back when the module ends, so that a later module's Ray does not inherit the address
    of a dashboard that no longer runs."""
    if request.path.as_posix() in RAY_MODULES and getattr(request.module, shared_ray.KIND_ATTRIBUTE, None) is None:
        shared_ray.release()
    saved = {name: os.environ.get(name) for name in (API_SERVER_ENV,)}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The random order's seed, also under -q (which hides pytest-randomly's header): a failure
    that depends on the order is replayed with ``--randomly-seed=<seed>``."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None:
        terminalreporter.write_line(f"test order: pytest-randomly seed {seed} (replay with --randomly-seed={seed})")
