"""Typed configs, one dataclass per concern, with the paper's numbers as defaults.

Every config can be read from YAML, overridden from the command line with dotted
``section.key=value`` strings, and written back (resolved) next to a run's results.

The classes are plain frozen dataclasses (``dataclasses.replace``, hashing, pickling to
Ray workers work as usual); what comes from outside (a YAML file, ``--set``, a model
card, a trial's config) goes through :func:`from_dict`, which validates it with pydantic
against the annotations: types, ranges (``Annotated[int, Field(ge=1)]``), allowed words
and unknown keys. A bad value becomes one :class:`~mtlmood.errors.ConfigError` line naming
the dotted key, the value and what is allowed, e.g.
``train.lr=-1: must be greater than 0``. Configs built in code are not validated until
:func:`check_config` (or a class's own ``validate``) is called on them.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Annotated,
    Any,
    Callable,
    Hashable,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from mtlmood.errors import ConfigError

METADATA_SETS = ("none", "artist", "year", "artist+year")
ALPHA_WORDS = ("auto", "learned")

# Value constraints of config fields, read by pydantic; to type checkers these are plain
# int / float / str, so code that builds configs is unaffected.
Count = Annotated[int, Field(ge=1)]  # how many of something: at least one
NonNegativeInt = Annotated[int, Field(ge=0)]  # 0 usually means "off" or "all"
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what numpy and torch accept as a seed
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]  # strictly between 0 and 1
UnitInterval = Annotated[float, Field(ge=0, le=1)]  # 0 to 1, both included


def one_of(*choices: str) -> AfterValidator:
    """A pydantic validator: the string must be one of ``choices``."""

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _number(text: str) -> float:
    """A float from YAML/CLI text; "1/9" reads better than 0.111 in grids (ValueError otherwise)."""
    if "/" in text:
        numerator, denominator = text.split("/", 1)
        try:
            return float(numerator) / float(denominator)
        except ZeroDivisionError:
            raise ValueError(f"{text!r} divides by zero") from None
    return float(text)


def _alpha(value: Any) -> Any:
    """train.alpha: a finite number >= 0, "auto" or "learned" (any case)."""
    allowed = 'must be a number >= 0, "auto" or "learned"'
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(allowed)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ALPHA_WORDS:
            return text
        try:
            value = _number(text)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            raise ValueError(allowed) from None
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(allowed)
    return number


Alpha = Annotated[Union[float, str], BeforeValidator(_alpha)]
NAME_MAX = 255  # bytes of one path component on Linux, macOS and Windows


def _path_text(value: str) -> str:
    """A file system path (or "", or a URI): what the OS would refuse is refused here, in one line."""
    if "\x00" in value:
        raise ValueError("must be a path without NUL characters")
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in Path(value).parts):
        raise ValueError(f"must be a path whose folder and file names are at most {NAME_MAX} bytes long")
    return value


PathText = Annotated[str, AfterValidator(_path_text)]
_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")


def _device(value: str) -> str:
    if not _DEVICE.fullmatch(value):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


@dataclass(frozen=True)
class FeatureConfig:
    """Audio decoding and log-mel parameters (musicnn/Essentia reference preprocessing)."""

    sample_rate: Count = 16000
    max_seconds: PositiveFloat = 29.0  # only the first 29 s of every song is used
    n_fft: Count = 512
    hop_length: Count = 256  # 62.5 frames/s at 16 kHz
    n_mels: Count = 96
    log_multiplier: PositiveFloat = 10000.0  # log10(1 + log_multiplier * mel)

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
    root: PathText = "runs/synthetic"  # metadata directory (or a manifest file for `csv`)
    audio_root: PathText = ""  # where audio paths are resolved; "" = same as root
    limit: NonNegativeInt = 0  # keep only the first N songs (0 = all); for quick runs
    # Which tags count as moods: "moods" = the adapter's documented mood vocabulary
    # (MagnaTagATune has no mood list; see mtlmood/datasets/magnatagatune.py),
    # "all" = every tag (the paper's MagnaTagATune "50 tags" config).
    tag_set: Literal["moods", "all"] = "moods"


@dataclass(frozen=True)
class LabelConfig:
    """How tags and metadata become targets."""

    n_moods: Count = 50  # top-N mood tags by song count
    metadata: Annotated[str, one_of(*METADATA_SETS)] = "artist"  # one of METADATA_SETS
    n_artists: Count = 50  # top-K artists; others get an all-zero artist target
    n_year_buckets: Count = 9
    year_bucket_size: Count = 5


@dataclass(frozen=True)
class SplitConfig:
    """Song-level (group-aware) train/validation/test split."""

    method: Literal["random", "official"] = "random"
    train_fraction: OpenFraction = 0.8
    validation_fraction: OpenFraction = 0.1  # the test set takes the rest
    seed: Seed = 0
    official_split: NonNegativeInt = 0  # which official split (MTG-Jamendo has split-0..4)


@dataclass(frozen=True)
class ModelConfig:
    """The VGG-like CNN: n_blocks x (conv -> ReLU -> BatchNorm -> maxpool -> dropout)."""

    n_filters: Count = 128
    n_blocks: Count = 5
    kernel_size: Count = 3
    pool_size: Count = 2
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.25
    segment_frames: Count = 187  # ~3 s at 62.5 frames/s
    n_mels: Count = 96
    # Not in the paper; its Adam eps 1e-7 is Keras's default, so Keras's layer defaults
    # are used too: Glorot-uniform init, BatchNorm momentum 0.99 (= 0.01 in PyTorch's
    # convention) and epsilon 1e-3. init: "glorot" | "torch".
    init: Annotated[str, one_of("glorot", "torch")] = "glorot"
    bn_momentum: UnitInterval = 0.01
    bn_eps: PositiveFloat = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, sampling and early stopping."""

    # Weight of the metadata loss: a number, "auto" = N_mood / N_meta, or "learned" =
    # uncertainty weighting (Kendall et al. 2018, mtlmood.loss.UncertaintyWeights).
    alpha: Alpha = "auto"
    batch_size: Count = 32
    epoch_factor: PositiveFloat = 1.25  # batches per epoch = epoch_factor * num_train_songs
    max_batches_per_epoch: NonNegativeInt = 0  # cap for small CPU runs (0 = no cap)
    max_epochs: Count = 30
    patience: Count = 3
    # Early stopping for noisy validation curves (mtlmood.stopping): the defaults are the
    # paper's rule. min_epochs: never stop before this many epochs. stop_smoothing: the
    # patience counts epochs without a new best of the mean of the last k validation
    # scores (1 = the raw score), so one noisy epoch cannot end a run; the weights kept
    # are still the best raw validation epoch's.
    min_epochs: NonNegativeInt = 0
    stop_smoothing: Count = 1
    # Early stopping on validation song-level macro "pr_auc" or "roc_auc".
    monitor: Annotated[str, one_of("pr_auc", "roc_auc")] = "pr_auc"
    lr: PositiveFloat = 1e-3
    beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    eps: PositiveFloat = 1e-7
    seed: Seed = 0
    device: Annotated[str, AfterValidator(_device)] = "auto"  # auto | cpu | cuda | cuda:N
    # Where training batches are gathered: "host" = WindowSampler (numpy, memory map),
    # "device" = DeviceWindowSampler (training songs' frames held on train.device),
    # "auto" = device on CUDA when they fit the budget in mtlmood.train, else host.
    # Both give the same batches, so this changes speed, never results.
    sampler: Literal["auto", "host", "device"] = "auto"
    bf16: bool = False  # bf16 autocast (GPU, or CPU with AVX-512 BF16)
    channels_last: bool = False
    eval_batch_size: Count = 256  # segments per forward at evaluation
    num_threads: NonNegativeInt = 0  # torch intra-op threads (0 = torch default)


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written resolved next to its results."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: PathText = ""  # feature cache; "" = <dataset.root>/features
    output_dir: PathText = "runs/train"


