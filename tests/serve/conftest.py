"""Fixtures of the Serve endpoint tests. A module that asks for ``server`` declares
``SHARED_RAY = "serve"`` and gets the one Ray + Serve with the shared apps (helpers.serve_apps)
of all such modules (helpers.shared_ray: they run one after another; a Ray + Serve with its
apps costs ~25 s to start). Apps a test adds or breaks are its own and removed again, so no
module depends on what another did."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers import shared_ray
from helpers.serve_apps import deploy_shared_apps, serve_checkpoints
from helpers.serve_http import free_port


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ``small`` (8 filters) and ``wide`` (128) untrained checkpoints the shared apps serve."""
    return serve_checkpoints(tmp_path_factory.mktemp("serve-ckpt"))


@pytest.fixture(scope="module")
def predictor(checkpoints: dict[str, Path]) -> Any:
    """The library's Predictor of the ``small`` checkpoint: what every answer must equal."""
    from mtlmood.inference import Predictor

    return Predictor.from_checkpoint(checkpoints["small"])


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path]) -> dict[str, str]:
    """Base URLs of the `main`, `one` and `tight` apps on the shared Ray (2 CPUs) + Serve."""
    pytest.importorskip("ray")

    def start() -> dict[str, str]:
        import ray
        from ray import serve

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        port = free_port()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
        # Stopped by helpers.shared_ray with ray.shutdown(), which ends Serve's actors with the
        # cluster: no graceful drain of replicas first (serve.shutdown() cost 3-7 s).
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        return deploy_shared_apps(checkpoints, port)

    return shared_ray.shared("serve", start)
