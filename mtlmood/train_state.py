"""What one training run is and leaves behind: per-epoch results, the resumable state,
and the final result.

``TrainState`` is the live state ``fit`` hands its callback after every epoch;
``TrainState.to_dict()`` is a snapshot of plain tensors and Python values (loadable
with ``torch.load(weights_only=True)``) that ``fit(..., resume=snapshot)`` continues
from exactly: ``restore_state`` checks that a snapshot fits the run (outputs, alpha)
before loading it (`mtlmood train` writes it to ``<output>/train_state.pt`` after
every epoch, see ``mtlmood.train_output.train_run``). ``FitResult`` is what ``fit`` returns;
``FitResult.to_dict()`` is the content of metrics.json.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

from mtlmood.checkpoint import ModelCard, cpu_copy, save_checkpoint
from mtlmood.coerce import to_dict
from mtlmood.config import RunConfig
from mtlmood.errors import CheckpointError
from mtlmood.loss import AlphaMode, UncertaintyWeights
from mtlmood.metrics import Scores, json_safe
from mtlmood.model import MoodCNN
from mtlmood.stopping import PatienceCounter

# Bumped when the snapshot's layout changes, so an old snapshot fails with one clear line.
STATE_FORMAT = 1


@dataclass
class EpochResult:
    """One finished epoch. Losses are means over the epoch's batches (all ranks);
    ``val`` holds the validation song-level scores in percent; ``alpha`` is the
    metadata-loss weight (with ``train.alpha: learned``, the effective alpha at the
    end of the epoch)."""

    epoch: int  # 1-based
    train_loss: float
    train_mood_loss: float
    train_meta_loss: float
    val: dict[str, Any]
    is_best: bool
    bad_epochs: int  # epochs since the last new best
    seconds: float  # training + validation time of this epoch
    segments_per_second: float  # training windows per second, all ranks together
    alpha: float = math.nan  # NaN only in histories saved before this field existed
    # What early stopping watched (mtlmood.stopping): the moving average of the last
    # train.stop_smoothing validation scores, and the epochs since its last new best.
    # Histories saved before these fields existed get NaN / 0.
    stop_score: float = math.nan
    stale_epochs: int = 0

    def metrics(self) -> dict[str, Any]:
        """A flat dict of scalars, e.g. for ``ray.train.report``."""
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_mood_loss": self.train_mood_loss,
            "train_meta_loss": self.train_meta_loss,
            "val_roc_auc": self.val.get("roc_auc", math.nan),
            "val_pr_auc": self.val.get("pr_auc", math.nan),
            "val_prevalence": self.val.get("prevalence", math.nan),
            "is_best": self.is_best,
            "bad_epochs": self.bad_epochs,
            "seconds": self.seconds,
            "segments_per_second": self.segments_per_second,
            "alpha": self.alpha,
            "stop_score": self.stop_score,
            "stale_epochs": self.stale_epochs,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainState:
    """The live training state after ``epoch`` completed epochs.

    ``model``/``optimizer`` are the live objects (the model unwrapped from DDP), so
    call ``to_dict()`` inside the callback to snapshot them. Dropout randomness is
    reseeded from (seed, epoch, rank) at each epoch start and batches are drawn from
    (seed, epoch, batch), so no RNG state needs saving for an exact resume.
    ``alpha`` is the configured weight (1.0, the starting point, for "learned");
    ``weighting`` holds the learned loss weights when ``alpha_mode`` is "learned".
    """

    epoch: int
    model: MoodCNN
    optimizer: torch.optim.Optimizer
    alpha: float
    seed: int
    best_score: float = -math.inf
    best_epoch: int = 0
    best_state: Optional[dict[str, torch.Tensor]] = None  # CPU copy of the best weights
    bad_epochs: int = 0  # epochs since the last new best raw score
    # The early-stopping rule's own count (smoothed score, see mtlmood.stopping); with
    # train.stop_smoothing = 1 it equals (best_score, bad_epochs).
    stopper: PatienceCounter = field(default_factory=PatienceCounter)
    history: list[EpochResult] = field(default_factory=list)
    config: Optional[RunConfig] = None
    mood_names: list[str] = field(default_factory=list)
    meta_names: list[str] = field(default_factory=list)  # the metadata head's outputs ([] for a baseline)
    alpha_mode: AlphaMode = "fixed"
    weighting: Optional[UncertaintyWeights] = None  # the live learned loss weights ("learned" only)

    def effective_alpha(self) -> float:
        """The metadata-loss weight now: the fixed alpha, or the learned weights' effective alpha."""
        return self.weighting.effective_alpha if self.weighting is not None else self.alpha

    def best_alpha(self) -> float:
        """The effective alpha at the end of the best epoch (the current one before any best)."""
        if self.weighting is None:
            return self.alpha
        best = next((h for h in self.history if h.epoch == self.best_epoch), None)
        return best.alpha if best is not None else self.effective_alpha()

    def best_model(self) -> MoodCNN:
        """A CPU copy of the model with the best weights so far (the current ones before any
        best), in eval mode; training is not disturbed."""
        model = MoodCNN(self.model.cfg, self.model.n_moods, self.model.n_meta)
        model.load_state_dict(self.best_state if self.best_state is not None else cpu_copy(self.model.state_dict()))
        return model.eval()

    def save_best(self, directory: Union[str, Path]) -> ModelCard:
        """Write the best model so far as a servable checkpoint (weights.pt + model_card.json)."""
        if self.config is None:
            raise ValueError("this TrainState has no config; it was not created by fit()")
        best_val = next((h.val for h in self.history if h.epoch == self.best_epoch), {})
        card = build_card(
            self.config,
            self.mood_names,
            self.meta_names,
            self.best_alpha(),
            {"best_epoch": self.best_epoch, "validation": best_val},
            alpha_mode=self.alpha_mode,
        )
        return save_checkpoint(directory, self.best_model(), card)

    def to_dict(self) -> dict[str, Any]:
        """A snapshot of plain tensors/ints/floats/strings/lists/dicts: ``torch.save`` it,
        ``torch.load(..., weights_only=True)`` it, pass it to ``fit(resume=...)``.
        ``alpha`` is the effective alpha now; ``weighting`` the learned weights (None when fixed)."""
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "alpha": self.effective_alpha(),
            "alpha_mode": self.alpha_mode,
            "seed": self.seed,
            "weighting": cpu_copy(self.weighting.state_dict()) if self.weighting is not None else None,
            "n_moods": self.model.n_moods,
            "n_meta": self.model.n_meta,
            "model": cpu_copy(self.model.state_dict()),
            "optimizer": cpu_copy(self.optimizer.state_dict()),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_model": cpu_copy(self.best_state) if self.best_state is not None else None,
            "bad_epochs": self.bad_epochs,
            "stop_best": self.stopper.best,
            "stale_epochs": self.stopper.stale,
            "history": [h.to_dict() for h in self.history],
            "mood_names": list(self.mood_names),
            "meta_names": list(self.meta_names),
            "config": to_dict(self.config) if self.config is not None else None,
        }


