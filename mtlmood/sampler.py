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

Two samplers share that drawing (``windows``) and differ only in where the gather
runs: ``WindowSampler`` gathers on the host from the memory map and yields numpy
arrays; ``DeviceWindowSampler`` copies the sampled songs' frames to a torch device
once and gathers there, yielding tensors already on that device. On a GPU this
removes the host gather and the per-batch host-to-device copy of the windows from
the training hot path; only the (2, batch_size) song/start indices cross the bus.
Both yield exactly the same batches for the same arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, Iterator, Optional, Sequence, TypeVar, Union

import numpy as np
import torch

from mtlmood.cache import FeatureCache
from mtlmood.config import ModelConfig, TrainConfig
from mtlmood.errors import CacheError, ConfigError

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # x (B, T, F) float32, mood (B, N_mood), meta (B, N_meta)
TensorBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # the same, as float32 tensors on one device
BatchT = TypeVar("BatchT", Batch, TensorBatch)

# Frames per host-to-device copy when uploading the bank: 2**18 x 96 mels x 4 B = 96 MiB
# of host staging memory at a time, large enough that the copies run at bus speed.
_UPLOAD_CHUNK_FRAMES = 1 << 18


def default_batches_per_epoch(n_songs: int, epoch_factor: float = TrainConfig.epoch_factor, cap: int = 0) -> int:
    """The paper's epoch: ceil(epoch_factor * n_songs) batches, optionally capped (0 = no cap)."""
    n = max(1, math.ceil(epoch_factor * n_songs))
    return min(n, cap) if cap > 0 else n


def device_bank_bytes(cache: FeatureCache, song_ids: Sequence[str]) -> int:
    """Bytes of device memory the frames of ``song_ids`` take in a DeviceWindowSampler
    (float32; the targets and indices add only a few bytes per song)."""
    _, lengths = cache.positions(song_ids)
    return (int(lengths.sum()) + 1) * int(cache.bank.shape[1]) * 4  # + the zero row for padding


