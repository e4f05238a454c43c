"""`mtlmood serve build`: one Serve config, generated from the ServeConfig, that Ray's own schema,
`serve run` and `mtlmood serve --config` all accept; the shipped files are what it writes."""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import yaml

from helpers.audio import tone
from helpers.serve_apps import MOODS
from helpers.serve_http import TIMEOUT, free_port
from mtlmood.errors import ConfigError
from mtlmood.synth.checkpoints import untrained_checkpoint

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "serve" / "serve_config.yaml"
# A small app on 2 CPUs: one router (0 CPU), one combined ingress replica (0.2 + 0.2 CPU).
SMALL = [
    "--set",
    "router.min_replicas=1",
    "--set",
    "ingress.min_replicas=1",
    "--set",
    "ingress.num_cpus=0.2",
    "--set",
    "model.num_cpus=0.2",
]


def cli() -> Callable[[list[str]], int]:
    from mtlmood_cli.main import main

    return main


def build(tmp_path: Path, *argv: str, name: str = "serve.yaml") -> tuple[Path, dict[str, Any]]:
    out = tmp_path / name
    assert cli()(["serve", "build", *argv, "-o", str(out)]) == 0
    return out, yaml.safe_load(out.read_text())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("build-ckpt") / "small", n_filters=8, moods=MOODS)


# ------------------------------------------------------------------ the file (no Ray)


def test_the_shipped_serve_config_is_what_serve_build_writes_for_its_args() -> None:
    from serve.build import check_serve_file, serve_file_config, serve_file_text

    text = SHIPPED.read_text()
    data = yaml.safe_load(text)
    config = serve_file_config(data, str(SHIPPED), check=False)
    assert serve_file_text(config) == text, "regenerate: mtlmood serve build --config serve/serve_config.yaml -o ..."
    assert check_serve_file(data, str(SHIPPED)) == config
    # The cluster's study lives on shared storage, named in args (no env var, no runtime_env).
    assert config.study.startswith("/mnt/shared/") and "runtime_env" not in data["applications"][0]


@pytest.mark.parametrize(
    "sets, topology, names",
    [
        ([], "combined", ["MoodRouter", "MoodIngress"]),
        (["model.num_gpus=1"], "split", ["MoodRouter", "MoodIngress", "MoodModel"]),
        (["topology=split", "model.num_gpus=0"], "split", ["MoodRouter", "MoodIngress", "MoodModel"]),
        (["device=cuda"], "split", ["MoodRouter", "MoodIngress", "MoodModel"]),
    ],
)
def test_output_round_trips_through_rays_schema(sets: list[str], topology: str, names: list[str]) -> None:
    """Ray's ServeDeploySchema reads every generated key (it ignores unknown ones silently, so the
    dump of what it read must be the document itself), and the deployments are the topology's."""
    from ray.serve.schema import ServeDeploySchema

    from serve.build import deployment_options, for_file, render, resolved_topology, serve_deploy_config
    from serve.config_file import load_serve_config

    config = load_serve_config(None, sets, study="/mnt/shared/studies/x")
    document = serve_deploy_config(config)
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(render(document)))
    assert parsed.model_dump(mode="json", exclude_unset=True) == document
    app = parsed.applications[0]
    assert [d.name for d in app.deployments] == names
    assert resolved_topology(for_file(config), for_file(config).model.num_gpus) == topology
    assert app.import_path == "serve.app:build_app" and app.args["study"] == "/mnt/shared/studies/x"
    assert parsed.http_options.host == "127.0.0.1" and parsed.http_options.port == 8000
    for entry in document["applications"][0]["deployments"]:
        assert {"autoscaling_config", "max_ongoing_requests", "max_queued_requests", "ray_actor_options"} <= set(entry)
        assert entry["max_queued_requests"] > 0  # bounded: Serve's default (-1) is not
    options = deployment_options(for_file(config))
    if topology == "combined":  # one replica decodes and scores: the CPUs of both sections
        assert options["ingress"]["ray_actor_options"]["num_cpus"] == config.ingress.num_cpus + config.model.num_cpus
    else:
        assert options["model"]["ray_actor_options"]["num_gpus"] == for_file(config).model.num_gpus


