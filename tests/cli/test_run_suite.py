"""`make test`'s two sessions (tests/run_suite.py): one exit status for both, and the niced
session really runs at the lowest priority. The suite itself is what `make test` runs."""

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
