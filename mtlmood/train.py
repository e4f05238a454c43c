"""The training loop, with no Ray in it.

    mtlmood train --set dataset.root=runs/synthetic --set train.max_epochs=3 --output runs/train

``fit(data, config)`` trains one model the paper's way: paper batches from
``WindowSampler`` (32 random 187-frame windows of random songs; an epoch is
1.25 x the number of training songs; ``train.sampler`` may swap in the
``DeviceWindowSampler``, same batches gathered on the GPU, see ``choose_sampler``),
Adam (lr 1e-3, betas 0.9/0.999, eps 1e-7), L = BCE_mood + alpha * BCE_meta, at most 30 epochs. After every epoch the
validation songs are scored song-level (mean of segment sigmoids, see inference.py)
and **early stopping watches the validation macro PR-AUC** (``train.monitor``)
with patience 3: training stops after 3 epochs without a new best, and the best
epoch's weights are restored. ``train.min_epochs`` and ``train.stop_smoothing`` (a
moving average for the patience count, see mtlmood/stopping.py) keep one noisy
validation epoch from stopping a small run.

Ray Train and Tune drive the same loop through ``callback(epoch_result, state)``,
called after every epoch on every rank: it can report metrics, save
``state.to_dict()`` (everything needed to resume, loadable with
``torch.load(weights_only=True)``) and return True to stop. ``fit(...,
resume=state_dict)`` continues exactly where that state left off. The state and
result types live in mtlmood/train_state.py, the device and rank helpers in
mtlmood/distributed.py, the sampler choice in mtlmood/train_sampling.py and the setup of
one fit (model, optimiser, state, sampler) in mtlmood/train_setup.py.

``train_run(config, output_dir)`` (what `mtlmood train` runs, in mtlmood/train_output.py)
saves the state after every epoch, so a killed run resumes to the same final weights as an
uninterrupted run.

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

import logging
import math
import time
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

from mtlmood.checkpoint import cpu_copy
from mtlmood.config import RunConfig, TrainConfig
from mtlmood.distributed import collective_device, sync_buffers, to_device
from mtlmood.errors import ConfigError
from mtlmood.inference import song_probabilities
from mtlmood.metrics import macro_scores
from mtlmood.model import MoodCNN
from mtlmood.rundata import RunData
from mtlmood.sampler import DeviceWindowSampler, TensorBatch
from mtlmood.stopping import moving_average, should_stop
from mtlmood.train_graphs import GraphedStep, eager_step, graphed_step
from mtlmood.train_sampling import SAMPLERS
from mtlmood.train_setup import FitRun, start_fit
from mtlmood.train_state import Callback, EpochResult, FitResult, SplitEvaluation

log = logging.getLogger(__name__)

MONITORS = ("pr_auc", "roc_auc")
# Validation scores kept per epoch (per-label scores only go to the final test metrics).
_VAL_KEYS = ("roc_auc", "pr_auc", "prevalence", "n_songs", "n_labels", "excluded_labels")


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The dropout seed of one rank's epoch: a resume restarts the stream without saved RNG state."""
    return int(np.random.SeedSequence((seed, epoch, rank, 0x5EED)).generate_state(1)[0])


def evaluate_split(
    model: MoodCNN, data: RunData, split: str = "test", config: Optional[RunConfig] = None, per_label: bool = True
) -> SplitEvaluation:
    """Song-level predictions and macro ROC-AUC / PR-AUC (%) of ``model`` on one split of ``data``."""
    config = config or data.config
    module = getattr(model, "module", model)
    ids = data.song_ids(split)
    moods, _ = data.targets(split)
    probs = song_probabilities(
        module,
        (data.cache.features(s) for s in ids),
        module.cfg.segment_frames,
        config.features.max_frames,
        config.train.eval_batch_size,
        torch.bfloat16 if config.train.bf16 else None,
    )
    scores = macro_scores(moods, probs, data.mood_names)
    if not per_label:
        scores.pop("per_label", None)
    return SplitEvaluation(split=split, song_ids=ids, y_true=moods, y_prob=probs, scores=scores)


# ---------------------------------------------------------------- the loop


