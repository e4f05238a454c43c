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
from typing import Annotated, Any, Union

from pydantic import BeforeValidator, Field

from mtlmood import storage
from mtlmood.coerce import check_config
from mtlmood.config import (
    METADATA_SETS,
    Count,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PathText,
    PositiveFloat,
    RunConfig,
    Seed,
    one_of,
)
from mtlmood.config_io import load_config, resolve_run_paths
from mtlmood.errors import ConfigError
from study.optuna_urls import database_url, resolve_database_url

CONFIG_DIR = Path(__file__).parent / "configs"
BOOTSTRAP_UNITS = ("auto", "song", "artist", "track")
ADJUST_METHODS = ("holm", "bh")
# What report.primary may name (study.report.families.PRIMARY_CHOICES; the config cannot import the report).
PRIMARY_CHOICES = (
    "heuristic - baseline",
    "best alpha - heuristic",
    "best alpha - baseline",
    "learned - heuristic",
    "learned - baseline",
    "slope",
)
TAG_SETS = ("moods", "all")
SEARCH_METADATA = METADATA_SETS[1:]  # the baseline (metadata none) is always included
USE_GPU = ("auto", "true", "false", "True", "False")


def _auto_or_count(value: Any) -> Any:
    """search.n_startup_trials: "auto" or a whole number >= 0."""
    allowed = 'must be "auto" or a whole number >= 0'
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 0:
        raise ValueError(allowed)
    return int(value)


def _metadata_set(value: str) -> str:
    if value not in SEARCH_METADATA:
        raise ValueError(
            f"must be one of {', '.join(SEARCH_METADATA)} (the baseline, metadata none, is always included)"
        )
    return value


@dataclass(frozen=True)
class SearchConfig:
    """Phase 1, per cell: Optuna TPE over alpha with ASHA early stopping, both within the cell.

    alpha is searched as a log-uniform multiple of the cell's heuristic N_mood / N_meta,
    so one range fits every cell. The heuristic itself (x1) is the first point of every
    cell's search; it gets no protection from ASHA (the curve phase measures it anyway).
    """

    trials_per_cell: NonNegativeInt = 12  # each (n_moods, metadata) cell gets its own budget
    # TPE's random start-up per cell, in finished trials: "auto" = a third of the budget
    # (at least 2, at most Optuna's default 10); the seeded heuristic counts as one.
    n_startup_trials: Annotated[Union[int, str], BeforeValidator(_auto_or_count)] = "auto"
    time_budget_s: NonNegativeFloat = 0.0  # stop the search after this long (0 = no limit)
    n_moods: Annotated[list[Count], Field(min_length=1)] = field(default_factory=lambda: [3, 9, 50])
    # Metadata sets other than "none" (the baseline is always included).
    metadata: Annotated[list[Annotated[str, BeforeValidator(_metadata_set)]], Field(min_length=1)] = field(
        default_factory=lambda: ["artist"]
    )
    # Artist classes (top-K artists of the training songs) as a factor of its own, so that
    # N_mood / N_meta varies at a fixed mood count too: cells = n_moods x metadata x
    # n_artists for metadata sets with artist. Empty = run.labels.n_artists only (one cell
    # per metadata set, as before). A count other than run.labels.n_artists gets the cell
    # key "n_moods|metadata@K" (e.g. "3|artist@10"); see study.cells.
    n_artists: list[Count] = field(default_factory=list)
    # Tag set per mood count, where it differs from run.dataset.tag_set (MagnaTagATune's
    # "50 tags" cell takes the top 50 of all tags, its "3" the top 3 mood tags).
    tag_sets: dict[Count, Annotated[str, one_of(*TAG_SETS)]] = field(default_factory=dict)
    alpha_factor_low: PositiveFloat = 0.05
    alpha_factor_high: PositiveFloat = 20.0
    optuna_seed: Seed = 0
    # Where each cell's Optuna study is kept, as "<name>:<cell key>", for optuna-dashboard and
    # optuna.load_study (docs/STUDY.md): a SQLAlchemy database URL. "" = the SQLite file
    # <run dir>/optuna.db; for a study on an object store, a SQLite file on the driver's machine
    # (<mtlmood cache>/optuna/...; study.optuna_urls), copied to <run dir>/optuna.db when the
    # search ends. A study whose driver may move between machines: a database server, e.g.
    # postgresql://user@host/db (no password in the URL: it is recorded; use PGPASSWORD).
    optuna_storage: Annotated[str, BeforeValidator(database_url)] = ""
    # Training seeds of search trials (cycled).
    seeds: Annotated[list[Seed], Field(min_length=1)] = field(default_factory=lambda: [0])


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
    grid: Annotated[list[PositiveFloat], Field(min_length=1)] = field(
        default_factory=lambda: [1 / 9, 1 / 3, 1.0, 3.0, 9.0]
    )
    seeds: Annotated[list[Seed], Field(min_length=1)] = field(default_factory=lambda: [1001, 1002, 1003])
    tuned: bool = True
    learned: bool = True
    # alpha* bracketed: after the grid's runs, a cell whose best grid multiple (seed-mean
    # validation PR-AUC) is the smallest or largest gets the next multiple beyond it (the
    # grid's end step again, e.g. x27 after x9), over the same seeds, in rounds of their own
    # ("curve-ext1", ...) until bracketed or this many rounds ran (0 = never extend).
    max_extensions: NonNegativeInt = 2
    # Seeds of one (cell, alpha) trained one after another in one trial: amortises the
    # ~12 s start-up of a Ray Train trial when runs are short (the demo); 1 on a cluster.
    seeds_per_trial: Count = 1
    # Arms of one cell (each over the same seeds_per_trial seeds) trained one after another in
    # one trial: start-up paid once for several arms of tiny runs; fewer trials run at once.
    arms_per_trial: Count = 1


