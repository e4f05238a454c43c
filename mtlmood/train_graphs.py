"""One training step, eager or replayed from a CUDA graph (``train.cuda_graphs``).

At the paper's batch of 32 a step on an H100 is a few hundred small kernels, and the GPU
waits on their launches (15-17 % utilisation during a study trial: docs/PERFORMANCE.md).
A CUDA graph records the whole step once (forward, loss, backward, the Adam step and the
running loss sums) and then launches it as one unit per batch: the batch is copied into
static input buffers and the graph is replayed.

What makes it the same training as the eager loop:

* the first ``WARMUP_STEPS`` batches train eagerly on a side stream (cuDNN's benchmark and
  the caching allocator settle there, as ``torch.cuda.graph`` requires), then the next batch
  is captured and replayed; every batch trains exactly once, in order;
* Adam is built with ``capturable=True`` (its step count lives on the GPU, so the captured
  step advances it); the arithmetic is Adam's;
* dropout draws from the CUDA generator, which graphs replay with the seed and offset it has
  at each replay, so the per-epoch ``torch.manual_seed`` of the loop still applies;
* bf16 autocast runs with its weight-cast cache off: a cached cast would be captured as a
  stale copy of the weights.

Only on CUDA and in one process: on any other device (a CPU, or a Ray "GPU" without CUDA)
and under DistributedDataParallel (its gradient hooks are not captured here) the setting is
ignored with a warning and the eager step runs. The captured step keeps its activations in
the graph's own memory pool for the whole fit, so evaluation cannot reuse them:
``study.resources`` counts both when it sizes trials per GPU. Off by default until the GPU
check shows a gain (``benchmarks/gpu_graphs_bench.py``).
"""

from __future__ import annotations

import logging
from typing import Optional, Protocol

import torch
from torch import nn

from mtlmood.config import TrainConfig
from mtlmood.distributed import average_gradients, collective_device
from mtlmood.errors import ConfigError
from mtlmood.loss import UncertaintyWeights, multitask_loss

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's examples use 3; 11 for DDP)


class StepParts(Protocol):
    """What a training step needs of its fit (``mtlmood.train_setup.FitRun`` has it; a benchmark
    can build it without a dataset)."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    weighting: Optional[UncertaintyWeights]
    device: torch.device
    distributed: bool
    world: int
    alpha: float
    n_meta: int


def step_losses(
    run: StepParts,
    tc: TrainConfig,
    x: torch.Tensor,
    mood_y: torch.Tensor,
    meta_all: torch.Tensor,
    cache_casts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and loss of one batch: (total, mood, meta) losses; the baseline has no metadata target."""
    meta_y = meta_all if run.n_meta else None
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=tc.bf16, cache_enabled=cache_casts):
        mood_logits, meta_logits = run.net(x)
    weighting = run.weighting if run.weighting is not None else run.alpha
    return multitask_loss(mood_logits, meta_logits, mood_y, meta_y, weighting)


def eager_step(
    run: StepParts,
    tc: TrainConfig,
    x: torch.Tensor,
    mood_y: torch.Tensor,
    meta_all: torch.Tensor,
    sums: torch.Tensor,
    cache_casts: bool = True,
) -> None:
    """One optimiser step on one batch; adds its (total, mood, meta) losses to ``sums`` on the
    device (no host sync per step)."""
    total, mood_loss, meta_loss = step_losses(run, tc, x, mood_y, meta_all, cache_casts)
    run.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if run.distributed and run.weighting is not None:
        average_gradients(run.weighting, run.world, collective_device(run.device))
    run.optimizer.step()
    sums += torch.stack([total.detach(), mood_loss.detach(), meta_loss.detach()]).double()


class GraphedStep:
    """The training step of one fit as a CUDA graph: call it once per batch, in order.

    ``sums`` holds the running (total, mood, meta) loss sums on the device; the loop zeroes
    it at the start of each epoch (the graph writes into this very tensor)."""

    def __init__(self, run: StepParts, tc: TrainConfig) -> None:
        if run.device.type != "cuda":
            raise ConfigError(f"train.cuda_graphs needs a CUDA device, the fit trains on {run.device}")
        if run.distributed:
            raise ConfigError("train.cuda_graphs needs a single process (no DistributedDataParallel)")
        self.run, self.tc = run, tc
        self.sums = torch.zeros(3, dtype=torch.float64, device=run.device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.eager_steps = 0

    def __call__(self, x: torch.Tensor, mood_y: torch.Tensor, meta_all: torch.Tensor) -> None:
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            self._warm_up(x, mood_y, meta_all)
            return
        if self.graph is None:
            self._capture(x, mood_y, meta_all)  # records the step without running it
        else:
            assert self.inputs is not None
            for static, new in zip(self.inputs, (x, mood_y, meta_all)):
                static.copy_(new, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()

    def _warm_up(self, x: torch.Tensor, mood_y: torch.Tensor, meta_all: torch.Tensor) -> None:
        """A real step, on a side stream: what the capture must not be the first to do (cuDNN's
        algorithm search, the allocator's first blocks, Adam's state) happens here."""
        side = torch.cuda.Stream(self.run.device)
        side.wait_stream(torch.cuda.current_stream(self.run.device))
        with torch.cuda.stream(side):
            eager_step(self.run, self.tc, x, mood_y, meta_all, self.sums, cache_casts=False)
        torch.cuda.current_stream(self.run.device).wait_stream(side)
        self.eager_steps += 1

    def _capture(self, x: torch.Tensor, mood_y: torch.Tensor, meta_all: torch.Tensor) -> None:
        run = self.run
        self.inputs = (x.detach().clone(), mood_y.detach().clone(), meta_all.detach().clone())
        # Gradients allocated inside the capture live in the graph's pool; each replay's
        # backward writes them afresh, so no zero_grad between replays.
        run.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            total, mood_loss, meta_loss = step_losses(run, self.tc, *self.inputs, cache_casts=False)
            total.backward()
            run.optimizer.step()
            self.sums += torch.stack([total.detach(), mood_loss.detach(), meta_loss.detach()]).double()
        self.graph = graph
        log.info("training step captured as a CUDA graph after %d eager steps", self.eager_steps)


def graphed_step(run: StepParts, tc: TrainConfig) -> Optional[GraphedStep]:
    """The fit's graphed step when ``train.cuda_graphs`` is on and can work here, else None (the
    eager step), with a warning that says why the setting is ignored."""
    if not tc.cuda_graphs:
        return None
    if run.device.type != "cuda":
        log.warning(
            "train.cuda_graphs=true ignored: training on %s (CUDA graphs need a CUDA device); eager steps",
            run.device,
        )
        return None
    if run.distributed:
        log.warning(
            "train.cuda_graphs=true ignored: %d processes train under DistributedDataParallel; eager steps",
            run.world,
        )
        return None
    return GraphedStep(run, tc)


__all__ = ["WARMUP_STEPS", "GraphedStep", "StepParts", "eager_step", "graphed_step", "step_losses"]
