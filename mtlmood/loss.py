"""The multi-task loss, in one obvious place:

    L = BCE(mood) + alpha * BCE(metadata)

Both terms are multi-label binary cross-entropy, averaged over batch and labels
(Keras's ``binary_crossentropy``). alpha = 0 is the single-task baseline; the
paper's heuristic is alpha = N_mood / N_meta ("auto").
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

from mtlmood.errors import ConfigError


def resolve_alpha(alpha: Union[float, str], n_moods: int, n_meta: int) -> float:
    """The metadata-loss weight as a float.

    ``"auto"`` is the paper's heuristic N_mood / N_meta. Without metadata labels
    (``n_meta == 0``) there is no metadata loss, so alpha is 0 whatever was asked.
    Numeric strings are accepted because YAML reads ``1e-3`` as a string.
    """
    if isinstance(alpha, bool):
        raise ConfigError(f"train.alpha must be a number >= 0 or 'auto', got {alpha!r}")
    if isinstance(alpha, str):
        text = alpha.strip().lower()
        if text == "auto":
            return float(n_moods) / n_meta if n_meta > 0 else 0.0
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"train.alpha must be a number >= 0 or 'auto', got {alpha!r}") from None
    else:
        value = float(alpha)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"train.alpha must be a finite number >= 0 or 'auto', got {alpha!r}")
    return value if n_meta > 0 else 0.0


def multitask_loss(mood_logits: torch.Tensor, meta_logits: Optional[torch.Tensor],
                   mood_targets: torch.Tensor, meta_targets: Optional[torch.Tensor],
                   alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mood_loss, meta_loss) with total = mood_loss + alpha * meta_loss.

    Logits go in, not probabilities: ``binary_cross_entropy_with_logits`` equals
    BCE(sigmoid(logits)) but cannot overflow. The losses are computed in float32
    even under bf16 autocast. Without a metadata head (``meta_logits is None``)
    meta_loss is 0 and total is the single-task loss.
    """
    mood_loss = F.binary_cross_entropy_with_logits(mood_logits.float(), mood_targets.float())
    if meta_logits is None or meta_logits.shape[-1] == 0:
        meta_loss = mood_loss.new_zeros(())
        return mood_loss, mood_loss, meta_loss
    if meta_targets is None:
        raise ValueError("meta_logits were given without meta_targets")
    meta_loss = F.binary_cross_entropy_with_logits(meta_logits.float(), meta_targets.float())
    return mood_loss + alpha * meta_loss, mood_loss, meta_loss