C = TypeVar("C")

MAX_PROBLEMS = 6  # problems named in one error line; the rest are counted


def _show(value: Any) -> str:
    """A value as the error line shows it: repr (so one line, quotes on strings), cut when long."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails (cannot come from YAML, but be safe)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(key: str, value: Any, what: str) -> str:
    """One problem: ``dotted.key=value: what is allowed``."""
    shown = key if key.isprintable() else repr(key)  # a made-up key with a newline stays on one line
    return f"{shown or '<config>'}={_show(value)}: {what}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _raise(problems: list[str]) -> None:
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        raise ConfigError(_one_line("; ".join(shown) + (f"; and {more} more" if more else "")))


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def _known(where: str, names: list[str]) -> str:
    return f"known keys of {where}: {', '.join(names)}" if where else f"known top-level keys: {', '.join(names)}"


def _coerce(value: Any, annotation: Any, where: str, problems: list[str]) -> Any:
    """Make a YAML/CLI value fit the annotation where that is natural, before pydantic judges it.

    A scalar where a list belongs is a list of one (``--set search.n_moods=3``), "1/9" is a
    number, a number where a string belongs is that string (``--set dataset.root=2024``), a
    missing section (``train:`` with nothing under it) keeps its defaults. Anything else is
    passed on unchanged for pydantic to accept or reject; unknown keys and true/false where a
    number belongs are recorded in ``problems`` here.
    """
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if _is_section(annotation):
        return _coerce_section(annotation, value, where, problems)
    if origin in (list, tuple):
        item = (get_args(annotation) or (Any,))[0]
        if isinstance(value, dict):
            return value  # pydantic: "must be a valid list"
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, item, f"{where}[{i}]", problems) for i, v in enumerate(values)]
    if origin is dict:
        if not isinstance(value, dict):
            return value
        key_type, value_type = get_args(annotation) or (Any, Any)
        return {
            _coerce(k, key_type, where, problems): _coerce(v, value_type, _join(where, k), problems)
            for k, v in value.items()
        }
    if annotation in (int, float):
        if isinstance(value, bool):
            problems.append(_problem(where, value, f"must be a number ({annotation.__name__}), not true/false"))
        elif annotation is float and isinstance(value, str) and "/" in value:
            try:
                return _number(value)
            except ValueError:
                return value
        return value
    if annotation is str and isinstance(value, (bool, int, float, datetime.date)):
        try:
            return str(value)
        except ValueError:  # an integer too long to print: pydantic says it is not a string
            return value
    return value


def _coerce_section(cls: type, value: Any, where: str, problems: list[str]) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(_problem(where, value, f"must be a mapping of {cls.__name__} settings"))
        return value
    hints, names = _hints(cls), _field_names(cls)
    data = {}
    for key, item in value.items():
        if key not in names:
            unknown = _join(where, key)
            problems.append(_problem(unknown, item, f"unknown key {unknown!r}; {_known(where, names)}"))
            continue
        data[key] = _coerce(item, hints[key], _join(where, key), problems)
    return data


@functools.lru_cache(maxsize=None)
def _validator(cls: Hashable) -> type[BaseModel]:
    """A pydantic model with one field of type ``cls``; nested sections share its settings."""
    return create_model(
        f"Validated{getattr(cls, '__name__', 'Config')}",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        config=(cast(Any, cls), ...),
    )


def _loc(where: str, loc: tuple[Any, ...]) -> str:
    key = where
    for part in loc:
        key = f"{key}[{part}]" if isinstance(part, int) else _join(key, part)
    return key


def _describe(where: str, error: Any) -> str:
    """One pydantic error as ``dotted.key=value: what is allowed``."""
    loc = tuple(error["loc"][1:])  # [0] is the wrapper's field
    if loc and loc[-1] == "[key]":  # a mapping's key failed, not its value
        return f"{_loc(where, loc[:-2])}: key {_show(error.get('input'))} {_what(error)}"
    return _problem(_loc(where, loc), error.get("input"), _what(error))


def _what(error: Any) -> str:
    """pydantic's message as "what is allowed"."""
    if error["type"] == "dataclass_type":
        return "must be a mapping of settings"
    if error["type"] == "unexpected_keyword_argument":
        return "unknown key"
    if error["type"] in ("too_short", "string_too_short"):
        least = (error.get("ctx") or {}).get("min_length", 1)
        if isinstance(error.get("input"), str):
            return f"must have at least {least} character{'' if least == 1 else 's'}"
        return f"must list at least {least} {'entry' if least == 1 else 'entries'}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message.replace("Input should be", "must be")


