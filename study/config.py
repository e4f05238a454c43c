"""The study config: what to search, how long, with which resources, where results go.

One YAML file per dataset lives in ``study/configs/``. The ``run`` section is an
ordinary mtlmood RunConfig (dataset, features, labels, split, model, train): every
trial starts from it and overrides only n_moods, the metadata set, alpha and the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from mtlmood.config import METADATA_SETS, RunConfig, load_config
from mtlmood.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class SearchConfig:
    """Phase 1: Optuna TPE over (n_moods, metadata set, alpha), with early stopping.

    The baseline of each n_moods is evaluated once, as a seeded point: sampled trials
    choose a metadata set (the baseline has no alpha to vary, so sampling it again would
    only repeat that run).
    """

    num_samples: int = 24  # trials in phase 1, the seeded baseline/heuristic points included
    # TPE's random start-up, in finished trials: "auto" = the seeded points (at most 10),
    # so TPE starts once every cell's baseline and heuristic alpha are in; Optuna's own
    # default of 10 would make budgets of ~10 trials pure random search (study/space.py).
    n_startup_trials: Union[int, str] = "auto"
    time_budget_s: float = 0.0  # stop the search after this long (0 = no limit)
    n_moods: list[int] = field(default_factory=lambda: [3, 9, 50])
    metadata: list[str] = field(default_factory=lambda: ["artist"])  # sets other than "none"
    # alpha is searched as a log-uniform multiple of the heuristic N_mood / N_meta
    alpha_factor_low: float = 0.05
    alpha_factor_high: float = 20.0
    optuna_seed: int = 0
    training_seed: int = 0  # the seed of every search trial (seeds vary in phase 2)


@dataclass(frozen=True)
class ConfirmConfig:
    """Phase 2: baseline, heuristic alpha and best alpha found, each over several seeds."""

    enabled: bool = True
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass(frozen=True)
class SchedulerConfig:
    """ASHA early stopping of poor search trials on validation PR-AUC (epochs as time).

    ASHA compares trials across cells (n_moods x metadata set), so a strong cell can stop
    another cell's trials at the grace period. The seeded trials (baseline and heuristic
    alpha of every cell) are the study's reference arms: with ``protect_seeded`` ASHA
    still ranks them in its rungs (they set the bar for the others) but never stops them,
    so each runs to its own early stop, like a confirm-phase run. That costs their
    remaining epochs (a few trials per study); set it false to let ASHA stop them too.
    """

    enabled: bool = True
    grace_period: int = 3  # epochs every trial gets before it can be stopped
    reduction_factor: int = 3
    protect_seeded: bool = True  # never stop the seeded baseline / heuristic-alpha trials


@dataclass(frozen=True)
class ResourcesConfig:
    """Per-trial resources. Concurrency follows from them and from what the cluster has."""

    num_workers: int = 1  # Ray Train workers per trial (DDP when > 1)
    use_gpu: str = "auto"  # auto | true | false
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    driver_cpus: float = 0.1  # the Tune trial driver that only builds and waits on a TorchTrainer
    driver_resource: str = ""  # custom resource that pins drivers to the head node (cluster)
    max_concurrent_trials: int = 0  # 0 = derive from the cluster's resources


@dataclass(frozen=True)
class StudyConfig:
    """A whole alpha study."""

    name: str = "alpha-study"
    storage_path: str = "runs/studies"  # a local directory, or a shared file system on a cluster
    run: RunConfig = field(default_factory=RunConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2  # Ray Train restarts of a trial's workers, resuming from the last checkpoint
    report_bootstrap: int = 2000  # paired-bootstrap resamples for the verdicts

    @property
    def run_dir(self) -> str:
        """Where this study's Tune experiments, report and best checkpoint live."""
        return join_storage(self.storage_path, self.name)


def join_storage(base: str, *parts: str) -> str:
    """An absolute path under the study storage (Ray needs absolute storage paths)."""
    return str(Path(base, *parts).resolve())


def validate(config: StudyConfig) -> StudyConfig:
    """Reject configs that would fail late, inside a trial."""
    for meta in config.search.metadata:
        if meta not in METADATA_SETS or meta == "none":
            raise ConfigError(f"search.metadata: {meta!r} is not one of {list(METADATA_SETS[1:])} "
                              "(the baseline, metadata none, is always included)")
    if not config.search.n_moods or any(int(n) < 1 for n in config.search.n_moods):
        raise ConfigError("search.n_moods must list positive numbers of moods")
    startup = config.search.n_startup_trials
    if (isinstance(startup, str) and startup != "auto") or (isinstance(startup, int) and startup < 0):
        raise ConfigError(f"search.n_startup_trials: {startup!r} must be \"auto\" or a whole number >= 0")
    if not 0 < config.search.alpha_factor_low < config.search.alpha_factor_high:
        raise ConfigError("search.alpha_factor_low must be > 0 and below search.alpha_factor_high")
    if config.confirm.enabled and len(config.confirm.seeds) < 1:
        raise ConfigError("confirm.seeds must list at least one seed")
    if config.resources.use_gpu not in ("auto", "true", "false", "True", "False"):
        raise ConfigError("resources.use_gpu must be auto, true or false")
    if "://" in config.storage_path:
        # Tune and Train could write to object storage, but the study's own tables, report
        # and best-checkpoint pointer (and Serve) need a file system path.
        raise ConfigError(f"storage_path {config.storage_path!r}: object-store URIs are not supported yet; "
                          "use a local directory or a shared file system mounted on every node "
                          "(EFS/NFS, e.g. /mnt/shared/mtlmood/studies), see docs/RUNBOOK.md")
    if config.resources.num_workers < 1:
        raise ConfigError("resources.num_workers must be >= 1")
    return config


def load_study_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> StudyConfig:
    """Defaults <- YAML file <- dotted overrides (e.g. ``search.num_samples=8``).

    A bare name such as ``synthetic`` means ``study/configs/synthetic.yaml``.
    """
    if path is not None and not Path(path).exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        path = CONFIG_DIR / f"{path}.yaml"
    return validate(load_config(StudyConfig, path, overrides))


def trial_run_config(study: StudyConfig, n_moods: int, metadata: str, alpha: float, seed: int) -> RunConfig:
    """The RunConfig of one trial: the study's base run with this trial's choices."""
    run = study.run
    return replace(run,
                   labels=replace(run.labels, n_moods=int(n_moods), metadata=metadata),
                   split=run.split,
                   train=replace(run.train, alpha=float(alpha), seed=int(seed)))


def study_to_dict(config: StudyConfig) -> dict[str, Any]:
    from mtlmood.config import to_dict

    return to_dict(config)
