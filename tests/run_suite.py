"""`make test`: the whole suite as two pytest sessions at once on one machine.

The tests that start Ray (marked ``ray`` by tests/conftest.py) run in the foreground, one Ray
at a time, as before; every other test runs beside them in a second session at the lowest
CPU priority (nice 19). The Ray tests leave part of the cores idle while Ray starts processes,
replicas and trials; the niced session takes those cycles, and Ray's workers run at nice 0
here (see ``ray_tests_environment``), so it takes little CPU from the Ray tests and the soak
and replica-kill tests keep their latencies. The whole suite on 2 cores (2026-12-06, the
same commit): 946 s as one session, 788 s as these two (with Ray's workers at nice 15).

Both sessions get one pytest-randomly seed (printed by each; replay with
``PYTEST_ARGS=--randomly-seed=<seed>``) and the same arguments (``make test PYTEST_ARGS=...``:
paths, ``-k``, ``-x``; not ``-m``, which picks the sessions). The niced session's output
follows the foreground's. Exit status: the first failing session's; 5 (no tests collected)
only when neither session collected a test.

Usage: ``python tests/run_suite.py [pytest arguments]``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

NO_TESTS = 5  # pytest's exit status when a session collected nothing


def session_status(foreground: int, background: int) -> int:
    """One exit status for the two sessions: a failure wins; "no tests" only if both had none."""
    for status in (foreground, background):
        if status not in (0, NO_TESTS):
            return status
    return NO_TESTS if foreground == background == NO_TESTS else 0


def main(argv: list[str]) -> int:
    """Run the Ray tests in the foreground and the rest niced beside them; returns the exit status."""
    args = list(argv)
    if not any(arg.startswith("--randomly-seed") for arg in args):
        args.append(f"--randomly-seed={random.randrange(2**32)}")
    pytest = [sys.executable, "-m", "pytest", "-q", *args]
    # Its own cache folder: two sessions writing one lastfailed file at once could garble it.
    beside = [*pytest, "-m", "not ray", "-o", "cache_dir=.pytest_cache/not-ray"]
    print("run_suite: the tests that start Ray run here; the others beside them (nice 19), output after", flush=True)
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        background = subprocess.Popen(
            beside, stdout=log, stderr=subprocess.STDOUT, cwd=repo, preexec_fn=lowest_priority
        )
        try:
            foreground = subprocess.call([*pytest, "-m", "ray"], cwd=repo, env=ray_tests_environment(os.environ))
            background_status = background.wait()
        except KeyboardInterrupt:
            background.terminate()
            background.wait(timeout=60)
            raise
        log.seek(0)
        print("\nrun_suite: the tests that start no Ray (run beside the others):", flush=True)
        sys.stdout.write(log.read())
    status = session_status(foreground, background_status)
    print(f"run_suite: Ray tests exit {foreground}, the others exit {background_status} -> {status}", flush=True)
    return status


def ray_tests_environment(environ: "os._Environ[str] | dict[str, str]") -> dict[str, str]:
    """The foreground's environment: Ray's workers at the normal CPU priority.

    Ray starts its workers (trials, Serve replicas) at nice 15 (``RAY_worker_niceness``) so that
    its own daemons stay responsive; beside a session at nice 19 that left them only about 70 %
    of a contended core (CPU weights 36 : 15), and the Ray tests ran 5-10 % slower than alone. At
    nice 0 they outrank the niced session about 68 : 1. A value the caller set is kept."""
    return {**environ, "RAY_worker_niceness": environ.get("RAY_worker_niceness", "0")}


def lowest_priority() -> None:
    """Run this process (a child, before it execs) at the lowest CPU priority."""
    os.nice(19)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
