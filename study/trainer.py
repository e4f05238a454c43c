"""The Ray Train trainer class of a study trial (study.trial builds one per trial)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def trainer_class(torch_process_group: bool) -> Any:
    """The Ray Train trainer of a trial: TorchTrainer (a process group) or a plain
    DataParallelTrainer, either without the Ray Data actor that it would start for nothing.

    One worker needs no process group (mtlmood.train runs without DDP when none exists), so a
    one-worker trial is a plain DataParallelTrainer: its Train controller then never imports
    torch (TorchTrainer's config does), ~1.9 CPU-s and ~1.5 s of every trial's start-up
    (measured 2026-12-06, 2 cores); and no NCCL, which CPU builds of torch lack, where a Ray
    "GPU" without CUDA (a test's logical GPU) would have failed to start. Several workers
    train under TorchTrainer's process group (NCCL on GPUs, gloo on CPUs).

    Ray Train 2.60 starts a DatasetManager actor for every run, datasets or not (its
    DatasetsCallback is a default callback); trials read their data themselves (mtlmood.rundata),
    so a trial with no datasets leaves that callback out: one Ray process fewer per trial,
    ~1.5 CPU-s that imports Ray Data (measured 2026-12-06, 2 cores). The workers' train context
    then holds no dataset shard provider, which it allows (``ray.train.get_dataset_shard`` is
    never called here)."""
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    base: Any = DataParallelTrainer
    if torch_process_group:
        from ray.train.torch import TorchTrainer  # imports torch: only where a process group is needed

        base = TorchTrainer

    class TrialTrainer(base):  # type: ignore[misc, valid-type]
        def _create_default_callbacks(self) -> list[Any]:
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [callback for callback in callbacks if not isinstance(callback, DatasetsCallback)]

    TrialTrainer.__name__ = TrialTrainer.__qualname__ = f"Trial{base.__name__}"
    return TrialTrainer
