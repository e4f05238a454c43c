"""A real tiny alpha study on a local Ray: per-cell Optuna + ASHA search, the alpha curve over
fresh seeds, table, report, resume after the driver is killed, a training worker killed
mid-trial, and a deterministic failure that stops the study at once.

Ray starts once for the module (dashboard on: Train V2 frees the resources of trials
that ASHA stops through the State API, which needs it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from helpers.optuna_studies import assert_optuna_studies  # noqa: E402
from helpers.study_data import make_study_data, prepare_study_features, small_overrides, study_run_command  # noqa: E402
from mtlmood.inference import Predictor  # noqa: E402
from study.config import load_study_config  # noqa: E402
from study.optuna_urls import default_storage_url  # noqa: E402
from study.ray_session import init_ray  # noqa: E402
from study.results import COLUMNS  # noqa: E402
from study.runner import run_study  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("study")
    data_dir = root / "data"
    make_study_data(data_dir, seed=3)
    study = load_study_config("synthetic", small_overrides(data_dir, root / "studies", "probe"))
    prepare_study_features(study)
    init_ray(None, num_cpus=2)
    yield {"root": root, "data": data_dir, "storage": root / "studies"}
    ray.shutdown()


def _finished_trials(train_dir: Path) -> int:
    """Trials whose final (tested) checkpoint Ray Train has written to storage."""
    return len(list(train_dir.glob("search-*/checkpoint_*/test_predictions.npz")))


def _finished_search_runs(run_dir: Path) -> set[str]:
    """Search trials whose run wrote its result (model, predictions, result.json)."""
    return {p.parent.parent.name for p in run_dir.glob("runs/search/*/*/seed-*/result.json")}


def test_interrupted_study_resumes_to_the_full_table_report_and_best_checkpoint(env) -> None:
    """The README's `mtlmood study run synthetic` with relative paths, typed in another working
    directory; its driver is killed after the first finished search trial and the study resumed.
    Then the whole output: the same rows as an uninterrupted run, nothing twice, fresh curve seeds."""
    overrides = small_overrides("data", "studies", "interrupted")  # relative to the root, not to the repo
    command = study_run_command(overrides)
    environ = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    proc = subprocess.Popen(
        command, cwd=env["root"], env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    run_dir = env["storage"] / "interrupted"
    deadline = time.monotonic() + 240
    try:
        while not _finished_search_runs(run_dir):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the study finished no trial in time"
            time.sleep(0.5)
        time.sleep(1.5)  # let Tune write its experiment state (every second here) with that trial
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-study, as with a lost head node
        proc.wait(timeout=30)
    assert not (run_dir / "search" / "phase_done.json").exists(), "the search finished before the kill"
    finished_before = _finished_search_runs(run_dir)
    saved = load_study_config(run_dir / "study_config.yaml")
    assert saved.run.dataset.root == str(env["data"])  # recorded resolved, against the caller's directory

    study = load_study_config("synthetic", small_overrides(env["data"], env["storage"], "interrupted"))
    outcome = run_study(study)
    trials = outcome.trials
    assert list(trials.columns) == COLUMNS
    search = trials[trials["phase"] == "search"]
    curve = trials[trials["phase"] == "curve"]
    assert len(search) == 3  # the same count as an uninterrupted run: nothing lost, nothing repeated
    assert finished_before <= set(search["trial_id"])
    assert (search["cell"] == "4|artist").all() and (search["alpha_factor"] == 1.0).any()  # heuristic first
    # The curve: fresh seeds only, every run finished and tested, no row a copy of another arm's.
    assert set(curve["seed"]) == {1, 2} and not set(curve["seed"]) & set(search["seed"])
    arms = set(curve["arm"])
    assert {"baseline", "x1/3", "heuristic", "learned"} <= arms <= {"baseline", "x1/3", "heuristic", "tuned", "learned"}
    assert not curve.duplicated(["cell", "arm", "seed"]).any()
    assert curve["predictions_path"].is_unique and curve["checkpoint_path"].is_unique
    assert (curve["status"] == "TERMINATED").all() and curve["test_pr_auc"].between(0, 100).all()
    assert (curve[curve["arm"] == "baseline"]["cell"] == "4|none").all()
    learned = curve[curve["arm"] == "learned"]
    assert (learned["alpha_mode"] == "learned").all() and (learned["alpha"] > 0).all()
    assert all((run_dir / p).exists() for p in curve["predictions_path"])  # relative to the run directory

    report_dir = Path(outcome.run_dir) / "report"
    for name in (
        "trials.csv",
        "trials.parquet",
        "table1.csv",
        "curves.csv",
        "verdicts.csv",
        "labels.csv",
        "alpha_star.csv",
        "report.md",
        "report.html",
    ):
        assert (report_dir / name).stat().st_size > 0, name
    assert {p.name for p in (report_dir / "plots").glob("*.png")} >= {"curve-4-artist.png"}
    verdicts = pd.read_csv(report_dir / "verdicts.csv")
    assert {"p_raw", "p_adjusted", "verdict"} <= set(verdicts.columns)
    assert (verdicts["p_adjusted"].dropna() >= verdicts["p_raw"].dropna() - 1e-12).all()
    assert {"family", "seed_df", "mde level"} <= set(verdicts.columns)
    primary = verdicts[verdicts["family"] == "primary"]
    assert set(primary["comparison"]) <= {"heuristic - baseline", "best alpha - heuristic"}
    text = (report_dir / "report.md").read_text()
    assert "the slope is not identifiable" in text  # one cell cannot test a rule about ratios
    # The learning check comes before any verdict, in the report and on the console.
    assert text.index("Did the CNN learn?") < text.index("Verdict on the heuristic")
    learning = json.loads((report_dir / "learning.json").read_text())
    assert len(learning["cells"]) == 1 and learning["cells"][0].startswith("synthetic · 4 moods · artist")
    if not learning["learned"]:  # tiny models: when they stayed at chance the verdict says so first
        verdict_part = text[text.index("Verdict on the heuristic") :]
        assert "These verdicts describe models that did not learn" in verdict_part.split("\n\n")[1]
    assert len(pd.read_csv(report_dir / "trials.csv")) == len(trials)
    best = json.loads((Path(outcome.run_dir) / "best_checkpoint.json").read_text())
    assert set(best["cells"]) == {"4|none", "4|artist"} and best["default_cell"] in best["cells"]
    assert len(Predictor.from_checkpoint(run_dir / best["checkpoint"]).mood_names) == 4

    # Running the finished study again re-runs nothing and gives the same table.
    again = run_study(study)
    pd.testing.assert_frame_equal(again.trials.reset_index(drop=True), trials.reset_index(drop=True))
    # Each cell's Optuna study opens from the default storage, holding the search rows once each.
    assert_optuna_studies(outcome.run_dir, "interrupted", search, default_storage_url(outcome.run_dir))


def test_a_deterministic_failure_stops_the_study_at_once_with_one_line(env, tmp_path) -> None:
    """Features never prepared: every trial would fail the same way, so none is retried; the
    study stops with one line naming the cause and the trial, the traceback in its log."""
    data = make_study_data(tmp_path / "unprepared", seed=4)
    overrides = small_overrides(data, tmp_path / "studies", "no-features")
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
    assert logs and "Traceback" in logs[0].read_text()


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
