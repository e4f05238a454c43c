"""A study's Ray session tells every worker where its dashboard is, workers of drivers that
join later included, whatever an earlier Ray of this process left in the environment.

Regression (2026-12-06, a random-order suite run): a module's Ray inherited the dashboard
address of an earlier module's Ray through the raylet's environment; the placement-group
cleaners of a joined `mtlmood study run --address` asked the dead dashboard forever
("Failed to query Ray Train Controller actor state") and the study hung.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray")

from study.ray_session import API_SERVER_ENV, init_ray  # noqa: E402

JOINED_DRIVER = """
import os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(ray.get(ray.remote(lambda: os.environ.get("{name}")).remote()))
"""


def test_a_joined_driver_s_workers_see_this_session_s_dashboard() -> None:
    os.environ[API_SERVER_ENV] = "http://127.0.0.1:9"  # left by an earlier Ray whose dashboard is gone
    init_ray(None, num_cpus=1)
    try:
        ours = os.environ[API_SERVER_ENV]
        assert ours != "http://127.0.0.1:9"
        address = ray.get_runtime_context().gcs_address
        env = {k: v for k, v in os.environ.items() if k != API_SERVER_ENV}  # a driver started elsewhere
        seen = subprocess.run(
            [sys.executable, "-c", JOINED_DRIVER.format(name=API_SERVER_ENV), address],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert seen.returncode == 0, seen.stderr[-2000:]
        assert seen.stdout.strip().splitlines()[-1] == ours
    finally:
        ray.shutdown()