def test_the_built_app_reserves_the_routers_memory_and_keeps_the_studys_choice(
    tmp_path: Path, checkpoint: Path
) -> None:
    """build_app, without Ray: the router deployment carries ``ray_actor_options.memory`` (its
    bodies + base), the others none; a study's pointer is read once, here, and handed to the router
    (GET /model answers that copy: see test_serve_http.py)."""
    import json

    from serve.app import build_app
    from serve.config import ModelSettings, ServeConfig

    (tmp_path / "best_checkpoint.json").write_text(
        json.dumps({"default_cell": "5|none", "cells": {"5|none": {"checkpoint": str(checkpoint), "arm": "x1"}}})
    )
    config = ServeConfig(study=str(tmp_path), max_body_bytes=2 * 1024 * 1024, model=ModelSettings(num_gpus=0))
    router = build_app(config)._bound_deployment
    options: dict[str, Any] = router.ray_actor_options or {}
    args: tuple[Any, ...] = tuple(router.init_args)  # ingress, card, config, topology, study
    assert router.name == "MoodRouter"
    assert options["memory"] == config.router_memory_bytes() == (320 + 80 * 2) * 1024 * 1024
    ingress = args[0]._bound_deployment
    assert ingress.name == "MoodIngress" and "memory" not in (ingress.ray_actor_options or {})
    assert args[4] == {
        "cell": "5|none",
        "default_cell": "5|none",
        "checkpoint": str(checkpoint),
        "arm": "x1",
    }


