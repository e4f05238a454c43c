"""Two trials of one tiny study share one GPU (resources.trials_per_gpu=2) on a local Ray that
offers a logical GPU: Ray places both trials' workers on it at once, each with half of it, and
each trains on the CPU, since torch has no CUDA here (study.trial.worker_device).

Calls run_curve itself (two curve trials: the baseline and the heuristic, one seed each).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from helpers.study_data import make_study_data, prepare_study_features, small_overrides  # noqa: E402
from study.cells import study_cells  # noqa: E402
from study.config import load_study_config  # noqa: E402
from study.ray_session import init_ray  # noqa: E402
from study.results import trial_table  # noqa: E402
from study.runner import max_concurrent_trials, run_curve  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("packing")
    make_study_data(root / "data", seed=5)
    config = load_study_config(
        "synthetic",
        small_overrides(root / "data", root / "studies", "packed")
        + [
            "search.trials_per_cell=0",
            "curve.grid=[1]",
            "curve.seeds=[1]",
            "curve.seeds_per_trial=1",
            "curve.tuned=false",
            "curve.learned=false",
            "report.reference=false",
            "resources.use_gpu=true",  # ask Ray for GPUs: the logical one below
            "resources.trials_per_gpu=2",
            "resources.cpus_per_worker=0.9",
            "resources.driver_cpus=0.1",
        ],
    )
    prepare_study_features(config)
    init_ray(None, num_cpus=2, num_gpus=1)
    yield config
    ray.shutdown()


def _alive_train_workers() -> int:
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # this Ray's own: another may run beside it
    filters = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    return len(list_actors(address=address, filters=filters, limit=100))  # type: ignore[arg-type]


def test_two_trials_share_one_logical_gpu_and_train_on_the_cpu(study) -> None:
    assert max_concurrent_trials(study) == 2  # 1 GPU / 0.5 per trial; 2 CPUs / (0.9 + 0.1)
    most, done = [0], threading.Event()

    def watch() -> None:  # how many trials' workers hold their GPU share at the same moment
        while not done.is_set():
            try:
                most[0] = max(most[0], _alive_train_workers())
            except Exception:  # the State API may answer late while Ray is busy: sample again
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        table = run_curve(study, trial_table([]), study_cells(study))
    finally:
        done.set()
        watcher.join(timeout=30)

    assert len(table) == 2 and (table["status"] == "TERMINATED").all(), table[["arm", "status", "error"]]
    records = [json.loads(p.read_text()) for p in Path(study.run_dir).glob("runs/curve/**/result.json")]
    assert len(records) == 2
    for record in records:
        assert record["worker_gpus"] == 0.5 and record["device"] == "cpu", record
    # Both workers alive together on the one GPU: Ray held 0.5 + 0.5 of it at once.
    assert most[0] == 2, most[0]
    spans = sorted((r["started_unix"], r["finished_unix"]) for r in records)
    first = spans[0][0]
    print({"fit spans (s from the first start)": [(round(a - first, 1), round(b - first, 1)) for a, b in spans]})
