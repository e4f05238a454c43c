"""Trials per GPU: what a packed trial asks Ray for, and the checks that refuse a packing that
cannot fit (``resources.trials_per_gpu``, ``gpu_memory_gb``, ``cpus_per_gpu``).

At the paper's batch of 32 one trial keeps an H100 15-17 % busy (the GPU waits on kernel
launches: docs/PERFORMANCE.md), so several trials can share a GPU. ``trials_per_gpu: N``
gives every Ray Train worker 1/N of a GPU; Ray then places N workers on each GPU, each a
process of its own with its own CUDA context, model and device-resident sampler (nothing is
shared between trials but the GPU's time and memory).

How the settings combine:

* ``trials_per_gpu`` N > 1 sets ``gpus_per_worker`` = 1/N. ``gpus_per_worker`` left at its
  default 1 is overridden; set to anything but 1 or 1/N it contradicts N: a config error.
  With N = 1 ``gpus_per_worker`` is used as before (0.5 packs two workers per GPU too).
* CPUs stay explicit (``cpus_per_worker``): the config does not know a node's size, so
  ``cpus_per_gpu`` (the CPUs Ray offers per GPU on a GPU node: node CPUs / node GPUs; 0 =
  not checked) lets the check refuse N x cpus_per_worker above it.
* Memory: N trials must fit ``usable_fraction`` of ``gpu_memory_gb``, each estimated by
  :func:`trial_gpu_memory` from the run's model and batch sizes (see it for the formula and
  its calibration). The device-resident sampler's frames are budgeted on top, per trial, at
  run time (:func:`device_bank_budget`): a trial whose frames do not fit its share gathers
  its batches on the host instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Protocol

from mtlmood.config import ModelConfig, RunConfig
from study.sizing import conv_blocks, flatten_size


# What this module reads of a study config (study.config.ResourcesConfig and StudyConfig have
# it), named here so that study.config can call these checks without an import circle.
class ResourcesConfig(Protocol):
    @property
    def use_gpu(self) -> str: ...
    @property
    def cpus_per_worker(self) -> float: ...
    @property
    def gpus_per_worker(self) -> float: ...
    @property
    def trials_per_gpu(self) -> int: ...
    @property
    def gpu_memory_gb(self) -> float: ...
    @property
    def cpus_per_gpu(self) -> float: ...


class SearchConfig(Protocol):
    @property
    def n_moods(self) -> list[int]: ...
    @property
    def n_artists(self) -> list[int]: ...


class StudyConfig(Protocol):
    @property
    def resources(self) -> ResourcesConfig: ...
    @property
    def search(self) -> SearchConfig: ...
    @property
    def run(self) -> RunConfig: ...


GIB = 2**30
# Share of gpu_memory_gb that trials may plan on: the rest is slack for the caching
# allocators of N processes (each keeps freed blocks) and whatever else runs on the GPU.
USABLE_FRACTION = 0.9
# Bytes saved for the backward pass per conv-output element and segment, fp32 (counted in
# mtlmood.model's block order: conv -> ReLU (in place) -> BatchNorm -> MaxPool -> Dropout):
# the ReLU'd conv output 4 (ReLU and BatchNorm both keep it), BatchNorm's output 4 (MaxPool's
# input), MaxPool's int64 indices 8 per pooled element = 2, Dropout's bool mask 0.25 and its
# output 1 (the next conv's input). bf16 autocast saves less: this is the bound.
TRAIN_SAVED_BYTES = 4 + 4 + 2 + 0.25 + 1
# During the backward pass of the largest block two gradients of its conv output's size are
# alive at once (BatchNorm's input and output gradients), fp32.
BACKWARD_TRANSIENT_BYTES = 2 * 4
# Evaluation (no autograd, eval_batch_size segments per forward): the largest block's conv
# output and BatchNorm output are alive together, fp32.
EVAL_BYTES = 2 * 4
# Weights, gradients and Adam's two moments, fp32.
STATE_BYTES_PER_PARAMETER = 16
# The caching allocator's rounding and fragmentation, and cuDNN's workspaces, on top of the
# activations (an allowance, not a measurement).
ALLOCATOR_SLACK = 1.25
# One process's fixed cost on the GPU: CUDA context, cuDNN and cuBLAS handles, the allocator's
# first blocks. Calibrated on the one measurement there is: benchmarks/results/gpu/gpu_check.md
# (H100, torch 2.11, 2026-11-26), a one-trial study at the demo's settings (8 filters, 32 mel
# bands, 64-frame windows, eval batch 256, device sampler) peaked at 1,469 MiB of GPU memory.
# This formula gives that trial 42 MiB of activations (x slack) and 24 MiB of frames, so the
# fixed part is 1,469 - 66 ~ 1,400 MiB (tests/study/test_packing_config.py recomputes it).
# It was not a paper-width trial: the activations above are counted, not measured.
PROCESS_OVERHEAD_BYTES = 1400 * 2**20
MEASURED_DEMO_TRIAL_MIB = 1469


@dataclass(frozen=True)
class MemoryEstimate:
    """One trial's GPU memory, in bytes, without the device sampler's frames."""

    overhead: int  # CUDA context, libraries' handles (PROCESS_OVERHEAD_BYTES)
    state: int  # weights, gradients, Adam moments
    train_activations: int  # one training step's peak (saved tensors + backward transients)
    eval_activations: int  # one evaluation forward's peak
    graphs: bool  # a CUDA-graphed step keeps its activations in its own pool: no reuse by evaluation

    @property
    def activations(self) -> int:
        both = self.train_activations + self.eval_activations
        return both if self.graphs else max(self.train_activations, self.eval_activations)

    @property
    def total(self) -> int:
        return int(self.overhead + self.state + ALLOCATOR_SLACK * self.activations)


def parameter_count(model: ModelConfig, n_moods: int, n_meta: int) -> int:
    """Weights and biases of the CNN: convs, BatchNorm's scale and shift, the two heads."""
    convs = sum(b.kernel * b.kernel * b.c_in * b.c_out + b.c_out + 2 * b.c_out for b in conv_blocks(model))
    return convs + (flatten_size(model) + 1) * n_moods + ((flatten_size(model) + 1) * n_meta if n_meta else 0)


