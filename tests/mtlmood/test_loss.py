"""The alpha loss: L = BCE_mood + alpha * BCE_meta."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtlmood.config import ModelConfig
from mtlmood.errors import ConfigError
from mtlmood.loss import UncertaintyWeights, multitask_loss, resolve_alpha
from mtlmood.model import MoodCNN


def test_resolve_alpha_auto_is_the_paper_heuristic() -> None:
    assert resolve_alpha("auto", 3, 50) == pytest.approx(0.06)
    assert resolve_alpha("auto", 3, 59) == pytest.approx(3 / 59)
    assert resolve_alpha(" AUTO ", 50, 50) == 1.0


def test_resolve_alpha_learned_starts_at_one_and_needs_metadata() -> None:
    assert resolve_alpha("learned", 3, 50) == 1.0
    with pytest.raises(ConfigError, match="labels.metadata"):
        resolve_alpha("LEARNED", 3, 0)


def test_resolve_alpha_numbers_and_no_metadata() -> None:
    assert resolve_alpha(0.25, 3, 50) == 0.25
    assert resolve_alpha(0, 3, 50) == 0.0
    assert resolve_alpha("1e-3", 3, 50) == pytest.approx(1e-3)  # YAML reads 1e-3 as a string
    assert resolve_alpha("auto", 3, 0) == 0.0
    assert resolve_alpha(2.0, 3, 0) == 0.0  # no metadata labels -> no metadata loss


@pytest.mark.parametrize("bad", [-0.1, "-1", "heuristic", math.nan, math.inf, True, ""])
def test_resolve_alpha_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        resolve_alpha(bad, 3, 50)  # type: ignore[arg-type]


def _batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(8, 3, generator=g),
        torch.randn(8, 5, generator=g),
        (torch.rand(8, 3, generator=g) > 0.5).float(),
        (torch.rand(8, 5, generator=g) > 0.7).float(),
    )


def test_alpha_zero_equals_the_single_task_loss() -> None:
    mood, meta, mood_t, meta_t = _batch()
    total, mood_loss, meta_loss = multitask_loss(mood, meta, mood_t, meta_t, 0.0)
    # The paper's sigmoid head + binary cross-entropy, computed the naive way.
    reference = F.binary_cross_entropy(torch.sigmoid(mood), mood_t)
    assert torch.allclose(total, reference, atol=1e-6) and torch.equal(total, mood_loss)
    assert meta_loss > 0  # still measured, for the logs
    single, _, zero = multitask_loss(mood, None, mood_t, None, 0.0)
    assert torch.equal(single, total) and zero == 0


def test_total_is_mood_plus_alpha_times_meta() -> None:
    mood, meta, mood_t, meta_t = _batch(1)
    for alpha in (0.06, 1.0, 3.5):
        total, mood_loss, meta_loss = multitask_loss(mood, meta, mood_t, meta_t, alpha)
        assert torch.allclose(total, mood_loss + alpha * meta_loss)
        assert torch.allclose(meta_loss, F.binary_cross_entropy(torch.sigmoid(meta), meta_t), atol=1e-6)


def test_loss_is_stable_for_extreme_logits() -> None:
    mood = torch.tensor([[200.0, -200.0]])
    total, _, _ = multitask_loss(mood, None, torch.tensor([[0.0, 1.0]]), None, 0.0)
    assert torch.isfinite(total) and total.item() == pytest.approx(200.0)


def test_alpha_scales_the_metadata_gradient_only() -> None:
    torch.manual_seed(0)
    # eval(): same dropout mask (none) in both passes; gradients flow all the same.
    model = MoodCNN(ModelConfig(n_filters=4, n_blocks=2, segment_frames=16, n_mels=16), 3, 5).eval()
    x = torch.randn(4, 16, 16)
    mood_t, meta_t = torch.ones(4, 3), torch.zeros(4, 5)
    grads = {}
    for alpha in (0.0, 1.0):
        model.zero_grad()
        mood, meta = model(x)
        multitask_loss(mood, meta, mood_t, meta_t, alpha)[0].backward()
        grads[alpha] = (model.meta_head.weight.grad.clone(), model.mood_head.weight.grad.clone())
    assert torch.count_nonzero(grads[0.0][0]) == 0  # baseline: the metadata head learns nothing
    assert torch.count_nonzero(grads[1.0][0]) > 0
    assert torch.allclose(grads[0.0][1], grads[1.0][1])  # the mood head's gradient is alpha-free


def test_uncertainty_weights_start_as_alpha_one() -> None:
    mood, meta, mood_t, meta_t = _batch(2)
    total, mood_loss, meta_loss = multitask_loss(mood, meta, mood_t, meta_t, UncertaintyWeights())
    assert torch.allclose(total, mood_loss + meta_loss)  # exp(0) = 1 each, log-variance term 0
    fixed = multitask_loss(mood, meta, mood_t, meta_t, 1.0)[0]
    assert torch.allclose(total, fixed)