def test_building_on_a_ray_without_room_for_a_router_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Serve would wait for a node with the router's memory: say so (not refused: an autoscaling
    cluster may still add one)."""
    import ray

    from serve.app import _warn_if_no_node_fits_a_router
    from serve.config import MIB, ServeConfig

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"memory": 1024.0 * MIB}}])
    with caplog.at_level("WARNING", logger="serve.app"):
        _warn_if_no_node_fits_a_router(ServeConfig())
    assert "reserves 1920 MiB of memory, but the largest node offers Ray 1024 MiB" in caplog.text
    caplog.clear()
    _warn_if_no_node_fits_a_router(ServeConfig(max_body_bytes=MIB))  # 320 + 80 MiB fits
    assert not caplog.text


def test_deployment_names_are_the_classes_names() -> None:
    from serve.build import DEPLOYMENT_NAMES
    from serve.deployments import MoodIngress, MoodModel
    from serve.router import MoodRouter

    classes: dict[str, Any] = {"router": MoodRouter, "ingress": MoodIngress, "model": MoodModel}
    assert {section: cls.name for section, cls in classes.items()} == DEPLOYMENT_NAMES


def test_build_cli_writes_absolute_paths_and_notes_the_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _, data = build(tmp_path, "--study", "runs/study", "--cell", "3|artist", "--port", "9001")
    args = data["applications"][0]["args"]
    assert args["study"] == str(tmp_path / "runs" / "study") and args["cell"] == "3|artist"
    assert data["http_options"] == {"host": "127.0.0.1", "port": 9001} and args["port"] == 9001
    assert "model.num_gpus=-1 (auto) is written as 0" in capsys.readouterr().err
    # A URI stays a URI; without -o the file goes to standard output.
    assert cli()(["serve", "build", "--checkpoint", "s3://bucket/models/best", "--set", "model.num_gpus=0"]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out)["applications"][0]["args"]["checkpoint"] == "s3://bucket/models/best"
    assert "num_gpus" not in captured.err
    # A bad setting fails in one line, before anything is written.
    assert cli()(["serve", "build", "--set", "ingress.max_replicas=0", "-o", str(tmp_path / "bad.yaml")]) == 2
    assert "ingress.max_replicas" in capsys.readouterr().err and not (tmp_path / "bad.yaml").exists()


def test_build_regenerates_a_file_from_its_edited_args(tmp_path: Path) -> None:
    path, data = build(tmp_path, "--study", "/mnt/shared/s")
    data["applications"][0]["args"]["ingress"]["max_queued_requests"] = 8
    data["applications"][0]["args"]["max_body_bytes"] = 1024 * 1024
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _, again = build(tmp_path, "--config", str(path), name="again.yaml")
    deployments = {d["name"]: d for d in again["applications"][0]["deployments"]}
    assert deployments["MoodIngress"]["max_queued_requests"] == 8
    # The router's memory follows the body limit: its base + 80 bodies of 1 MiB.
    assert deployments["MoodRouter"]["ray_actor_options"]["memory"] == (320 + 80) * 1024 * 1024


def test_rayservice_block_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    from serve.build import serveconfigv2_of

    manifest = tmp_path / "rayservice.yaml"
    head = "# keep me\napiVersion: ray.io/v1\nkind: RayService\nspec:\n  serveConfigV2: |\n    old: 1\n    more: 2\n"
    tail = "\n  rayClusterConfig:\n    rayVersion: x  # keep\n"
    manifest.write_text(head + tail)
    out, data = build(tmp_path, "--study", "/mnt/shared/s", "--rayservice", str(manifest))
    text = manifest.read_text()
    assert text.startswith("# keep me\n") and text.endswith(tail)
    embedded = yaml.safe_load(serveconfigv2_of(yaml.safe_load(text)))
    assert embedded == data and "old" not in embedded


# ------------------------------------------------------- mtlmood serve --config FILE


def test_mtlmood_serve_reads_the_args_of_a_serve_file(tmp_path: Path, checkpoint: Path) -> None:
    from serve.config_file import load_serve_config

    path, _ = build(tmp_path, "--checkpoint", str(checkpoint), "--port", "8123", *SMALL)
    config = load_serve_config(path)
    assert config.checkpoint == str(checkpoint) and config.port == 8123 and config.ingress.num_cpus == 0.2
    # --set and the flags still apply on top of the file's args.
    assert load_serve_config(path, ["top_k=2"], port=8124).port == 8124
    # The shipped file reads as the ServeConfig in its args (it used to fail: "unknown config key(s)").
    assert load_serve_config(SHIPPED).study == "/mnt/shared/mtlmood/studies/alpha"


def _edited(data: dict[str, Any], edit: Callable[[dict[str, Any]], None], path: Path) -> Path:
    changed = copy.deepcopy(data)
    edit(changed)
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    return path


def _deployment(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {d["name"]: d for d in data["applications"][0]["deployments"]}[name]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: _deployment(d, "MoodIngress").update(max_ongoing_requests=8),
            r"deployments\[MoodIngress\]\.max_ongoing_requests is 8 but args \(ingress\.max_ongoing_requests\) give 16",
        ),
        (
            lambda d: _deployment(d, "MoodRouter")["ray_actor_options"].update(memory=1),
            r"memory is 1 but args \(router\.memory_base_mib \+ max_body_bytes x router\.max_ongoing_requests\) give",
        ),
        (
            lambda d: _deployment(d, "MoodRouter")["autoscaling_config"].update(max_replicas=9),
            r"MoodRouter\]\.autoscaling_config\.max_replicas is 9 but args \(router\.max_replicas\)",
        ),
        (
            lambda d: _deployment(d, "MoodIngress")["ray_actor_options"].update(num_cpus=2),
            r"num_cpus is 2 but args \(ingress\.num_cpus \+ model\.num_cpus\) give 0\.4",
        ),
        (lambda d: d["http_options"].update(port=1), r"http_options\.port is 1 but args \(port\) give"),
        (
            lambda d: d["applications"][0]["deployments"].append({"name": "MoodModel", "max_ongoing_requests": 4}),
            r"deployments\[MoodModel\]: args make no such deployment \(combined topology: MoodRouter, MoodIngress\)",
        ),
        (
            lambda d: _deployment(d, "MoodIngress").update(health_check_period_s=1),
            r"health_check_period_s is not something `mtlmood serve build` writes",
        ),
        (lambda d: d["applications"][0].update(runtime_env={"env_vars": {"A": "1"}}), r"runtime_env is not"),
        (lambda d: d["applications"][0]["args"]["model"].update(num_gpus=-1), r"args\.model\.num_gpus is -1"),
        (lambda d: d["applications"].append(dict(d["applications"][0])), r"exactly one application"),
    ],
)
def test_a_serve_file_that_disagrees_with_its_args_is_refused(
    tmp_path: Path, checkpoint: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    from serve.config_file import load_serve_config

    _, data = build(tmp_path, "--checkpoint", str(checkpoint), *SMALL)
    bad = _edited(data, edit, tmp_path / "edited.yaml")
    with pytest.raises(ConfigError, match=message) as info:
        load_serve_config(bad)
    assert "\n" not in str(info.value)


def test_keys_left_out_of_a_serve_file_are_no_disagreement(tmp_path: Path, checkpoint: Path) -> None:
    """Serve then uses the code's value, which is the one args give: nothing is overridden."""
    from serve.config_file import load_serve_config

    _, data = build(tmp_path, "--checkpoint", str(checkpoint), *SMALL)

    def drop(d: dict[str, Any]) -> None:
        del _deployment(d, "MoodIngress")["ray_actor_options"]
        d["applications"][0]["deployments"] = [_deployment(d, "MoodIngress")]
        del d["applications"][0]["args"]["batching"]

    assert load_serve_config(_edited(data, drop, tmp_path / "partial.yaml")).checkpoint == str(checkpoint)


