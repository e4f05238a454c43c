"""The run's config schema: one frozen dataclass per concern, with the paper's numbers as defaults.

The classes are plain frozen dataclasses (``dataclasses.replace``, hashing, pickling to
Ray workers work as usual); the value types here (``Count``, ``Seed``, ``PathText``, ...)
carry the constraints that mtlmood.coerce checks when a config comes from outside (a YAML
file, ``--set``, a model card, a trial's config). Configs built in code are not validated
until :func:`mtlmood.coerce.check_config` is called on them. Reading and writing configs as
YAML, and making their paths absolute, is mtlmood.config_io.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field

from mtlmood.coerce import CROSS_CHECKS, join_key, parse_number, problem

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
            value = parse_number(text)  # YAML reads 1e-3 (no dot) as a string
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
    # Replay each training step from a CUDA graph (mtlmood.train_graphs): fewer kernel launches
    # per step at small batches. CUDA and one process only; ignored with a warning elsewhere.
    # Off until the GPU check shows a gain (docs/PERFORMANCE.md).
    cuda_graphs: bool = False
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


def _split_problems(split: SplitConfig, where: str) -> list[str]:
    total = split.train_fraction + split.validation_fraction
    if split.method == "random" and not total < 1:
        return [
            problem(
                join_key(where, "train_fraction"),
                split.train_fraction,
                f"train_fraction + validation_fraction ({split.validation_fraction}) must sum to less "
                "than 1 (the test set takes the rest)",
            )
        ]
    return []


# train_fraction + validation_fraction < 1 involves two fields: checked wherever a SplitConfig occurs.
CROSS_CHECKS[SplitConfig] = _split_problems
