"""A small, learnable feature-level dataset for the training tests.

Each mood is an energy pattern in its own band of mel bins (a pulse every few
frames), on top of noise and random distractor energy elsewhere; each artist
mostly sings one mood, so the artist labels are a related task. Built straight
into a real FeatureCache, with LabelledSongs and splits, no audio involved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtlmood.cache import FeatureCache, write_cache
from mtlmood.config import FeatureConfig, ModelConfig, RunConfig, TrainConfig
from mtlmood.labels import LabelledSongs
from mtlmood.rundata import RunData, assemble_run_data

N_MELS = 32
SEGMENT = 48
MOODS = ["calm", "happy", "dark"]
N_ARTISTS = 6


def small_config(cache_dir: Path, **train: object) -> RunConfig:
    """A RunConfig small enough to train in seconds on a CPU (8 filters, 3 blocks, 48x32 input)."""
    # One thread: on a shared, busy CPU, two spinning OpenMP threads are slower than one.
    train_kwargs = dict(batch_size=16, max_batches_per_epoch=24, max_epochs=4, patience=3, seed=0, num_threads=1)
    train_kwargs.update(train)
    return RunConfig(
        features=FeatureConfig(n_mels=N_MELS),
        model=ModelConfig(n_filters=8, n_blocks=3, segment_frames=SEGMENT, n_mels=N_MELS, bn_momentum=0.1),
        train=TrainConfig(**train_kwargs),  # type: ignore[arg-type]
        cache_dir=str(cache_dir),
    )


def song_features(rng: np.random.Generator, moods: np.ndarray, length: int) -> np.ndarray:
    """(length, N_MELS) log-mel-like features whose band energy encodes the song's moods."""
    x = np.abs(rng.normal(0.0, 0.35, size=(length, N_MELS))).astype(np.float32)
    band = N_MELS // len(MOODS)
    for k in np.flatnonzero(moods):
        pulse = (np.arange(length) + rng.integers(0, 4)) % 4 < 2  # on two frames in four
        lo = k * band + 2
        x[pulse, lo : lo + band - 4] += rng.uniform(0.6, 1.2)
    # Distractor: energy in a random band, unrelated to the moods.
    lo = int(rng.integers(0, N_MELS - 4))
    x[:, lo : lo + 4] += float(rng.uniform(0.0, 0.8))
    return x


def synthetic_songs(
    n_songs: int = 150, seed: int = 0
) -> tuple[list[tuple[str, np.ndarray]], LabelledSongs, dict[str, np.ndarray]]:
    """(features per song id, LabelledSongs, splits 70/15/15) of a learnable synthetic dataset."""
    rng = np.random.default_rng(seed)
    artists = rng.integers(0, N_ARTISTS, size=n_songs)
    moods = np.zeros((n_songs, len(MOODS)), dtype=np.float32)
    for i, artist in enumerate(artists):
        moods[i, artist % len(MOODS)] = 1.0  # the artist's favourite mood...
        if rng.random() < 0.35:
            moods[i, rng.integers(0, len(MOODS))] = 1.0  # ...sometimes with another one
    meta = np.zeros((n_songs, N_ARTISTS), dtype=np.float32)
    meta[np.arange(n_songs), artists] = 1.0
    lengths = rng.integers(30, 160, size=n_songs)  # some shorter than one 48-frame segment
    song_ids = [f"song{i:04d}" for i in range(n_songs)]
    items = [(song_ids[i], song_features(rng, moods[i], int(lengths[i]))) for i in range(n_songs)]
    labelled = LabelledSongs(
        song_ids=song_ids,
        mood_names=list(MOODS),
        meta_names=[f"artist:a{a}" for a in range(N_ARTISTS)],
        mood_targets=moods,
        meta_targets=meta,
        groups=list(song_ids),
    )
    order = rng.permutation(n_songs)
    n_train, n_val = int(0.7 * n_songs), int(0.15 * n_songs)
    splits = {
        "train": np.sort(order[:n_train]),
        "validation": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }
    return items, labelled, splits


def make_run_data(directory: Path, config: RunConfig | None = None, n_songs: int = 150) -> RunData:
    """RunData over a synthetic cache in ``directory`` (written unless it is already there)."""
    items, labelled, splits = synthetic_songs(n_songs)
    if (directory / "index.json").exists():
        cache = FeatureCache(directory)
    else:
        cache = write_cache(directory, items, FeatureConfig(n_mels=N_MELS))
    return assemble_run_data(config or small_config(directory), labelled, splits, cache)


def ddp_worker(rank: int, world_size: int, directory: str, out: str) -> None:
    """One rank of a gloo DistributedDataParallel run (torch.multiprocessing.spawn target)."""
    import torch
    import torch.distributed as dist

    from mtlmood.train import fit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=world_size)
    try:
        config = small_config(Path(directory) / "cache", alpha="auto", max_epochs=2, max_batches_per_epoch=8)
        data = make_run_data(Path(directory) / "cache", config)
        epochs: list[int] = []
        result = fit(data, config, callback=lambda e, s: epochs.append(e.epoch))
        torch.save(
            {
                "weights": result.model.state_dict(),
                "history": [h.metrics() for h in result.history],
                "val": [h.val for h in result.history],
                "test": result.test,
                "epochs": epochs,
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()
