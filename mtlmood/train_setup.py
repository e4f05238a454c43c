"""The setup of one ``mtlmood.train.fit``: the model (seeded: identical on every rank), its
DDP wrapper under torch.distributed, the optimiser, the TrainState (restored from a resume
snapshot) and the rank's batch sampler, gathered in a FitRun that the loop's steps share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from mtlmood.config import RunConfig
from mtlmood.distributed import rank_and_world, resolve_device
from mtlmood.errors import ConfigError
from mtlmood.loss import AlphaMode, UncertaintyWeights, alpha_mode, resolve_alpha
from mtlmood.model import MoodCNN
from mtlmood.rundata import RunData
from mtlmood.sampler import DeviceWindowSampler, WindowSampler
from mtlmood.train_sampling import make_sampler
from mtlmood.train_state import TrainState, restore_state

Sampler = Union[WindowSampler, DeviceWindowSampler]


@dataclass
class FitRun:
    """What the steps of one fit share: the model and its DDP wrapper, the optimiser, the
    state being trained, the sampler, and where (device, rank) and how (alpha) it trains."""

    model: MoodCNN
    net: nn.Module  # the model, DDP-wrapped under torch.distributed
    optimizer: torch.optim.Optimizer
    weighting: Optional[UncertaintyWeights]  # learned loss weights, else None
    state: TrainState
    sampler: Sampler
    sampler_kind: str
    bank_bytes: int
    device: torch.device
    distributed: bool
    rank: int
    world: int
    mode: AlphaMode
    alpha: float
    n_meta: int
    meta_names: list[str]
    n_train: int


def start_fit(
    data: RunData,
    config: RunConfig,
    resume: Optional[dict[str, Any]],
    device: Union[str, torch.device, None],
    bank_budget: Optional[int] = None,
) -> FitRun:
    """Build the model, optimiser, state (restored from ``resume``) and sampler of a fit.

    ``bank_budget``: the most bytes of training frames the device sampler may hold (a trial
    sharing its GPU; ``mtlmood.train_sampling.choose_sampler``)."""
    tc = config.train
    where = resolve_device(device if device is not None else tc.device)
    distributed, rank, world = rank_and_world()
    # A process group of one (Ray Train starts one for every trial, even a one-worker trial)
    # needs no DDP: its gradient all-reduce and buffer broadcasts would only add kernels and
    # launches to every step, and the results are the same without them.
    distributed = distributed and world > 1
    mode = alpha_mode(tc.alpha)
    alpha = resolve_alpha(tc.alpha, data.n_moods, data.n_meta)  # "learned" without metadata: ConfigError
    # The baseline (alpha = 0) gets no metadata head: it would only receive zero
    # gradients, and without it a baseline is the same model whatever the metadata set.
    n_meta = data.n_meta if alpha > 0 else 0
    meta_names = data.meta_names if n_meta else []

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = MoodCNN(config.model, data.n_moods, n_meta).to(where)
    if tc.channels_last:
        model.use_channels_last()
    weighting = UncertaintyWeights().to(where) if mode == "learned" else None
    parameters = list(model.parameters()) + (list(weighting.parameters()) if weighting is not None else [])
    # A step captured as a CUDA graph (train.cuda_graphs, mtlmood.train_graphs) needs Adam's
    # step count on the device; elsewhere the default implementation stays.
    capturable = tc.cuda_graphs and where.type == "cuda" and not distributed
    optimizer = torch.optim.Adam(parameters, lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps, capturable=capturable)
    state = TrainState(
        epoch=0,
        model=model,
        optimizer=optimizer,
        alpha=alpha,
        seed=tc.seed,
        config=config,
        mood_names=data.mood_names,
        meta_names=meta_names,
        alpha_mode=mode,
        weighting=weighting,
    )
    if resume is not None:
        restore_state(state, resume)

    if data.cache.bank.shape[1] != config.model.n_mels:  # before a device upload, not after
        raise ConfigError(
            f"the feature cache has {data.cache.bank.shape[1]} mel bands, model.n_mels={config.model.n_mels}"
        )
    train_ids = data.song_ids("train")
    mood_t, meta_t = data.targets("train")
    meta_train = meta_t if n_meta else np.zeros((len(train_ids), 0), np.float32)
    sampler, sampler_kind, bank_bytes = make_sampler(
        data, config, train_ids, mood_t, meta_train, where, rank, world, bank_budget
    )

    net: nn.Module = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[where.index] if where.type == "cuda" else None)
    if where.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick the fastest kernels
    return FitRun(
        model=model,
        net=net,
        optimizer=optimizer,
        weighting=weighting,
        state=state,
        sampler=sampler,
        sampler_kind=sampler_kind,
        bank_bytes=bank_bytes,
        device=where,
        distributed=distributed,
        rank=rank,
        world=world,
        mode=mode,
        alpha=alpha,
        n_meta=n_meta,
        meta_names=meta_names,
        n_train=len(train_ids),
    )


__all__ = ["FitRun", "start_fit"]
