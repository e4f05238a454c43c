"""The feature cache: every song's log-mel matrix in one memory-mapped array plus an index.

Layout of a cache directory::

    feature_config.json   the FeatureConfig the features were computed with (for people)
    bank-<token>.npy      float32 (total_frames, n_mels), all songs back to back
    index.json            {"bank": "bank-<token>.npy", "feature_config": {...},
                           "song_ids": [...], "offsets": [...], "lengths": [...]}

``index.json`` is written last and atomically: it is the commit marker. It names
the bank file and the feature config it describes, and every rebuild writes a
*new* bank file, so a build that crashes at any point leaves either the old cache
or the new one fully readable, never a mix. Older bank files are deleted only
after the new index is in place. Training reads any song's window by slicing the
memory map: no per-sample file opens.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Union

import numpy as np

from mtlmood.config import FeatureConfig
from mtlmood.errors import CacheError
from mtlmood.fileio import atomic_write_json

if TYPE_CHECKING:
    from mtlmood.config import RunConfig

CONFIG_FILE = "feature_config.json"
BANK_FILE = "bank.npy"  # the bank's name in indexes that predate versioned bank files
INDEX_FILE = "index.json"

# A song's features for write_cache: an array, or the path of a .npy file holding one
# (read only when its turn comes, so a whole dataset never sits in memory).
FeatureSource = Union[np.ndarray, str, "os.PathLike[str]"]


class FeatureCache:
    """Read access to a built feature cache (see the module docstring for the layout)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.exists():
            raise CacheError(
                f"no feature cache at {self.directory} (missing {INDEX_FILE}); run `mtlmood prepare` first"
            )
        try:
            index = json.loads(index_path.read_text())
            config = index.get("feature_config")
            if config is None:  # an index written before the config moved into it
                config = json.loads((self.directory / CONFIG_FILE).read_text())
            self.feature_config = FeatureConfig(**config)
            self.bank_file = self.directory / index.get("bank", BANK_FILE)
            self.bank: np.ndarray = np.load(self.bank_file, mmap_mode="r")
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise CacheError(f"feature cache at {self.directory} is unreadable: {exc}") from None
        self.song_ids: list[str] = list(index["song_ids"])
        self.offsets = np.asarray(index["offsets"], dtype=np.int64)
        self.lengths = np.asarray(index["lengths"], dtype=np.int64)
        self._row = {song_id: i for i, song_id in enumerate(self.song_ids)}
        if self.bank.ndim != 2 or self.bank.shape[1] != self.feature_config.n_mels:
            raise CacheError(
                f"feature cache at {self.directory}: bank shape {self.bank.shape} "
                f"does not match n_mels={self.feature_config.n_mels}"
            )
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
        return self.bank[self.offsets[i] : self.offsets[i] + self.lengths[i]]

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
            raise CacheError(
                f"feature cache at {self.directory} was built with {self.feature_config}, "
                f"but {expected} is required; rebuild it with `mtlmood prepare --rebuild`"
            )


# np.save writes version 1.0 (2.0 only for huge headers); 3.0 is for unicode field names.
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def npy_header(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a .npy file from its header alone; CacheError when it is not a
    complete .npy file (bad header, or fewer data bytes than the header promises)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format version {version} is not supported")
            shape, fortran, dtype = _HEADER_READERS[version](fh)
            data_start = fh.tell()
        size = path.stat().st_size
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path} is not a readable .npy file: {exc}") from None
    expected = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if fortran or dtype.hasobject or size != expected:
        raise CacheError(f"{path} is incomplete or not a plain array ({size} bytes, expected {expected})")
    return tuple(shape), dtype


def _source_shape(song_id: str, source: FeatureSource) -> tuple[int, ...]:
    if isinstance(source, np.ndarray):
        return source.shape
    try:
        return npy_header(source)[0]
    except CacheError as exc:
        raise CacheError(f"features of {song_id!r}: {exc}") from None


def _load_source(source: FeatureSource) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    return np.load(source, allow_pickle=False)


def write_cache(
    directory: str | os.PathLike[str], items: Iterable[tuple[str, FeatureSource]], feature_config: FeatureConfig
) -> FeatureCache:
    """Build a cache from (song_id, features) pairs, atomically and streaming.

    ``features`` is a (t, n_mels) array, or the path of a .npy file holding one (the
    shards `prepare` writes). Shapes are read first (headers only, for files), then
    each song is copied into a memory-mapped bank file one at a time, so memory stays
    flat however big the dataset. Pass a sequence to keep it that way: a one-shot
    iterator has to be materialised first. The bank gets a fresh file name and the
    index is written last, so readers only ever see a complete cache (the previous
    one until the new index lands); stale bank files are then deleted.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not isinstance(items, Sequence):
        items = list(items)
    song_ids: list[str] = []
    lengths_list: list[int] = []
    for song_id, source in items:
        shape = _source_shape(song_id, source)
        if len(shape) != 2 or shape[1] != feature_config.n_mels:
            raise CacheError(f"features of {song_id!r} have shape {shape}, expected (t, {feature_config.n_mels})")
        song_ids.append(song_id)
        lengths_list.append(shape[0])
    if len(set(song_ids)) != len(song_ids):
        raise CacheError("duplicate song ids in feature cache input")
    lengths = np.array(lengths_list, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(lengths) else lengths
    total = int(lengths.sum())

    bank_name = f"bank-{secrets.token_hex(6)}.npy"
    tmp_bank = directory / f".{bank_name}.tmp"
    try:
        bank = np.lib.format.open_memmap(tmp_bank, mode="w+", dtype=np.float32, shape=(total, feature_config.n_mels))
        for (song_id, source), offset, length in zip(items, offsets, lengths):
            array = _load_source(source)
            if array.shape != (length, feature_config.n_mels):  # changed since its header was read
                raise CacheError(f"features of {song_id!r} changed shape while the cache was written")
            bank[offset : offset + length] = array
        bank.flush()
        del bank
        with open(tmp_bank, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_bank, directory / bank_name)
    except BaseException:
        tmp_bank.unlink(missing_ok=True)
        raise
    config = asdict(feature_config)
    atomic_write_json(directory / CONFIG_FILE, config)
    # The commit: from here on readers see the new bank.
    atomic_write_json(
        directory / INDEX_FILE,
        {
            "bank": bank_name,
            "feature_config": config,
            "song_ids": song_ids,
            "offsets": offsets.tolist(),
            "lengths": lengths.tolist(),
        },
    )
    for stale in list(directory.glob("bank*.npy")) + list(directory.glob(".bank*.tmp")):
        if stale.name != bank_name:
            stale.unlink(missing_ok=True)
    return FeatureCache(directory)


def default_cache_dir(config: "RunConfig") -> Path:
    """Where a run's feature cache lives: ``config.cache_dir``, else ``<dataset.root>/features``
    (beside the manifest when ``dataset.root`` is a manifest file, as for the csv adapter)."""
    if config.cache_dir:
        return Path(config.cache_dir)
    root = Path(config.dataset.root)
    return (root.parent if root.is_file() else root) / "features"


def iter_cache(cache: FeatureCache) -> Iterator[tuple[str, np.ndarray]]:
    """All (song_id, features) pairs of a cache, in index order."""
    for song_id in cache.song_ids:
        yield song_id, cache.features(song_id)