@dataclass(frozen=True)
class SchedulerConfig:
    """ASHA early stopping of search trials on validation PR-AUC (epochs as time), rungs per cell."""

    enabled: bool = True
    grace_period: Count = 3  # epochs every trial gets before it can be stopped
    reduction_factor: Annotated[int, Field(ge=2)] = 3


@dataclass(frozen=True)
class ReportConfig:
    """The statistics of the report."""

    # "The heuristic is as good as the best alpha" only from a TOST equivalence test with
    # this margin, in PR-AUC points (0.5: the run-to-run spread reported for Won et al.
    # 2020's models on MagnaTagATune).
    equivalence_margin: PositiveFloat = 0.5
    # What the bootstrap resamples among test songs: songs, or clusters of them (all clips
    # of a track, all songs of an artist). auto = artist whenever test songs have an artist
    # seen in training (their errors are correlated through it), else track on
    # MagnaTagATune (clips of one track), else song.
    bootstrap_unit: Annotated[str, one_of(*BOOTSTRAP_UNITS)] = "auto"
    # The declared primary family, tested with `adjust` on its own; every other row is
    # secondary (adjusted in a family of its own, labelled exploratory). Per cell: the
    # comparisons named here on `primary_metric`; "slope": across cells, H0 slope = 0 of
    # log alpha* on log(N_mood / N_meta).
    primary: Annotated[list[Annotated[str, one_of(*PRIMARY_CHOICES)]], Field(min_length=1)] = field(
        default_factory=lambda: ["heuristic - baseline", "best alpha - heuristic", "slope"]
    )
    primary_metric: Annotated[str, one_of("pr_auc", "roc_auc")] = "pr_auc"
    adjust: Annotated[str, one_of(*ADJUST_METHODS)] = "holm"  # multiplicity adjustment within each family: holm | bh
    n_boot: Annotated[int, Field(ge=100)] = 2000
    confidence: OpenFraction = 0.95
    power: OpenFraction = 0.8  # for the minimum detectable effect
    # Power planning (`mtlmood study plan`): the MDE a design should reach, in PR-AUC points
    # (0.5: the run-to-run spread reported for Won et al. 2020 on MagnaTagATune), and the
    # variance components assumed without a pilot study: the SD of one run's metric around
    # its arm and seed effects (points), and the song-level SD of a difference per test
    # cluster (se of a difference from songs = plan_song_sd / sqrt(test clusters)).
    target_mde: PositiveFloat = 0.5
    plan_run_sd: PositiveFloat = 1.0
    plan_song_sd: PositiveFloat = 20.0
    reference: bool = True  # logistic regression on log-mel mean/std per cell
    # The cell `mtlmood serve --study` serves, as "n_moods|metadata" ("" = the largest
    # mood count, with its metadata set whose best model scored highest on validation).
    serve_cell: str = ""


