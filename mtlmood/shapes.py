"""Tensor geometry of the CNN that needs no torch: what the study's sizing and resource
planning read in processes that never build a model (a trial's driver), where importing
mtlmood.model would import torch, ~1.3 CPU-s per trial (2026-12-07, 2 cores)."""

from __future__ import annotations


def pooled_size(size: int, n_blocks: int, pool: int) -> int:
    """Length of one axis after ``n_blocks`` max-pools of ``pool`` (floor, like Keras "valid")."""
    for _ in range(n_blocks):
        size //= pool
    return size
