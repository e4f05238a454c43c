"""DeviceWindowSampler: the WindowSampler's batches, gathered by torch on a device (CPU here)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from helpers.mtl_synthetic import make_run_data, small_config
from mtlmood.cache import FeatureCache, write_cache
from mtlmood.config import FeatureConfig, RunConfig
from mtlmood.config_io import load_config
from mtlmood.errors import ConfigError
from mtlmood.rundata import RunData
from mtlmood.sampler import DeviceWindowSampler, WindowSampler, device_bank_bytes
from mtlmood.train import fit
from mtlmood.train_sampling import choose_sampler

N_MELS = 6
T = 20


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureCache, list[str], np.ndarray, np.ndarray]:
    """A cache with songs shorter and longer than the window, plus songs the samplers don't use
    (so the device copy has to pack the used ones), with traceable frames."""
    rng = np.random.default_rng(1)
    lengths = [5, 19, 20, 21, 64, 200, 7, 90, 33]
    items = [(f"s{i}", rng.random((n, N_MELS), dtype=np.float32) + 1.0) for i, n in enumerate(lengths)]
    items.insert(2, ("unused-a", np.full((40, N_MELS), -1.0, np.float32)))
    items.append(("unused-b", np.full((10, N_MELS), -2.0, np.float32)))
    cache = write_cache(tmp_path_factory.mktemp("device-sampler"), items, FeatureConfig(n_mels=N_MELS))
    # Not in cache order, so the packing (bank order) and the song numbering differ.
    ids = [f"s{i}" for i in (3, 0, 8, 5, 1, 7, 2, 6, 4)]
    moods = (rng.random((len(ids), 4)) > 0.5).astype(np.float32)
    meta = rng.random((len(ids), 3)).astype(np.float32)
    return cache, ids, moods, meta


def _assert_same(host: WindowSampler, device: DeviceWindowSampler, epoch: int) -> None:
    host_batches, device_batches = list(host.epoch(epoch)), list(device.epoch(epoch))
    assert len(host_batches) == len(device_batches) == host.local_batches == device.local_batches
    for expected, got in zip(host_batches, device_batches):
        for a, b in zip(expected, got):
            assert b.device == device.device and b.dtype == torch.float32 and b.is_contiguous()
            np.testing.assert_array_equal(b.cpu().numpy(), a)  # bit-identical, padding included


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_same_batches_as_the_host_sampler(songs, seed: int) -> None:
    cache, ids, moods, meta = songs
    kwargs = dict(batch_size=16, segment_frames=T, seed=seed)
    host = WindowSampler(cache, ids, moods, meta, **kwargs)
    device = DeviceWindowSampler(cache, ids, moods, meta, device="cpu", **kwargs)
    assert device.batches_per_epoch == host.batches_per_epoch and len(device) == len(host)
    for epoch in (0, 1, 5):
        _assert_same(host, device, epoch)
    x, _, _ = device.batch(1, 3)
    assert x.shape == (16, T, N_MELS)
    assert bool((x[:, -1] == 0).all(dim=1).any()), "expected zero-padded windows from the short songs"


def test_only_the_sampled_songs_are_on_the_device(songs) -> None:
    cache, ids, moods, meta = songs
    device = DeviceWindowSampler(cache, ids, moods, meta, segment_frames=T)
    frames = sum(len(cache.features(s)) for s in ids)
    assert device.bank.shape == (frames + 1, N_MELS) and device.bank.device.type == "cpu"
    assert device_bank_bytes(cache, ids) == device.bank.numel() * 4
    assert bool((device.bank[-1] == 0).all()), "the last row is the zero padding"
    assert bool((device.bank[:-1] > 0).all()), "an unused song was uploaded"
    for i, song in enumerate(ids):  # the packed offsets address each song's own frames
        start, length = int(device.offsets[i]), int(device.lengths[i])
        np.testing.assert_array_equal(device.bank[start : start + length].numpy(), cache.features(song))


def test_without_short_songs_and_without_metadata(songs) -> None:
    cache, ids, moods, _ = songs
    long_ids = [s for s in ids if len(cache.features(s)) >= T]
    n = len(long_ids)
    no_meta = np.zeros((n, 0), np.float32)
    kwargs = dict(batch_size=8, segment_frames=T, batches_per_epoch=6, seed=3)
    host = WindowSampler(cache, long_ids, moods[:n], no_meta, **kwargs)
    device = DeviceWindowSampler(cache, long_ids, moods[:n], no_meta, **kwargs)
    _assert_same(host, device, 2)
    assert device.batch(2, 0)[2].shape == (8, 0)


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_sharding_matches_the_host_sampler(songs, world_size: int) -> None:
    cache, ids, moods, meta = songs
    kwargs = dict(batch_size=8, segment_frames=T, batches_per_epoch=7, seed=5, world_size=world_size)
    for rank in range(world_size):
        host = WindowSampler(cache, ids, moods, meta, rank=rank, **kwargs)
        device = DeviceWindowSampler(cache, ids, moods, meta, rank=rank, **kwargs)
        assert device.local_batches == host.local_batches == 7 // world_size
        _assert_same(host, device, 4)


def test_sampler_config_is_validated_and_chosen() -> None:
    assert load_config(RunConfig, overrides=["train.sampler=device"]).train.sampler == "device"
    with pytest.raises(ConfigError, match="train.sampler"):
        load_config(RunConfig, overrides=["train.sampler=gpu"])
    with pytest.raises(ConfigError, match="train.sampler"):
        choose_sampler("gpu", torch.device("cpu"), 0)
    cpu = torch.device("cpu")
    assert choose_sampler("auto", cpu, 1) == "host"  # device-resident only on CUDA
    assert choose_sampler("device", cpu, 1 << 40) == "device" and choose_sampler("host", cpu, 0) == "host"


def test_auto_uses_at_most_half_of_the_free_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))  # (free, total) bytes
    gpu = torch.device("cuda", 0)
    assert choose_sampler("auto", gpu, 500) == "device"
    assert choose_sampler("auto", gpu, 501) == "host"
    assert choose_sampler("host", gpu, 1) == "host"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_batches_on_cuda(songs) -> None:
    cache, ids, moods, meta = songs
    kwargs = dict(batch_size=16, segment_frames=T, seed=2, rank=1, world_size=2)
    _assert_same(
        WindowSampler(cache, ids, moods, meta, **kwargs),
        DeviceWindowSampler(cache, ids, moods, meta, device="cuda", **kwargs),
        3,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    directory = tmp_path_factory.mktemp("synthetic")
    return make_run_data(
        directory, small_config(directory, max_epochs=2, max_batches_per_epoch=6, alpha="auto"), n_songs=60
    )


def test_fit_with_the_device_sampler_equals_the_host_sampler(data: RunData, caplog) -> None:
    results = {}
    for kind in ("host", "device"):
        config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, sampler=kind))
        with caplog.at_level(logging.INFO, logger="mtlmood.train"):
            results[kind] = fit(data, config, device="cpu")
        assert f"{kind} sampler" in caplog.text
    host, device = results["host"], results["device"]
    assert [h.train_loss for h in device.history] == [h.train_loss for h in host.history]
    assert [h.val for h in device.history] == [h.val for h in host.history]
    assert device.best_epoch == host.best_epoch and device.test == host.test
    host_state, device_state = host.model.state_dict(), device.model.state_dict()
    assert host_state.keys() == device_state.keys()
    assert all(torch.equal(host_state[k], device_state[k]) for k in host_state)
    bad = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, sampler="gpu"))
    with pytest.raises(ConfigError, match="train.sampler"):
        fit(data, bad)
