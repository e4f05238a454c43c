"""Typed settings of the Serve application, one dataclass per concern.

The defaults suit a laptop or a small CPU node: on 2 CPUs they run two router replicas
(0 CPU) and two worker replicas of 1 CPU each, so the death of one worker costs only the
requests it held. A YAML file (``--config serve.yaml``: these fields, or a Ray Serve config
that `mtlmood serve build` wrote, whose ``args`` they are) and dotted overrides (``--set
ingress.max_replicas=8``) change them (serve.config_file.load_serve_config), with the same
loader and error messages as the training configs (:mod:`mtlmood.config_io`).

Where the model comes from: ``checkpoint`` (an mtlmood checkpoint directory) or
``study`` (a study run directory; its ``best_checkpoint.json`` names the winner, read through
mtlmood.checkpoint_pointer), each a local path or a URI (``s3://bucket/...``, read through
mtlmood.storage). API keys (``auth``) are serve.auth's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional, TypedDict

from pydantic import AfterValidator, Field

from mtlmood import storage
from mtlmood.checkpoint_pointer import (
    BEST_CHECKPOINTS_FILE,
    cell_entry,
    local_checkpoint,
    pointed_location,
    read_pointer,
)
from mtlmood.coerce import check_config, from_dict, to_dict
from mtlmood.config import Count, NonNegativeFloat, NonNegativeInt, PathText, PositiveFloat
from mtlmood.errors import ConfigError
from serve.auth import AuthSettings

CHECKPOINT_ENV = "MTLMOOD_SERVE_CHECKPOINT"  # fallback for `serve deploy` configs without args
STUDY_ENV = "MTLMOOD_SERVE_STUDY"
TOPOLOGIES = ("auto", "split", "combined")
MIB = 1024 * 1024
# Every deployment's health checks. Serve notices a dead replica (SIGKILL, OOM, a lost
# node) only when its next health check fails, so the period bounds how long its share of
# requests gets 503s before a replacement starts: 2 s, not Serve's 10 (a check reads one
# attribute). A default-layout ingress replica SIGKILLed under 16 clients was replaced after
# 14.0 s, against 17.0 and 19.1 s at 10 s (2026-12-06, 2 cores, tests/serve).
HEALTH_CHECK_PERIOD_S = 2.0


# What every deployment (router, ingress, model) is deployed with: checked every
# HEALTH_CHECK_PERIOD_S, 30 s to answer a check (Serve's default), and 10 s to finish the
# requests it holds when Serve stops it (scale-down, redeploy; Serve's default is 20 s: a
# forward takes well under a second, so 10 s drains a full queue and stops it sooner).
class ReplicaLifecycle(TypedDict):
    """Keyword arguments of ``serve.deployment`` (a TypedDict, so each one is type-checked)."""

    health_check_period_s: float
    health_check_timeout_s: float
    graceful_shutdown_timeout_s: float


REPLICA_LIFECYCLE = ReplicaLifecycle(
    health_check_period_s=HEALTH_CHECK_PERIOD_S, health_check_timeout_s=30.0, graceful_shutdown_timeout_s=10.0
)


def _queue_bound(value: int) -> int:
    if value < -1 or value == 0:
        raise ValueError("must be >= 1 (or -1 = unbounded)")
    return value


def _gpus(value: float) -> float:
    if value < 0 and value != -1:
        raise ValueError("must be >= 0 (or -1 = auto)")
    return value


def _route_prefix(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    return value


QueueBound = Annotated[int, AfterValidator(_queue_bound)]
Gpus = Annotated[float, AfterValidator(_gpus)]


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching on the model deployment (``@serve.batch``).

    One batch item is one request's segment array (a 29 s song has 9 segments), so
    ``max_batch_size`` counts requests; a full batch is up to ~9x that many segments.
    """

    enabled: bool = True
    max_batch_size: Count = 16  # requests per forward
    # How long a batch waits for more requests; 10 ms is small next to a ~50-100 ms forward.
    batch_wait_timeout_s: NonNegativeFloat = 0.01
    # A request that finds the replica idle (nothing waiting or in a forward) is scored at
    # once instead of waiting batch_wait_timeout_s for company: lower latency at low load.
    immediate_when_idle: bool = True


