"""The training loop, with no Ray in it.

    mtlmood train --set dataset.root=runs/synthetic --set train.max_epochs=3 --output runs/train

``fit(data, config)`` trains one model the paper's way: paper batches from
``WindowSampler`` (32 random 187-frame windows of random songs; an epoch is
1.25 x the number of training songs; ``train.sampler`` may swap in the
``DeviceWindowSampler``, same batches gathered on the GPU, see ``choose_sampler``),
Adam (lr 1e-3, betas 0.9/0.999, eps 1e-7), L = BCE_mood + alpha * BCE_meta, at most 30 epochs. After every epoch the
validation songs are scored song-level (mean of segment sigmoids, see metrics.py)
and **early stopping watches the validation macro PR-AUC** (``train.monitor``)
with patience 3: training stops after 3 epochs without a new best, and the best
epoch's weights are restored.

Ray Train and Tune drive the same loop through ``callback(epoch_result, state)``,
called after every epoch on every rank: it can report metrics, save
``state.to_dict()`` (everything needed to resume, loadable with
``torch.load(weights_only=True)``) and return True to stop. ``fit(...,
resume=state_dict)`` continues exactly where that state left off.

``train.alpha: learned`` trains the loss weights too (uncertainty weighting,
``mtlmood.loss.UncertaintyWeights``): its two log-variances are optimised by the
same Adam, saved and restored with the rest of the state, and every epoch reports
the effective alpha they amount to (``EpochResult.alpha``).

Under torch.distributed (Ray Train's TorchTrainer initialises the process group)
the model is wrapped in DistributedDataParallel, each rank draws disjoint batches,
rank 0 alone scores the validation set and broadcasts the scores, so every rank
takes the same early-stopping decision. Learned loss weights stay outside the
DDP-wrapped model (its checkpoints stay plain MoodCNN state_dicts); their
gradients are averaged over the ranks after each backward, as DDP does for the
model's, so every rank holds the same weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

import numpy as np
import torch
from torch import nn

from mtlmood.checkpoint import ModelCard, cpu_copy, save_checkpoint
from mtlmood.config import RunConfig, save_config, to_dict
from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.fileio import atomic_write_json
from mtlmood.loss import AlphaMode, UncertaintyWeights, alpha_mode, multitask_loss, resolve_alpha
from mtlmood.metrics import Scores, json_safe, macro_scores, song_probabilities
from mtlmood.model import MoodCNN
from mtlmood.rundata import RunData, load_run_data
from mtlmood.sampler import (Batch, DeviceWindowSampler, TensorBatch, WindowSampler, default_batches_per_epoch,
                             device_bank_bytes)

log = logging.getLogger(__name__)

STATE_FORMAT = 1
MONITORS = ("pr_auc", "roc_auc")
SAMPLERS = ("auto", "host", "device")
# train.sampler=auto keeps the training frames on the GPU only while they take at most
# this share of its free memory. The rest is headroom for what training itself needs
# there: weights, Adam state, activations, cuDNN's benchmark workspaces (it tries
# memory-hungry algorithms), evaluation batches and the caching allocator's fragmentation,
# and, with a fractional resources.gpus_per_worker, other trials on the same GPU (each
# sees the memory left when it starts). Falling back to the host sampler only costs speed.
DEVICE_BANK_BUDGET = 0.5
# Validation scores kept per epoch (per-label scores only go to the final test metrics).
_VAL_KEYS = ("roc_auc", "pr_auc", "prevalence", "n_songs", "n_labels", "excluded_labels")


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

    def metrics(self) -> dict[str, Any]:
        """A flat dict of scalars, e.g. for ``ray.train.report``."""
        return {"epoch": self.epoch, "train_loss": self.train_loss, "train_mood_loss": self.train_mood_loss,
                "train_meta_loss": self.train_meta_loss, "val_roc_auc": self.val.get("roc_auc", math.nan),
                "val_pr_auc": self.val.get("pr_auc", math.nan), "val_prevalence": self.val.get("prevalence", math.nan),
                "is_best": self.is_best, "bad_epochs": self.bad_epochs, "seconds": self.seconds,
                "segments_per_second": self.segments_per_second, "alpha": self.alpha}

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
    bad_epochs: int = 0
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
        card = build_card(self.config, self.mood_names, self.meta_names, self.best_alpha(),
                          {"best_epoch": self.best_epoch, "validation": best_val}, alpha_mode=self.alpha_mode)
        return save_checkpoint(directory, self.best_model(), card)

    def to_dict(self) -> dict[str, Any]:
        """A snapshot of plain tensors/ints/floats/strings/lists/dicts: ``torch.save`` it,
        ``torch.load(..., weights_only=True)`` it, pass it to ``fit(resume=...)``.
        ``alpha`` is the effective alpha now; ``weighting`` the learned weights (None when fixed)."""
        return {"format": STATE_FORMAT, "epoch": self.epoch, "alpha": self.effective_alpha(),
                "alpha_mode": self.alpha_mode, "seed": self.seed,
                "weighting": cpu_copy(self.weighting.state_dict()) if self.weighting is not None else None,
                "n_moods": self.model.n_moods, "n_meta": self.model.n_meta,
                "model": cpu_copy(self.model.state_dict()), "optimizer": cpu_copy(self.optimizer.state_dict()),
                "best_score": self.best_score, "best_epoch": self.best_epoch,
                "best_model": cpu_copy(self.best_state) if self.best_state is not None else None,
                "bad_epochs": self.bad_epochs, "history": [h.to_dict() for h in self.history],
                "mood_names": list(self.mood_names), "meta_names": list(self.meta_names),
                "config": to_dict(self.config) if self.config is not None else None}


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
        return json_safe({
            "alpha": self.alpha, "alpha_mode": self.alpha_mode, "n_moods": self.n_moods, "n_meta": self.n_meta,
            "mood_names": self.mood_names, "meta_names": self.meta_names,
            "best_epoch": self.best_epoch, "stopped_early": self.stopped_early, "seconds": self.seconds,
            "monitor": f"validation {self.config.train.monitor} (song-level macro, %)",
            "validation": self.best_val, "test": self.test, "data": self.data_summary,
            "history": [h.to_dict() for h in self.history]})


def build_card(config: RunConfig, mood_names: list[str], meta_names: list[str], alpha: float,
               metrics: dict[str, Any], alpha_mode: AlphaMode = "fixed") -> ModelCard:
    """A ModelCard for a model trained with ``config`` (= ``ModelCard.for_run``)."""
    return ModelCard.for_run(config, mood_names, meta_names, alpha, metrics, alpha_mode=alpha_mode)


# ---------------------------------------------------------------- helpers

def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """"auto" -> the current CUDA device when there is one, else CPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    return device


