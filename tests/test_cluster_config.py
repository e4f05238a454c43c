"""cluster.yaml passes Ray's own offline config preparation + schema validation, and the
cluster study configs ask for resources its node types actually have."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from study.config import load_study_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_validation(cluster: dict) -> None:
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["head_node_type"] == "head"


def test_validation_rejects_a_broken_config(cluster: dict) -> None:
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["unknown_key"] = 1
    with pytest.raises(Exception, match="unknown_key"):
        validate_config(prepare_config(broken))


def test_head_runs_no_training_and_gpu_workers_autoscale_from_zero(cluster: dict) -> None:
    nodes = cluster["available_node_types"]
    assert nodes["head"]["resources"]["CPU"] == 0
    assert nodes["head"]["resources"]["trial_driver"] > 0
    gpu = nodes["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] >= 1
    assert any("--shm-size" in opt for opt in cluster["docker"]["run_options"])
    assert any("pip install" in cmd and "mtlmood" in cmd for cmd in cluster["setup_commands"])


@pytest.mark.parametrize("name", ["mtg-jamendo", "magnatagatune"])
def test_cluster_study_configs_fit_the_node_types(cluster: dict, name: str) -> None:
    study = load_study_config(name)
    res = study.resources
    nodes = cluster["available_node_types"]
    head, gpu = nodes["head"]["resources"], nodes["gpu_worker"]["resources"]
    # Trial drivers: only the custom resource, which only the head offers.
    assert res.driver_resource in head and res.driver_cpus <= head["CPU"]
    # Each training worker fits on one GPU node; a trial's workers fit in the autoscaling range.
    assert res.cpus_per_worker <= gpu["CPU"] and res.gpus_per_worker <= gpu["GPU"]
    workers_per_node = min(gpu["CPU"] // res.cpus_per_worker, gpu["GPU"] // res.gpus_per_worker)
    assert res.num_workers <= workers_per_node * nodes["gpu_worker"]["max_workers"]
    assert study.storage_path.startswith(("s3://", "gs://")), "cluster studies need shared storage"
