"""Starting or joining Ray for a study, with the settings that keep studies from hanging."""

from __future__ import annotations

import os
import socket
from typing import Optional

API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # where Ray's State API client looks first
# Ray Train V2's controller collects what workers report on every health check, every 2 s by
# default, and a worker waits for it: with short epochs (the demo: ~1 s) that wait was most
# of a trial (16 reports: 50 s vs 18 s at 0.2 s, measured). Polling more often costs little.
POLL_ENV, POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None, num_gpus: Optional[int] = None) -> None:
    """Join a cluster (``address="auto"`` or ``ray://...``) or start a local Ray.

    ``num_cpus`` / ``num_gpus``: what a local Ray offers (default: what the machine has). A
    local Ray may offer GPUs the machine lacks (``num_gpus=1`` without CUDA): Ray schedules
    them like real ones and the trials' workers train on the CPU (study.trial.worker_device),
    which is how the packing of trials on a GPU is tested and dry-run without one.

    The dashboard stays ON: Train V2 frees the resources of a finished or stopped trial
    through the State API, which needs it; without it the next trial waits forever. A
    local Ray also tells every one of its processes where its own dashboard is: the State
    API otherwise looks for "the" Ray instance on the machine, and when there are two (a
    test run, another study) it fails, the resources are never freed and the study hangs.

    The job's workers also get this process's object store settings (``AWS_ENDPOINT_URL``,
    the region: ``mtlmood.storage.storage_env``), so that they write a study's
    ``s3://`` storage where the driver reads it. Credentials are not passed on: every
    node has its own (an instance profile, or its environment).
    """
    import ray

    from mtlmood.storage import storage_env

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if ray.is_initialized():
        return
    poll = {**storage_env(), POLL_ENV: os.environ.get(POLL_ENV, POLL_S)}
    if address:
        ray.init(address=address, include_dashboard=True, log_to_driver=False, runtime_env={"env_vars": poll})
        return
    port = _free_port()
    api_server = f"http://127.0.0.1:{port}"
    # Set before ray.init: the raylet inherits this process's environment and hands it to every
    # worker, those of other drivers that join later (`mtlmood study run --address`) included.
    # Set after, the raylet kept whatever an earlier Ray of this process had left there, and the
    # joined driver's placement-group cleaners asked a dead dashboard forever: the study hung
    # (seen in a random-order suite run, 2026-12-06).
    os.environ[API_SERVER_ENV] = api_server
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        runtime_env={"env_vars": {API_SERVER_ENV: api_server, **poll}},
    )
