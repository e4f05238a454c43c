"""One Ray shared by the test modules that need nothing of their own from it.

Starting a local Ray and stopping it costs ~5 s of the suite per module, and a Ray + Serve with
the shared apps ~25 s. A module that declares ``SHARED_RAY = "<kind>"`` gets its Ray from
:func:`shared`: the one left by the module before it when that was of the same kind, else a
new one. tests/conftest.py runs the modules of one kind one after another (the random order
holds within them and between the groups), stops a shared Ray before any other module that
starts Ray (so a module's own Ray never finds another one up), and stops it at the end.

A shared Ray is reused only when as many CPUs are free as right after it started (else a fresh
one replaces it): what one module leaks cannot starve the next.

Kinds: ``"study"`` (``init_ray(None, num_cpus=2)``: 2 CPUs, the dashboard on, as studies need
it) and ``"serve"`` (Ray, Serve and the shared apps of helpers.serve_apps).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

from study.ray_session import API_SERVER_ENV

KIND_ATTRIBUTE = "SHARED_RAY"
_ENV = (API_SERVER_ENV,)  # what a study's Ray puts in this process's environment

_kind: Optional[str] = None
_value: Any = None
_environment: dict[str, str] = {}
_free_at_start = 0.0  # CPUs free once the shared Ray (and its shared apps) had started


def shared(kind: str, start: Callable[[], Any]) -> Any:
    """What ``start()`` returned when it started the running shared Ray of ``kind``; if the running
    Ray is of another kind, or none runs, stop it and call ``start()`` (which starts Ray)."""
    global _kind, _value, _environment, _free_at_start
    import ray

    if _kind == kind and ray.is_initialized() and _cpus_free_as_at_start():
        os.environ.update(_environment)  # taken back at the end of the module before
        return _value
    release()
    _value = start()
    _kind, _free_at_start = kind, _free_cpus()
    _environment = {name: os.environ[name] for name in _ENV if name in os.environ}
    return _value


def _free_cpus() -> float:
    import ray

    return float(ray.available_resources().get("CPU", 0.0))


def _cpus_free_as_at_start(wait_s: float = 10.0) -> bool:
    """Whether the running Ray has as many CPUs free as when it had started (the shared apps of
    the serve kind hold theirs), waiting up to ``wait_s`` for what the module before released:
    a module must not inherit resources another one left held.
    Seen 2026-12-06: a study stopped by a deterministic failure, run by a CLI driver that
    joined this Ray, left its Train worker's placement group (0.9 CPU) behind after its driver
    exited, and a later 2-worker trial waited for that CPU forever."""
    deadline = time.monotonic() + wait_s
    while True:
        free = _free_cpus()
        if free >= _free_at_start - 1e-6:
            return True
        if time.monotonic() > deadline:
            print(f"helpers.shared_ray: {_free_at_start - free:g} CPUs still held; a fresh Ray replaces it", flush=True)
            return False
        time.sleep(0.25)


def release() -> None:
    """Stop the shared Ray, if one runs (a module that starts its own Ray needs the machine's)."""
    global _kind, _value, _environment
    if _kind is None:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _kind, _value, _environment = None, None, {}


def start_study_ray() -> None:
    """The study kind: a local Ray of 2 CPUs, as a study starts it (the dashboard on)."""
    from study.ray_session import init_ray

    init_ray(None, num_cpus=2)