@dataclass(frozen=True)
class DeploymentSettings:
    """Replica count, autoscaling, queue bounds and resources of one deployment."""

    min_replicas: NonNegativeInt = 1
    max_replicas: Count = 2
    # Autoscaling aims at this many ongoing requests per replica.
    target_ongoing_requests: PositiveFloat = 8.0
    upscale_delay_s: NonNegativeFloat = 5.0
    downscale_delay_s: NonNegativeFloat = 60.0  # Serve's default (600 s) keeps idle replicas for 10 minutes
    max_ongoing_requests: Count = 32  # per replica, running + waiting inside it
    # Waiting in the caller's queue when every replica is full; more are refused with 503.
    # Serve's default (-1) is unbounded, which turns overload into ever-growing latency.
    max_queued_requests: QueueBound = 64
    num_cpus: NonNegativeFloat = 1.0
    # -1 = auto: one GPU per replica when the cluster has GPUs at deploy time (model only).
    num_gpus: Gpus = 0.0
    # Worker threads per replica: torch intra-op threads (model, on CPU) or decode threads
    # (ingress). 0 = from num_cpus (at least 1).
    threads: NonNegativeInt = 0

    def autoscaling(self) -> dict[str, Any]:
        """The ``autoscaling_config`` mapping Serve expects."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.min_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
        }


@dataclass(frozen=True)
class RouterSettings(DeploymentSettings):
    """The HTTP front (MoodRouter): parses requests and relays them to the ingress replicas.

    It decodes nothing and holds no model, so it needs no CPU reservation and is the
    replica least likely to die; it answers for the replicas behind it when they do.
    ``threads`` is not used; ``num_gpus`` must stay 0. It does hold every request's whole body
    until the answer, so Ray reserves memory for it (``ServeConfig.router_memory_bytes``).
    """

    min_replicas: NonNegativeInt = 2
    max_replicas: Count = 2
    target_ongoing_requests: PositiveFloat = 64.0
    # Must hold every request the ingress replicas can hold (validate() checks it): a full
    # router is refused by Serve's proxy with a plain-text 503, a full ingress queue by us in JSON.
    # Each may be a body of max_body_bytes: 80 x 20 MiB is the default reservation's bulk.
    max_ongoing_requests: Count = 80
    max_queued_requests: QueueBound = 256  # waiting in Serve's proxy, bodies not read yet
    num_cpus: NonNegativeFloat = 0.0
    # The process without bodies: ~250 MiB of RSS measured per router in the soak (benchmarks/results/soak.md).
    memory_base_mib: Count = 320
    # The most memory one router replica may reserve; validate() refuses settings that need more.
    # At most what a node offers Ray (its `memory` resource, ~70 % of its free RAM by default).
    max_memory_mib: Count = 2048


@dataclass(frozen=True)
class IngressSettings(DeploymentSettings):
    """The ingress replicas (MoodIngress): decoding and features, and in the ``combined``
    topology the scoring too. They do the work that can kill a replica, so there are two
    by default: one death costs only the requests that replica held."""

    min_replicas: NonNegativeInt = 2
    max_replicas: Count = 4
    # Decoding a 29 s clip takes tens of ms of one core; most requests just wait on the model.
    target_ongoing_requests: PositiveFloat = 8.0
    # Every request here and in the queue is also a body held by a router (router.max_ongoing_requests
    # covers 4 x 16 + 16): larger queues cost router memory, and a request waiting longer than
    # request_timeout_s gets a 504 anyway. A full batch (batching.max_batch_size) still fits.
    max_ongoing_requests: Count = 16
    max_queued_requests: QueueBound = 16
    num_cpus: NonNegativeFloat = 0.5


@dataclass(frozen=True)
class ModelSettings(DeploymentSettings):
    """The model replicas: one checkpoint loaded per replica, batched forwards. In the
    ``combined`` topology there is no model deployment: its CPUs and threads go to each
    ingress replica."""

    # One by default: in the split topology each model replica takes a whole GPU.
    min_replicas: NonNegativeInt = 1
    num_cpus: NonNegativeFloat = 0.5
    num_gpus: Gpus = -1.0


@dataclass(frozen=True)
class ServeConfig:
    """Everything `mtlmood serve` and `serve deploy` need to run the endpoint."""

    checkpoint: PathText = ""  # an mtlmood checkpoint directory ...
    study: PathText = ""  # ... or a study run directory (its best_checkpoint.json)
    cell: str = ""  # with study: the cell to serve, "n_moods|metadata" ("" = the study's default cell)
    host: str = "127.0.0.1"  # loopback by default; 0.0.0.0 exposes the endpoint
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    app_name: Annotated[str, Field(min_length=1)] = "mtlmood"
    route_prefix: Annotated[str, AfterValidator(_route_prefix)] = "/"
    max_body_bytes: Count = 20 * 1024 * 1024  # a 29 s mp3 is ~0.5 MB, a 29 s 48 kHz wav ~5.6 MB
    top_k: NonNegativeInt = 5  # default length of the "top" list (query ?top_k= overrides it)
    device: str = "auto"  # model replicas: auto | cpu | cuda
    # Behind the router (always there): split: ingress replicas decode and call separate model
    # replicas; combined: each ingress replica decodes and scores (saves a hop: faster on
    # CPU-only nodes); auto: split when the model gets GPUs.
    topology: str = "auto"
    # fp32 (exact) or bf16 (convolutions in bfloat16: ~2-3x the network's speed on AMX /
    # AVX-512 BF16 CPUs, probabilities within ~1e-3); see mtlmood.inference.
    precision: str = "fp32"
    # Ingress: requests allowed to wait for or run decoding in one replica; more get 503 JSON.
    max_pending_decodes: Count = 32
    model_timeout_s: PositiveFloat = 30.0  # ingress gives up on the model after this long (504)
    # The router gives up on an ingress replica after this long (504): decoding + model_timeout_s.
    request_timeout_s: PositiveFloat = 60.0
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    router: RouterSettings = field(default_factory=RouterSettings)
    ingress: IngressSettings = field(default_factory=IngressSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)  # API keys (serve.auth); off by default

    def router_memory_bytes(self) -> int:
        """Memory Ray reserves for each router replica (its ``ray_actor_options.memory``): the
        process (``router.memory_base_mib``) plus a whole body (``max_body_bytes``) for each request
        it may hold at once (``router.max_ongoing_requests``): it reads every body before relaying
        it, and keeps it until the answer."""
        return self.router.memory_base_mib * MIB + self.router.max_ongoing_requests * self.max_body_bytes

    def validate(self) -> "ServeConfig":
        """Raise ConfigError (one line) for settings Serve would reject later with a less clear
        message: each setting's type and range, then the rules that tie settings together."""
        check_config(self)
        problems: list[str] = []
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.topology not in TOPOLOGIES:
            problems.append(f"topology must be one of {', '.join(TOPOLOGIES)}, got {self.topology!r}")
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision must be fp32 or bf16, got {self.precision!r}")
        for name, dep in (("router", self.router), ("ingress", self.ingress), ("model", self.model)):
            if dep.min_replicas > dep.max_replicas:
                problems.append(
                    f"{name}.min_replicas={dep.min_replicas}: must be <= {name}.max_replicas ({dep.max_replicas})"
                )
        if self.device == "cuda" and self.model.num_gpus == 0:
            problems.append(
                "device: cuda needs model.num_gpus > 0 (or -1 = auto); a replica without a GPU cannot see one"
            )
        if (
            self.topology == "combined"
            and self.batching.enabled
            and self.ingress.max_ongoing_requests < self.batching.max_batch_size
        ):
            problems.append(
                f"ingress.max_ongoing_requests ({self.ingress.max_ongoing_requests}) must be >= "
                f"batching.max_batch_size ({self.batching.max_batch_size}) in the combined topology"
            )
        if self.batching.enabled and self.model.max_ongoing_requests < self.batching.max_batch_size:
            # Fewer ongoing requests than a batch holds means a batch can never fill.
            problems.append(
                f"model.max_ongoing_requests ({self.model.max_ongoing_requests}) must be >= "
                f"batching.max_batch_size ({self.batching.max_batch_size})"
            )
        if self.router.num_gpus != 0:
            problems.append("router.num_gpus must be 0: the router decodes nothing and holds no model")
        if self.request_timeout_s <= self.model_timeout_s:
            # Otherwise the router answers 504 before the ingress can say the model timed out.
            problems.append(
                f"request_timeout_s ({self.request_timeout_s}) must be > model_timeout_s ({self.model_timeout_s})"
            )
        problems += self._router_capacity_problems()
        problems += self._router_memory_problems()
        problems += self.auth.problems()
        if problems:
            raise ConfigError("invalid serve config: " + "; ".join(problems))
        return self

    def _router_capacity_problems(self) -> list[str]:
        """Overload must fill the ingress queue (answered by the router: JSON 503) before a
        router replica is full (answered by Serve's proxy: a plain-text 503). A router replica
        holds at most every ingress replica's requests plus its own queue of waiting ones."""
        ingress = self.ingress
        if ingress.max_queued_requests == -1:
            return [
                "ingress.max_queued_requests=-1 (unbounded) lets requests pile up in the router until "
                "Serve's proxy refuses them in plain text; give it a bound"
            ]
        needed = ingress.max_replicas * ingress.max_ongoing_requests + ingress.max_queued_requests
        if self.router.max_ongoing_requests < needed:
            return [
                f"router.max_ongoing_requests ({self.router.max_ongoing_requests}) must be >= "
                f"ingress.max_replicas x ingress.max_ongoing_requests + ingress.max_queued_requests ({needed})"
            ]
        return []

    def _router_memory_problems(self) -> list[str]:
        """A router replica must fit its reservation into ``router.max_memory_mib``, or it would wait
        for a node that can hold it (Serve would never finish deploying)."""
        needed = self.router_memory_bytes()
        if needed <= self.router.max_memory_mib * MIB:
            return []
        return [
            f"a router replica needs {needed / MIB:.0f} MiB (router.memory_base_mib {self.router.memory_base_mib} "
            f"+ max_body_bytes {self.max_body_bytes} x router.max_ongoing_requests {self.router.max_ongoing_requests})"
            f", more than router.max_memory_mib ({self.router.max_memory_mib}): lower max_body_bytes or the queues "
            "(router.max_ongoing_requests, with the ingress.* queues it must hold), or raise router.max_memory_mib "
            "up to what a node offers"
        ]


