"""The trainer class of a study trial (study.trainer), built without starting Ray: a trial
with no datasets leaves out Ray Train's DatasetsCallback (no DatasetManager actor per trial),
keeps every other default callback (the placement-group cleaner above all: it frees a dead
controller's CPUs), and a trainer given datasets keeps it. The runs of such trials are
checked on Ray by the study tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")
import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback  # noqa: E402
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer  # noqa: E402

from study.trainer import trainer_class  # noqa: E402


def _callbacks(trainer_type: type, tmp_path: Path, workers: int, **kwargs: object) -> list[str]:
    trainer = trainer_type(
        lambda config: None,
        scaling_config=ray.train.ScalingConfig(num_workers=workers),
        run_config=ray.train.RunConfig(name="probe", storage_path=str(tmp_path)),
        **kwargs,
    )
    return [type(callback).__name__ for callback in trainer._create_default_callbacks()]


@pytest.mark.parametrize("torch_process_group", [False, True])
def test_a_trial_without_datasets_starts_no_dataset_manager(tmp_path: Path, torch_process_group: bool) -> None:
    trial = _callbacks(trainer_class(torch_process_group), tmp_path, 2 if torch_process_group else 1)
    plain = _callbacks(DataParallelTrainer, tmp_path, 1)
    assert DatasetsCallback.__name__ in plain and DatasetsCallback.__name__ not in trial
    assert trial == [name for name in plain if name != DatasetsCallback.__name__]
    assert "PlacementGroupCleanerCallback" in trial
    with_data = _callbacks(trainer_class(torch_process_group), tmp_path, 1, datasets={"train": lambda: None})
    assert DatasetsCallback.__name__ in with_data
    assert not ray.is_initialized()


def test_one_worker_trials_never_import_torch_for_the_trainer() -> None:
    """TorchTrainer only where a process group is needed: its config imports torch, ~1.9 CPU-s
    of every trial's Train controller. Nor does the trial's driver (study.trial, and the resource
    plan it reads through study.sizing) import torch: ~1.3 CPU-s of every trial. Checked in a
    fresh interpreter."""
    assert trainer_class(False).__mro__[1] is DataParallelTrainer
    assert trainer_class(True).__mro__[1].__name__ == "TorchTrainer"
    assert trainer_class(False) is trainer_class(False)  # one class per kind (functools.cache)
    probe = (
        "import sys, study.trial, study.resources, study.runner; from study.trainer import trainer_class;"
        "trainer_class(False); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