@dataclass(frozen=True)
class ResourcesConfig:
    """Per-trial resources. Concurrency follows from them and from what the cluster has."""

    num_workers: Count = 1  # Ray Train workers per trial (DDP when > 1)
    use_gpu: Annotated[str, one_of(*USE_GPU)] = "auto"  # auto | true | false
    cpus_per_worker: NonNegativeFloat = 1.0
    gpus_per_worker: NonNegativeFloat = 1.0
    # Trials sharing one GPU (study.resources): each worker gets 1/N of a GPU (overrides
    # gpus_per_worker's default 1; any other gpus_per_worker than 1/N is refused). Choose N
    # from benchmarks/gpu_study_bench.py (docs/RUNBOOK.md, "Trials per GPU").
    trials_per_gpu: Count = 1
    # GPU memory in GiB (nvidia-smi's MiB / 1024) that N trials must fit, each estimated from
    # the run's model and batch sizes: H100 80GB (default) 79.6, A10G 22.5.
    gpu_memory_gb: PositiveFloat = 80.0
    # CPUs Ray offers per GPU on a GPU node (node CPUs / node GPUs): N x cpus_per_worker must
    # fit. 0 = unknown, not checked.
    cpus_per_gpu: NonNegativeFloat = 0.0
    driver_cpus: NonNegativeFloat = 0.1  # the Tune trial driver that only builds and waits on a Ray Train trainer
    driver_resource: str = ""  # custom resource that pins drivers to the head node (cluster)
    max_concurrent_trials: NonNegativeInt = 0  # 0 = derive from the cluster's resources


