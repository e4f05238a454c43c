"""``FusedCNN``: an inference-only rewrite of an eval-mode MoodCNN's mood path that gives
the same probabilities (|Δp| < 1e-5 in fp32, tested) with far less memory traffic on CPU.

* eval BatchNorm is a per-channel affine ``a·r + b``; folded with ReLU and max-pooling
  it becomes ``maxpool(conv_{a·w}(x))`` followed by a per-channel clamp and shift
  (``a·relu(m) = clamp(a·m, 0, inf)`` for a ≥ 0 and ``clamp(a·m, -inf, 0)`` for a < 0,
  and max-pooling commutes with both), so ReLU and BatchNorm run on the pooled,
  4× smaller tensor instead of the full-resolution conv output;
* the first conv (1 input channel, where oneDNN is slow) is an im2col matmul
  evaluated once per pooling offset, so pooling is an elementwise max of
  contiguous tensors;
* activations are channels-last, and the network runs in chunks of a few segments
  that stay in cache.

``precision="bf16"`` runs the convolutions in bfloat16 (AMX / AVX-512 BF16 CPUs: the
network about 3x faster than fused fp32 there) with the first layer and the head in
fp32: the probabilities move by ~1e-3 (6e-4 measured on real clips; tested bound
2e-2). ``mtlmood.inference.Predictor`` runs it by default on CPU; see
benchmarks/README.md for the measurements.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, cast

import torch
import torch.nn.functional as F
from torch import nn

from mtlmood.model import MoodCNN

Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")
# The torch dtype of the convolutions at each precision.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _same_padding(kernel: int) -> tuple[int, int]:
    """(before, after) padding of PyTorch's ``padding="same"`` for a stride-1 kernel."""
    before = (kernel - 1) // 2
    return before, kernel - 1 - before


class FusedCNN(nn.Module):
    """Inference-only equivalent of an eval-mode MoodCNN's mood path (see the module docstring).

    ``forward(x (B, T, F), with_meta=False) -> (mood_logits (B, N_mood) float32, None)``,
    the MoodCNN interface, so it drops into ``inference.predict_segment_batches``. It
    snapshots the model's weights and running statistics: rebuild it after they change.
    """

    def __init__(self, model: MoodCNN, precision: Precision = "fp32", chunk: int = 8) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        layers = list(model.trunk)
        kinds = (nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d, nn.Dropout)
        if len(layers) % 5 or not all(isinstance(m, kinds[i % 5]) for i, m in enumerate(layers)):
            raise ValueError("FusedCNN expects MoodCNN blocks: conv, ReLU, BatchNorm, max-pool, dropout")
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.chunk = max(1, int(chunk))
        self.n_moods = model.n_moods
        self.kernel = model.cfg.kernel_size
        self.pool = model.cfg.pool_size
        self.first_out = (model.cfg.segment_frames // self.pool, model.cfg.n_mels // self.pool)
        device = next(model.parameters()).device
        self.lo, self.hi, self.shift = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        self.weights = nn.ParameterList()
        with torch.no_grad():
            for i in range(0, len(layers), 5):
                conv, bn = cast(nn.Conv2d, layers[i]), cast(nn.BatchNorm2d, layers[i + 2])
                if bn.running_var is None or bn.running_mean is None:
                    raise ValueError("FusedCNN needs BatchNorm running statistics (track_running_stats=True)")
                gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
                beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
                a = (gamma / torch.sqrt(bn.running_var + bn.eps)).double()
                b = beta.double() - bn.running_mean.double() * a
                bias = conv.bias.double() * a if conv.bias is not None else torch.zeros_like(a)
                weight = conv.weight.double() * a.view(-1, 1, 1, 1)
                inf = torch.full_like(a, math.inf)
                # y = clamp(maxpool(conv_{a w}(x)) + a bias, lo, hi) + b, with the bias moved into the bounds.
                lo = torch.where(a >= 0, torch.zeros_like(a), -inf) - bias
                hi = torch.where(a >= 0, inf, torch.zeros_like(a)) - bias
                # The first layer (one input channel) and its epilogue stay fp32: it is cheap,
                # and the log-mel input deserves more than bf16's 8 bits of mantissa.
                dtype = torch.float32 if i == 0 else self.dtype
                if i == 0:
                    w = weight.reshape(weight.shape[0], -1).t().contiguous()  # (k*k, C) for the im2col matmul
                else:
                    w = weight.contiguous(memory_format=torch.channels_last)
                self.weights.append(nn.Parameter(w.to(device, dtype), requires_grad=False))
                for store, value in ((self.lo, lo), (self.hi, hi), (self.shift, b + bias)):
                    store.append(nn.Parameter(value.view(1, -1, 1, 1).to(device, dtype), requires_grad=False))
        self.head_weight = nn.Parameter(model.mood_head.weight.detach().float().clone(), requires_grad=False)
        self.head_bias = nn.Parameter(model.mood_head.bias.detach().float().clone(), requires_grad=False)
        self.eval()

    def _first_block(self, x: torch.Tensor) -> torch.Tensor:
        """Conv (im2col, once per pooling offset) -> max over offsets -> clamp + shift, channels-last.

        One segment at a time: its four (T/2 x F/2, C) fp32 conv outputs stay in cache,
        where a whole batch's would stream through memory several times.
        """
        k, p = self.kernel, self.pool
        (top, bottom), (h2, w2) = _same_padding(k), self.first_out
        lo, hi, shift = (t.view(1, 1, -1) for t in (self.lo[0], self.hi[0], self.shift[0]))
        out = torch.empty((x.shape[0], h2, w2, self.weights[0].shape[1]), dtype=self.dtype, device=x.device)
        padded = F.pad(x.float(), (top, bottom, top, bottom))
        patches = padded.unfold(1, k, 1).unfold(2, k, 1)  # (B, T, F, k, k) views
        for n in range(x.shape[0]):
            best: Optional[torch.Tensor] = None
            for dy in range(p):
                for dx in range(p):
                    z = patches[n, dy : h2 * p : p, dx : w2 * p : p].reshape(-1, k * k) @ self.weights[0]
                    best = z if best is None else torch.maximum(best, z, out=best)
            assert best is not None
            # The bias is folded into the bounds; the result is cast on the way out.
            torch.add(best.view(h2, w2, -1).clamp_(lo, hi), shift, out=out[n])
        return out.permute(0, 3, 1, 2)  # (B, C, H, W) logically, NHWC in memory

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        y = self._first_block(x)
        for i in range(1, len(self.weights)):
            y = F.conv2d(y, self.weights[i], None, padding="same")
            y = F.max_pool2d(y, self.pool)
            y = y.clamp_(self.lo[i], self.hi[i]).add_(self.shift[i])
        return torch.flatten(y, 1).float()

    def forward(self, x: torch.Tensor, with_meta: bool = False) -> tuple[torch.Tensor, None]:
        if x.dim() != 3:
            raise ValueError(f"expected input of shape (batch, frames, mels), got {tuple(x.shape)}")
        feats = (
            torch.cat([self._trunk(x[i : i + self.chunk]) for i in range(0, x.shape[0], self.chunk)])
            if x.shape[0] > self.chunk
            else self._trunk(x)
        )
        return F.linear(feats, self.head_weight, self.head_bias), None


__all__ = ["Precision", "PRECISIONS", "DTYPES", "FusedCNN"]
