"""The Serve endpoint's configuration and command without a running Serve: config
validation and where the checkpoint comes from, `mtlmood serve` failing in one line without a
model, and serve/serve_config.yaml building. (The served endpoint: test_serve_http.py and
test_serve_load.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import yaml

from mtlmood.errors import ConfigError

requests = pytest.importorskip("requests")


def test_config_validation_and_sources(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.config import CHECKPOINT_ENV, STUDY_ENV, ServeConfig, resolve_checkpoint
    from serve.config_file import load_serve_config

    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(STUDY_ENV, raising=False)

    with pytest.raises(ConfigError, match="max_batch_size"):
        load_serve_config(overrides=["batching.max_batch_size=64", "model.max_ongoing_requests=8"])
    with pytest.raises(ConfigError, match="max_queued_requests"):
        load_serve_config(overrides=["model.max_queued_requests=0"])
    with pytest.raises(ConfigError, match="unknown"):
        load_serve_config(overrides=["model.replicas=3"])
    with pytest.raises(ConfigError, match="no model to serve"):
        resolve_checkpoint(ServeConfig())
    # A partial YAML section keeps the other defaults of that section.
    (tmp_path / "serve.yaml").write_text("ingress: {max_replicas: 3}\nport: 9000\n")
    config = load_serve_config(tmp_path / "serve.yaml", port=9001)
    assert config.ingress.max_replicas == 3 and config.ingress.max_ongoing_requests == 16 and config.port == 9001

    # A study run directory: best_checkpoint.json names the checkpoint (absolute or relative).
    run = tmp_path / "study"
    run.mkdir()
    with pytest.raises(ConfigError, match="best_checkpoint.json"):
        resolve_checkpoint(ServeConfig(study=str(run)))
    (run / "best_checkpoint.json").write_text(json.dumps({"checkpoint": str(checkpoints["small"]), "trial_id": "t"}))
    assert resolve_checkpoint(ServeConfig(study=str(run))) == checkpoints["small"].resolve()
    with pytest.raises(ConfigError, match="not both"):
        resolve_checkpoint(ServeConfig(study=str(run), checkpoint=str(checkpoints["small"])))
    # The env vars are a fallback only (a Serve config's runtime_env); explicit fields win.
    monkeypatch.setenv(STUDY_ENV, str(tmp_path / "no-such-study"))
    assert resolve_checkpoint(ServeConfig(checkpoint=str(checkpoints["wide"]))) == checkpoints["wide"].resolve()
    monkeypatch.setenv(STUDY_ENV, str(run))
    assert resolve_checkpoint(ServeConfig()) == checkpoints["small"].resolve()
    with pytest.raises(ConfigError, match="cuda"):
        load_serve_config(device="cuda", overrides=["model.num_gpus=0"])
    with pytest.raises(ConfigError, match="topology must be one of auto, split, combined"):
        load_serve_config(overrides=["topology=single"])
    with pytest.raises(ConfigError, match="precision must be fp32 or bf16"):
        load_serve_config(overrides=["precision=int8"])
    # Overload must be refused by the ingress queue (JSON 503), not by Serve's proxy (plain text).
    with pytest.raises(ConfigError, match=r"router.max_ongoing_requests \(80\) must be >= .* \(176\)"):
        load_serve_config(overrides=["ingress.max_replicas=10"])
    with pytest.raises(ConfigError, match="unbounded"):
        load_serve_config(overrides=["ingress.max_queued_requests=-1"])
    with pytest.raises(ConfigError, match="request_timeout_s"):
        load_serve_config(overrides=["model_timeout_s=60"])
    with pytest.raises(ConfigError, match="router.num_gpus must be 0"):
        load_serve_config(overrides=["router.num_gpus=1"])
    # The default fits a 2-CPU node with two ingress replicas (combined: 0.5 + 0.5 CPU each).
    default = ServeConfig()
    per_replica = default.ingress.num_cpus + default.model.num_cpus
    assert default.ingress.min_replicas == 2 and default.ingress.min_replicas * per_replica <= 2
    assert default.router.num_cpus == 0 and default.router.min_replicas == 2


def test_router_memory_reservation_is_its_bodies_plus_a_base_and_must_fit_the_ceiling() -> None:
    """A router holds every body it relays until the answer: max_body_bytes for each of its
    max_ongoing_requests, plus the process (the soak measured ~250 MiB per router)."""
    from serve.config import MIB, ServeConfig
    from serve.config_file import load_serve_config

    default = ServeConfig()
    assert default.router_memory_bytes() == 320 * MIB + 80 * 20 * MIB  # 1920 MiB
    assert default.router_memory_bytes() <= default.router.max_memory_mib * MIB
    # The old defaults (512 requests of 20 MiB: ~10 GiB per router) are refused, naming the settings.
    with pytest.raises(ConfigError) as too_big:
        load_serve_config(overrides=["router.max_ongoing_requests=512"])
    message = str(too_big.value)
    assert "10560 MiB" in message and "\n" not in message
    for name in ("router.memory_base_mib", "max_body_bytes", "router.max_ongoing_requests", "router.max_memory_mib"):
        assert name in message
    # Smaller bodies, or a higher ceiling where nodes have the memory, make the same queue fit.
    small = load_serve_config(overrides=["router.max_ongoing_requests=512", "max_body_bytes=2097152"])
    assert small.router_memory_bytes() == (320 + 512 * 2) * MIB
    big = load_serve_config(overrides=["router.max_ongoing_requests=512", "router.max_memory_mib=12000"])
    assert big.router_memory_bytes() == 10560 * MIB


def test_cli_fails_in_one_line_without_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from mtlmood_cli.main import main

    assert main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint directory not found" in err and "Traceback" not in err


def test_serve_config_yaml_builds(checkpoints: dict[str, Path]) -> None:
    """serve/serve_config.yaml is a valid Serve config whose builder accepts its args."""
    import importlib

    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    application = schema.applications[0]
    module_name, attr = application.import_path.split(":")
    builder: Callable = getattr(importlib.import_module(module_name), attr)
    from ray.serve import Application

    app = builder(
        {
            **application.args,
            "checkpoint": str(checkpoints["small"]),
            "study": "",  # the file's study is a cluster path
            "model": {**application.args["model"], "num_gpus": 0},
        }
    )
    assert isinstance(app, Application)
