"""Where training batches are gathered: the host sampler (numpy over the feature cache's
memory map) or the device sampler (the training songs' frames held on the GPU). Both
yield the same batches, so the choice (``train.sampler``) changes speed, never results.
"""

from __future__ import annotations

from typing import Any, Union

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


def choose_sampler(mode: str, device: torch.device, bank_bytes: int) -> str:
    """ "host" or "device": where ``train.sampler=mode`` gathers batches when training on
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


def make_sampler(
    data: RunData,
    config: RunConfig,
    train_ids: list[str],
    mood_targets: np.ndarray,
    meta_targets: np.ndarray,
    device: torch.device,
    rank: int,
    world: int,
) -> tuple[Union[WindowSampler, DeviceWindowSampler], str, int]:
    """The training batch sampler of one rank: (sampler, "host" or "device", bytes of
    training frames). Each rank decides for itself; that is safe because both samplers
    yield the same batches."""
    tc = config.train
    bank_bytes = device_bank_bytes(data.cache, train_ids)
    kind = choose_sampler(tc.sampler, device, bank_bytes)
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
