"""The Serve applications of the endpoint tests: the small checkpoints they serve, the three
shared apps one Ray + Serve runs per test module (``shared_apps``), and an app a test deploys
for itself (``own_app``) and removes again.

``main`` (normal limits, split topology: ingress -> model replicas), ``one`` (combined
topology, as on a CPU node: one replica decodes and scores) and ``tight`` (a paper-width model
behind a queue of one, to force 503s), each behind one router replica.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mtlmood.synth.checkpoints import untrained_checkpoint

MOODS = ["happy", "sad", "energetic", "calm", "dark"]
MAIN_BODY_LIMIT = 4 * 1024 * 1024  # above the largest real clip (2.8 MB wav)
TIGHT_BODY_LIMIT = 256 * 1024  # fits the 6 s mono clip of the overload test (192 KB)


def serve_checkpoints(root: Path) -> dict[str, Path]:
    """Two untrained checkpoints of MOODS (3 artists, alpha 5/3) under ``root``: ``small``
    (8 filters) and ``wide``."""
    return {
        "small": untrained_checkpoint(root / "small", n_filters=8, moods=MOODS),
        # Paper width (128 filters): slow enough per request on one thread to fill a tiny queue.
        "wide": untrained_checkpoint(root / "wide", n_filters=128, moods=MOODS),
    }


def one_router(max_ongoing_requests: int = 0) -> Any:
    """One router replica (0 CPU): the shared apps need no second one, and each costs a process.
    ``max_ongoing_requests`` (0 = the default) must cover the ingress queues behind it."""
    from serve.config import RouterSettings

    if max_ongoing_requests:
        return RouterSettings(min_replicas=1, max_replicas=1, max_ongoing_requests=max_ongoing_requests)
    return RouterSettings(min_replicas=1, max_replicas=1)


def small_app_config(checkpoint: Path, topology: str, cpus: float = 0.1, model_timeout_s: float = 20.0) -> Any:
    """A one-replica app on ``cpus`` + ``cpus`` CPU (0.1 by default): fits beside the shared apps
    in the test's 2 CPUs."""
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, ServeConfig

    return ServeConfig(
        router=one_router(),
        checkpoint=str(checkpoint),
        max_body_bytes=MAIN_BODY_LIMIT,
        top_k=3,
        model_timeout_s=model_timeout_s,
        topology=topology,
        batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
        ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=cpus),
        model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=cpus, num_gpus=0),
    )


@contextmanager
def own_app(server: dict[str, str], name: str, config: Any) -> Iterator[str]:
    """An app of the test's own at ``/<name>``, deleted afterwards: what it breaks, no other test sees."""
    from ray import serve

    from serve.app import build_app

    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    try:
        yield f"{server['main']}/{name}"
    finally:
        serve.delete(name)


def deploy_shared_apps(checkpoints: dict[str, Path], port: int) -> dict[str, str]:
    """Deploy the `main`, `one` and `tight` apps on the running Serve (HTTP on loopback
    ``port``, Ray with 2 CPUs); returns their base URLs."""
    from ray import serve

    from serve.app import build_app
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, ServeConfig

    # Fractional CPUs: the three apps (5 replicas, 1.7 CPUs; routers take none) plus the apps a
    # test deploys for itself (0.2 CPUs: the CLI test; three apps at 0.05 CPU a replica, 0.25
    # CPUs: the replica-kill test) fit in 2 CPUs.
    main = ServeConfig(
        router=one_router(),
        checkpoint=str(checkpoints["small"]),
        max_body_bytes=MAIN_BODY_LIMIT,
        top_k=3,
        model_timeout_s=20.0,
        topology="split",
        batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
        ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.4),
        model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.4, num_gpus=0),
    )
    # topology left at auto: no GPUs here, so one combined deployment (0.2 + 0.2 CPU).
    one = ServeConfig(
        router=one_router(),
        checkpoint=str(checkpoints["small"]),
        max_body_bytes=MAIN_BODY_LIMIT,
        top_k=3,
        model_timeout_s=20.0,
        batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
        ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.2),
        model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.2, num_gpus=0),
    )
    tight = ServeConfig(
        router=one_router(max_ongoing_requests=128),  # the ingress holds 100 + 16 queued
        checkpoint=str(checkpoints["wide"]),
        max_body_bytes=TIGHT_BODY_LIMIT,
        model_timeout_s=20.0,
        topology="split",
        batching=BatchingConfig(max_batch_size=1, batch_wait_timeout_s=0.0),
        ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.25, max_ongoing_requests=100),
        model=ModelSettings(
            min_replicas=1, max_replicas=1, num_cpus=0.25, num_gpus=0, max_ongoing_requests=1, max_queued_requests=1
        ),
    )
    serve.run(build_app(main), name="main", route_prefix="/")
    serve.run(build_app(tight), name="tight", route_prefix="/tight")
    serve.run(build_app(one), name="one", route_prefix="/one")
    return {
        "main": f"http://127.0.0.1:{port}",
        "tight": f"http://127.0.0.1:{port}/tight",
        "one": f"http://127.0.0.1:{port}/one",
    }