def _distributed() -> tuple[bool, int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def _collective_device(device: torch.device) -> torch.device:
    # NCCL only moves CUDA tensors, gloo only CPU ones.
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def _sync_buffers(model: nn.Module, cdev: torch.device) -> None:
    """Copy rank 0's BatchNorm statistics to every rank. DDP broadcasts them before each
    forward, so after the last step of an epoch every other rank holds stats of its own
    last batch; syncing keeps all replicas (and their best-weight copies) identical."""
    for buffer in model.buffers():
        moved = buffer.data.to(cdev)
        torch.distributed.broadcast(moved, src=0)
        buffer.data.copy_(moved)


def _average_gradients(module: nn.Module, world: int, cdev: torch.device) -> None:
    """Average ``module``'s gradients over the ranks (what DDP does for the model's): one
    small all-reduce, so every rank's optimizer step on it is the same."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(cdev)
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence((seed, epoch, rank, 0x5EED)).generate_state(1)[0])


T = TypeVar("T")


def _prefetch(iterator: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce the next items on a thread while the GPU works (numpy's gather drops the GIL)."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in iterator:
                buffer.put(item)
        except BaseException as exc:  # hand the error to the consumer
            buffer.put(exc)
        buffer.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = buffer.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def choose_sampler(mode: str, device: torch.device, bank_bytes: int) -> str:
    """"host" or "device": where ``train.sampler=mode`` gathers batches when training on
    ``device`` with ``bank_bytes`` of training frames (``device_bank_bytes``). "auto" is
    "device" on CUDA when they fit ``DEVICE_BANK_BUDGET`` of its free memory, else "host"."""
    if mode not in SAMPLERS:
        raise ConfigError(f"train.sampler must be one of {SAMPLERS}, got {mode!r}")
    if mode != "auto":
        return mode
    if device.type != "cuda":
        return "host"  # on a CPU the memory map already is the fastest "device" bank
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if bank_bytes <= DEVICE_BANK_BUDGET * free else "host"


def _to_device(batches: Iterator[Batch], device: torch.device) -> Iterator[TensorBatch]:
    """Host batches as tensors on ``device``; on CUDA the next ones are gathered on a thread
    while the GPU works."""
    if device.type == "cuda":
        batches = _prefetch(batches)
    for x, mood, meta in batches:
        yield (torch.from_numpy(x).to(device, non_blocking=True), torch.from_numpy(mood).to(device, non_blocking=True),
               torch.from_numpy(meta).to(device, non_blocking=True))


def evaluate_split(model: MoodCNN, data: RunData, split: str = "test", config: Optional[RunConfig] = None,
                   per_label: bool = True) -> SplitEvaluation:
    """Song-level predictions and macro ROC-AUC / PR-AUC (%) of ``model`` on one split of ``data``."""
    config = config or data.config
    module = getattr(model, "module", model)
    ids = data.song_ids(split)
    moods, _ = data.targets(split)
    probs = song_probabilities(module, (data.cache.features(s) for s in ids), module.cfg.segment_frames,
                               config.features.max_frames, config.train.eval_batch_size,
                               torch.bfloat16 if config.train.bf16 else None)
    scores = macro_scores(moods, probs, data.mood_names)
    if not per_label:
        scores.pop("per_label", None)
    return SplitEvaluation(split=split, song_ids=ids, y_true=moods, y_prob=probs, scores=scores)


def _check_resume(resume: dict[str, Any], model: MoodCNN, alpha: float, mode: AlphaMode) -> None:
    if resume.get("format") != STATE_FORMAT or "model" not in resume:
        raise CheckpointError("resume state is not a TrainState.to_dict() snapshot")
    if (resume["n_moods"], resume["n_meta"]) != (model.n_moods, model.n_meta):
        raise CheckpointError(f"resume state has {resume['n_moods']} mood / {resume['n_meta']} meta outputs, "
                              f"this run {model.n_moods} / {model.n_meta}")
    resumed_mode = resume.get("alpha_mode", "fixed")  # states saved before learned weights were fixed
    if resumed_mode != mode:
        raise CheckpointError(f"resume state was trained with a {resumed_mode} alpha "
                              f"(alpha={resume['alpha']}), this run's alpha is {mode}")
    if mode == "learned" and not resume.get("weighting"):
        raise CheckpointError("resume state was trained with alpha=learned but holds no learned loss weights")
    # A learned alpha moves during training; only a fixed one must match.
    if mode == "fixed" and not math.isclose(float(resume["alpha"]), alpha):
        raise CheckpointError(f"resume state was trained with alpha={resume['alpha']}, this run has {alpha}")


def _restore(state: TrainState, resume: dict[str, Any]) -> None:
    """Load a ``TrainState.to_dict()`` snapshot into the fresh ``state`` (after checking it fits)."""
    _check_resume(resume, state.model, state.alpha, state.alpha_mode)
    state.model.load_state_dict(resume["model"])
    if state.weighting is not None:
        state.weighting.load_state_dict(resume["weighting"])
    state.optimizer.load_state_dict(resume["optimizer"])
    state.epoch = int(resume["epoch"])
    state.best_score = float(resume["best_score"])
    state.best_epoch = int(resume["best_epoch"])
    state.best_state = resume["best_model"]
    state.bad_epochs = int(resume["bad_epochs"])
    # Histories saved before EpochResult.alpha existed were all trained with a fixed alpha.
    state.history = [EpochResult(**{"alpha": float(resume["alpha"]), **h}) for h in resume["history"]]


# ---------------------------------------------------------------- the loop

def fit(data: RunData, config: RunConfig, callback: Optional[Callback] = None,
        resume: Optional[dict[str, Any]] = None, device: Union[str, torch.device, None] = None) -> FitResult:
    """Train one model (see the module docstring); returns the best epoch's model and scores.

    ``callback(epoch_result, state)`` runs after every epoch on every rank; returning
    True stops training (best weights are still restored and the test split scored).
    ``resume`` is a ``TrainState.to_dict()`` snapshot to continue from.
    ``device`` overrides ``config.train.device`` (e.g. Ray Train's per-worker device).
    """
    tc = config.train
    if tc.monitor not in MONITORS:
        raise ConfigError(f"train.monitor must be one of {MONITORS}, got {tc.monitor!r}")
    if tc.max_epochs < 1 or tc.patience < 1 or tc.batch_size < 1:
        raise ConfigError("train.max_epochs, train.patience and train.batch_size must be >= 1")
    if tc.sampler not in SAMPLERS:  # a config built in code skips the YAML/CLI check
        raise ConfigError(f"train.sampler must be one of {SAMPLERS}, got {tc.sampler!r}")
    threads = torch.get_num_threads()
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    try:
        return _fit(data, config, callback, resume, device)
    finally:
        torch.set_num_threads(threads)  # the thread count is process-wide: leave it as it was


def _fit(data: RunData, config: RunConfig, callback: Optional[Callback], resume: Optional[dict[str, Any]],
         device: Union[str, torch.device, None]) -> FitResult:
    started = time.perf_counter()
    tc = config.train
    device = resolve_device(device if device is not None else tc.device)
    distributed, rank, world = _distributed()
    mode = alpha_mode(tc.alpha)
    alpha = resolve_alpha(tc.alpha, data.n_moods, data.n_meta)  # "learned" without metadata: ConfigError
    # The baseline (alpha = 0) gets no metadata head: it would only receive zero
    # gradients, and without it a baseline is the same model whatever the metadata set.
    n_meta = data.n_meta if alpha > 0 else 0
    meta_names = data.meta_names if n_meta else []

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = MoodCNN(config.model, data.n_moods, n_meta).to(device)
    if tc.channels_last:
        model.use_channels_last()
    weighting = UncertaintyWeights().to(device) if mode == "learned" else None
    parameters = list(model.parameters()) + (list(weighting.parameters()) if weighting is not None else [])
    optimizer = torch.optim.Adam(parameters, lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps)
    state = TrainState(epoch=0, model=model, optimizer=optimizer, alpha=alpha, seed=tc.seed, config=config,
                       mood_names=data.mood_names, meta_names=meta_names, alpha_mode=mode, weighting=weighting)
    if resume is not None:
        _restore(state, resume)

    if data.cache.bank.shape[1] != config.model.n_mels:  # before a device upload, not after
        raise ConfigError(f"the feature cache has {data.cache.bank.shape[1]} mel bands, "
                          f"model.n_mels={config.model.n_mels}")
    train_ids = data.song_ids("train")
    mood_t, meta_t = data.targets("train")
    bank_bytes = device_bank_bytes(data.cache, train_ids)
    # Each rank decides for itself; that is safe because both samplers yield the same batches.
    sampler_kind = choose_sampler(tc.sampler, device, bank_bytes)
    meta_train = meta_t if n_meta else np.zeros((len(train_ids), 0), np.float32)
    common: dict[str, Any] = dict(
        batch_size=tc.batch_size, segment_frames=config.model.segment_frames,
        batches_per_epoch=default_batches_per_epoch(len(train_ids), tc.epoch_factor, tc.max_batches_per_epoch),
        seed=tc.seed, rank=rank, world_size=world)
    sampler: Union[WindowSampler, DeviceWindowSampler]
    if sampler_kind == "device":
        sampler = DeviceWindowSampler(data.cache, train_ids, mood_t, meta_train, device=device, **common)
    else:
        sampler = WindowSampler(data.cache, train_ids, mood_t, meta_train, **common)

    net: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick the fastest kernels
    autocast_dtype = torch.bfloat16 if tc.bf16 else None

    stop = state.bad_epochs >= tc.patience
    log.info("training %d moods, %d metadata labels, alpha=%s, %d train songs, %d batches/epoch on %s%s, "
             "%s sampler%s", data.n_moods, n_meta, "learned" if weighting is not None else f"{alpha:.4g}",
             len(train_ids), sampler.batches_per_epoch, device,
             f" (rank {rank}/{world})" if distributed else "", sampler_kind,
             f" ({bank_bytes / 2**20:.0f} MiB of frames on {device})" if sampler_kind == "device" else "")
    for epoch in range(state.epoch + 1, tc.max_epochs + 1):
        if stop:
            break
        t0 = time.perf_counter()
        net.train()
        torch.manual_seed(_epoch_seed(tc.seed, epoch, rank))  # dropout stream of this epoch
        # A device sampler's batches are already on the device: no copy, no prefetch thread.
        batches: Iterator[TensorBatch] = sampler.epoch(epoch) if isinstance(sampler, DeviceWindowSampler) \
            else _to_device(sampler.epoch(epoch), device)
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        for x, mood_y, meta_all in batches:
            meta_y = meta_all if n_meta else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_dtype is not None):
                mood_logits, meta_logits = net(x)
            total, mood_loss, meta_loss = multitask_loss(mood_logits, meta_logits, mood_y, meta_y,
                                                         weighting if weighting is not None else alpha)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if distributed and weighting is not None:
                _average_gradients(weighting, world, _collective_device(device))
            optimizer.step()
            # Accumulate on the device: no host sync per step.
            sums += torch.stack([total.detach(), mood_loss.detach(), meta_loss.detach()]).double()
        if distributed:
            cdev = _collective_device(device)
            reduced = sums.to(cdev)
            torch.distributed.all_reduce(reduced)
            sums = reduced / world
            _sync_buffers(model, cdev)
        losses = (sums / sampler.local_batches).tolist()
        train_seconds = time.perf_counter() - t0

        val: Optional[dict[str, Any]] = None
        if rank == 0:
            scores = evaluate_split(model, data, "validation", config, per_label=False).scores
            val = {k: scores[k] for k in _VAL_KEYS if k in scores}  # type: ignore[literal-required]
        if distributed:
            holder = [val]
            torch.distributed.broadcast_object_list(holder, src=0, device=_collective_device(device))
            val = holder[0]
        assert val is not None
        score = float(val[tc.monitor])
        is_best = not math.isnan(score) and score > state.best_score
        if is_best:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
            state.best_state = cpu_copy(model.state_dict())
        else:
            state.bad_epochs += 1
        state.epoch = epoch
        result = EpochResult(epoch=epoch, train_loss=losses[0], train_mood_loss=losses[1],
                             train_meta_loss=losses[2], val=val, is_best=is_best, bad_epochs=state.bad_epochs,
                             seconds=time.perf_counter() - t0,
                             segments_per_second=tc.batch_size * sampler.local_batches * world / train_seconds,
                             alpha=state.effective_alpha())
        state.history.append(result)
        stop = state.bad_epochs >= tc.patience
        if callback is not None:
            wants_stop = bool(callback(result, state))
            if distributed:  # any rank's request stops every rank, so none waits forever
                flag = torch.tensor([float(wants_stop)], device=_collective_device(device))
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                wants_stop = bool(flag.item())
            if wants_stop:
                break

    stopped_early = state.bad_epochs >= tc.patience
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    best_val = next((h.val for h in state.history if h.epoch == state.best_epoch), {})
    evaluation: Optional[SplitEvaluation] = None
    if rank == 0:
        evaluation = evaluate_split(model, data, "test", config)
    if distributed:
        holder = [evaluation]
        torch.distributed.broadcast_object_list(holder, src=0, device=_collective_device(device))
        evaluation = holder[0]
    assert evaluation is not None
    return FitResult(model=model, history=list(state.history), best_epoch=state.best_epoch, best_val=best_val,
                     test=evaluation.scores, test_evaluation=evaluation, alpha=state.best_alpha(),
                     n_moods=data.n_moods, n_meta=n_meta, mood_names=data.mood_names, meta_names=meta_names,
                     stopped_early=stopped_early, seconds=time.perf_counter() - started, config=config,
                     data_summary=data.summary(), alpha_mode=mode)


def format_epoch(result: EpochResult, max_epochs: int, monitor: str = "pr_auc") -> str:
    """One progress line per epoch."""
    val = result.val
    return (f"epoch {result.epoch:>2}/{max_epochs}  loss {result.train_loss:.4f} "
            f"(mood {result.train_mood_loss:.4f}, meta {result.train_meta_loss:.4f})  "
            f"val ROC-AUC {val.get('roc_auc', math.nan):6.2f}%  PR-AUC {val.get('pr_auc', math.nan):6.2f}%"
            f"{'  *best' if result.is_best else f'  ({result.bad_epochs} without {monitor} gain)'}  "
            f"{result.seconds:.1f}s, {result.segments_per_second:.0f} seg/s")


def train_run(config: RunConfig, output_dir: Union[str, Path, None] = None,
              callback: Optional[Callback] = None) -> FitResult:
    """load_run_data + fit + test scores, then write into ``output_dir`` (default ``config.output_dir``):
    ``config.yaml`` (resolved), ``metrics.json``, and the checkpoint (``weights.pt`` +
    ``model_card.json``, written last as the commit marker). Every file is written atomically."""
    output_dir = Path(output_dir or config.output_dir)
    data = load_run_data(config)
    result = fit(data, config, callback=callback)
    if _distributed()[1] == 0:
        save_config(config, output_dir / "config.yaml")
        atomic_write_json(output_dir / "metrics.json", result.to_dict())
        save_checkpoint(output_dir, result.model, result.model_card())
    return result


__all__ = ["EpochResult", "TrainState", "FitResult", "SplitEvaluation", "fit", "evaluate_split", "train_run",
           "build_card", "format_epoch", "resolve_device", "choose_sampler"]