def fit(
    data: RunData,
    config: RunConfig,
    callback: Optional[Callback] = None,
    resume: Optional[dict[str, Any]] = None,
    device: Union[str, torch.device, None] = None,
    bank_budget: Optional[int] = None,
) -> FitResult:
    """Train one model (see the module docstring); returns the best epoch's model and scores.

    ``callback(epoch_result, state)`` runs after every epoch on every rank; returning
    True stops training (best weights are still restored and the test split scored).
    ``resume`` is a ``TrainState.to_dict()`` snapshot to continue from.
    ``device`` overrides ``config.train.device`` (e.g. Ray Train's per-worker device).
    ``bank_budget``: the most bytes of training frames the device sampler may keep on the
    GPU, for a fit that shares its GPU with others (``mtlmood.train_sampling.choose_sampler``).
    """
    tc = config.train
    if tc.monitor not in MONITORS:
        raise ConfigError(f"train.monitor must be one of {MONITORS}, got {tc.monitor!r}")
    if tc.max_epochs < 1 or tc.patience < 1 or tc.batch_size < 1 or tc.stop_smoothing < 1:
        raise ConfigError("train.max_epochs, train.patience, train.batch_size and train.stop_smoothing must be >= 1")
    if tc.min_epochs < 0:
        raise ConfigError("train.min_epochs must be >= 0")
    if tc.sampler not in SAMPLERS:  # a config built in code skips the YAML/CLI check
        raise ConfigError(f"train.sampler must be one of {SAMPLERS}, got {tc.sampler!r}")
    threads = torch.get_num_threads()
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    try:
        return _fit(data, config, callback, resume, device, bank_budget)
    finally:
        torch.set_num_threads(threads)  # the thread count is process-wide: leave it as it was


def _fit(
    data: RunData,
    config: RunConfig,
    callback: Optional[Callback],
    resume: Optional[dict[str, Any]],
    device: Union[str, torch.device, None],
    bank_budget: Optional[int] = None,
) -> FitResult:
    """The loop: set up, then per epoch train, validate (and track early stopping), let the
    callback report or stop; then restore the best epoch and score the test split."""
    started = time.perf_counter()
    tc = config.train
    run = start_fit(data, config, resume, device, bank_budget)
    graphed = graphed_step(run, tc)  # None: the eager step (the default, and anywhere but one CUDA process)
    stop = should_stop(run.state.epoch, run.state.stopper.stale, tc.patience, tc.min_epochs)
    _log_start(run, data)
    for epoch in range(run.state.epoch + 1, tc.max_epochs + 1):
        if stop:
            break
        t0 = time.perf_counter()
        losses = _train_epoch(run, epoch, tc, graphed)
        train_seconds = time.perf_counter() - t0
        result = _validate_epoch(run, data, config, epoch, losses, t0, train_seconds)
        stop = should_stop(epoch, run.state.stopper.stale, tc.patience, tc.min_epochs)
        if callback is not None and _callback_stops(run, callback, result):
            break
    return _finish(run, data, config, started)


def _log_start(run: FitRun, data: RunData) -> None:
    """One log line: what is trained, on what, with which sampler."""
    log.info(
        "training %d moods, %d metadata labels, alpha=%s, %d train songs, %d batches/epoch on %s%s, %s sampler%s",
        data.n_moods,
        run.n_meta,
        "learned" if run.weighting is not None else f"{run.alpha:.4g}",
        run.n_train,
        run.sampler.batches_per_epoch,
        run.device,
        f" (rank {run.rank}/{run.world})" if run.distributed else "",
        run.sampler_kind,
        f" ({run.bank_bytes / 2**20:.0f} MiB of frames on {run.device})" if run.sampler_kind == "device" else "",
    )


def _train_epoch(run: FitRun, epoch: int, tc: TrainConfig, graphed: Optional[GraphedStep] = None) -> list[float]:
    """One epoch of optimiser steps (eager, or replays of the CUDA graph of the step); the mean
    (total, mood, meta) loss over every rank's batches."""
    device = run.device
    run.net.train()
    torch.manual_seed(_epoch_seed(tc.seed, epoch, run.rank))  # dropout stream of this epoch
    # A device sampler's batches are already on the device: no copy, no prefetch thread.
    batches: Iterator[TensorBatch] = (
        run.sampler.epoch(epoch)
        if isinstance(run.sampler, DeviceWindowSampler)
        else to_device(run.sampler.epoch(epoch), device)
    )
    # Loss sums accumulate on the device: no host sync per step. The graph adds into its own tensor.
    sums = graphed.sums.zero_() if graphed is not None else torch.zeros(3, dtype=torch.float64, device=device)
    for x, mood_y, meta_all in batches:
        if graphed is not None:
            graphed(x, mood_y, meta_all)
        else:
            eager_step(run, tc, x, mood_y, meta_all, sums)
    if run.distributed:
        cdev = collective_device(device)
        reduced = sums.to(cdev)
        torch.distributed.all_reduce(reduced)
        sums = reduced / run.world
        sync_buffers(run.model, cdev)
    losses: list[float] = (sums / run.sampler.local_batches).tolist()
    return losses


