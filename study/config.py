"""The study config: which cells, how to search alpha within each, the alpha-response curve,
the statistics of the report, resources, and where results go.

One YAML file per dataset lives in ``study/configs/``. The ``run`` section is an
ordinary mtlmood RunConfig (dataset, features, labels, split, model, train): every
trial starts from it and overrides only its cell (n_moods, metadata set), alpha and seed.

A **cell** is dataset x mood count x metadata set. Cells are the factors the study
varies; alpha is what it searches and measures. Nothing ever ranks a trial of one cell
against a trial of another: PR-AUC of 3 and 50 moods lives on different scales.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

from mtlmood.config import METADATA_SETS, RunConfig, load_config, resolve_run_paths
from mtlmood.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
BOOTSTRAP_UNITS = ("auto", "song", "artist", "track")
ADJUST_METHODS = ("holm", "bh")
TAG_SETS = ("moods", "all")


@dataclass(frozen=True)
class SearchConfig:
    """Phase 1, per cell: Optuna TPE over alpha with ASHA early stopping, both within the cell.

    alpha is searched as a log-uniform multiple of the cell's heuristic N_mood / N_meta,
    so one range fits every cell. The heuristic itself (x1) is the first point of every
    cell's search; it gets no protection from ASHA (the curve phase measures it anyway).
    """

    trials_per_cell: int = 12  # each (n_moods, metadata) cell gets its own budget
    # TPE's random start-up per cell, in finished trials: "auto" = a third of the budget
    # (at least 2, at most Optuna's default 10); the seeded heuristic counts as one.
    n_startup_trials: Union[int, str] = "auto"
    time_budget_s: float = 0.0  # stop the search after this long (0 = no limit)
    n_moods: list[int] = field(default_factory=lambda: [3, 9, 50])
    metadata: list[str] = field(default_factory=lambda: ["artist"])  # sets other than "none"
    # Tag set per mood count, where it differs from run.dataset.tag_set (MagnaTagATune's
    # "50 tags" cell takes the top 50 of all tags, its "3" the top 3 mood tags).
    tag_sets: dict[int, str] = field(default_factory=dict)
    alpha_factor_low: float = 0.05
    alpha_factor_high: float = 20.0
    optuna_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds of search trials (cycled)


@dataclass(frozen=True)
class CurveConfig:
    """Phase 2, per cell: the alpha-response curve, every arm over fresh seeds.

    Arms: alpha = 0 (the baseline, shared by the metadata sets of one mood count: it has
    no metadata head), each multiple of the heuristic in ``grid`` (1 = the heuristic),
    the tuned alpha of the search and the learned weight (uncertainty weighting). Every
    run trains to its own early stop. The seeds must not be search seeds: the runs that
    estimate a result never took part in choosing it.
    """

    enabled: bool = True
    grid: list[float] = field(default_factory=lambda: [1 / 9, 1 / 3, 1.0, 3.0, 9.0])
    seeds: list[int] = field(default_factory=lambda: [1001, 1002, 1003])
    tuned: bool = True
    learned: bool = True
    # Seeds of one (cell, alpha) trained one after another in one trial: amortises the
    # ~12 s start-up of a Ray Train trial when runs are short (the demo); 1 on a cluster.
    seeds_per_trial: int = 1


@dataclass(frozen=True)
class SchedulerConfig:
    """ASHA early stopping of search trials on validation PR-AUC (epochs as time), rungs per cell."""

    enabled: bool = True
    grace_period: int = 3  # epochs every trial gets before it can be stopped
    reduction_factor: int = 3


@dataclass(frozen=True)
class ReportConfig:
    """The statistics of the report."""

    # "The heuristic is as good as the best alpha" only from a TOST equivalence test with
    # this margin, in PR-AUC points (0.5: the run-to-run spread reported for Won et al.
    # 2020's models on MagnaTagATune).
    equivalence_margin: float = 0.5
    # What the bootstrap resamples among test songs: songs, or clusters of them (all clips
    # of a track, all songs of an artist). auto = track where clips share one, else song.
    bootstrap_unit: str = "auto"
    adjust: str = "holm"  # multiplicity adjustment over every p-value of the report: holm | bh
    n_boot: int = 2000
    confidence: float = 0.95
    power: float = 0.8  # for the minimum detectable effect
    reference: bool = True  # logistic regression on log-mel mean/std per cell
    # The cell `mtlmood serve --study` serves, as "n_moods|metadata" ("" = the largest
    # mood count, with its metadata set whose best model scored highest on validation).
    serve_cell: str = ""


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
    curve: CurveConfig = field(default_factory=CurveConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    max_failures: int = 2  # restarts of a crashed trial (killed worker, lost node); never for bad data or config

    @property
    def run_dir(self) -> str:
        """Where this study's Tune experiments, runs, report and best checkpoints live."""
        return join_storage(self.storage_path, self.name)


def join_storage(base: str, *parts: str) -> str:
    """An absolute path under the study storage (Ray needs absolute storage paths)."""
    return str(Path(base, *parts).resolve())


