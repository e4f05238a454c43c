"""Paper batches, built on the fly: pick a random song, pick a random window inside
it, repeat ``batch_size`` times; the targets are the song's labels.

Every batch is one fancy-index into the feature cache's memory-mapped bank
(offsets + random starts + arange), so there is no per-sample file I/O and no
Python loop per sample.

Songs shorter than the window are zero-padded at the end. The cached features are
log10(1 + 10000 * mel), so silence is exactly 0 and zero padding *is* silence.

Randomness: batch ``b`` of epoch ``e`` is drawn from its own generator seeded with
(seed, e, b). The global sequence of batches is therefore fixed by the seed alone,
random access (resume, any rank) costs nothing, and:

* With ``world_size`` W > 1 (DistributedDataParallel), rank r yields global
  batches r, r + W, r + 2W, ...: the ranks' batches are disjoint, and together
  they are the single-process sequence. Every rank yields the same number of
  batches, ``max(1, batches_per_epoch // W)``, so collective ops never wait on a
  rank that has run out (one effective DDP step = W x batch_size windows, and an
  epoch still covers about ``batches_per_epoch`` batches in total).
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Sequence

import numpy as np

from mtlmood.cache import FeatureCache
from mtlmood.errors import CacheError, ConfigError

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # x (B, T, F) float32, mood (B, N_mood), meta (B, N_meta)


def default_batches_per_epoch(n_songs: int, epoch_factor: float = 1.25, cap: int = 0) -> int:
    """The paper's epoch: ceil(epoch_factor * n_songs) batches, optionally capped (0 = no cap)."""
    n = max(1, math.ceil(epoch_factor * n_songs))
    return min(n, cap) if cap > 0 else n


class WindowSampler:
    """Random-song, random-window batches from a FeatureCache (see the module docstring)."""

    def __init__(self, cache: FeatureCache, song_ids: Sequence[str], mood_targets: np.ndarray,
                 meta_targets: np.ndarray, batch_size: int = 32, segment_frames: int = 187,
                 batches_per_epoch: Optional[int] = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        n = len(song_ids)
        if n == 0:
            raise ConfigError("the sampler needs at least one song")
        if batch_size < 1 or segment_frames < 1:
            raise ConfigError(f"batch_size and segment_frames must be >= 1, got {batch_size}, {segment_frames}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"invalid rank {rank} for world_size {world_size}")
        mood_targets = np.asarray(mood_targets, dtype=np.float32)
        meta_targets = np.asarray(meta_targets, dtype=np.float32)
        if meta_targets.ndim == 1 and meta_targets.size == 0:
            meta_targets = meta_targets.reshape(n, 0)
        if mood_targets.shape[0] != n or meta_targets.shape[0] != n:
            raise ConfigError(f"{n} songs but targets with {mood_targets.shape[0]} (mood) and "
                              f"{meta_targets.shape[0]} (meta) rows")
        self.bank = cache.bank
        self.offsets, self.lengths = cache.positions(song_ids)
        empty = np.flatnonzero(self.lengths < 1)
        if empty.size:
            raise CacheError(f"{empty.size} song(s) have no frames in the feature cache, "
                             f"e.g. {song_ids[int(empty[0])]!r}")
        self.song_ids = list(song_ids)
        self.mood_targets = mood_targets
        self.meta_targets = meta_targets
        self.batch_size = batch_size
        self.segment_frames = segment_frames
        self.batches_per_epoch = batches_per_epoch if batches_per_epoch is not None \
            else default_batches_per_epoch(n)
        if self.batches_per_epoch < 1:
            raise ConfigError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._frames = np.arange(segment_frames, dtype=np.int64)
        self._has_short = bool((self.lengths < segment_frames).any())

    @property
    def local_batches(self) -> int:
        """Batches this rank yields per epoch (all ranks yield the same number)."""
        return max(1, self.batches_per_epoch // self.world_size)

    def __len__(self) -> int:
        return self.local_batches

    def batch(self, epoch: int, index: int) -> Batch:
        """Global batch ``index`` of ``epoch``: (x (B, T, F) float32, mood (B, N_mood), meta (B, N_meta))."""
        rng = np.random.default_rng((self.seed, epoch, index))
        songs = rng.integers(0, len(self.song_ids), size=self.batch_size)
        lengths = self.lengths[songs]
        # A window start uniform over every position that keeps it inside the song
        # (0 for songs shorter than the window).
        starts = rng.integers(0, np.maximum(lengths - self.segment_frames, 0) + 1)
        frames = starts[:, None] + self._frames  # (B, T) frame numbers inside each song
        if self._has_short:
            # Clamp to the last frame so the gather never reads another song, then zero the pad.
            rows = self.offsets[songs, None] + np.minimum(frames, lengths[:, None] - 1)
            x = np.asarray(self.bank[rows], dtype=np.float32)
            x[frames >= lengths[:, None]] = 0.0
        else:
            x = np.asarray(self.bank[self.offsets[songs, None] + frames], dtype=np.float32)
        return x, self.mood_targets[songs], self.meta_targets[songs]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """This rank's batches of ``epoch``: global batches rank, rank + W, rank + 2W, ..."""
        for k in range(self.local_batches):
            yield self.batch(epoch, self.rank + k * self.world_size)