def trial_gpu_memory(run: RunConfig, n_moods: int = 50, n_meta: int = 50) -> MemoryEstimate:
    """Estimated GPU memory of one trial of ``run`` (the module's constants say what each term is):

    overhead + 16 B x parameters + 1.25 x activations, where activations =
    max(batch x (11.25 B x conv outputs + 8 B x the largest conv output),
        eval batch x 8 B x the largest conv output)
    (their sum with ``train.cuda_graphs``), conv outputs per segment counted block by block."""
    blocks = conv_blocks(run.model)
    elements = sum(b.activations for b in blocks)
    largest = max(b.activations for b in blocks)
    tc = run.train
    return MemoryEstimate(
        overhead=PROCESS_OVERHEAD_BYTES,
        state=STATE_BYTES_PER_PARAMETER * parameter_count(run.model, n_moods, n_meta),
        train_activations=int(tc.batch_size * (TRAIN_SAVED_BYTES * elements + BACKWARD_TRANSIENT_BYTES * largest)),
        eval_activations=int(tc.eval_batch_size * EVAL_BYTES * largest),
        graphs=tc.cuda_graphs,
    )


def worker_gpus(res: ResourcesConfig) -> float:
    """The GPU share of one Ray Train worker: 1/trials_per_gpu when packing, else gpus_per_worker."""
    return 1.0 / res.trials_per_gpu if res.trials_per_gpu > 1 else float(res.gpus_per_worker)


def workers_per_gpu(res: ResourcesConfig) -> int:
    """How many workers Ray can place on one GPU at this share (1 for a whole GPU or more)."""
    share = worker_gpus(res)
    return max(1, math.floor(1.0 / share + 1e-9)) if share > 0 else 1