@dataclass(frozen=True)
class StudyConfig:
    """A whole alpha study."""

    name: Annotated[PathText, Field(min_length=1)] = "alpha-study"
    # A local directory, a file system shared by every node, or an object store URI that Ray
    # and pyarrow.fs open (s3://bucket/prefix, gs://..., abfs://..., hdfs://...; see mtlmood.storage).
    storage_path: PathText = "runs/studies"
    run: RunConfig = field(default_factory=RunConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    # Restarts of a crashed trial (killed worker, lost node); never for bad data or config.
    max_failures: NonNegativeInt = 2

    @property
    def run_dir(self) -> str:
        """Where this study's Tune experiments, runs, report and best checkpoints live."""
        return join_storage(self.storage_path, self.name)


def join_storage(base: str, *parts: str) -> str:
    """A location under the study storage: an absolute path (Ray needs absolute storage
    paths), or a URI with the parts joined by "/"."""
    if storage.is_uri(base):
        return storage.join(base, *parts)
    return str(Path(base, *parts).resolve())


def _problems(config: StudyConfig) -> list[str]:
    """Every reason this config would fail late, inside a trial, that involves several
    settings (each setting's own type and range are checked by ``check_config``)."""
    s, c = config.search, config.curve
    problems = []
    lists: list[tuple[str, list[Any]]] = [
        ("search.n_moods", s.n_moods),
        ("search.metadata", s.metadata),
        ("search.n_artists", s.n_artists),
    ]
    for key, values in lists + ([("curve.seeds", c.seeds)] if c.enabled else []):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            problems.append(f"{key}={values!r}: must not repeat an entry (repeated: {repeated})")
    if s.n_artists and not any("artist" in m for m in s.metadata):
        problems.append(
            f"search.n_artists={s.n_artists!r}: varies the artist classes, but no metadata set in "
            f"search.metadata={s.metadata!r} has artist"
        )
    if not s.alpha_factor_low < s.alpha_factor_high:
        problems.append(
            f"search.alpha_factor_low={s.alpha_factor_low!r}: must be below "
            f"search.alpha_factor_high={s.alpha_factor_high!r}"
        )
    if c.enabled:
        shared = sorted(set(c.seeds) & set(s.seeds))
        if shared:
            problems.append(
                f"curve.seeds={c.seeds!r}: must be fresh seeds the search never used, but search.seeds share {shared}"
            )
        if not any(math.isclose(f, 1.0) for f in c.grid):
            problems.append(f"curve.grid={c.grid!r}: must include 1 (the heuristic itself)")
    where = storage.location_problem(config.storage_path)
    if where:
        problems.append(f"storage_path={config.storage_path!r}: {where}")
    return problems


def validate(config: StudyConfig) -> StudyConfig:
    """Reject configs that would fail late, inside a trial (all problems in one line):
    each setting's type and range, then the rules that tie settings together."""
    from study.resources import resource_problems  # the packing checks (trials per GPU, memory, CPUs)

    check_config(config)
    problems = _problems(config) + resource_problems(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def resolve_paths(config: StudyConfig, base: str | os.PathLike[str] | None = None) -> StudyConfig:
    """Every relative path (storage, dataset, audio, cache, output, a SQLite file) made absolute against
    ``base`` (default: the working directory), once, before anything reaches Ray."""
    where = Path(base) if base is not None else Path.cwd()
    location = storage.normalize(config.storage_path)  # file:// URIs are local paths
    if not storage.is_uri(location):
        location = str((where / Path(location).expanduser()).resolve())
    # A relative SQLite file of search.optuna_storage, too: the driver may run elsewhere later.
    search = replace(config.search, optuna_storage=resolve_database_url(config.search.optuna_storage, where))
    return replace(config, storage_path=location, run=resolve_run_paths(config.run, where), search=search)


def shipped_configs() -> list[str]:
    """Names of the study configs in study/configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_study_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> StudyConfig:
    """Defaults <- YAML file <- dotted overrides (e.g. ``search.trials_per_cell=8``), paths resolved.

    A bare name such as ``synthetic`` means ``study/configs/synthetic.yaml``; a URI (a study's
    ``s3://.../study_config.yaml``) is read from its store.
    """
    if path is not None and storage.is_uri(path):
        return validate(resolve_paths(_load_remote(str(path), overrides or [])))
    if path is not None and not Path(path).exists():
        if (CONFIG_DIR / f"{path}.yaml").exists():
            path = CONFIG_DIR / f"{path}.yaml"
        else:
            raise ConfigError(
                f"no study config {str(path)!r}: not a file, and not one of the shipped configs "
                f"({', '.join(shipped_configs())})"
            )
    return validate(resolve_paths(load_config(StudyConfig, path, overrides)))


def _load_remote(location: str, overrides: list[str]) -> StudyConfig:
    """load_config of a YAML file on an object store."""
    import yaml

    from mtlmood.coerce import apply_overrides, from_dict

    try:
        data = yaml.safe_load(storage.read_text(location)) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {location}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {location}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {location} must hold a mapping of settings at the top level")
    try:
        config = from_dict(StudyConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"config file {location}: {exc}") from None
    return apply_overrides(config, overrides)


def split_metadata(metadata: str) -> tuple[str, int | None]:
    """A cell's metadata factor -> (metadata set, artist classes or None for the run's own):
    ``"artist@10"`` -> ("artist", 10), ``"artist"`` -> ("artist", None)."""
    base, at, count = metadata.partition("@")
    if not at:
        return metadata, None
    if not count.isdigit() or int(count) < 1 or "artist" not in base:
        raise ConfigError(f"metadata {metadata!r}: expected <metadata set with artist>@<artist classes>")
    return base, int(count)


def trial_run_config(study: StudyConfig, n_moods: int, metadata: str, alpha: Union[float, str], seed: int) -> RunConfig:
    """The RunConfig of one run: the study's base run with its cell, alpha and seed.

    ``metadata`` is the cell's metadata factor: a metadata set, optionally with its artist
    classes (``"artist@10"`` sets labels.n_artists = 10)."""
    run = study.run
    tag_set = study.search.tag_sets.get(int(n_moods), run.dataset.tag_set)
    metadata_set, n_artists = split_metadata(metadata)
    return replace(
        run,
        dataset=replace(run.dataset, tag_set=tag_set),  # type: ignore[arg-type]
        labels=replace(
            run.labels,
            n_moods=int(n_moods),
            metadata=metadata_set,
            n_artists=run.labels.n_artists if n_artists is None else n_artists,
        ),
        train=replace(run.train, alpha=alpha if isinstance(alpha, str) else float(alpha), seed=int(seed)),
    )
