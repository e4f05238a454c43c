"""Where ``fit`` runs: the device, the rank in a torch.distributed group, the few
collectives the loop needs, and the thread that gathers host batches ahead of the GPU.

Under torch.distributed (Ray Train's TorchTrainer initialises the process group) the
loop in mtlmood/train.py wraps the model in DistributedDataParallel; the helpers here
do what DDP does not: keep BatchNorm statistics and learned loss weights identical on
every rank. Without a process group every helper sees rank 0 of a world of 1.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar, Union

import torch
from torch import nn

from mtlmood.errors import ConfigError
from mtlmood.sampler import Batch, TensorBatch

T = TypeVar("T")


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """ "auto" -> the current CUDA device when there is one, else CPU."""
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


def rank_and_world() -> tuple[bool, int, int]:
    """(distributed?, this process's rank, world size); (False, 0, 1) without a process group."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def collective_device(device: torch.device) -> torch.device:
    """The device a collective's tensors must live on for the group's backend."""
    # NCCL only moves CUDA tensors, gloo only CPU ones.
    return device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")


def sync_buffers(model: nn.Module, cdev: torch.device) -> None:
    """Copy rank 0's BatchNorm statistics to every rank. DDP broadcasts them before each
    forward, so after the last step of an epoch every other rank holds stats of its own
    last batch; syncing keeps all replicas (and their best-weight copies) identical."""
    for buffer in model.buffers():
        moved = buffer.data.to(cdev)
        torch.distributed.broadcast(moved, src=0)
        buffer.data.copy_(moved)


def average_gradients(module: nn.Module, world: int, cdev: torch.device) -> None:
    """Average ``module``'s gradients over the ranks (what DDP does for the model's): one
    small all-reduce, so every rank's optimizer step on it is the same."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]).to(cdev)
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def prefetch(iterator: Iterator[T], depth: int = 2) -> Iterator[T]:
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


def to_device(batches: Iterator[Batch], device: torch.device) -> Iterator[TensorBatch]:
    """Host batches as tensors on ``device``; on CUDA the next ones are gathered on a thread
    while the GPU works."""
    if device.type == "cuda":
        batches = prefetch(batches)
    for x, mood, meta in batches:
        yield (
            torch.from_numpy(x).to(device, non_blocking=True),
            torch.from_numpy(mood).to(device, non_blocking=True),
            torch.from_numpy(meta).to(device, non_blocking=True),
        )


__all__ = [
    "resolve_device",
    "rank_and_world",
    "collective_device",
    "sync_buffers",
    "average_gradients",
    "prefetch",
    "to_device",
]