def serve_config_from_mapping(data: Mapping[str, Any]) -> ServeConfig:
    """A ServeConfig from a plain mapping (``args:`` of a Serve config file), validated."""
    return from_dict(ServeConfig, dict(data)).validate()


def serve_config_to_dict(config: ServeConfig) -> dict[str, Any]:
    """Plain dict (for ``args:`` and for sending the config to replicas)."""
    return to_dict(config)


def checkpoint_source(config: ServeConfig) -> str:
    """Where the checkpoint to serve is: ``checkpoint``, else the study's (cell's) best, else the
    env vars. A local path (made absolute) or a URI (``s3://...``), as given: each replica makes
    its own local copy of a URI (mtlmood.checkpoint_pointer.local_checkpoint), so every node fills its cache."""
    return model_source(config)[0]


def model_source(config: ServeConfig) -> tuple[str, Optional[dict[str, Any]]]:
    """``checkpoint_source`` and, when a study chose the model, what its pointer says about it
    (``study_selection``), from one read of the pointer: the two describe the same model even
    if the study rewrites its pointer meanwhile."""
    checkpoint, study = config.checkpoint, config.study
    if checkpoint and study:
        raise ConfigError("give either a checkpoint or a study run directory, not both")
    if not checkpoint and not study:  # the env vars are only a fallback (e.g. a Serve config's runtime_env)
        checkpoint, study = os.environ.get(CHECKPOINT_ENV, ""), os.environ.get(STUDY_ENV, "")
        study = "" if checkpoint else study
    if not checkpoint and not study:
        raise ConfigError(
            f"no model to serve: pass --checkpoint DIR or --study RUN (or set {CHECKPOINT_ENV} / {STUDY_ENV})"
        )
    if config.cell and not study:
        raise ConfigError("cell names a cell of a study: give --study RUN with --cell")
    selection = None
    if study:
        selection = study_selection(study, config.cell)  # a study without a pointer fails here, saying why
        checkpoint = pointed_location(study, selection["checkpoint"])
    if storage.is_uri(checkpoint):
        problem = storage.location_problem(checkpoint)
        if problem:
            raise ConfigError(f"{checkpoint}: {problem}")
        return storage.normalize(checkpoint), selection
    return str(Path(checkpoint).expanduser().resolve()), selection


