"""The files `mtlmood prepare` keeps in a cache directory while it works: one shard per song
(``<cache>/shards/<song id, escaped>.npy``, tagged with the feature config it was computed
with), the failure report's name, and the checks of what an earlier run left (a bank built
with other settings, invalid or half-written shards), plus clearing it all for a rebuild.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from hashlib import sha256
from pathlib import Path
from typing import Optional

from mtlmood.cache import CONFIG_FILE, INDEX_FILE, FeatureCache, npy_header
from mtlmood.config import FeatureConfig
from mtlmood.errors import CacheError
from mtlmood.fileio import atomic_write_json

SHARD_DIR = "shards"
FAILURES_FILE = "failures.csv"
_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_MAX_NAME = 200  # file names stay well below the usual 255-byte limit


def shard_name(song_id: str) -> str:
    """A file name for a song's shard: letters, digits, '-' and '_' kept, every other byte
    %XX-escaped (so no name starts with '.' like our temp files, and no two ids collide);
    ids too long for a file name are hashed (an escaped name never holds '%s')."""
    escaped = "".join(ch if ch in _SAFE_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in song_id)
    if len(escaped) > _MAX_NAME:
        escaped = "%sha256-" + sha256(song_id.encode("utf-8")).hexdigest()
    return escaped + ".npy"


def clear_cache(cache_dir: Path) -> None:
    """Delete everything a previous prepare wrote (for rebuild=True)."""
    (cache_dir / INDEX_FILE).unlink(missing_ok=True)  # first: the cache is then no longer valid
    for pattern in ("bank*.npy", ".bank*.tmp", CONFIG_FILE, FAILURES_FILE):
        for path in cache_dir.glob(pattern):
            path.unlink()
    shards = cache_dir / SHARD_DIR
    if shards.is_dir():
        for path in shards.iterdir():
            path.unlink()
        shards.rmdir()


def existing_cache(cache_dir: Path, cfg: FeatureConfig) -> Optional[FeatureCache]:
    if not (cache_dir / INDEX_FILE).exists():
        return None
    try:
        cache = FeatureCache(cache_dir)
    except CacheError as exc:
        raise CacheError(f"{exc}; pass --rebuild (rebuild=True) to discard it and recompute") from None
    if cache.feature_config != cfg:
        raise CacheError(
            f"feature cache at {cache_dir} was built with other feature settings "
            f"({_differences(cache.feature_config, cfg)}); pass --rebuild (rebuild=True) "
            "to discard it and recompute, or choose another cache_dir"
        )
    return cache


def _differences(found: FeatureConfig, wanted: FeatureConfig) -> str:
    """'n_mels: 96 cached, 64 requested' for every setting that differs."""
    old, new = asdict(found), asdict(wanted)
    return "; ".join(f"{key}: {old[key]} cached, {new[key]} requested" for key in old if old[key] != new[key])


def shard_dir(cache_dir: Path, cfg: FeatureConfig) -> Path:
    """The shard folder, tagged with the feature config its shards were computed with."""
    shards = cache_dir / SHARD_DIR
    shards.mkdir(exist_ok=True)
    tag = shards / CONFIG_FILE  # the shards' feature config, named as the bank names its own
    if tag.exists():
        try:
            found = FeatureConfig(**json.loads(tag.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CacheError(f"{tag} is unreadable ({exc}); pass --rebuild to discard the shards") from None
        if found != cfg:
            raise CacheError(
                f"the unfinished shards in {shards} were computed with other feature settings "
                f"({_differences(found, cfg)}); pass --rebuild (rebuild=True) to discard "
                "them and recompute"
            )
    else:
        atomic_write_json(tag, asdict(cfg))
    # Temp files of songs that were in flight when a previous run died: never valid data.
    for leftover in shards.glob(".*.tmp"):
        leftover.unlink()
    return shards


def valid_shard(path: Path, cfg: FeatureConfig) -> bool:
    """True when ``path`` is a complete (t, n_mels) float32 .npy; an invalid one is removed."""
    if not path.exists():
        return False
    try:
        shape, dtype = npy_header(path)
    except CacheError:
        shape, dtype = (), None
    if len(shape) == 2 and shape[0] > 0 and shape[1] == cfg.n_mels and dtype == "float32":
        return True
    path.unlink()
    return False


def remove_if_only_tag(shards: Path) -> None:
    """Drop the shard folder once nothing but its config tag is left in it."""
    if {p.name for p in shards.iterdir()} <= {CONFIG_FILE}:
        for path in shards.iterdir():
            path.unlink()
        shards.rmdir()


__all__ = [
    "FAILURES_FILE",
    "SHARD_DIR",
    "clear_cache",
    "existing_cache",
    "remove_if_only_tag",
    "shard_dir",
    "shard_name",
    "valid_shard",
]
