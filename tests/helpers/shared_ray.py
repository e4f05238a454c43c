"""One Ray shared by the test modules that need nothing of their own from it.

Starting a local Ray and stopping it costs ~5 s of the suite per module, and a Ray + Serve with
the shared apps ~25 s. A module that declares ``SHARED_RAY = "<kind>"`` gets its Ray from
:func:`shared`: the one left by the module before it when that was of the same kind, else a
new one. tests/conftest.py runs the modules of one kind one after another (the random order
holds within them and between the groups), stops a shared Ray before any other module that
starts Ray (so a module's own Ray never finds another one up), and stops it at the end.

Kinds: ``"study"`` (``init_ray(None, num_cpus=2)``: 2 CPUs, the dashboard on, as studies need
it) and ``"serve"`` (Ray, Serve and the shared apps of helpers.serve_apps).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

KIND_ATTRIBUTE = "SHARED_RAY"
_ENV = ("RAY_API_SERVER_ADDRESS",)  # what a study's Ray puts in this process's environment

_kind: Optional[str] = None
_value: Any = None
_environment: dict[str, str] = {}


def shared(kind: str, start: Callable[[], Any]) -> Any:
    """What ``start()`` returned when it started the running shared Ray of ``kind``; if the running
    Ray is of another kind, or none runs, stop it and call ``start()`` (which starts Ray)."""
    global _kind, _value, _environment
    import ray

    if _kind == kind and ray.is_initialized():
        os.environ.update(_environment)  # taken back at the end of the module before
        return _value
    release()
    _value = start()
    _kind = kind
    _environment = {name: os.environ[name] for name in _ENV if name in os.environ}
    return _value


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