def resolve_checkpoint(config: ServeConfig) -> Path:
    """A local copy of the checkpoint to serve (``checkpoint_source``; a URI is downloaded once into
    the cache). Checks that it holds a model card, so a wrong path fails here with one clear line
    instead of in every replica's constructor."""
    from mtlmood.checkpoint import read_card

    path = local_checkpoint(checkpoint_source(config))
    read_card(path)  # CheckpointError with the reason when it is not a checkpoint
    return path


def _study_pointer(study: str) -> str:
    """``<study>/best_checkpoint.json`` (path or URI); ConfigError when the study or its pointer is missing."""
    if not storage.is_dir(study):
        raise ConfigError(f"study run directory not found: {storage.normalize(study)}")
    pointer = storage.join(study, BEST_CHECKPOINTS_FILE)
    if not storage.is_file(pointer):
        raise ConfigError(
            f"{storage.normalize(study)} has no {BEST_CHECKPOINTS_FILE}: the study has not finished a phase yet "
            "(run `mtlmood study report RUN` after it has)"
        )
    return pointer


def study_selection(study: storage.Location, cell: str = "") -> dict[str, Any]:
    """What ``<study>/best_checkpoint.json`` (a path or URI) says about one cell's best model (the
    default cell when ``cell`` is ""): its checkpoint (as the pointer names it), arm, alpha, seed and
    validation score (mtlmood.checkpoint_pointer.cell_entry). Read once per deployment (build_app);
    the router answers GET /model from that copy."""
    pointer = _study_pointer(os.fspath(study))
    return cell_entry(read_pointer(study), cell, pointer)
