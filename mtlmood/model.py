"""The VGG-like CNN of Kumar & Dahiya (2022): shared conv trunk, one head per task.

Input is a (batch, frames, mel bands) log-mel window, 187 x 96 (~3 s) by default.
Five identical blocks

    Conv2d(128, 3x3, stride 1, "same") + ReLU -> BatchNorm2d -> MaxPool 2x2 -> Dropout 0.25

shrink it to 128 x 5 x 3 = 1920 features, which feed two linear heads: moods
(N_mood labels) and metadata (N_meta labels; absent when N_meta = 0, the
single-task baseline). The heads return logits: the sigmoid of the paper's
"dense sigmoid" heads is applied inside the loss (BCE-with-logits, numerically
stable and mathematically the same) and by inference.

The paper's ε = 1e-7 for Adam is Keras's default, so the paper was almost surely
a Keras model; the defaults here therefore copy Keras's layer defaults too:
Glorot-uniform weights with zero biases, and BatchNorm momentum 0.99 / epsilon
1e-3 (PyTorch momentum = 1 - Keras momentum = 0.01). Set ``init: torch`` and
``bn_momentum: 0.1`` in ModelConfig for PyTorch's defaults.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mtlmood.config import ModelConfig
from mtlmood.errors import ConfigError
from mtlmood.shapes import pooled_size


class MoodCNN(nn.Module):
    """Shared conv trunk + mood head (+ metadata head when ``n_meta > 0``)."""

    def __init__(self, cfg: ModelConfig, n_moods: int, n_meta: int = 0) -> None:
        super().__init__()
        if n_moods < 1:
            raise ConfigError(f"the model needs at least one mood label, got n_moods={n_moods}")
        if n_meta < 0:
            raise ConfigError(f"n_meta must be >= 0, got {n_meta}")
        if cfg.n_filters < 1 or cfg.n_blocks < 1 or cfg.kernel_size < 1 or cfg.pool_size < 1:
            raise ConfigError(f"model sizes must be positive: {cfg}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")
        self.cfg = cfg
        self.n_moods = n_moods
        self.n_meta = n_meta
        self.out_frames = pooled_size(cfg.segment_frames, cfg.n_blocks, cfg.pool_size)
        self.out_mels = pooled_size(cfg.n_mels, cfg.n_blocks, cfg.pool_size)
        if self.out_frames < 1 or self.out_mels < 1:
            raise ConfigError(
                f"input {cfg.segment_frames}x{cfg.n_mels} is too small for {cfg.n_blocks} "
                f"pooling blocks of {cfg.pool_size}; use fewer blocks or a longer segment"
            )
        self.flatten_size = cfg.n_filters * self.out_frames * self.out_mels

        blocks: list[nn.Module] = []
        in_channels = 1
        for _ in range(cfg.n_blocks):
            blocks += [
                nn.Conv2d(in_channels, cfg.n_filters, cfg.kernel_size, stride=1, padding="same"),
                nn.ReLU(inplace=True),
                # The paper's order: activation before BatchNorm (as in its Keras blocks).
                nn.BatchNorm2d(cfg.n_filters, eps=cfg.bn_eps, momentum=cfg.bn_momentum),
                nn.MaxPool2d(cfg.pool_size, stride=cfg.pool_size),
                nn.Dropout(cfg.dropout),
            ]
            in_channels = cfg.n_filters
        self.trunk = nn.Sequential(*blocks)
        self.mood_head = nn.Linear(self.flatten_size, n_moods)
        self.meta_head: Optional[nn.Linear] = nn.Linear(self.flatten_size, n_meta) if n_meta > 0 else None
        self._channels_last = False
        if cfg.init == "glorot":
            self._glorot_init()
        elif cfg.init != "torch":
            raise ConfigError(f"model.init must be 'glorot' or 'torch', got {cfg.init!r}")

    def _glorot_init(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def use_channels_last(self, enabled: bool = True) -> "MoodCNN":
        """Store conv weights (and feed inputs) in NHWC, which is faster on recent GPUs/CPUs."""
        self._channels_last = enabled
        # torch's stubs for Module.to lack the memory_format keyword that it accepts at runtime.
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)  # type: ignore[call-overload]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened trunk output, (B, flatten_size), for x of shape (B, T, F)."""
        if x.dim() != 3:
            raise ValueError(f"expected input of shape (batch, frames, mels), got {tuple(x.shape)}")
        x = x.unsqueeze(1)  # one input channel: (B, 1, T, F)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.flatten(self.trunk(x), 1)

    def forward(self, x: torch.Tensor, with_meta: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(mood_logits (B, n_moods), meta_logits (B, n_meta) or None) for x of shape (B, T, F).

        ``with_meta=False`` skips the metadata head (inference never needs it).
        """
        h = self.features(x)
        mood = self.mood_head(h)
        meta = self.meta_head(h) if (with_meta and self.meta_head is not None) else None
        return mood, meta


def conv_parameter_count(model: MoodCNN, with_batchnorm: bool = False) -> int:
    """Weights + biases of the conv layers (and BatchNorm's gamma/beta when asked)."""
    kinds: tuple[type, ...] = (nn.Conv2d, nn.BatchNorm2d) if with_batchnorm else (nn.Conv2d,)
    return sum(p.numel() for m in model.trunk if isinstance(m, kinds) for p in m.parameters())
