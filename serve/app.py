"""Builds the Serve application from a ServeConfig: ``serve.app:build_app`` is what a Serve config
file (written by `mtlmood serve build`: serve/serve_config.yaml, k8s/rayservice.yaml) names for
``serve run`` / ``serve deploy``, and what ``mtlmood serve`` deploys.

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

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union, cast

from ray import serve
from ray.serve import Deployment

from mtlmood.checkpoint_pointer import local_checkpoint
from serve.build import deployment_options, resolved_topology, with_gpus_resolved
from serve.config import MIB, ServeConfig, model_source, serve_config_from_mapping, serve_config_to_dict
from serve.deployments import MoodIngress, MoodModel
from serve.router import MoodRouter
from serve.schemas import CARD_MARKDOWN_KEY

if TYPE_CHECKING:
    from mtlmood.checkpoint import ModelCard
    from mtlmood.study_evidence import StudyRecord

logger = logging.getLogger(__name__)


def build_app(args: Union[ServeConfig, Mapping[str, Any], None] = None) -> serve.Application:
    """The bound application for ``serve.run`` or a Serve config's ``import_path``.

    ``args`` is a ServeConfig, or a mapping of its fields (the ``args:`` of a Serve
    config file). The checkpoint comes from ``checkpoint``, ``study`` (its best
    checkpoint) or the env vars MTLMOOD_SERVE_CHECKPOINT / MTLMOOD_SERVE_STUDY: a path, or a
    URI (``s3://...``) that each replica downloads once into its node's cache.

    MoodRouter replicas (``router`` settings, no GPU) face HTTP. ``split``: they call
    MoodIngress replicas (``ingress`` settings), which call MoodModel replicas (``model``
    settings). ``combined``: the MoodIngress replicas score requests themselves. Each
    deployment's options come from serve.build.deployment_options, which also writes the
    ``deployments:`` of a Serve config file, so the two always agree.
    """
    from mtlmood.checkpoint import read_card

    config = args if isinstance(args, ServeConfig) else serve_config_from_mapping(dict(args or {}))
    config = with_gpus_resolved(config.validate(), _cluster_has_gpus())
    _warn_if_no_node_fits_a_router(config)
    # The replicas get where the checkpoint is (a path, or a URI each of them copies into its
    # node's cache); this process reads the card from a local copy of its own. A study's pointer
    # is read here once: GET /model describes the model loaded, whatever the study writes later.
    checkpoint, study = model_source(config)
    local = local_checkpoint(checkpoint)
    # The router gets the card, and MODEL_CARD.md, as data: it never loads torch or reads the checkpoint.
    model_card = read_card(local)
    card = {**model_card.to_dict(), CARD_MARKDOWN_KEY: model_card_markdown(local, model_card, checkpoint)}
    as_dict = serve_config_to_dict(config)
    topology = resolved_topology(config, config.model.num_gpus)
    # The names DEPLOYMENT_NAMES gives the `deployments:` of a Serve file are these classes' (a test checks).
    classes = {"router": MoodRouter, "ingress": MoodIngress, "model": MoodModel}
    deployments = {s: _deployment(classes[s]).options(**opts) for s, opts in deployment_options(config).items()}
    if topology == "combined":
        ingress = deployments["ingress"].bind(None, checkpoint, as_dict)
    else:
        model = deployments["model"].bind(checkpoint, as_dict)
        ingress = deployments["ingress"].bind(model, checkpoint, as_dict)
    return deployments["router"].bind(ingress, card, as_dict, topology, study)


def model_card_markdown(checkpoint: Path, card: "ModelCard", source: str = "") -> str:
    """MODEL_CARD.md of the served checkpoint: rendered from its card and, when a study chose it
    as a cell's best, the evidence the study wrote beside it (``source``: where the checkpoint is
    named from, e.g. a URI, default its path). A checkpoint without that evidence but with a
    MODEL_CARD.md (written by `mtlmood model-card` or an older study) is served that card."""
    from mtlmood.model_card import MODEL_CARD_FILE, render_model_card

    study = _study_evidence(checkpoint)
    written = checkpoint / MODEL_CARD_FILE
    if study is None and written.is_file():
        return written.read_text(encoding="utf-8")
    return render_model_card(card, source or str(checkpoint), study)


def _study_evidence(checkpoint: Path) -> Optional["StudyRecord"]:
    """The study's record of ``checkpoint`` (its STUDY_EVIDENCE_FILE), or None when no study wrote
    one or it is unreadable (the card is then served without it, never refused)."""
    from mtlmood.errors import MtlmoodError
    from mtlmood.fileio import read_json_object
    from mtlmood.filenames import STUDY_EVIDENCE_FILE
    from mtlmood.study_evidence import StudyRecord

    path = checkpoint / STUDY_EVIDENCE_FILE
    if not path.is_file():
        return None
    try:
        return StudyRecord.from_dict(read_json_object(path, MtlmoodError, "study evidence"))
    except MtlmoodError:
        return None


def _deployment(decorated: object) -> Deployment:
    """A class decorated with ``@serve.deployment`` as what it is at runtime, a Deployment: mypy does not
    apply class decorators, so it still sees the class (which has no ``options``)."""
    return cast(Deployment, decorated)


def _warn_if_no_node_fits_a_router(config: ServeConfig) -> None:
    """Log a warning when no node of the running Ray offers the memory a router replica reserves:
    Serve would wait for one (an autoscaling cluster may still add it, so this does not refuse)."""
    import ray

    if not ray.is_initialized():
        return
    largest = max((n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
    needed = config.router_memory_bytes()
    if needed > largest:
        logger.warning(
            "a router replica reserves %.0f MiB of memory, but the largest node offers Ray %.0f MiB: Serve "
            "waits for a node that can hold it; lower max_body_bytes or router.max_ongoing_requests",
            needed / MIB,
            largest / MIB,
        )


def _cluster_has_gpus() -> bool:
    """Whether the Ray cluster has a GPU right now (what ``model.num_gpus: -1`` asks)."""
    import ray

    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1
