"""The scoring actor pool's bounds (catalog.pipeline.pool_bounds), without Ray: GPU actors on a
cluster are not capped at the GPUs present when the job starts (an autoscaling cluster has 0)."""

from __future__ import annotations

from catalog.pipeline import pool_bounds


def test_gpu_actors_on_a_cluster_grow_with_it() -> None:
    assert pool_bounds(True, gpus=0, cpus=8, cluster=True) == (1, None)  # scaled to 0: not max(1, 0) = 1
    assert pool_bounds(True, gpus=4, cpus=64, min_actors=2, cluster=True) == (2, None)
    assert pool_bounds(True, gpus=0, cpus=8, max_actors=6, cluster=True) == (1, 6)  # --actors caps it


def test_a_local_ray_has_what_it_has() -> None:
    assert pool_bounds(True, gpus=2, cpus=16) == (1, 2)
    assert pool_bounds(False, gpus=0, cpus=8) == (1, 4)  # half the CPUs: decoding needs the rest
    assert pool_bounds(False, gpus=0, cpus=2, min_actors=3) == (3, 3)
    assert pool_bounds(False, gpus=0, cpus=8, min_actors=5, max_actors=2) == (2, 2)
