"""Typed configs, one dataclass per concern, with the paper's numbers as defaults.

Every config can be read from YAML, overridden from the command line with dotted
``section.key=value`` strings, and written back (resolved) next to a run's results.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mtlmood.errors import ConfigError

METADATA_SETS = ("none", "artist", "year", "artist+year")


@dataclass(frozen=True)
class FeatureConfig:
    """Audio decoding and log-mel parameters (musicnn/Essentia reference preprocessing)."""

    sample_rate: int = 16000
    max_seconds: float = 29.0  # only the first 29 s of every song is used
    n_fft: int = 512
    hop_length: int = 256  # 62.5 frames/s at 16 kHz
    n_mels: int = 96
    log_multiplier: float = 10000.0  # log10(1 + log_multiplier * mel)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def max_frames(self) -> int:
        """Frames of the first ``max_seconds`` of a song: int(29 * 62.5) = 1812 by default.

        Training evaluation, inference and serving all cut songs with this one window.
        """
        return int(self.max_seconds * self.frames_per_second)


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset adapter to use and where its files are."""

    name: str = "synthetic"  # a key of mtlmood.datasets.REGISTRY
    root: str = "runs/synthetic"  # metadata directory (or a manifest file for `csv`)
    audio_root: str = ""  # where audio paths are resolved; "" = same as root
    limit: int = 0  # keep only the first N songs (0 = all); for quick runs
    # Which tags count as moods: "moods" = the adapter's documented mood vocabulary
    # (MagnaTagATune has no mood list; see mtlmood/datasets/magnatagatune.py),
    # "all" = every tag (the paper's MagnaTagATune "50 tags" config).
    tag_set: Literal["moods", "all"] = "moods"


@dataclass(frozen=True)
class LabelConfig:
    """How tags and metadata become targets."""

    n_moods: int = 50  # top-N mood tags by song count
    metadata: str = "artist"  # one of METADATA_SETS
    n_artists: int = 50  # top-K artists; others get an all-zero artist target
    n_year_buckets: int = 9
    year_bucket_size: int = 5


@dataclass(frozen=True)
class SplitConfig:
    """Song-level (group-aware) train/validation/test split."""

    method: Literal["random", "official"] = "random"
    train_fraction: float = 0.8
    validation_fraction: float = 0.1  # the test set takes the rest
    seed: int = 0
    official_split: int = 0  # which official split (MTG-Jamendo has split-0..4)


@dataclass(frozen=True)
class ModelConfig:
    """The VGG-like CNN: n_blocks x (conv -> ReLU -> BatchNorm -> maxpool -> dropout)."""

    n_filters: int = 128
    n_blocks: int = 5
    kernel_size: int = 3
    pool_size: int = 2
    dropout: float = 0.25
    segment_frames: int = 187  # ~3 s at 62.5 frames/s
    n_mels: int = 96
    # Not in the paper; its Adam eps 1e-7 is Keras's default, so Keras's layer defaults
    # are used too: Glorot-uniform init, BatchNorm momentum 0.99 (= 0.01 in PyTorch's
    # convention) and epsilon 1e-3. init: "glorot" | "torch".
    init: str = "glorot"
    bn_momentum: float = 0.01
    bn_eps: float = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, sampling and early stopping."""

    # Weight of the metadata loss: a number, "auto" = N_mood / N_meta, or "learned" =
    # uncertainty weighting (Kendall et al. 2018, mtlmood.loss.UncertaintyWeights).
    alpha: Union[float, str] = "auto"
    batch_size: int = 32
    epoch_factor: float = 1.25  # batches per epoch = epoch_factor * num_train_songs
    max_batches_per_epoch: int = 0  # cap for small CPU runs (0 = no cap)
    max_epochs: int = 30
    patience: int = 3
    monitor: str = "pr_auc"  # early stopping on validation song-level macro "pr_auc" or "roc_auc"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # Where training batches are gathered: "host" = WindowSampler (numpy, memory map),
    # "device" = DeviceWindowSampler (training songs' frames held on train.device),
    # "auto" = device on CUDA when they fit the budget in mtlmood.train, else host.
    # Both give the same batches, so this changes speed, never results.
    sampler: Literal["auto", "host", "device"] = "auto"
    bf16: bool = False  # bf16 autocast (GPU, or CPU with AVX-512 BF16)
    channels_last: bool = False
    eval_batch_size: int = 256  # segments per forward at evaluation
    num_threads: int = 0  # torch intra-op threads (0 = torch default)


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written resolved next to its results."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: str = ""  # feature cache; "" = <dataset.root>/features
    output_dir: str = "runs/train"


C = TypeVar("C")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    if origin is Literal:
        if value not in get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(annotation))}")
        return value
    if origin is Union:
        for option in get_args(annotation):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}")
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        # A scalar where a list belongs means a list of one (`--set search.n_moods=3`).
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, (dict, list)) for v in values):
            raise ConfigError(f"{where}: expected a list of {getattr(item, '__name__', item)}, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(values)]
    if origin is dict:
        key_type, value_type = get_args(annotation) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {_coerce(k, key_type, f"{where} key"): _coerce(v, value_type, f"{where}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            if annotation is float and isinstance(value, str) and "/" in value:
                numerator, denominator = value.split("/", 1)  # grids read better as 1/9 than 0.111
                number = float(numerator) / float(denominator)
            else:
                number = annotation(value)
        except (TypeError, ValueError, ZeroDivisionError):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build a config dataclass from a (possibly partial) mapping; unknown keys are errors."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(f'{where}{k}' for k in unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {
        k: _coerce(v, hints[k], f"{where}{k}.")
        if dataclasses.is_dataclass(hints[k])
        else _coerce(v, hints[k], f"{where}{k}")
        for k, v in data.items()
    }
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a config dataclass."""
    return dataclasses.asdict(config)


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars)."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a config section")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {dotted!r}")
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return from_dict(type(config), data)


def load_config(cls: type[C], path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> C:
    """Defaults, then a YAML file (if given), then dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    config = from_dict(cls, data)
    return apply_overrides(config, overrides or [])


def _absolute(path: str, base: Path) -> str:
    """``path`` made absolute against ``base`` ("" and URIs stay as they are)."""
    if not path or "://" in path:
        return path
    return str((base / Path(path).expanduser()).resolve())


def resolve_run_paths(config: RunConfig, base: str | os.PathLike[str] | None = None) -> RunConfig:
    """The config with every relative path (dataset root, audio root, cache, output) made absolute.

    Relative paths mean "from where the command was typed". Ray workers run in other
    working directories, so paths are resolved once, here, before anything reaches Ray,
    and the run's saved config records them resolved.
    """
    where = Path(base) if base is not None else Path.cwd()
    return dataclasses.replace(
        config,
        dataset=dataclasses.replace(
            config.dataset,
            root=_absolute(config.dataset.root, where),
            audio_root=_absolute(config.dataset.audio_root, where),
        ),
        cache_dir=_absolute(config.cache_dir, where),
        output_dir=_absolute(config.output_dir, where),
    )


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write a resolved config as YAML (atomically)."""
    from mtlmood.fileio import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def config_hash(config: Any) -> str:
    """A short stable hash of a config, used to tell caches and runs apart."""
    import hashlib

    blob = json.dumps(to_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
