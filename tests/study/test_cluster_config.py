"""cluster.yaml passes Ray's own offline config preparation + schema validation, and the
cluster study configs ask for resources its node types actually have."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from mtlmood.errors import ConfigError
from study.config import load_study_config
from study.resources import worker_gpus, workers_per_gpu

REPO = Path(__file__).resolve().parents[2]


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
    share = worker_gpus(res)  # 1 / trials_per_gpu when trials share GPUs
    assert res.cpus_per_worker <= gpu["CPU"] and share <= gpu["GPU"]
    workers_per_node = min(gpu["CPU"] // res.cpus_per_worker, gpu["GPU"] // share)
    assert res.num_workers <= workers_per_node * nodes["gpu_worker"]["max_workers"]
    assert study.storage_path.startswith("/mnt/shared/"), "cluster studies need storage every node sees"
    assert study.resources.use_gpu == "true" and study.resources.max_concurrent_trials >= 1


@pytest.mark.parametrize("name", ["mtg-jamendo", "magnatagatune"])
def test_cluster_study_configs_pack_trials_the_nodes_can_hold(cluster: dict, name: str) -> None:
    """trials_per_gpu stays 1 until a GPU run of benchmarks/gpu_study_bench.py measures a gain
    (docs/RUNBOOK.md); whatever it is, every GPU node type holds N workers' CPUs, the config
    knows the GPU's memory and the smaller node's CPUs, and starts N trials per GPU node."""
    res = load_study_config(name).resources
    assert res.trials_per_gpu == 1, "measure packing on a GPU before shipping it (docs/RUNBOOK.md)"
    assert res.gpu_memory_gb == 22.5  # one A10G (g5.2xlarge), what cluster.yaml and the RayJob ask for
    vm_cpus = cluster["available_node_types"]["gpu_worker"]["resources"]["CPU"]
    worker = _manifest("rayjob-study.yaml")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    pod_cpus = float(worker["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert res.cpus_per_gpu == min(vm_cpus, pod_cpus)
    assert workers_per_gpu(res) * res.cpus_per_worker <= res.cpus_per_gpu
    gpu_nodes = cluster["available_node_types"]["gpu_worker"]["max_workers"]
    assert res.max_concurrent_trials == gpu_nodes * workers_per_gpu(res) == worker["maxReplicas"] * res.trials_per_gpu
    # Packing 2 per A10G at these CPUs is refused, naming the setting to change.
    with pytest.raises(ConfigError, match="resources.cpus_per_gpu=7.*cpus_per_worker <= 3.5"):
        load_study_config(name, ["resources.trials_per_gpu=2"])


SHARED = "/mnt/shared"  # where initialization_commands mount the EFS file system on every host


def _shared_container_paths(cluster: dict) -> dict[str, str]:
    """Container path -> host path of every volume bound from the shared mount (/mnt/shared)."""
    volumes = {}
    for option in cluster["docker"]["run_options"]:
        if option.startswith(("--volume=", "-v ")):
            host, container = option.split("=", 1)[-1].removeprefix("-v ").split(":")[:2]
            if host == SHARED or host.startswith(SHARED + "/"):
                volumes[container] = host
    return volumes


def _on_shared(path: str, volumes: dict[str, str]) -> bool:
    return any(path == c or path.startswith(c.rstrip("/") + "/") for c in volumes)


def test_every_node_mounts_the_shared_filesystem_into_its_container(cluster: dict) -> None:
    """Distributed `prepare` and the memory-mapped feature cache need one POSIX file system
    that every node sees at the same path."""
    init = " ".join(cluster["initialization_commands"])  # run on each host before its container starts
    assert "mount -t nfs4" in init and f" {SHARED}" in init
    assert "lookupcache=positive" in init  # shards written by other nodes must never look absent
    assert "mountpoint -q" in init  # idempotent: `ray up` re-runs it on live nodes
    volumes = _shared_container_paths(cluster)
    assert volumes.get(SHARED) == SHARED


@pytest.mark.parametrize("name", ["mtg-jamendo", "magnatagatune"])
def test_cluster_study_data_lives_on_the_shared_filesystem(cluster: dict, name: str) -> None:
    run = load_study_config(name).run
    volumes = _shared_container_paths(cluster)
    for path in (run.dataset.root, run.dataset.audio_root, run.cache_dir):
        assert path and _on_shared(path, volumes), f"{name}: {path} is not on a volume every node shares"


def test_serve_config_reads_the_study_from_the_shared_filesystem(cluster: dict) -> None:
    serve = yaml.safe_load((REPO / "serve" / "serve_config.yaml").read_text())
    assert _on_shared(serve["applications"][0]["args"]["study"], _shared_container_paths(cluster))


# ---------------------------------------------------------------- KubeRay manifests (k8s/)

K8S = REPO / "k8s"


def _manifest(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def _pod_specs(cluster_spec: dict) -> list[dict]:
    return [
        cluster_spec["headGroupSpec"]["template"]["spec"],
        *(group["template"]["spec"] for group in cluster_spec["workerGroupSpecs"]),
    ]


def _check_ray_cluster(spec: dict, claim: str) -> dict[str, str]:
    """Shared checks of a RayCluster spec; returns the container mount path -> PVC subPath map."""
    import ray

    assert spec["rayVersion"] == ray.__version__ and spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0"  # as on the VM cluster: no replica or training worker on the head
    mounts: dict[str, str] = {}
    for pod in _pod_specs(spec):
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        container = pod["containers"][0]
        assert container["image"] == spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
        pod_mounts = {
            m["mountPath"]: m.get("subPath", "") for m in container["volumeMounts"] if claims.get(m["name"]) == claim
        }
        assert pod_mounts.get(SHARED) == "", "every Ray pod mounts the shared PVC at /mnt/shared"
        mounts.update(pod_mounts)
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) == 1 and group["minReplicas"] <= group["maxReplicas"]
    return mounts


def test_k8s_manifests_are_kuberay_v1_resources() -> None:
    kinds = {}
    for path in sorted(K8S.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        kinds[path.name] = sorted({(doc["apiVersion"], doc["kind"]) for doc in docs})
    assert kinds == {
        "networkpolicy.yaml": [("networking.k8s.io/v1", "NetworkPolicy")],
        "rayjob-study.yaml": [("ray.io/v1", "RayJob")],
        "rayservice.yaml": [("ray.io/v1", "RayService")],
        "shared-pvc.yaml": [("v1", "PersistentVolumeClaim")],
    }
    pvc = _manifest("shared-pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod reads and writes it


def test_k8s_rayjob_prepares_and_runs_the_study_like_the_vm_cluster() -> None:
    job = _manifest("rayjob-study.yaml")
    claim = _manifest("shared-pvc.yaml")["metadata"]["name"]
    spec = job["spec"]
    entry = " ".join(spec["entrypoint"].split())
    assert "mtlmood prepare --config" in entry and "mtlmood study run mtg-jamendo --address auto" in entry
    assert entry.count("--address auto") == 2 and spec["shutdownAfterJobFinishes"] is True
    mounts = _check_ray_cluster(spec["rayClusterSpec"], claim)
    head = spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    study = load_study_config("mtg-jamendo")
    assert study.resources.driver_resource in json.loads(json.loads(head["resources"]))
    gpu_group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert gpu_group["minReplicas"] == 0  # GPU pods autoscale from zero
    # The study's data paths are on the shared PVC in every pod.
    for path in (study.run.dataset.root, study.run.dataset.audio_root, study.run.cache_dir):
        assert any(path == m or path.startswith(m + "/") for m in mounts), path
    # Results on the shared PVC; GPUs forced (never "auto" on a cluster whose GPU pods start at 0).
    assert study.storage_path.startswith(SHARED + "/") and study.resources.use_gpu == "true"


def test_k8s_rayservice_serves_the_serve_config_application() -> None:
    """spec.serveConfigV2 is what `mtlmood serve build` writes for its args (one generator, so the
    deployments' options cannot drift from args), and those are serve/serve_config.yaml's, except
    the cluster's study, the address and a GPU per model replica."""
    from serve.build import render, serve_deploy_config, serve_file_config

    service = _manifest("rayservice.yaml")
    claim = _manifest("shared-pvc.yaml")["metadata"]["name"]
    spec = service["spec"]
    _check_ray_cluster(spec["rayClusterConfig"], claim)
    text = spec["serveConfigV2"]
    data = yaml.safe_load(text)
    config = serve_file_config(data, "k8s/rayservice.yaml", check=False)
    assert text == render(serve_deploy_config(config), header=False), (
        "regenerate with the `mtlmood serve build ... --rayservice k8s/rayservice.yaml` in its header"
    )
    app = data["applications"][0]
    reference = yaml.safe_load((REPO / "serve" / "serve_config.yaml").read_text())["applications"][0]
    assert app["import_path"] == reference["import_path"] and app["name"] == reference["name"]
    expected = copy.deepcopy(reference["args"])
    expected.update(study=app["args"]["study"], host="0.0.0.0")
    expected["auth"].update(enabled=True, keys_file="/etc/mtlmood/api-keys/keys")  # the mounted Secret
    expected["model"].update(num_gpus=1, max_replicas=app["args"]["model"]["max_replicas"])
    assert app["args"] == expected
    assert app["args"]["study"].startswith(SHARED + "/mtlmood/studies/")
    assert data["http_options"]["host"] == "0.0.0.0"  # reached through the Kubernetes Service
    # Split topology: a model deployment with one GPU per replica, as many as the GPU pods.
    model = {d["name"]: d for d in app["deployments"]}["MoodModel"]
    assert model["ray_actor_options"]["num_gpus"] == 1
    gpu_pods = sum(group["maxReplicas"] for group in spec["rayClusterConfig"]["workerGroupSpecs"])
    assert model["autoscaling_config"]["max_replicas"] <= gpu_pods


# ------------------------------------------------------- who may reach the KubeRay clusters

RAY_PORTS = {6379, 8265, 10001}  # GCS, dashboard + job API, Ray client
OPERATOR_NAMESPACE = {"kubernetes.io/metadata.name": "kuberay-system"}


def _policies() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((K8S / "networkpolicy.yaml").read_text())}


