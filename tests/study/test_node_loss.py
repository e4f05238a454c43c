"""A node lost mid-work on a multi-node Ray: the study and `prepare` finish, nothing lost or doubled.

A real two-node Ray on this machine (tests/helpers/ray_nodes.py): a head that holds no CPUs
(it runs the study's trial drivers through a custom resource, as on a cluster whose
head must stay free), and a worker node ("spot1") that does the work. Mid-run the
test SIGKILLs spot1's raylet, as when a spot instance vanishes, and a replacement node
("spot2") joins, as an autoscaler would start one. The driver is the user's command,
run in a subprocess with `--address`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")
if not Path("/proc/self/stat").exists():  # tests/helpers/ray_nodes.py reads the process table from /proc
    pytest.skip("the node-loss tests need Linux's /proc", allow_module_level=True)

from helpers.ray_nodes import LocalCluster  # noqa: E402
from helpers.study_data import NEUTRAL_STUDY, make_study_data, prepare_study_features  # noqa: E402
from mtlmood.cache import FeatureCache, default_cache_dir  # noqa: E402
from mtlmood.datasets import load_run_songs  # noqa: E402
from study.config import load_study_config  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
DRIVER = "trial_driver"


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster(head_cpus=0, head_resources={DRIVER: 100})
    yield cluster
    cluster.shutdown()


def _cli(cluster: LocalCluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mtlmood_cli", *args],
        cwd=REPO,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the command did not finish within {timeout:.0f} s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-4000:]
    return out


def _reported_epochs(trial_dir: Path) -> list[int]:
    """The training epochs a search trial reported to Tune, in order (the final report left out)."""
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [int(r["epoch"]) for r in map(json.loads, filter(str.strip, lines)) if not r.get("final") and "epoch" in r]


def _replace_lost_node(cluster: LocalCluster, lost: str, replacement: str, cpus: int) -> None:
    cluster.nodes[[n.name for n in cluster.nodes].index(lost)].kill_raylet()
    cluster.add_node(replacement, cpus)


def test_a_study_survives_the_loss_of_the_node_that_trains(cluster: LocalCluster, tmp_path: Path) -> None:
    data_dir = make_study_data(tmp_path / "data", seed=5)
    overrides = [
        *NEUTRAL_STUDY,
        "name=node-loss",
        f"storage_path={tmp_path / 'studies'}",
        f"run.dataset.root={data_dir}",
        "run.model.n_filters=8",
        f"run.train.max_epochs={EPOCHS}",
        f"run.train.patience={EPOCHS}",
        "run.train.max_batches_per_epoch=24",
        "run.train.eval_batch_size=64",
        "run.train.num_threads=1",
        "search.trials_per_cell=2",
        "search.n_moods=[4]",
        "search.metadata=[artist]",
        "search.seeds=[0]",
        "curve.enabled=false",
        "scheduler.enabled=false",
        "report.reference=false",
        "report.n_boot=200",
        "resources.cpus_per_worker=1",
        "resources.driver_cpus=0",
        f"resources.driver_resource={DRIVER}",
    ]
    prepare_study_features(load_study_config("synthetic", overrides))
    cluster.add_node("spot1", cpus=2)
    run_dir = tmp_path / "studies" / "node-loss"
    proc = _cli(
        cluster,
        "study",
        "run",
        "synthetic",
        "--address",
        cluster.address,
        *[a for o in overrides for a in ("--set", o)],
    )

    # The trials train on spot1 (the head has no CPU): lose it once a trial has checkpointed an
    # epoch (Ray Train writes one per epoch to storage) and before every trial has finished.
    deadline = time.monotonic() + 240
    checkpointed: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        checkpointed = list((run_dir / "train").glob("*/checkpoint_*"))
        if checkpointed:
            break
        time.sleep(0.05)
    finished = {p.parent.parent.name for p in run_dir.glob("runs/search/*/*/seed-*/result.json")}
    assert checkpointed, "no trial checkpointed an epoch"
    assert len(finished) < 2, "every trial had finished before the node was lost"
    _replace_lost_node(cluster, "spot1", "spot2", cpus=2)
    out = _finish(proc, timeout=300)

    table = pd.read_csv(run_dir / "report" / "trials.csv")
    search = table[table["phase"] == "search"]
    assert len(search) == 2 and search["trial_id"].is_unique, out[-3000:]  # no row lost or doubled
    assert search["status"].eq("TERMINATED").all() and search["test_pr_auc"].notna().all()
    assert search["epochs"].eq(EPOCHS).all()
    for trial_dir in (d for d in (run_dir / "search").glob("*") if (d / "result.json").is_file()):
        epochs = _reported_epochs(trial_dir)
        # Training went on from the last checkpoint: no epoch was reported twice (a restart from
        # epoch 1 would repeat them), and every epoch up to the last was reported.
        assert epochs == sorted(set(epochs)) and epochs[-1] == EPOCHS, epochs
    results = sorted(run_dir.glob("runs/search/*/*/seed-*/result.json"))
    assert len(results) == 2
    assert json.loads((run_dir / "best_checkpoint.json").read_text())


def test_prepare_survives_the_loss_of_a_node(cluster: LocalCluster, tmp_path: Path) -> None:
    data_dir = make_study_data(tmp_path / "data", seed=6)
    overrides = ["dataset.name=synthetic", f"dataset.root={data_dir}", "features.n_mels=32"]
    study = load_study_config("synthetic", [f"run.{o}" for o in overrides])
    cache_dir = default_cache_dir(study.run)
    songs = load_run_songs(study.run)
    cluster.add_node("spot3", cpus=1)
    proc = _cli(
        cluster,
        "prepare",
        "--address",
        cluster.address,
        "--songs-per-task",
        "2",
        "--max-tasks",
        "2",
        "--no-progress",
        *[a for o in overrides for a in ("--set", o)],
    )
    shards = cache_dir / "shards"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and len(list(shards.glob("*.npy"))) < 6:
        time.sleep(0.05)
    done_at_kill = len(list(shards.glob("*.npy")))
    assert 0 < done_at_kill < len(songs), f"{done_at_kill} of {len(songs)} songs cached when the node was lost"
    _replace_lost_node(cluster, "spot3", "spot4", cpus=1)
    out = _finish(proc, timeout=240)

    cache = FeatureCache(cache_dir)
    ids = list(cache.song_ids)
    assert len(ids) == len(set(ids)) == len(songs), out[-2000:]  # every song cached exactly once
    assert set(ids) == {s.song_id for s in songs}
    failures = cache_dir / "failures.csv"
    assert not failures.exists() or pd.read_csv(failures).empty, failures.read_text()  # no song lost either
    features = cache.features(songs[0].song_id)
    assert features.shape[1] == 32 and np.isfinite(features).all()
