"""The multi-task loss, in one obvious place:

    L = BCE(mood) + alpha * BCE(metadata)

Both terms are multi-label binary cross-entropy, averaged over batch and labels
(Keras's ``binary_crossentropy``). alpha = 0 is the single-task baseline; the
paper's heuristic is alpha = N_mood / N_meta ("auto").

``train.alpha: learned`` replaces the fixed weight by homoscedastic-uncertainty
weighting (Kendall, Gal & Cipolla 2018), see :class:`UncertaintyWeights`:

    L = exp(-s_mood) * BCE(mood) + exp(-s_meta) * BCE(metadata) + (s_mood + s_meta) / 2

with learned log-variances s = log(sigma^2), both starting at 0. Its effective
alpha, the metadata loss's weight relative to the mood loss's, is
exp(-s_meta) / exp(-s_mood).
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from mtlmood.errors import ConfigError

AlphaMode = Literal["fixed", "learned"]
ALPHA_MODES: tuple[AlphaMode, ...] = ("fixed", "learned")
_ALPHA_CHOICES = "a number >= 0, 'auto' or 'learned'"


def alpha_mode(alpha: Union[float, str]) -> AlphaMode:
    """ "learned" for ``train.alpha: learned`` (any case), else "fixed" (a number or "auto";
    :func:`resolve_alpha` validates those)."""
    return "learned" if isinstance(alpha, str) and alpha.strip().lower() == "learned" else "fixed"


def resolve_alpha(alpha: Union[float, str], n_moods: int, n_meta: int) -> float:
    """The metadata-loss weight as a float (for "learned": the weight training starts from).

    ``"auto"`` is the paper's heuristic N_mood / N_meta. Without metadata labels
    (``n_meta == 0``) there is no metadata loss, so alpha is 0 whatever was asked,
    except ``"learned"``, which has nothing to learn then and is a ConfigError.
    ``"learned"`` resolves to 1.0, the effective alpha of s_mood = s_meta = 0.
    Numeric strings are accepted because YAML reads ``1e-3`` as a string.
    """
    if isinstance(alpha, bool):
        raise ConfigError(f"train.alpha must be {_ALPHA_CHOICES}, got {alpha!r}")
    if alpha_mode(alpha) == "learned":
        if n_meta == 0:
            raise ConfigError(
                "train.alpha=learned weighs a metadata loss, but there are no metadata labels "
                "(labels.metadata is none, or yields no label); use a fixed train.alpha or set "
                "labels.metadata"
            )
        return 1.0
    if isinstance(alpha, str):
        text = alpha.strip().lower()
        if text == "auto":
            return float(n_moods) / n_meta if n_meta > 0 else 0.0
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"train.alpha must be {_ALPHA_CHOICES}, got {alpha!r}") from None
    else:
        value = float(alpha)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"train.alpha must be {_ALPHA_CHOICES} (finite), got {alpha!r}")
    return value if n_meta > 0 else 0.0


class UncertaintyWeights(nn.Module):
    """Learned task weights from homoscedastic uncertainty (Kendall, Gal & Cipolla 2018).

    Two scalar parameters, the log-variances ``s_mood`` and ``s_meta`` (init 0), and
    Kendall's form for classification losses, (1 / sigma^2) * L + log(sigma) with
    s = log(sigma^2):

        total = exp(-s_mood) * mood_loss + exp(-s_meta) * meta_loss + (s_mood + s_meta) / 2

    For a fixed L, exp(-s) * L + s / 2 is smallest at s = log(2 L), so each weight
    drifts towards 1 / (2 L): a task whose loss stays high is down-weighted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.s_mood = nn.Parameter(torch.zeros(()))
        self.s_meta = nn.Parameter(torch.zeros(()))

    def forward(self, mood_loss: torch.Tensor, meta_loss: torch.Tensor) -> torch.Tensor:
        """The weighted total (a scalar tensor, float32 like the parameters)."""
        return (
            torch.exp(-self.s_mood) * mood_loss
            + torch.exp(-self.s_meta) * meta_loss
            + 0.5 * (self.s_mood + self.s_meta)
        )

    @property
    def effective_alpha(self) -> float:
        """exp(-s_meta) / exp(-s_mood): the metadata loss's weight relative to the mood loss's,
        comparable with a fixed alpha (one host sync; call it per epoch, not per step)."""
        return float(torch.exp(self.s_mood.detach() - self.s_meta.detach()).item())


def multitask_loss(
    mood_logits: torch.Tensor,
    meta_logits: Optional[torch.Tensor],
    mood_targets: torch.Tensor,
    meta_targets: Optional[torch.Tensor],
    alpha: Union[float, UncertaintyWeights],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, mood_loss, meta_loss) with total = mood_loss + alpha * meta_loss, or
    ``alpha(mood_loss, meta_loss)`` when alpha is an :class:`UncertaintyWeights`.

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
    if isinstance(alpha, UncertaintyWeights):
        return alpha(mood_loss, meta_loss), mood_loss, meta_loss
    return mood_loss + alpha * meta_loss, mood_loss, meta_loss
