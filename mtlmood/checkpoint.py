"""Checkpoints: ``weights.pt`` (a plain state_dict, loadable with
``torch.load(weights_only=True)``) plus ``model_card.json`` (everything needed to
rebuild and trust the model: label names, configs, alpha, metrics, versions).

Writing is atomic: the card is removed first, the weights written, then the card
written last as the commit marker, so a crash never leaves a directory that loads.
The card records ``checkpoint_id``, a hash of the weights, so a card can never be
paired with the wrong weights either.

Training states (model + optimizer + early-stopping bookkeeping, for resuming)
are stored with ``save_train_state`` / ``load_train_state``, also weights_only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

import torch

import mtlmood
from mtlmood.coerce import from_dict, to_dict
from mtlmood.config import DatasetConfig, FeatureConfig, LabelConfig, ModelConfig, RunConfig, SplitConfig
from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.fileio import atomic_write_bytes, atomic_write_json, read_json_object
from mtlmood.model import MoodCNN

WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.json"
CARD_FORMAT = 1

PathLike = Union[str, os.PathLike]


@dataclass
class ModelCard:
    """What a checkpoint is: labels, configs, alpha, metrics, provenance.

    ``meta_names`` are the metadata head's outputs (empty for a baseline, which has
    no metadata head). ``run_config`` is the full resolved RunConfig as a dict.
    ``alpha`` is the metadata-loss weight the model was trained with; with
    ``alpha_mode`` "learned" (uncertainty weighting) it is the effective alpha,
    exp(-s_meta) / exp(-s_mood), of the saved (best) epoch.
    """

    mood_names: list[str]
    meta_names: list[str]
    model: ModelConfig
    features: FeatureConfig
    alpha: float
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    metrics: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    run_config: dict[str, Any] = field(default_factory=dict)
    code_version: str = mtlmood.__version__
    created_at: str = ""
    checkpoint_id: str = ""
    format: int = CARD_FORMAT
    alpha_mode: str = "fixed"  # "fixed" | "learned"; cards written before it existed are "fixed"

    @classmethod
    def for_run(
        cls,
        config: RunConfig,
        mood_names: list[str],
        meta_names: list[str],
        alpha: float,
        metrics: Optional[dict[str, Any]] = None,
        alpha_mode: str = "fixed",
    ) -> "ModelCard":
        """The card of a model trained with ``config`` (``meta_names`` = its metadata head's outputs;
        ``alpha`` the effective alpha when ``alpha_mode`` is "learned")."""
        from mtlmood.metrics import json_safe  # lazy: keeps scipy out of card-only readers

        return cls(
            mood_names=list(mood_names),
            meta_names=list(meta_names),
            model=config.model,
            features=config.features,
            alpha=float(alpha),
            dataset=config.dataset,
            labels=config.labels,
            split=config.split,
            metrics=json_safe(metrics or {}),
            seed=config.train.seed,
            run_config=to_dict(config),
            alpha_mode=alpha_mode,
        )

    @classmethod
    def from_fit(
        cls, result: Any, config: Optional[RunConfig] = None, test_metrics: Optional[dict[str, Any]] = None
    ) -> "ModelCard":
        """The card of a ``mtlmood.train_state.FitResult`` (its config unless ``config`` is given;
        ``test_metrics`` replaces the result's test scores)."""
        metrics = result.metrics_summary()
        if test_metrics is not None:
            metrics["test"] = test_metrics
        return cls.for_run(
            config or result.config,
            result.mood_names,
            result.meta_names,
            result.alpha,
            metrics,
            alpha_mode=getattr(result, "alpha_mode", "fixed"),
        )

    @property
    def n_moods(self) -> int:
        return len(self.mood_names)

    @property
    def n_meta(self) -> int:
        return len(self.meta_names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (configs as nested dicts)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("model", "features", "dataset", "labels", "split"):
            data[key] = to_dict(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        """Rebuild a card from ``to_dict`` output; a malformed card raises CheckpointError."""
        try:
            kwargs = dict(data)
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(kwargs) - known
            for key in unknown:  # newer cards may carry more fields; ignore them
                kwargs.pop(key)
            for key, kind in (
                ("model", ModelConfig),
                ("features", FeatureConfig),
                ("dataset", DatasetConfig),
                ("labels", LabelConfig),
                ("split", SplitConfig),
            ):
                if key in kwargs:
                    kwargs[key] = from_dict(kind, kwargs[key], f"{key}.")
            card = cls(**kwargs)
        except (TypeError, ConfigError) as exc:
            raise CheckpointError(f"malformed model card: {exc}") from None
        if not card.mood_names or not all(isinstance(n, str) for n in card.mood_names + card.meta_names):
            raise CheckpointError("malformed model card: mood_names/meta_names must be lists of strings")
        return card


def weights_id(state_dict: dict[str, torch.Tensor]) -> str:
    """A short content hash of a state_dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.numel():  # raw bytes, via uint8 so bf16 (unknown to numpy) works too
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(directory: PathLike, model: torch.nn.Module, card: ModelCard) -> ModelCard:
    """Write ``weights.pt`` + ``model_card.json`` atomically; returns the card as written
    (with ``checkpoint_id`` and ``created_at`` filled in)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = _cpu_state(model)
    module = getattr(model, "module", model)
    if isinstance(module, MoodCNN) and (module.n_moods != card.n_moods or module.n_meta != card.n_meta):
        raise CheckpointError(
            f"model has {module.n_moods} mood / {module.n_meta} meta outputs but the card "
            f"names {card.n_moods} / {card.n_meta}"
        )
    card = dataclasses.replace(
        card,
        checkpoint_id=weights_id(state),
        created_at=card.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # Invalidate first: between here and the card write the directory does not load.
    (directory / CARD_FILE).unlink(missing_ok=True)
    atomic_write_bytes(directory / WEIGHTS_FILE, buffer.getvalue())
    atomic_write_json(directory / CARD_FILE, card.to_dict())
    return card


def read_card(directory: PathLike) -> ModelCard:
    """The model card of a checkpoint directory (CheckpointError when missing or malformed)."""
    path = Path(directory) / CARD_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    if not path.exists():
        raise CheckpointError(
            f"{directory} is not a checkpoint (missing {CARD_FILE}; an interrupted save also leaves it missing)"
        )
    return ModelCard.from_dict(read_json_object(path, CheckpointError, "model card"))


def load_checkpoint(directory: PathLike, device: Union[str, torch.device] = "cpu") -> tuple[MoodCNN, ModelCard]:
    """(model in eval mode on ``device``, card). Every mismatch raises CheckpointError."""
    directory = Path(directory)
    card = read_card(directory)
    if card.model.n_mels != card.features.n_mels:
        raise CheckpointError(
            f"checkpoint {directory}: model expects {card.model.n_mels} mel bands but its "
            f"feature config has {card.features.n_mels}"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (zip, unpickling, EOF) for a bad file
        raise CheckpointError(f"cannot read {weights}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights} does not hold a state_dict of tensors")
    if card.checkpoint_id and weights_id(state) != card.checkpoint_id:
        raise CheckpointError(
            f"{weights} does not match its model card (checkpoint id "
            f"{weights_id(state)} != {card.checkpoint_id}); the directory is inconsistent"
        )
    try:
        model = MoodCNN(card.model, card.n_moods, card.n_meta)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {directory}: model config in the card is invalid: {exc}") from None
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(
            f"weights in {directory} do not fit the model its card describes: "
            + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else "")
        )
    model.load_state_dict(state)
    return model.to(device).eval(), card


def cpu_copy(value: Any) -> Any:
    """Deep copy with every tensor cloned to CPU (optimizer states hold live GPU tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cpu_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(cpu_copy(v) for v in value)
    return value


def save_train_state(path: PathLike, state: dict[str, Any]) -> None:
    """Store a ``TrainState.to_dict()`` atomically (loadable with ``torch.load(weights_only=True)``)."""
    buffer = io.BytesIO()
    torch.save(cpu_copy(state), buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_train_state(path: PathLike) -> dict[str, Any]:
    """Read a training state written by ``save_train_state``; CheckpointError when unreadable."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"training state not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read training state {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or "model" not in state or "optimizer" not in state:
        raise CheckpointError(f"{path} is not a training state")
    return state
