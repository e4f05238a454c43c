"""resources.trials_per_gpu without Ray: the GPU share a worker asks for, the checks that refuse a
packing that cannot fit (settings named), the memory estimate and its calibration, the device
sampler's budget per trial, and how many trials the runner starts at once on fractional GPUs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mtlmood.errors import ConfigError
from mtlmood.train_sampling import choose_sampler
from study.config import StudyConfig, load_study_config
from study.resources import (
    GIB,
    MEASURED_DEMO_TRIAL_MIB,
    USABLE_FRACTION,
    device_bank_budget,
    trial_gpu_memory,
    worker_gpus,
    workers_per_gpu,
)


def _study(tmp_path: Path, *overrides: str, config: str = "synthetic") -> StudyConfig:
    return load_study_config(config, [f"storage_path={tmp_path}", *overrides])


def test_trials_per_gpu_gives_each_worker_its_share(tmp_path: Path) -> None:
    default = _study(tmp_path).resources
    assert default.trials_per_gpu == 1 and worker_gpus(default) == 1.0 and workers_per_gpu(default) == 1
    packed = _study(tmp_path, "resources.trials_per_gpu=4").resources
    assert worker_gpus(packed) == 0.25 and workers_per_gpu(packed) == 4
    # Both set, consistently: fine. The older way (gpus_per_worker alone) still packs.
    both = _study(tmp_path, "resources.trials_per_gpu=4", "resources.gpus_per_worker=0.25").resources
    assert worker_gpus(both) == 0.25
    assert workers_per_gpu(_study(tmp_path, "resources.gpus_per_worker=0.5").resources) == 2


@pytest.mark.parametrize(
    "overrides, named",
    [
        (
            ["resources.trials_per_gpu=4", "resources.gpus_per_worker=0.5"],
            ["resources.gpus_per_worker=0.5", "resources.trials_per_gpu=4", "0.25"],
        ),
        (["resources.trials_per_gpu=2", "resources.use_gpu=false"], ["resources.trials_per_gpu=2", "use_gpu=false"]),
        (
            ["resources.trials_per_gpu=2", "resources.cpus_per_worker=4", "resources.cpus_per_gpu=7"],
            ["resources.cpus_per_worker=4", "resources.cpus_per_gpu=7", "cpus_per_worker <= 3.5"],
        ),
    ],
)
def test_contradictory_settings_are_refused_naming_them(tmp_path: Path, overrides: list[str], named: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        _study(tmp_path, *overrides)
    for text in named:
        assert text in str(error.value), (text, str(error.value))


def test_the_memory_check_refuses_what_cannot_fit(tmp_path: Path) -> None:
    paper = ["run.model.n_filters=128", "run.model.n_mels=96", "run.model.segment_frames=187"]
    one = trial_gpu_memory(_study(tmp_path, *paper).run)
    # The paper's width at batch 32 / eval batch 256: the evaluation forward is the peak.
    assert one.eval_activations > one.train_activations and 5 * GIB < one.total < 9 * GIB
    fits = int(USABLE_FRACTION * 80 * GIB // one.total)
    assert fits >= 8
    _study(tmp_path, *paper, f"resources.trials_per_gpu={fits}")  # an H100 (the default 80 GiB) holds them
    with pytest.raises(ConfigError) as error:
        _study(tmp_path, *paper, f"resources.trials_per_gpu={fits + 1}")
    message = str(error.value)
    for text in ("resources.gpu_memory_gb=80", "run.train.eval_batch_size=256", f"at most {fits} fit"):
        assert text in message, message
    # An A10G (22.5 GiB) holds 2, not 3; a smaller evaluation batch lets a third in.
    _study(tmp_path, *paper, "resources.gpu_memory_gb=22.5", "resources.trials_per_gpu=2")
    with pytest.raises(ConfigError, match="at most 2 fit"):
        _study(tmp_path, *paper, "resources.gpu_memory_gb=22.5", "resources.trials_per_gpu=3")
    a10g = [*paper, "resources.gpu_memory_gb=22.5"]
    _study(tmp_path, *a10g, "resources.trials_per_gpu=3", "run.train.eval_batch_size=64")
    # A graphed step keeps its activations apart from evaluation's: counted together.
    graphed = trial_gpu_memory(_study(tmp_path, *paper, "run.train.cuda_graphs=true").run)
    assert graphed.activations == graphed.train_activations + graphed.eval_activations


def test_the_estimate_reproduces_its_calibration(tmp_path: Path) -> None:
    """The demo's one-trial study peaked at 1,469 MiB on the H100 (gpu_check.md): the demo's
    settings (study/configs/synthetic.yaml), plus the frames its device sampler held (800
    training songs of 3.5-4 s at 62.5 frames/s, 32 mel bands, float32)."""
    demo = _study(tmp_path).run
    frames = 800 * 3.75 * 62.5 * demo.features.n_mels * 4
    estimate = trial_gpu_memory(demo, n_moods=3, n_meta=12).total + frames
    assert estimate / 2**20 == pytest.approx(MEASURED_DEMO_TRIAL_MIB, rel=0.02)


def test_packed_trials_budget_their_device_frames(tmp_path: Path) -> None:
    assert device_bank_budget(_study(tmp_path)) is None  # a GPU of its own: the sampler's own rule
    assert device_bank_budget(_study(tmp_path, "resources.use_gpu=false", "resources.gpus_per_worker=0.5")) is None
    study = _study(tmp_path, "resources.trials_per_gpu=4")
    budget = device_bank_budget(study)
    assert budget is not None
    assert budget == int(USABLE_FRACTION * 80 * GIB / 4 - trial_gpu_memory(study.run, 3, 22).total)
    gpu = torch.device("cuda")  # no CUDA call is made: the budget decides first
    assert choose_sampler("auto", gpu, budget + 1, budget) == "host"
    with pytest.raises(ConfigError, match="train.sampler=device.*resources.trials_per_gpu"):
        choose_sampler("device", gpu, budget + 1, budget)
    assert choose_sampler("device", torch.device("cpu"), budget + 1, budget) == "device"  # a CPU run: no GPU share


def test_concurrency_counts_fractional_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from study.runner import max_concurrent_trials

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    whole = _study(tmp_path, "resources.use_gpu=true", "resources.cpus_per_worker=1")
    assert max_concurrent_trials(whole) == 2  # one trial per GPU
    packed = replace(whole, resources=replace(whole.resources, trials_per_gpu=4))
    assert max_concurrent_trials(packed) == 8  # 4 per GPU; 16 CPUs would allow 14
    assert max_concurrent_trials(replace(packed, resources=replace(packed.resources, cpus_per_worker=3))) == 5
