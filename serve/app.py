"""Builds the Serve application from a ServeConfig: ``serve.app:build_app`` is what ``serve deploy``
(serve/serve_config.yaml, k8s/rayservice.yaml) and ``mtlmood serve`` import.

A thin router always faces HTTP, so that a replica dying behind it costs its requests a
JSON 503 with Retry-After instead of Serve's plain-text 500. Behind it, two topologies
(``ServeConfig.topology``; ``auto`` picks split when the model replicas get GPUs, combined
otherwise):

    split:    HTTP -> MoodRouter (``router``) -> MoodIngress (``ingress``) -> MoodModel (``model``)
    combined: HTTP -> MoodRouter (``router``) -> MoodIngress replicas that score requests themselves

The router is in serve.router, the other deployments in serve.deployments, the request
parsing in serve.parsing, the JSON answers in serve.schemas, the model in serve.scorer.
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
from serve.router import MoodRouter


def build_app(args: Union[ServeConfig, Mapping[str, Any], None] = None) -> serve.Application:
    """The bound application for ``serve.run`` or a Serve config's ``import_path``.

    ``args`` is a ServeConfig, or a mapping of its fields (the ``args:`` of a Serve
    config file). The checkpoint comes from ``checkpoint``, ``study`` (its best
    checkpoint) or the env vars MTLMOOD_SERVE_CHECKPOINT / MTLMOOD_SERVE_STUDY.

    MoodRouter replicas (``router`` settings, no GPU) face HTTP. ``split``: they call
    MoodIngress replicas (``ingress`` settings), which call MoodModel replicas (``model``
    settings). ``combined``: the MoodIngress replicas score requests themselves; each gets
    the replica counts, autoscaling and request limits of ``ingress``, the CPUs of both
    sections and the GPUs of ``model``.
    """
    from mtlmood.checkpoint import read_card

    config = args if isinstance(args, ServeConfig) else serve_config_from_mapping(dict(args or {}))
    config = config.validate()
    checkpoint = str(resolve_checkpoint(config))
    # The router gets the card as data: it never loads torch or reads the checkpoint itself.
    card = read_card(checkpoint).to_dict()
    as_dict = serve_config_to_dict(config)
    num_gpus = _resolved_gpus(config)
    topology = resolved_topology(config, num_gpus)
    if topology == "combined":
        options = _deployment_options(
            config.ingress,
            config.ingress.num_cpus + config.model.num_cpus,
            max(num_gpus, config.ingress.num_gpus),
        )
        ingress = _deployment(MoodIngress).options(**options).bind(None, checkpoint, as_dict)
    else:
        model_options = _deployment_options(config.model, config.model.num_cpus, num_gpus)
        model = _deployment(MoodModel).options(**model_options).bind(checkpoint, as_dict)
        options = _deployment_options(config.ingress, config.ingress.num_cpus, config.ingress.num_gpus)
        ingress = _deployment(MoodIngress).options(**options).bind(model, checkpoint, as_dict)
    router_options = _deployment_options(config.router, config.router.num_cpus, 0.0)
    return _deployment(MoodRouter).options(**router_options).bind(ingress, card, as_dict, topology)


def _deployment(decorated: object) -> Deployment:
    """A class decorated with ``@serve.deployment`` as what it is at runtime, a Deployment: mypy does not
    apply class decorators, so it still sees the class (which has no ``options``)."""
    return cast(Deployment, decorated)


def resolved_topology(config: ServeConfig, num_gpus: float) -> str:
    """``auto`` -> ``split`` when the model replicas get GPUs (the CPU-heavy decoding then
    scales on its own, on CPU nodes), else ``combined`` (each ingress replica also scores)."""
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


def _deployment_options(settings: DeploymentSettings, num_cpus: float, num_gpus: float) -> dict[str, Any]:
    """``Deployment.options``: replica counts, autoscaling and request limits of ``settings``,
    and one replica's CPUs and GPUs (the GPU key only when there are any)."""
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if num_gpus > 0:
        actor["num_gpus"] = num_gpus
    return {
        "autoscaling_config": settings.autoscaling(),
        "max_ongoing_requests": settings.max_ongoing_requests,
        "max_queued_requests": settings.max_queued_requests,
        "ray_actor_options": actor,
    }