def _validate_epoch(
    run: FitRun,
    data: RunData,
    config: RunConfig,
    epoch: int,
    losses: list[float],
    t0: float,
    train_seconds: float,
) -> EpochResult:
    """Score the validation split (rank 0, broadcast to the others), keep the best weights, count
    the patience on the smoothed score, and record the epoch in the state's history."""
    tc, state = config.train, run.state
    val: Optional[dict[str, Any]] = None
    if run.rank == 0:
        scores = evaluate_split(run.model, data, "validation", config, per_label=False).scores
        val = {k: scores[k] for k in _VAL_KEYS if k in scores}  # type: ignore[literal-required]
    if run.distributed:
        holder = [val]
        torch.distributed.broadcast_object_list(holder, src=0, device=collective_device(run.device))
        val = holder[0]
    assert val is not None
    score = float(val[tc.monitor])
    is_best = not math.isnan(score) and score > state.best_score
    if is_best:
        state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
        state.best_state = cpu_copy(run.model.state_dict())
    else:
        state.bad_epochs += 1
    # Patience watches the moving average of the last stop_smoothing scores (the raw
    # score by default); the best raw epoch above stays the one whose weights are kept.
    smoothed = moving_average(
        [float(h.val.get(tc.monitor, math.nan)) for h in state.history] + [score], tc.stop_smoothing
    )
    state.stopper.update(smoothed)
    state.epoch = epoch
    result = EpochResult(
        epoch=epoch,
        train_loss=losses[0],
        train_mood_loss=losses[1],
        train_meta_loss=losses[2],
        val=val,
        is_best=is_best,
        bad_epochs=state.bad_epochs,
        seconds=time.perf_counter() - t0,
        segments_per_second=tc.batch_size * run.sampler.local_batches * run.world / train_seconds,
        alpha=state.effective_alpha(),
        stop_score=smoothed,
        stale_epochs=state.stopper.stale,
    )
    state.history.append(result)
    return result


def _callback_stops(run: FitRun, callback: Callback, result: EpochResult) -> bool:
    """Run the callback; whether it asks to stop (any rank's request stops every rank, so none waits forever)."""
    wants_stop = bool(callback(result, run.state))
    if run.distributed:
        flag = torch.tensor([float(wants_stop)], device=collective_device(run.device))
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        wants_stop = bool(flag.item())
    return wants_stop


def _finish(run: FitRun, data: RunData, config: RunConfig, started: float) -> FitResult:
    """Restore the best epoch's weights, score the test split (rank 0, broadcast) and build the result."""
    tc, state, model = config.train, run.state, run.model
    stopped_early = should_stop(state.epoch, state.stopper.stale, tc.patience, tc.min_epochs)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    best_val = next((h.val for h in state.history if h.epoch == state.best_epoch), {})
    evaluation: Optional[SplitEvaluation] = None
    if run.rank == 0:
        evaluation = evaluate_split(model, data, "test", config)
    if run.distributed:
        received: list[Optional[SplitEvaluation]] = [evaluation]
        torch.distributed.broadcast_object_list(received, src=0, device=collective_device(run.device))
        evaluation = received[0]
    assert evaluation is not None
    return FitResult(
        model=model,
        history=list(state.history),
        best_epoch=state.best_epoch,
        best_val=best_val,
        test=evaluation.scores,
        test_evaluation=evaluation,
        alpha=state.best_alpha(),
        n_moods=data.n_moods,
        n_meta=run.n_meta,
        mood_names=data.mood_names,
        meta_names=run.meta_names,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
        config=config,
        data_summary=data.summary(),
        alpha_mode=run.mode,
    )


__all__ = ["MONITORS", "evaluate_split", "fit"]
