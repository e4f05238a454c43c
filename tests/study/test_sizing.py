"""The sizing numbers of docs/RUNBOOK.md come from code: the model's FLOPs and activations
are checked against PyTorch's own counter and forward hooks on the real MoodCNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mtlmood.config import ModelConfig
from mtlmood.model import MoodCNN
from study.sizing import (
    A10G_BF16,
    StudyPlan,
    activations,
    conv_blocks,
    model_flops,
    report,
    segments_per_second,
    study_estimate,
    train_flops,
    trial_estimate,
)


@pytest.mark.parametrize(
    "cfg,n_moods,n_meta",
    [(ModelConfig(), 50, 50), (ModelConfig(), 3, 0), (ModelConfig(n_filters=16, n_blocks=4), 9, 59)],
)
def test_flops_match_pytorchs_counter(cfg: ModelConfig, n_moods: int, n_meta: int) -> None:
    model = MoodCNN(cfg, n_moods, n_meta)
    x = torch.zeros(2, cfg.segment_frames, cfg.n_mels)
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        model(x)
    assert forward.get_total_flops() == 2 * model_flops(cfg, n_moods, n_meta)
    with FlopCounterMode(display=False) as step:
        mood, meta = model(x)
        (mood.sum() + (meta.sum() if meta is not None else 0)).backward()
    assert step.get_total_flops() == 2 * train_flops(cfg, n_moods, n_meta)


def test_paper_width_numbers() -> None:
    cfg = ModelConfig()
    assert [(b.height, b.width) for b in conv_blocks(cfg)] == [(187, 96), (93, 48), (46, 24), (23, 12), (11, 6)]
    # 3x3x1x128x187x96 + 4 x 3x3x128x128xHxW, then two 1920-wide heads: ~0.89 GMACs.
    assert model_flops(cfg, 50, 50) == 2 * (
        9 * 128 * 187 * 96 + 9 * 128 * 128 * (93 * 48 + 46 * 24 + 23 * 12 + 11 * 6) + 1920 * 100
    )
    assert 2.9 < train_flops(cfg, 50, 50) / model_flops(cfg, 50, 50) < 3.0


def test_activations_are_the_conv_outputs() -> None:
    cfg = ModelConfig(n_filters=8)
    model = MoodCNN(cfg, 3)
    sizes: list[int] = []
    for module in model.trunk:
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: sizes.append(out[0].numel()))
    model(torch.zeros(1, cfg.segment_frames, cfg.n_mels))
    assert sum(sizes) == activations(cfg)


def test_trial_and_study_estimates_follow_the_paper_epoch() -> None:
    one, two = (trial_estimate(17946, e) for e in (1, 2))
    assert one.n_train == 14357 and one.batches_per_epoch == math.ceil(1.25 * 14357)
    assert math.isclose(two.trial_s - one.trial_s, one.epoch_s)  # linear in epochs
    assert one.epoch_s > one.batches_per_epoch * 32 / segments_per_second(A10G_BF16)  # + validation
    assert math.isclose(one.usd, one.trial_s / 3600 * A10G_BF16.usd_per_hour)
    study = study_estimate()
    assert study.trials == 48 + 3 * 40 and math.isclose(study.wall_hours, study.gpu_hours / StudyPlan().gpus)
    assert study.gpu_hours > 40 * trial_estimate(17946, 12).gpu_hours  # the 50-mood curve runs alone
    assert "GFLOP per segment" in report() and "USD" in report()
