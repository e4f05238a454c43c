"""`make test`'s two sessions (tests/run_suite.py): one exit status for both, and the niced
session really runs at the lowest priority, Ray's workers of the other at the normal one. The
suite itself is what `make test` runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import run_suite


@pytest.mark.parametrize(
    ("foreground", "background", "expected"),
    [(0, 0, 0), (1, 0, 1), (0, 1, 1), (2, 1, 2), (0, 5, 0), (5, 0, 0), (5, 5, 5), (5, 1, 1), (1, 5, 1)],
)
def test_a_failure_in_either_session_fails_the_suite(foreground: int, background: int, expected: int) -> None:
    assert run_suite.session_status(foreground, background) == expected


def test_the_session_beside_runs_niced() -> None:
    probe = "import os; print(os.nice(0))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, preexec_fn=run_suite.lowest_priority
    )
    assert int(done.stdout) == min(19, os.nice(0) + 19)


def test_the_ray_tests_start_their_workers_at_normal_priority_unless_told_otherwise() -> None:
    # Ray's default (nice 15) is barely above the niced session's 19: see run_suite's docstring.
    assert run_suite.ray_tests_environment({"PATH": "/bin"}) == {"PATH": "/bin", "RAY_worker_niceness": "0"}
    assert run_suite.ray_tests_environment({"RAY_worker_niceness": "5"})["RAY_worker_niceness"] == "5"
