"""train.cuda_graphs: CUDA graphs of the training step (mtlmood.train_graphs).

On a CPU the setting is ignored with a warning and the run is the eager run, weight for
weight; the graphed step refuses to be built anywhere but one CUDA process. The CUDA half
(graphed vs eager on a GPU, within the CUDA tests' tolerance) is skipped without CUDA and
runs in ``benchmarks/gpu_check.sh``, which also times it (``benchmarks/gpu_graphs_bench.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pytest
import torch

from helpers.mtl_synthetic import make_run_data, small_config
from mtlmood.config import TrainConfig
from mtlmood.errors import ConfigError
from mtlmood.rundata import RunData
from mtlmood.train import fit
from mtlmood.train_graphs import WARMUP_STEPS, GraphedStep, graphed_step
from mtlmood.train_setup import start_fit
from mtlmood.train_state import FitResult

EPOCHS = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    directory = tmp_path_factory.mktemp("graphs")
    return make_run_data(directory, small_config(directory, max_epochs=EPOCHS, max_batches_per_epoch=8))


def _fit(data: RunData, **train: object) -> FitResult:
    return fit(data, dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, **train)))


def test_the_setting_is_off_by_default() -> None:
    assert TrainConfig().cuda_graphs is False


def test_ignored_with_a_warning_on_the_cpu(data: RunData, caplog: pytest.LogCaptureFixture) -> None:
    eager = _fit(data, device="cpu")
    with caplog.at_level(logging.WARNING, logger="mtlmood.train_graphs"):
        graphed = _fit(data, device="cpu", cuda_graphs=True)
    assert any("train.cuda_graphs=true ignored: training on cpu" in r.getMessage() for r in caplog.records)
    # The eager step ran: the same run, weight for weight.
    assert [h.train_loss for h in graphed.history] == [h.train_loss for h in eager.history]
    for a, b in zip(eager.model.state_dict().values(), graphed.model.state_dict().values()):
        assert torch.equal(a, b)
    # Adam stays the default implementation where no graph is captured.
    run = start_fit(
        data,
        dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, cuda_graphs=True)),
        None,
        "cpu",
    )
    assert run.optimizer.param_groups[0]["capturable"] is False


def test_the_graphed_step_refuses_anything_but_cuda(data: RunData) -> None:
    config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, cuda_graphs=True))
    run = start_fit(data, config, None, "cpu")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        GraphedStep(run, config.train)
    assert graphed_step(run, dataclasses.replace(config.train, cuda_graphs=False)) is None
    assert WARMUP_STEPS >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sampler", ["host", "device"])
def test_graphed_training_on_cuda_matches_eager(data: RunData, sampler: str, tmp_path: Path) -> None:
    eager = _fit(data, device="cuda", sampler=sampler)
    graphed = _fit(data, device="cuda", sampler=sampler, cuda_graphs=True)
    assert all(math.isfinite(h.train_loss) for h in graphed.history)
    assert eager.test is not None and graphed.test is not None
    # The same tolerance as tests/mtlmood/test_cuda.py (GPU vs CPU): 3 test PR-AUC points.
    assert abs(graphed.test["pr_auc"] - eager.test["pr_auc"]) < 3, (graphed.test, eager.test)
    assert abs(graphed.history[0].train_loss - eager.history[0].train_loss) < 1e-2
