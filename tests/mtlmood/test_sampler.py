"""WindowSampler: paper batches from the memory-mapped feature bank (its speed: benchmarks/train_bench.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mtlmood.cache import FeatureCache, write_cache
from mtlmood.config import FeatureConfig, ModelConfig, TrainConfig
from mtlmood.errors import CacheError, ConfigError
from mtlmood.sampler import WindowSampler, default_batches_per_epoch

N_MELS = 8
T = 20


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureCache, list[str], np.ndarray, np.ndarray]:
    """A cache whose every frame says where it comes from: column 0 = song number + 1,
    column 1 = frame number + 1 (so a zero-padded frame is recognisable)."""
    rng = np.random.default_rng(0)
    lengths = [5, 19, 20, 21, 64, 200, 7, 90]  # several shorter than the 20-frame window
    ids = [f"s{i}" for i in range(len(lengths))]
    items = []
    for i, length in enumerate(lengths):
        x = rng.random((length, N_MELS), dtype=np.float32) + 1.0
        x[:, 0] = i + 1
        x[:, 1] = np.arange(length) + 1
        items.append((ids[i], x))
    # An extra song not used by the sampler sits in between: windows must never reach it.
    items.insert(3, ("unused", np.full((50, N_MELS), -1.0, np.float32)))
    cache = write_cache(tmp_path_factory.mktemp("traced"), items, FeatureConfig(n_mels=N_MELS))
    moods = (rng.random((len(ids), 3)) > 0.5).astype(np.float32)
    meta = np.eye(len(ids), dtype=np.float32)
    return cache, ids, moods, meta


def test_shapes_and_default_epoch_length(traced) -> None:
    cache, ids, moods, meta = traced
    sampler = WindowSampler(cache, ids, moods, meta, segment_frames=T)
    train = TrainConfig()
    assert sampler.batch_size == train.batch_size  # the defaults are the configs' (the paper's)
    assert WindowSampler(cache, ids, moods, meta).segment_frames == ModelConfig().segment_frames
    # The paper's epoch: 1.25 x the training songs, rounded up.
    assert sampler.batches_per_epoch == math.ceil(train.epoch_factor * len(ids)) == 10
    batches = list(sampler.epoch(1))
    assert len(batches) == len(sampler) == 10
    x, mood, m = batches[0]
    assert x.shape == (train.batch_size, T, N_MELS) and x.dtype == np.float32
    assert mood.shape == (train.batch_size, 3) and m.shape == (train.batch_size, len(ids))
    assert default_batches_per_epoch(1000) == math.ceil(train.epoch_factor * 1000)
    assert default_batches_per_epoch(1000, cap=50) == 50


def test_windows_are_real_slices_with_end_padding_and_the_songs_targets(traced) -> None:
    cache, ids, moods, meta = traced
    lengths = {s: len(cache.features(s)) for s in ids}
    sampler = WindowSampler(cache, ids, moods, meta, batch_size=64, segment_frames=T, seed=3)
    seen_songs, starts = set(), set()
    for x, mood, m in sampler.epoch(0):
        for window, mood_row, meta_row in zip(x, mood, m):
            song = int(window[0, 0]) - 1
            assert song >= 0, "a window started outside the sampled songs"
            length = lengths[ids[song]]
            valid = min(length, T)
            frames = window[:valid, 1] - 1
            assert np.all(window[:valid, 0] == song + 1), "a window crossed into another song"
            assert np.array_equal(frames, np.arange(frames[0], frames[0] + valid))
            assert 0 <= frames[0] <= max(length - T, 0)
            np.testing.assert_array_equal(window, _expected(cache.features(ids[song]), int(frames[0])))
            assert np.all(window[valid:] == 0.0), "padding must be zeros (log-mel silence)"
            np.testing.assert_array_equal(mood_row, moods[song])
            np.testing.assert_array_equal(meta_row, meta[song])
            seen_songs.add(song)
            starts.add((song, int(frames[0])))
    assert seen_songs == set(range(len(ids)))
    assert len({s for s, _ in starts if lengths[ids[s]] > T + 10}) >= 2  # random starts, not always 0


def _expected(features: np.ndarray, start: int) -> np.ndarray:
    out = np.zeros((T, features.shape[1]), np.float32)
    piece = features[start : start + T]
    out[: len(piece)] = piece
    return out


def test_deterministic_per_seed_and_epoch(traced) -> None:
    cache, ids, moods, meta = traced
    a = list(WindowSampler(cache, ids, moods, meta, batch_size=8, segment_frames=T, seed=1).epoch(2))
    b = list(WindowSampler(cache, ids, moods, meta, batch_size=8, segment_frames=T, seed=1).epoch(2))
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    other_epoch = next(WindowSampler(cache, ids, moods, meta, batch_size=8, segment_frames=T, seed=1).epoch(3))
    other_seed = next(WindowSampler(cache, ids, moods, meta, batch_size=8, segment_frames=T, seed=2).epoch(2))
    assert not np.array_equal(a[0][0], other_epoch[0])
    assert not np.array_equal(a[0][0], other_seed[0])


def test_distributed_ranks_get_disjoint_slices_of_the_global_sequence(traced) -> None:
    cache, ids, moods, meta = traced
    kwargs = dict(batch_size=8, segment_frames=T, batches_per_epoch=12, seed=5)
    single = list(WindowSampler(cache, ids, moods, meta, **kwargs).epoch(1))
    world = 3
    ranks = [
        list(WindowSampler(cache, ids, moods, meta, rank=r, world_size=world, **kwargs).epoch(1)) for r in range(world)
    ]
    assert [len(r) for r in ranks] == [4, 4, 4]  # equal counts: no rank waits in a collective
    for r, batches in enumerate(ranks):
        for k, (x, _mood, _) in enumerate(batches):
            assert np.array_equal(x, single[r + k * world][0])  # rank r takes batches r, r+W, ...
    flat = [x.tobytes() for batches in ranks for x, _, _ in batches]
    assert len(set(flat)) == len(flat) == 12  # no batch is drawn twice
    uneven = WindowSampler(cache, ids, moods, meta, rank=1, world_size=5, **kwargs)
    assert len(uneven) == 12 // 5


def test_invalid_arguments(traced, tmp_path: Path) -> None:
    cache, ids, moods, meta = traced
    with pytest.raises(ConfigError, match="rank"):
        WindowSampler(cache, ids, moods, meta, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="targets"):
        WindowSampler(cache, ids, moods[:3], meta)
    with pytest.raises(CacheError, match="not in the feature cache"):
        WindowSampler(cache, ids + ["nope"], np.zeros((9, 3)), np.zeros((9, 0)))
    empty = write_cache(tmp_path, [("e", np.zeros((0, N_MELS), np.float32))], FeatureConfig(n_mels=N_MELS))
    with pytest.raises(CacheError, match="no frames"):
        WindowSampler(empty, ["e"], np.zeros((1, 3)), np.zeros((1, 0)))