def test_cli_refuses_a_disagreeing_file_in_one_line(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = build(tmp_path, "--checkpoint", str(checkpoint), *SMALL)
    bad = _edited(data, lambda d: _deployment(d, "MoodIngress").update(max_queued_requests=5), tmp_path / "b.yaml")
    capsys.readouterr()
    assert cli()(["serve", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ingress.max_queued_requests" in err and "mtlmood serve build" in err


# ------------------------------------------------------------------ serve run FILE


def test_serve_run_of_a_built_file_answers_predict(tmp_path: Path, checkpoint: Path) -> None:
    """What `serve run FILE` does (ray.serve.scripts.run, in this process: --non-blocking on the
    test's own Ray), on loopback: the app deploys with the file's deployment options and answers."""
    ray = pytest.importorskip("ray")
    from ray import serve
    from ray.serve.scripts import run as serve_run

    port = free_port()
    path, _ = build(tmp_path, "--checkpoint", str(checkpoint), "--port", str(port), *SMALL)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        serve_run.main([str(path), "--non-blocking", "--app-dir", str(REPO)], standalone_mode=False)
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline:
            app = serve.status().applications.get("mtlmood")
            status = app.status if app else None
            if status in ("RUNNING", "DEPLOY_FAILED"):
                break
            time.sleep(1.0)
        app = serve.status().applications["mtlmood"]
        assert status == "RUNNING", app.message
        assert set(app.deployments) == {"MoodRouter", "MoodIngress"}  # combined on CPU: what the file lists
        base = f"http://127.0.0.1:{port}"
        response = requests.post(
            f"{base}/predict", data=tone(4.0), headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text[:500]
        assert list(response.json()["moods"]) == MOODS
        serving = requests.get(f"{base}/model", timeout=TIMEOUT).json()["serving"]
        assert serving["topology"] == "combined"
    finally:
        # Ray's shutdown ends the whole local cluster, Serve's actors with it: no graceful drain of
        # replicas first (serve.shutdown() cost 3-7 s per module). Ray 2.60 drops a Serve client
        # cached from an earlier driver session by itself.
        ray.shutdown()