def _split_problems(split: SplitConfig, where: str) -> list[str]:
    total = split.train_fraction + split.validation_fraction
    if split.method == "random" and not total < 1:
        return [
            _problem(
                _join(where, "train_fraction"),
                split.train_fraction,
                f"train_fraction + validation_fraction ({split.validation_fraction}) must sum to less "
                "than 1 (the test set takes the rest)",
            )
        ]
    return []


# Checks that involve several fields of one section, run after pydantic's, wherever the
# section occurs (a RunConfig, a study's run, a model card).
CROSS_CHECKS: dict[type, Callable[[Any, str], list[str]]] = {SplitConfig: _split_problems}


def _cross_problems(config: Any, where: str) -> list[str]:
    problems = list(CROSS_CHECKS[type(config)](config, where)) if type(config) in CROSS_CHECKS else []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            problems += _cross_problems(value, _join(where, f.name))
    return problems


def from_dict(cls: type[C], data: Any, where: str = "") -> C:
    """Build and validate a config dataclass from a (possibly partial) mapping.

    Missing keys keep their defaults; unknown keys, wrong types and out-of-range values
    raise one ConfigError naming every bad ``dotted.key=value`` (``where`` prefixes the keys).
    """
    where = where.rstrip(".")
    problems: list[str] = []
    data = _coerce_section(cls, data, where, problems)
    _raise(problems)
    try:
        validated = _validator(cast(Hashable, cls)).model_validate({"config": data})
    except ValidationError as exc:
        _raise([_describe(where, error) for error in exc.errors(include_url=False)])
        raise  # unreachable: a ValidationError has at least one error
    config = cast(C, validated.config)  # type: ignore[attr-defined]
    _raise(_cross_problems(config, where))
    return config


