"""Builds the Serve application from a ServeConfig: ``serve.app:build_app`` is what ``serve deploy``
(serve/serve_config.yaml, k8s/rayservice.yaml) and ``mtlmood serve`` import.

Two topologies (``ServeConfig.topology``; ``auto`` picks split when the model replicas
get GPUs, combined otherwise):

    split:    HTTP -> MoodIngress replicas (``ingress`` settings) -> MoodModel replicas (``model`` settings)
    combined: HTTP -> MoodIngress replicas that score requests themselves

What the deployments do is in serve.deployments; the request parsing in serve.parsing,
the JSON answers in serve.schemas, the model in serve.scorer.
"""

from __future__ import annotations

from typing import Any, Mapping, Union, cast

from ray import serve
from ray.serve import Deployment

from serve.config import (
    DeploymentSettings,
    ServeConfig,
    resolve_checkpoint,
    serve_config_from_mapping,
    serve_config_to_dict,
)
from serve.deployments import MoodIngress, MoodModel


def build_app(args: Union[ServeConfig, Mapping[str, Any], None] = None) -> serve.Application:
    """The bound application for ``serve.run`` or a Serve config's ``import_path``.

    ``args`` is a ServeConfig, or a mapping of its fields (the ``args:`` of a Serve
    config file). The checkpoint comes from ``checkpoint``, ``study`` (its best
    checkpoint) or the env vars MTLMOOD_SERVE_CHECKPOINT / MTLMOOD_SERVE_STUDY.

    ``split``: MoodIngress replicas (``ingress`` settings) call MoodModel replicas
    (``model`` settings). ``combined``: MoodIngress replicas score requests themselves;
    each gets the CPUs of both sections, the GPUs, replica counts and autoscaling of
    ``model``, and the request limits of ``ingress`` (it is the HTTP-facing one).
    """
    config = args if isinstance(args, ServeConfig) else serve_config_from_mapping(dict(args or {}))
    config = config.validate()
    checkpoint = str(resolve_checkpoint(config))
    as_dict = serve_config_to_dict(config)
    num_gpus = _resolved_gpus(config)
    if resolved_topology(config, num_gpus) == "combined":
        options = _deployment_options(
            config.model,
            config.ingress,
            config.ingress.num_cpus + config.model.num_cpus,
            max(num_gpus, config.ingress.num_gpus),
        )
        return _deployment(MoodIngress).options(**options).bind(None, checkpoint, as_dict)
    model_options = _deployment_options(config.model, config.model, config.model.num_cpus, num_gpus)
    model = _deployment(MoodModel).options(**model_options).bind(checkpoint, as_dict)
    options = _deployment_options(config.ingress, config.ingress, config.ingress.num_cpus, config.ingress.num_gpus)
    return _deployment(MoodIngress).options(**options).bind(model, checkpoint, as_dict)


def _deployment(decorated: object) -> Deployment:
    """A class decorated with ``@serve.deployment`` as what it is at runtime, a Deployment: mypy does not
    apply class decorators, so it still sees the class (which has no ``options``)."""
    return cast(Deployment, decorated)


def resolved_topology(config: ServeConfig, num_gpus: float) -> str:
    """``auto`` -> ``split`` when the model replicas get GPUs (the CPU-heavy decoding then
    scales on its own, on CPU nodes), else ``combined`` (one replica does everything)."""
    if config.topology != "auto":
        return config.topology
    return "split" if num_gpus > 0 else "combined"


def _resolved_gpus(config: ServeConfig) -> float:
    """model.num_gpus, with -1 (auto) = 1 when the Ray cluster has GPUs right now, else 0."""
    if config.model.num_gpus >= 0:
        return config.model.num_gpus
    import ray

    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1
    return 1.0 if has_gpu and config.device != "cpu" else 0.0


def _deployment_options(
    scaling: DeploymentSettings, limits: DeploymentSettings, num_cpus: float, num_gpus: float
) -> dict[str, Any]:
    """``Deployment.options``: replica counts and autoscaling of ``scaling``, request limits
    of ``limits``, and one replica's CPUs and GPUs (the GPU key only when there are any)."""
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus > 0:
        actor["num_gpus"] = num_gpus
    return {
        "autoscaling_config": scaling.autoscaling(),
        "max_ongoing_requests": limits.max_ongoing_requests,
        "max_queued_requests": limits.max_queued_requests,
        "ray_actor_options": actor,
    }