def uses_gpus(res: ResourcesConfig) -> bool:
    """Whether trials may ask for GPUs ("auto" may: the checks assume it will)."""
    return res.use_gpu.lower() != "false" and worker_gpus(res) > 0


def _largest_cell(study: StudyConfig) -> tuple[int, int]:
    """(mood labels, metadata labels) of the study's largest heads: the memory bound."""
    artists = max([*study.search.n_artists, study.run.labels.n_artists])
    return max(study.search.n_moods), artists + 10  # + year classes at most (a few buckets)


def device_bank_budget(study: StudyConfig) -> Optional[int]:
    """Bytes of training frames one trial's device sampler may keep on its GPU, when trials share
    GPUs: its share of the usable memory less its own estimate (None: a GPU of its own, where
    the sampler's rule of half the free memory is enough)."""
    res = study.resources
    per_gpu = workers_per_gpu(res)
    if not uses_gpus(res) or per_gpu <= 1:
        return None
    share = USABLE_FRACTION * res.gpu_memory_gb * GIB / per_gpu
    return max(0, int(share - trial_gpu_memory(study.run, *_largest_cell(study)).total))


def resource_problems(study: StudyConfig) -> list[str]:
    """Every reason this study's trials cannot be packed as configured, each naming its settings."""
    res = study.resources
    problems: list[str] = []
    n = res.trials_per_gpu
    if n > 1 and not (math.isclose(res.gpus_per_worker, 1.0) or math.isclose(res.gpus_per_worker, 1.0 / n)):
        problems.append(
            f"resources.gpus_per_worker={res.gpus_per_worker:g} contradicts resources.trials_per_gpu={n} "
            f"(which gives each worker 1/{n} = {1 / n:.4g} of a GPU): leave gpus_per_worker at 1 or set it "
            f"to {1 / n:.4g}"
        )
    if n > 1 and res.use_gpu.lower() == "false":
        problems.append(f"resources.trials_per_gpu={n} packs trials on GPUs, but resources.use_gpu=false")
    if problems or not uses_gpus(res):
        return problems
    per_gpu = workers_per_gpu(res)
    if res.cpus_per_gpu > 0 and per_gpu * res.cpus_per_worker > res.cpus_per_gpu + 1e-9:
        problems.append(
            f"{per_gpu} workers per GPU (resources.trials_per_gpu={n}, gpus_per_worker={worker_gpus(res):.4g}) x "
            f"resources.cpus_per_worker={res.cpus_per_worker:g} = {per_gpu * res.cpus_per_worker:g} CPUs, but a GPU "
            f"node offers resources.cpus_per_gpu={res.cpus_per_gpu:g} per GPU: set cpus_per_worker <= "
            f"{res.cpus_per_gpu / per_gpu:.4g} or fewer trials per GPU"
        )
    need = trial_gpu_memory(study.run, *_largest_cell(study))
    usable = USABLE_FRACTION * res.gpu_memory_gb * GIB
    if per_gpu * need.total > usable:
        fits = int(usable // need.total)
        tc = study.run.train
        problems.append(
            f"{per_gpu} trials per GPU x ~{need.total / GIB:.2f} GiB each (estimated from run.model.n_filters="
            f"{study.run.model.n_filters}, run.train.batch_size={tc.batch_size}, run.train.eval_batch_size="
            f"{tc.eval_batch_size}{', run.train.cuda_graphs=true' if tc.cuda_graphs else ''}; study.resources"
            f".trial_gpu_memory) exceed {USABLE_FRACTION:.0%} of resources.gpu_memory_gb={res.gpu_memory_gb:g} GiB: "
            f"at most {fits} fit; lower resources.trials_per_gpu or run.train.eval_batch_size"
        )
    return problems


__all__ = [
    "GIB",
    "MEASURED_DEMO_TRIAL_MIB",
    "PROCESS_OVERHEAD_BYTES",
    "USABLE_FRACTION",
    "MemoryEstimate",
    "device_bank_budget",
    "parameter_count",
    "resource_problems",
    "trial_gpu_memory",
    "uses_gpus",
    "worker_gpus",
    "workers_per_gpu",
]
