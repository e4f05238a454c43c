"""Fixtures of the Serve endpoint tests. Module-scoped: a module that asks for ``server``
starts one Ray + Serve with the shared apps (helpers.serve_apps) for all its tests, and
stops it when its last test is done, so no module depends on another's Ray."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers.serve_apps import deploy_shared_apps, serve_checkpoints
from helpers.serve_http import free_port


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ``small`` (8 filters) and ``wide`` (128) untrained checkpoints the shared apps serve."""
    return serve_checkpoints(tmp_path_factory.mktemp("serve-ckpt"))


@pytest.fixture(scope="module")
def predictor(checkpoints: dict[str, Path]) -> Any:
    """The library's Predictor of the ``small`` checkpoint: what every answer must equal."""
    from mtlmood.inference import Predictor

    return Predictor.from_checkpoint(checkpoints["small"])


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path]) -> Iterator[dict[str, str]]:
    """Base URLs of the `main`, `one` and `tight` apps on a Ray (2 CPUs) of this module's own."""
    ray = pytest.importorskip("ray")
    from ray import serve

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield deploy_shared_apps(checkpoints, port)
    finally:
        # Ray's shutdown ends the whole local cluster, Serve's actors with it: no graceful drain of
        # replicas first (serve.shutdown() cost 3-7 s per module). Ray 2.60 drops a Serve client
        # cached from an earlier driver session by itself.
        ray.shutdown()
