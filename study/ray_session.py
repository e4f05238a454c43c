"""Starting or joining Ray for a study, with the settings that keep studies from hanging."""

from __future__ import annotations

import os
import socket
from typing import Optional

API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # where Ray's State API client looks first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Join a cluster (``address="auto"`` or ``ray://...``) or start a local Ray.

    The dashboard stays ON: Train V2 frees the resources of a finished or stopped trial
    through the State API, which needs it; without it the next trial waits forever. A
    local Ray also tells every one of its processes where its own dashboard is: the State
    API otherwise looks for "the" Ray instance on the machine, and when there are two (a
    test run, another study) it fails, the resources are never freed and the study hangs.
    """
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=True, log_to_driver=False)
        return
    port = _free_port()
    api_server = f"http://127.0.0.1:{port}"
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=False,
        object_store_memory=200 * 1024 * 1024,
        runtime_env={"env_vars": {API_SERVER_ENV: api_server}},
    )
    os.environ[API_SERVER_ENV] = api_server  # this driver's own State API calls too
