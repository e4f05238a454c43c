"""The feature cache: every song's log-mel matrix in one memory-mapped array plus an index.

Layout of a cache directory::

    feature_config.json   the FeatureConfig the features were computed with
    bank.npy              float32 (total_frames, n_mels), all songs back to back
    index.json            {"song_ids": [...], "offsets": [...], "lengths": [...]}

``index.json`` is written last and atomically: it is the commit marker, so a cache
whose build crashed is never read as valid. Training reads any song's window by
slicing the memory map: no per-sample file opens.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mtlmood.config import FeatureConfig
from mtlmood.errors import CacheError
from mtlmood.fileio import atomic_write_json

CONFIG_FILE = "feature_config.json"
BANK_FILE = "bank.npy"
INDEX_FILE = "index.json"


class FeatureCache:
    """Read access to a built feature cache (see the module docstring for the layout)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.exists():
            raise CacheError(f"no feature cache at {self.directory} (missing {INDEX_FILE}); "
                             "run `mtlmood prepare` first")
        try:
            index = json.loads(index_path.read_text())
            self.feature_config = FeatureConfig(**json.loads((self.directory / CONFIG_FILE).read_text()))
            self.bank: np.ndarray = np.load(self.directory / BANK_FILE, mmap_mode="r")
        except (OSError, ValueError, TypeError) as exc:
            raise CacheError(f"feature cache at {self.directory} is unreadable: {exc}") from None
        self.song_ids: list[str] = list(index["song_ids"])
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self._row = {song_id: i for i, song_id in enumerate(self.song_ids)}
        if self.bank.ndim != 2 or self.bank.shape[1] != self.feature_config.n_mels:
            raise CacheError(f"feature cache at {self.directory}: bank shape {self.bank.shape} "
                             f"does not match n_mels={self.feature_config.n_mels}")
        if len(self.song_ids) and int(self.offsets[-1] + self.lengths[-1]) > self.bank.shape[0]:
            raise CacheError(f"feature cache at {self.directory} is truncated")

    def __len__(self) -> int:
        return len(self.song_ids)

    def __contains__(self, song_id: object) -> bool:
        return song_id in self._row

    def features(self, song_id: str) -> np.ndarray:
        """The (t, n_mels) log-mel matrix of one song (a read-only view of the memory map)."""
        try:
            i = self._row[song_id]
        except KeyError:
            raise CacheError(f"song {song_id!r} is not in the feature cache {self.directory}") from None
        return self.bank[self.offsets[i]: self.offsets[i] + self.lengths[i]]

    def positions(self, song_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, lengths) in the bank for the given songs, for vectorized window sampling."""
        try:
            rows = np.fromiter((self._row[s] for s in song_ids), dtype=np.int64)
        except KeyError as exc:
            raise CacheError(f"song {exc.args[0]!r} is not in the feature cache {self.directory}") from None
        return self.offsets[rows], self.lengths[rows]

    def check_config(self, expected: FeatureConfig) -> None:
        """Raise CacheError when the cache was built with a different feature config."""
        if self.feature_config != expected:
            raise CacheError(f"feature cache at {self.directory} was built with {self.feature_config}, "
                             f"but {expected} is required; rebuild it with `mtlmood prepare`")


def write_cache(directory: str | os.PathLike[str], items: Iterable[tuple[str, np.ndarray]],
                feature_config: FeatureConfig) -> FeatureCache:
    """Build a cache from (song_id, (t, n_mels) array) pairs, atomically.

    The bank is written to a temporary file and renamed, and the index is written
    last, so readers only ever see a complete cache.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    song_ids: list[str] = []
    arrays: list[np.ndarray] = []
    for song_id, array in items:
        array = np.asarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != feature_config.n_mels:
            raise CacheError(f"features of {song_id!r} have shape {array.shape}, "
                             f"expected (t, {feature_config.n_mels})")
        song_ids.append(song_id)
        arrays.append(array)
    if len(set(song_ids)) != len(song_ids):
        raise CacheError("duplicate song ids in feature cache input")
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(arrays) else lengths
    total = int(lengths.sum())
    # Invalidate any previous index first: from here on the directory is "not built".
    (directory / INDEX_FILE).unlink(missing_ok=True)
    tmp_bank = directory / f".{BANK_FILE}.tmp"
    bank = np.lib.format.open_memmap(tmp_bank, mode="w+", dtype=np.float32,
                                     shape=(total, feature_config.n_mels))
    for offset, array in zip(offsets, arrays):
        bank[offset: offset + array.shape[0]] = array
    bank.flush()
    del bank
    os.replace(tmp_bank, directory / BANK_FILE)
    atomic_write_json(directory / CONFIG_FILE, asdict(feature_config))
    atomic_write_json(directory / INDEX_FILE, {"song_ids": song_ids, "offsets": offsets.tolist(),
                                               "lengths": lengths.tolist()})
    return FeatureCache(directory)


def iter_cache(cache: FeatureCache) -> Iterator[tuple[str, np.ndarray]]:
    """All (song_id, features) pairs of a cache, in index order."""
    for song_id in cache.song_ids:
        yield song_id, cache.features(song_id)