@dataclass(eq=False, repr=False)  # no generated __eq__/__repr__ over numpy arrays
class _WindowDraws(Generic[BatchT]):
    """What both samplers share: the one constructor signature, argument checks, song
    positions, epoch length, rank sharding and the random (song, start) draws.
    Subclasses implement ``batch`` and set up their bank in ``_attach``."""

    cache: FeatureCache
    song_ids: Sequence[str]
    mood_targets: np.ndarray  # (n, N_mood)
    meta_targets: np.ndarray  # (n, N_meta); N_meta may be 0
    batch_size: int = TrainConfig.batch_size
    segment_frames: int = ModelConfig.segment_frames
    batches_per_epoch: Optional[int] = None  # None = the paper's epoch for these songs
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        n = len(self.song_ids)
        if n == 0:
            raise ConfigError("the sampler needs at least one song")
        if self.batch_size < 1 or self.segment_frames < 1:
            raise ConfigError(
                f"batch_size and segment_frames must be >= 1, got {self.batch_size}, {self.segment_frames}"
            )
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"invalid rank {self.rank} for world_size {self.world_size}")
        mood_targets = np.asarray(self.mood_targets, dtype=np.float32)
        meta_targets = np.asarray(self.meta_targets, dtype=np.float32)
        if meta_targets.ndim == 1 and meta_targets.size == 0:
            meta_targets = meta_targets.reshape(n, 0)
        if mood_targets.shape[0] != n or meta_targets.shape[0] != n:
            raise ConfigError(
                f"{n} songs but targets with {mood_targets.shape[0]} (mood) and {meta_targets.shape[0]} (meta) rows"
            )
        # Invariant of both samplers: self.bank[offsets[i]: offsets[i] + lengths[i]] is song i.
        self.offsets, self.lengths = self.cache.positions(self.song_ids)
        empty = np.flatnonzero(self.lengths < 1)
        if empty.size:
            raise CacheError(
                f"{empty.size} song(s) have no frames in the feature cache, e.g. {self.song_ids[int(empty[0])]!r}"
            )
        self.song_ids = list(self.song_ids)
        self.mood_targets = mood_targets
        self.meta_targets = meta_targets
        if self.batches_per_epoch is None:
            self.batches_per_epoch = default_batches_per_epoch(n)
        if self.batches_per_epoch < 1:
            raise ConfigError(f"batches_per_epoch must be >= 1, got {self.batches_per_epoch}")
        self._has_short = bool((self.lengths < self.segment_frames).any())
        self._attach()

    def _attach(self) -> None:
        """Set up where ``batch`` gathers from (after the checks and positions above)."""
        raise NotImplementedError

    @property
    def local_batches(self) -> int:
        """Batches this rank yields per epoch (all ranks yield the same number)."""
        assert self.batches_per_epoch is not None  # resolved in __post_init__
        return max(1, self.batches_per_epoch // self.world_size)

    def __len__(self) -> int:
        return self.local_batches

    def windows(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The draws of global batch ``index`` of ``epoch``: (songs (B,), starts (B,)) int64,
        song numbers into ``song_ids`` and the first frame of each window inside its song."""
        rng = np.random.default_rng((self.seed, epoch, index))
        songs = rng.integers(0, len(self.song_ids), size=self.batch_size)
        # A window start uniform over every position that keeps it inside the song
        # (0 for songs shorter than the window).
        starts = rng.integers(0, np.maximum(self.lengths[songs] - self.segment_frames, 0) + 1)
        return songs, starts

    def batch(self, epoch: int, index: int) -> BatchT:
        """Global batch ``index`` of ``epoch`` (gathered by the subclass)."""
        raise NotImplementedError

    def epoch(self, epoch: int) -> Iterator[BatchT]:
        """This rank's batches of ``epoch``: global batches rank, rank + W, rank + 2W, ..."""
        for k in range(self.local_batches):
            yield self.batch(epoch, self.rank + k * self.world_size)


class WindowSampler(_WindowDraws[Batch]):
    """Random-song, random-window batches from a FeatureCache, gathered on the host from
    its memory map; numpy batches (see the module docstring)."""

    def _attach(self) -> None:
        self.bank = self.cache.bank
        self._frames = np.arange(self.segment_frames, dtype=np.int64)

    def batch(self, epoch: int, index: int) -> Batch:
        """Global batch ``index`` of ``epoch``: (x (B, T, F) float32, mood (B, N_mood), meta (B, N_meta))."""
        songs, starts = self.windows(epoch, index)
        lengths = self.lengths[songs]
        frames = starts[:, None] + self._frames  # (B, T) frame numbers inside each song
        if self._has_short:
            # Clamp to the last frame so the gather never reads another song, then zero the pad.
            rows = self.offsets[songs, None] + np.minimum(frames, lengths[:, None] - 1)
            x = np.asarray(self.bank[rows], dtype=np.float32)
            x[frames >= lengths[:, None]] = 0.0
        else:
            x = np.asarray(self.bank[self.offsets[songs, None] + frames], dtype=np.float32)
        return x, self.mood_targets[songs], self.meta_targets[songs]


@dataclass(eq=False, repr=False)
class DeviceWindowSampler(_WindowDraws[TensorBatch]):
    """The same batches as ``WindowSampler``, gathered on ``device`` from a device-resident
    copy of the sampled songs' frames; yields float32 tensors on ``device``.

    Only ``song_ids``' frames are uploaded (packed back to back in bank order, then one
    all-zero row that padding reads), so the validation and test songs cost no device
    memory; ``device_bank_bytes`` says how much the upload takes. The random draws stay on
    the host, in the same numpy generators as ``WindowSampler``, which is what makes the
    two samplers' batches identical.
    """

    device: Union[str, torch.device] = "cpu"  # becomes the bank's device, with its index

    def _attach(self) -> None:
        self.bank, self.offsets = _upload(self.cache.bank, self.offsets, self.lengths, torch.device(self.device))
        self.device = self.bank.device  # with its index: "cuda" -> cuda:<current>
        self._offsets = torch.from_numpy(self.offsets).to(self.device)
        self._lengths = torch.from_numpy(self.lengths).to(self.device)
        self._mood = torch.from_numpy(np.ascontiguousarray(self.mood_targets)).to(self.device)
        self._meta = torch.from_numpy(np.ascontiguousarray(self.meta_targets)).to(self.device)
        self._frames = torch.arange(self.segment_frames, dtype=torch.int64, device=self.device)

    def batch(self, epoch: int, index: int) -> TensorBatch:
        """Global batch ``index`` of ``epoch`` as tensors on ``self.device``: (x (B, T, F) float32,
        mood (B, N_mood), meta (B, N_meta)), equal to ``WindowSampler.batch(epoch, index)``."""
        songs_np, starts_np = self.windows(epoch, index)
        drawn = torch.from_numpy(np.stack([songs_np, starts_np]))  # the one (small) copy per batch
        if self.bank.device.type == "cuda":
            # From pinned memory (PyTorch's caching host allocator keeps the block until the
            # copy is done) the copy is truly asynchronous; from pageable memory CUDA may sync
            # the stream, and the host would wait for every queued step before the next batch.
            drawn = drawn.pin_memory()
        songs, starts = drawn.to(self.device, non_blocking=True)
        frames = starts[:, None] + self._frames  # (B, T) frame numbers inside each song
        rows = self._offsets[songs, None] + frames
        if self._has_short:
            # Frames past a song's end read the bank's all-zero last row: the same zero
            # padding as the host's, with no second pass over the batch to write it.
            rows = torch.where(frames < self._lengths[songs, None], rows, self.bank.shape[0] - 1)
        # index_select on the flat rows rather than bank[rows]: the same values from a
        # plain row gather, the faster kernel (about 1.7x on CPU at the paper's sizes).
        x = self.bank.index_select(0, rows.reshape(-1)).view(*rows.shape, self.bank.shape[1])
        return x, self._mood[songs], self._meta[songs]


def _upload(
    bank: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, np.ndarray]:
    """Copy the songs at (offsets, lengths) of ``bank`` into one float32 tensor on ``device``,
    back to back in bank order, plus one all-zero last row (what padding frames gather);
    returns it and each song's offset in it."""
    order = np.argsort(offsets, kind="stable")
    sizes = lengths[order]
    packed_sorted = np.cumsum(sizes) - sizes
    packed = np.empty_like(offsets)
    packed[order] = packed_sorted
    out = torch.empty((int(sizes.sum()) + 1, bank.shape[1]), dtype=torch.float32, device=device)
    out[-1] = 0.0
    # Songs that sit back to back in the bank (the usual case for a split's songs in cache
    # order) form one run: a few large copies instead of one small copy per song.
    source = offsets[order]
    run_starts = np.flatnonzero(np.r_[True, source[1:] != source[:-1] + sizes[:-1]])
    run_sizes = np.add.reduceat(sizes, run_starts)
    for src, dst, size in zip(source[run_starts].tolist(), packed_sorted[run_starts].tolist(), run_sizes.tolist()):
        for k in range(0, size, _UPLOAD_CHUNK_FRAMES):
            n = min(_UPLOAD_CHUNK_FRAMES, size - k)
            # np.array copies out of the read-only memory map into a writable host buffer.
            chunk = torch.from_numpy(np.array(bank[src + k : src + k + n], dtype=np.float32))
            out[dst + k : dst + k + n].copy_(chunk)
    return out, packed
