"""Failures of a real tiny alpha study on a local Ray: a training worker killed mid-trial
resumes from its checkpoint, and a deterministic failure stops the study at once. (The whole
study as a user runs it, killed and resumed, is test_study_s3.py.)

The module runs on the study modules' shared Ray (helpers.shared_ray: dashboard on, as Train
V2 frees the resources of trials that ASHA stops through the State API, which needs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from helpers import shared_ray  # noqa: E402
from helpers.study_data import make_study_data, prepare_study_features, small_overrides, study_run_command  # noqa: E402
from study.config import load_study_config  # noqa: E402
from study.runner import run_study  # noqa: E402

pytestmark = pytest.mark.slow
SHARED_RAY = "study"  # the Ray of the study modules before and after it (helpers.shared_ray)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("study")
    data_dir = root / "data"
    make_study_data(data_dir, seed=3)
    study = load_study_config("synthetic", small_overrides(data_dir, root / "studies", "probe"))
    prepare_study_features(study)
    shared_ray.shared(SHARED_RAY, shared_ray.start_study_ray)
    return {"root": root, "data": data_dir, "storage": root / "studies"}


def test_a_deterministic_failure_stops_the_study_at_once_with_one_line(env, tmp_path) -> None:
    """Features never prepared: every trial would fail the same way, so none is retried; the
    study stops with one line naming the cause and the trial, the traceback in its log."""
    data = make_study_data(tmp_path / "unprepared", seed=4)
    # One trial at a time: the first one's failure must stop the study before the others start
    # (two at once cost a second trial's ~20 CPU-seconds of Ray Train start-up for nothing).
    overrides = small_overrides(data, tmp_path / "studies", "no-features") + ["resources.max_concurrent_trials=1"]
    started = time.monotonic()
    done = subprocess.run(
        study_run_command(overrides),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("mtlmood")]
    assert len(errors) == 1 and "CacheError" in errors[0] and "not retried" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 120
    logs = list((tmp_path / "studies" / "no-features" / "logs").glob("*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()  # the trials after the first never started


def test_killed_training_worker_resumes_from_its_checkpoint(env) -> None:
    overrides = small_overrides(env["data"], env["storage"], "worker-kill") + [
        "run.train.max_epochs=5",
        "run.train.patience=5",
        "run.train.max_batches_per_epoch=12",
        "search.trials_per_cell=1",
        "curve.enabled=false",
        "scheduler.enabled=false",
        "report.reference=false",
    ]
    study = load_study_config("synthetic", overrides)
    train_dir = env["storage"] / "worker-kill" / "train"
    killed: list[int] = []

    def kill_a_worker_after_first_checkpoint() -> None:
        from ray.util.state import list_actors

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not killed:
            if list(train_dir.glob("*/checkpoint_*")):
                alive = list_actors(
                    address=ray.get_runtime_context().gcs_address,
                    filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
                )
                for actor in alive:
                    if actor.pid:
                        os.kill(actor.pid, signal.SIGKILL)
                        killed.append(actor.pid)
                        return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    outcome = run_study(study)
    killer.join(timeout=5)
    assert killed, "no training worker was killed (the test did not exercise the failure path)"

    trials = outcome.trials
    assert len(trials) == 1 and trials["status"].eq("TERMINATED").all() and not trials["asha_stopped"].any()
    assert trials["test_pr_auc"].notna().all() and int(trials["epochs"].iloc[0]) == 5  # no hole in the table
    # The epochs reported to Tune never restart from 1: the new worker resumed from the checkpoint.
    results = next((env["storage"] / "worker-kill" / "search").glob("*/result.json")).read_text().splitlines()
    reports = [json.loads(line) for line in results if line.strip()]
    training_epochs = [r["epoch"] for r in reports if not r.get("final")]  # the last report is the final one
    assert training_epochs == sorted(set(training_epochs)) and training_epochs[-1] == 5
    assert len(list(train_dir.glob("*"))) == 1