def _problems(config: StudyConfig) -> list[str]:
    """Every reason this config would fail late, inside a trial."""
    s, c, r = config.search, config.curve, config.report
    problems = []
    for meta in s.metadata:
        if meta not in METADATA_SETS or meta == "none":
            problems.append(
                f"search.metadata: {meta!r} is not one of {list(METADATA_SETS[1:])} "
                "(the baseline, metadata none, is always included)"
            )
    if not s.n_moods or any(int(n) < 1 for n in s.n_moods):
        problems.append(f"search.n_moods: {s.n_moods!r} must list positive numbers of moods")
    if len(set(s.n_moods)) != len(s.n_moods) or len(set(s.metadata)) != len(s.metadata):
        problems.append("search.n_moods and search.metadata must not repeat an entry")
    for n, tag_set in s.tag_sets.items():
        if tag_set not in TAG_SETS:
            problems.append(f"search.tag_sets: {n}: {tag_set!r} is not one of {list(TAG_SETS)}")
    if s.trials_per_cell < 0:
        problems.append(f"search.trials_per_cell: {s.trials_per_cell} must be >= 0")
    startup = s.n_startup_trials
    if (isinstance(startup, str) and startup != "auto") or (isinstance(startup, int) and startup < 0):
        problems.append(f'search.n_startup_trials: {startup!r} must be "auto" or a whole number >= 0')
    if not 0 < s.alpha_factor_low < s.alpha_factor_high:
        problems.append("search.alpha_factor_low must be > 0 and below search.alpha_factor_high")
    if not s.seeds:
        problems.append("search.seeds must list at least one seed")
    if c.enabled:
        if not c.seeds:
            problems.append("curve.seeds must list at least one seed")
        if len(set(c.seeds)) != len(c.seeds):
            problems.append(f"curve.seeds {c.seeds} repeat a seed")
        shared = sorted(set(c.seeds) & set(s.seeds))
        if shared:
            problems.append(
                f"curve.seeds and search.seeds share {shared}: the curve's runs must be fresh seeds "
                "the search never used"
            )
        if not c.grid or any(not (math.isfinite(f) and f > 0) for f in c.grid):
            problems.append(f"curve.grid: {c.grid} must list positive multiples of the heuristic")
        elif not any(math.isclose(f, 1.0) for f in c.grid):
            problems.append(f"curve.grid: {c.grid} must include 1 (the heuristic itself)")
        if c.seeds_per_trial < 1:
            problems.append("curve.seeds_per_trial must be >= 1")
    if r.bootstrap_unit not in BOOTSTRAP_UNITS:
        problems.append(f"report.bootstrap_unit: {r.bootstrap_unit!r} is not one of {list(BOOTSTRAP_UNITS)}")
    if r.adjust not in ADJUST_METHODS:
        problems.append(f"report.adjust: {r.adjust!r} is not one of {list(ADJUST_METHODS)}")
    if not r.equivalence_margin > 0:
        problems.append(f"report.equivalence_margin: {r.equivalence_margin} must be > 0 (PR-AUC points)")
    if r.n_boot < 100:
        problems.append(f"report.n_boot: {r.n_boot} must be >= 100")
    if not 0 < r.confidence < 1 or not 0 < r.power < 1:
        problems.append("report.confidence and report.power must lie between 0 and 1")
    if config.resources.use_gpu not in ("auto", "true", "false", "True", "False"):
        problems.append(f"resources.use_gpu: {config.resources.use_gpu!r} must be auto, true or false")
    if "://" in config.storage_path:
        # Tune and Train could write to object storage, but the study's own tables, report
        # and best-checkpoint pointer (and Serve) need a file system path.
        problems.append(
            f"storage_path {config.storage_path!r}: object-store URIs are not supported yet; "
            "use a local directory or a shared file system mounted on every node "
            "(EFS/NFS, e.g. /mnt/shared/mtlmood/studies), see docs/RUNBOOK.md"
        )
    if config.resources.num_workers < 1:
        problems.append("resources.num_workers must be >= 1")
    if config.max_failures < 0:
        problems.append("max_failures must be >= 0")
    return problems


def validate(config: StudyConfig) -> StudyConfig:
    """Reject configs that would fail late, inside a trial (all problems in one message)."""
    problems = _problems(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def resolve_paths(config: StudyConfig, base: str | os.PathLike[str] | None = None) -> StudyConfig:
    """Every relative path (storage, dataset, audio, cache, output) made absolute against
    ``base`` (default: the working directory), once, before anything reaches Ray."""
    where = Path(base) if base is not None else Path.cwd()
    storage = (
        config.storage_path
        if "://" in config.storage_path
        else str((where / Path(config.storage_path).expanduser()).resolve())
    )
    return replace(config, storage_path=storage, run=resolve_run_paths(config.run, where))


def shipped_configs() -> list[str]:
    """Names of the study configs in study/configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_study_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> StudyConfig:
    """Defaults <- YAML file <- dotted overrides (e.g. ``search.trials_per_cell=8``), paths resolved.

    A bare name such as ``synthetic`` means ``study/configs/synthetic.yaml``.
    """
    if path is not None and not Path(path).exists():
        if (CONFIG_DIR / f"{path}.yaml").exists():
            path = CONFIG_DIR / f"{path}.yaml"
        else:
            raise ConfigError(
                f"no study config {str(path)!r}: not a file, and not one of the shipped configs "
                f"({', '.join(shipped_configs())})"
            )
    return validate(resolve_paths(load_config(StudyConfig, path, overrides)))


def trial_run_config(study: StudyConfig, n_moods: int, metadata: str, alpha: Union[float, str], seed: int) -> RunConfig:
    """The RunConfig of one run: the study's base run with its cell, alpha and seed."""
    run = study.run
    tag_set = study.search.tag_sets.get(int(n_moods), run.dataset.tag_set)
    return replace(
        run,
        dataset=replace(run.dataset, tag_set=tag_set),  # type: ignore[arg-type]
        labels=replace(run.labels, n_moods=int(n_moods), metadata=metadata),
        train=replace(run.train, alpha=alpha if isinstance(alpha, str) else float(alpha), seed=int(seed)),
    )