Callback = Callable[[EpochResult, TrainState], Optional[bool]]


@dataclass
class SplitEvaluation:
    """Song-level predictions and scores of one split: row i is ``song_ids[i]``."""

    split: str
    song_ids: list[str]
    y_true: np.ndarray  # (n, N_mood) 0/1 targets
    y_prob: np.ndarray  # (n, N_mood) mean of segment sigmoids
    scores: Scores  # macro (and per-label) ROC-AUC / PR-AUC, %


@dataclass
class FitResult:
    """What ``fit`` returns. ``model`` holds the best epoch's weights, in eval mode.

    ``n_meta``/``meta_names`` describe the model's metadata head: empty for a
    baseline (alpha = 0 builds no metadata head). ``test`` is the test split's
    song-level scores (with per-label scores), in percent. ``alpha`` is the
    metadata-loss weight; with ``alpha_mode`` "learned" it is the effective alpha
    at the end of the best epoch (``history[i].alpha`` follows it epoch by epoch).
    """

    model: MoodCNN
    history: list[EpochResult]
    best_epoch: int
    best_val: dict[str, Any]
    test: Optional[Scores]
    test_evaluation: Optional[SplitEvaluation]  # the test songs' predictions behind ``test``
    alpha: float
    n_moods: int
    n_meta: int
    mood_names: list[str]
    meta_names: list[str]
    stopped_early: bool
    seconds: float
    config: RunConfig
    data_summary: dict[str, Any] = field(default_factory=dict)
    alpha_mode: AlphaMode = "fixed"  # "learned": alpha was trained (uncertainty weighting)

    def model_card(self) -> ModelCard:
        """The card ``save_checkpoint`` stores beside this model's weights."""
        return ModelCard.from_fit(self)

    def metrics_summary(self) -> dict[str, Any]:
        return {"best_epoch": self.best_epoch, "validation": self.best_val, "test": self.test}

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready (NaN -> null): the content of metrics.json."""
        return json_safe(
            {
                "alpha": self.alpha,
                "alpha_mode": self.alpha_mode,
                "n_moods": self.n_moods,
                "n_meta": self.n_meta,
                "mood_names": self.mood_names,
                "meta_names": self.meta_names,
                "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early,
                "seconds": self.seconds,
                "monitor": f"validation {self.config.train.monitor} (song-level macro, %)",
                "validation": self.best_val,
                "test": self.test,
                "data": self.data_summary,
                "history": [h.to_dict() for h in self.history],
            }
        )


def build_card(
    config: RunConfig,
    mood_names: list[str],
    meta_names: list[str],
    alpha: float,
    metrics: dict[str, Any],
    alpha_mode: AlphaMode = "fixed",
) -> ModelCard:
    """A ModelCard for a model trained with ``config`` (= ``ModelCard.for_run``)."""
    return ModelCard.for_run(config, mood_names, meta_names, alpha, metrics, alpha_mode=alpha_mode)


def check_resume(resume: dict[str, Any], model: MoodCNN, alpha: float, mode: AlphaMode) -> None:
    """Raise CheckpointError unless ``resume`` is a TrainState snapshot of a run like this one
    (same mood / metadata outputs, same alpha mode, and the same alpha when it is fixed)."""
    if resume.get("format") != STATE_FORMAT or "model" not in resume:
        raise CheckpointError("resume state is not a TrainState.to_dict() snapshot")
    if (resume["n_moods"], resume["n_meta"]) != (model.n_moods, model.n_meta):
        raise CheckpointError(
            f"resume state has {resume['n_moods']} mood / {resume['n_meta']} meta outputs, "
            f"this run {model.n_moods} / {model.n_meta}"
        )
    resumed_mode = resume.get("alpha_mode", "fixed")  # states saved before learned weights were fixed
    if resumed_mode != mode:
        raise CheckpointError(
            f"resume state was trained with a {resumed_mode} alpha "
            f"(alpha={resume['alpha']}), this run's alpha is {mode}"
        )
    if mode == "learned" and not resume.get("weighting"):
        raise CheckpointError("resume state was trained with alpha=learned but holds no learned loss weights")
    # A learned alpha moves during training; only a fixed one must match.
    if mode == "fixed" and not math.isclose(float(resume["alpha"]), alpha):
        raise CheckpointError(f"resume state was trained with alpha={resume['alpha']}, this run has {alpha}")


def restore_state(state: TrainState, resume: dict[str, Any]) -> None:
    """Load a ``TrainState.to_dict()`` snapshot into the fresh ``state`` (after checking it fits)."""
    check_resume(resume, state.model, state.alpha, state.alpha_mode)
    state.model.load_state_dict(resume["model"])
    if state.weighting is not None:
        state.weighting.load_state_dict(resume["weighting"])
    state.optimizer.load_state_dict(resume["optimizer"])
    state.epoch = int(resume["epoch"])
    state.best_score = float(resume["best_score"])
    state.best_epoch = int(resume["best_epoch"])
    state.best_state = resume["best_model"]
    state.bad_epochs = int(resume["bad_epochs"])
    # Snapshots saved before the smoothed rule existed were stopped on the raw score.
    state.stopper = PatienceCounter(
        best=float(resume.get("stop_best", resume["best_score"])),
        stale=int(resume.get("stale_epochs", resume["bad_epochs"])),
    )
    # Histories saved before EpochResult.alpha existed were all trained with a fixed alpha.
    state.history = [EpochResult(**{"alpha": float(resume["alpha"]), **h}) for h in resume["history"]]


__all__ = [
    "STATE_FORMAT",
    "EpochResult",
    "TrainState",
    "Callback",
    "SplitEvaluation",
    "FitResult",
    "build_card",
    "check_resume",
    "restore_state",
]