def _labels(group: dict) -> dict[str, str]:
    """The labels a head or worker group gives its pods."""
    return group["template"].get("metadata", {}).get("labels", {})


def _rule_ports(rule: dict) -> set[int]:
    return {int(port["port"]) for port in rule.get("ports", [])}


@pytest.mark.parametrize(
    "name, cluster_of, serves",
    [
        ("rayservice.yaml", lambda d: d["spec"]["rayClusterConfig"], True),
        ("rayjob-study.yaml", lambda d: d["spec"]["rayClusterSpec"], False),
    ],
)
def test_k8s_ray_clusters_need_rays_token_and_only_their_pods_reach_rays_ports(
    name: str, cluster_of: Any, serves: bool
) -> None:
    """Ray token auth from a Secret (KubeRay's authOptions: every Ray container and the operator get
    it), and a NetworkPolicy selecting the cluster's pods by their label: Ray's ports only from the
    cluster's own pods, the operator's namespace (and a RayJob's submitter); 8000 open when it serves."""
    cluster = cluster_of(_manifest(name))
    assert cluster["authOptions"] == {"mode": "token", "secretName": "mtlmood-ray-auth"}
    labels = [_labels(group) for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]]
    label = labels[0]["mtlmood.io/ray-cluster"]
    assert label == ("serve" if serves else "study") and all(
        found["mtlmood.io/ray-cluster"] == label for found in labels
    )
    for pod in _pod_specs(cluster):  # no token or key in a manifest: only Secret references
        assert not any(e.get("name", "").startswith("RAY_AUTH") for c in pod["containers"] for e in c.get("env", []))

    policy = [
        p for p in _policies().values() if p["spec"]["podSelector"]["matchLabels"] == {"mtlmood.io/ray-cluster": label}
    ]
    assert len(policy) == 1, f"one NetworkPolicy selects the {label} pods"
    spec = policy[0]["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    open_ports: set[int] = set()
    for rule in spec["ingress"]:
        peers = rule.get("from")
        if not peers:  # from anywhere: only the Serve port
            open_ports |= _rule_ports(rule) or {-1}  # a rule without ports would open every port
            continue
        for peer in peers:
            if "namespaceSelector" in peer:  # the operator: its namespace and its pods, Ray's HTTP ports only
                assert peer["namespaceSelector"]["matchLabels"] == OPERATOR_NAMESPACE and "podSelector" in peer
                assert _rule_ports(rule) <= {8265, 10001}
            elif peer["podSelector"]["matchLabels"] != {"mtlmood.io/ray-cluster": label}:
                # a RayJob's submitter: the job API of its own cluster only
                assert (
                    not serves
                    and peer["podSelector"]["matchLabels"]["ray.io/originated-from-cr-name"] == "mtlmood-study"
                )
                assert _rule_ports(rule) == {8265}
            else:
                assert not rule.get("ports"), "the cluster's own pods reach every port"
    assert open_ports == ({8000} if serves else set()) and not open_ports & RAY_PORTS


def test_the_rayservice_mounts_the_api_keys_it_names_in_every_ray_pod() -> None:
    service = _manifest("rayservice.yaml")
    args = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["auth"]["enabled"] is True
    keys_dir = str(Path(args["auth"]["keys_file"]).parent)
    for pod in _pod_specs(service["spec"]["rayClusterConfig"]):
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert secrets.get(mounts.get(keys_dir, "")) == "mtlmood-api-keys", "a router may start in any pod"


def test_the_vm_cluster_says_why_its_dashboard_binds_all_interfaces() -> None:
    """Bound to every interface only with the reason and the guard written next to it."""
    text = (REPO / "cluster.yaml").read_text()
    start = " ".join(yaml.safe_load(text)["head_start_ray_commands"])
    if "--dashboard-host=0.0.0.0" in start:
        note = text[text.index("head_start_ray_commands") : text.index("ray start --head")]
        assert "security group" in note and "docs/RUNBOOK.md" in note