def check_config(config: C) -> C:
    """Validate a config built in code (``dataclasses.replace`` does not); returns it validated."""
    return from_dict(type(config), to_dict(config))


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a config dataclass."""
    return dataclasses.asdict(config)


def _parse_value(raw: str) -> Any:
    """An override's value: YAML (``3``, ``[3, 9]``, ``true``, ``1e-3``); text that is not
    valid YAML is taken as it is (a path such as ``runs/[x]``)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        return raw


def _assign(node: dict[str, Any], cls: type, keys: list[str], value: Any, dotted: str, where: str = "") -> None:
    """Set ``keys`` (a path below section ``cls``, whose data is ``node``) to ``value``."""
    key, rest = keys[0], keys[1:]
    names = _field_names(cls)
    here = _join(where, key)
    if key not in names:
        raise ConfigError(_problem(dotted, value, f"unknown key {here!r}; {_known(where, names)}"))
    annotation = _hints(cls)[key]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if _is_section(annotation):
        if not isinstance(node.get(key), dict):
            node[key] = {}
        if rest:
            _assign(node[key], annotation, rest, value, dotted, here)
        elif isinstance(value, dict):  # section=VALUE with a mapping: set each of its keys
            for sub, item in value.items():
                _assign(node[key], annotation, [str(sub)], item, f"{dotted}.{sub}", here)
        else:
            raise ConfigError(
                _problem(dotted, value, f"{here} is a section: set its keys ({here}.KEY=VALUE) or give a mapping")
            )
    elif rest and get_origin(annotation) is dict and len(rest) == 1:  # search.tag_sets.50=all
        entries = dict(node.get(key) or {})
        entries[_parse_value(rest[0])] = value
        node[key] = entries
    elif rest:
        raise ConfigError(_problem(dotted, value, f"{here} is a setting, not a section"))
    else:
        node[key] = value


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Apply ``section.key=value`` overrides (values parsed as YAML), then validate."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {_show(item)} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        _assign(data, type(config), dotted.split("."), _parse_value(raw), dotted)
    return from_dict(type(config), data)


def load_config(cls: type[C], path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> C:
    """Defaults, then a YAML file (if given), then dotted overrides; validated at each step."""
    data: Any = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            raise ConfigError(_one_line(f"config file {path} is not valid YAML: {exc}")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of settings at the top level, not {_show(loaded)}"
            )
        data = loaded or {}
    try:
        config = from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}" if path is not None else str(exc)) from None
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
