"""Where training batches are gathered: the host sampler (numpy over the feature cache's
memory map) or the device sampler (the training songs' frames held on the GPU). Both
yield the same batches, so the choice (``train.sampler``) changes speed, never results.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from mtlmood.config import RunConfig
from mtlmood.errors import ConfigError
from mtlmood.rundata import RunData
from mtlmood.sampler import DeviceWindowSampler, WindowSampler, default_batches_per_epoch, device_bank_bytes

SAMPLERS = ("auto", "host", "device")
# train.sampler=auto keeps the training frames on the GPU only while they take at most
# this share of its free memory. The rest is headroom for what training itself needs
# there: weights, Adam state, activations, cuDNN's benchmark workspaces (it tries
# memory-hungry algorithms), evaluation batches and the caching allocator's fragmentation,
# and, with a fractional resources.gpus_per_worker, other trials on the same GPU (each
# sees the memory left when it starts). Falling back to the host sampler only costs speed.
DEVICE_BANK_BUDGET = 0.5


def choose_sampler(mode: str, device: torch.device, bank_bytes: int, budget: Optional[int] = None) -> str:
    """ "host" or "device": where ``train.sampler=mode`` gathers batches when training on
    ``device`` with ``bank_bytes`` of training frames (``device_bank_bytes``). "auto" is
    "device" on CUDA when they fit ``DEVICE_BANK_BUDGET`` of its free memory, else "host".

    ``budget``: the most bytes this fit's frames may take on the device, when it shares the
    GPU with other trials (a fractional GPU: ``study.resources``). Trials packed on one GPU
    start together and each sees the whole GPU free, so the free-memory rule alone would let
    every one of them take half of it; the budget is this trial's own share. "auto" then
    also needs the frames to fit it, and "device" beyond it is refused."""
    if mode not in SAMPLERS:
        raise ConfigError(f"train.sampler must be one of {SAMPLERS}, got {mode!r}")
    over_budget = budget is not None and bank_bytes > budget
    if mode == "device" and over_budget and device.type == "cuda":
        raise ConfigError(
            f"train.sampler=device: the training frames take {bank_bytes / 2**30:.2f} GiB, more than this "
            f"trial's share of the GPU leaves for them ({max(budget or 0, 0) / 2**30:.2f} GiB; see "
            "resources.trials_per_gpu and resources.gpu_memory_gb): use train.sampler=auto or host"
        )
    if mode != "auto":
        return mode
    if device.type != "cuda" or over_budget:
        return "host"  # on a CPU the memory map already is the fastest "device" bank
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if bank_bytes <= DEVICE_BANK_BUDGET * free else "host"


def make_sampler(
    data: RunData,
    config: RunConfig,
    train_ids: list[str],
    mood_targets: np.ndarray,
    meta_targets: np.ndarray,
    device: torch.device,
    rank: int,
    world: int,
    bank_budget: Optional[int] = None,
) -> tuple[Union[WindowSampler, DeviceWindowSampler], str, int]:
    """The training batch sampler of one rank: (sampler, "host" or "device", bytes of
    training frames). Each rank decides for itself; that is safe because both samplers
    yield the same batches. ``bank_budget``: see ``choose_sampler``."""
    tc = config.train
    bank_bytes = device_bank_bytes(data.cache, train_ids)
    kind = choose_sampler(tc.sampler, device, bank_bytes, bank_budget)
    common: dict[str, Any] = dict(
        batch_size=tc.batch_size,
        segment_frames=config.model.segment_frames,
        batches_per_epoch=default_batches_per_epoch(len(train_ids), tc.epoch_factor, tc.max_batches_per_epoch),
        seed=tc.seed,
        rank=rank,
        world_size=world,
    )
    if kind == "device":
        return (
            DeviceWindowSampler(data.cache, train_ids, mood_targets, meta_targets, device=device, **common),
            kind,
            bank_bytes,
        )
    return WindowSampler(data.cache, train_ids, mood_targets, meta_targets, **common), kind, bank_bytes


__all__ = ["SAMPLERS", "DEVICE_BANK_BUDGET", "choose_sampler", "make_sampler"]
