"""MoodCNN: the paper's shapes and parameter counts, heads, configurability."""

from __future__ import annotations

import pytest
import torch

from mtlmood.config import ModelConfig
from mtlmood.errors import ConfigError
from mtlmood.model import MoodCNN, conv_parameter_count

PAPER_INPUT = (ModelConfig().segment_frames, ModelConfig().n_mels)  # (frames, mels) of one window


def test_paper_defaults_flatten_and_parameter_counts() -> None:
    assert PAPER_INPUT == (187, 96)  # ~3 s at 62.5 frames/s, 96 mel bands
    model = MoodCNN(ModelConfig(), n_moods=50, n_meta=59)
    assert model.flatten_size == 128 * 5 * 3 == 1920
    assert conv_parameter_count(model) == 591_616
    assert conv_parameter_count(model, with_batchnorm=True) == 592_896
    heads = (1920 + 1) * 50 + (1920 + 1) * 59
    assert sum(p.numel() for p in model.parameters()) == 592_896 + heads


def test_forward_shapes_and_logits() -> None:
    torch.manual_seed(0)
    model = MoodCNN(ModelConfig(n_filters=8), n_moods=3, n_meta=50).eval()
    x = torch.randn(4, *PAPER_INPUT)
    mood, meta = model(x)
    assert mood.shape == (4, 3) and meta is not None and meta.shape == (4, 50)
    assert model.features(x).shape == (4, model.flatten_size)
    only_mood, skipped = model(x, with_meta=False)
    assert skipped is None and torch.equal(only_mood, mood)
    # Logits, not probabilities: the sigmoid lives in the loss and in inference.
    assert (mood < 0).any() or (mood > 1).any()


def test_baseline_has_no_metadata_head() -> None:
    model = MoodCNN(ModelConfig(n_filters=8), n_moods=9, n_meta=0)
    assert model.meta_head is None
    mood, meta = model(torch.randn(2, *PAPER_INPUT))
    assert meta is None and mood.shape == (2, 9)


def test_configurable_width_depth_and_input() -> None:
    cfg = ModelConfig(n_filters=16, n_blocks=3, segment_frames=64, n_mels=40)
    model = MoodCNN(cfg, n_moods=5, n_meta=2)
    assert model.flatten_size == 16 * (64 // 8) * (40 // 8)
    assert model(torch.randn(2, 64, 40))[0].shape == (2, 5)
    with pytest.raises(ConfigError, match="too small"):
        MoodCNN(ModelConfig(segment_frames=16), n_moods=3, n_meta=0)
    with pytest.raises(ConfigError, match="at least one mood"):
        MoodCNN(ModelConfig(), n_moods=0, n_meta=0)
    with pytest.raises(ConfigError, match="init"):
        MoodCNN(ModelConfig(init="he"), n_moods=3, n_meta=0)


def test_keras_like_init_and_batchnorm_settings() -> None:
    model = MoodCNN(ModelConfig(n_filters=8), n_moods=3, n_meta=4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns[0].momentum == pytest.approx(0.01) and bns[0].eps == pytest.approx(1e-3)
    # Block order: conv -> ReLU -> BatchNorm -> pool -> dropout.
    kinds = [type(m).__name__ for m in list(model.trunk)[:5]]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Dropout"]


def test_channels_last_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = MoodCNN(ModelConfig(n_filters=8), n_moods=3, n_meta=2).eval()
    x = torch.randn(3, *PAPER_INPUT)
    with torch.inference_mode():
        expected = model(x)[0]
        model.use_channels_last()
        got = model(x)[0]
    assert torch.allclose(expected, got, atol=1e-5)
