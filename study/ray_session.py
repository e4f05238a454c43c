"""Starting or joining Ray for a study, with the settings that keep studies from hanging."""

from __future__ import annotations

import os
from typing import Optional


def init_ray(address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
    """Join a cluster (``address="auto"`` or ``ray://...``) or start a local Ray.

    The dashboard stays ON: Train V2 frees the resources of a trial stopped early by
    ASHA through the State API, which needs it; without it the next trial waits forever.
    """
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=True, log_to_driver=False)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=True, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
