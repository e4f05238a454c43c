"""Labelled songs: top-N moods, top-K artists, 5-year buckets -> multi-hot targets.

The rules, in the order :func:`build_labels` applies them:

1. **Moods.** Rank tags by the number of songs carrying them (most first, ties
   by tag name), keep the top ``n_moods``; songs with none of the kept tags are
   dropped. On MTG-Jamendo this gives the paper's 4346 / 10041 / 17946 songs for
   3 / 9 / 50 moods. If a dataset has fewer distinct tags than ``n_moods``, all
   of them are kept (and a warning is logged).
2. **Artist** (metadata "artist" or "artist+year"). The ``n_artists`` artists
   with the most songs, counted among the songs *kept* in step 1 (those are the
   songs the model trains on; a frequent artist whose songs were all dropped
   would be a dead label), ties by artist name. Songs of other artists, or with
   no artist, get an all-zero artist target.
3. **Year** (metadata "year" or "artist+year"). ``n_year_buckets`` buckets of
   ``year_bucket_size`` contiguous years, the last bucket ending at the latest
   year among the kept songs (9 x 5 years: e.g. 1977-1981 ... 2017-2021 when
   the latest year is 2021). Like artists outside the top K, songs older than
   the first bucket or with no year get an all-zero year target; every bucket
   is exactly ``year_bucket_size`` years wide, as in the paper.

Metadata columns are the artist labels first, then the year buckets, named
``artist:<artist>`` and ``year:<first>-<last>``.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from mtlmood.config import METADATA_SETS, LabelConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


@dataclass
class LabelledSongs:
    """Songs that survived label selection, with their targets.

    Row i of every array belongs to ``song_ids[i]``. ``meta_targets`` has zero
    columns when the metadata set is "none".
    """

    song_ids: list[str]
    mood_names: list[str]
    meta_names: list[str]  # e.g. "artist:artist_000087", "year:2005-2009"
    mood_targets: np.ndarray  # (n, N_mood) float32 multi-hot
    meta_targets: np.ndarray  # (n, N_meta) float32 multi-hot
    groups: list[str]  # split groups (track for MagnaTagATune; the song itself otherwise)
    official_splits: list[Optional[str]] = field(default_factory=list)
    audio_paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.song_ids)

    @property
    def n_moods(self) -> int:
        return len(self.mood_names)

    @property
    def n_meta(self) -> int:
        return len(self.meta_names)


@dataclass(frozen=True)
class YearBucket:
    """Years ``first`` .. ``last`` inclusive."""

    first: int
    last: int

    @property
    def name(self) -> str:
        return f"year:{self.first}-{self.last}"

    def __contains__(self, year: object) -> bool:
        return isinstance(year, int) and self.first <= year <= self.last


def rank_tags(records: Sequence[SongRecord]) -> list[tuple[str, int]]:
    """(tag, number of songs carrying it), most songs first, ties by tag name."""
    counts = Counter(tag for record in records for tag in set(record.tags))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def rank_artists(records: Sequence[SongRecord]) -> list[tuple[str, int]]:
    """(artist, number of songs), most songs first, ties by artist name; unknown artists skipped."""
    counts = Counter(record.artist for record in records if record.artist)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def year_buckets(records: Sequence[SongRecord], n_buckets: int, size: int) -> list[YearBucket]:
    """``n_buckets`` buckets of ``size`` years ending at the latest year present (oldest first);
    [] when no record has a year."""
    years = [record.year for record in records if record.year is not None]
    if not years:
        return []
    latest = max(years)
    return [YearBucket(latest - (n_buckets - i) * size + 1, latest - (n_buckets - 1 - i) * size)
            for i in range(n_buckets)]


def _check(cfg: LabelConfig) -> None:
    if cfg.n_moods < 1:
        raise ConfigError(f"labels.n_moods must be at least 1, got {cfg.n_moods}")
    if cfg.metadata not in METADATA_SETS:
        raise ConfigError(f"labels.metadata {cfg.metadata!r} is not one of {list(METADATA_SETS)}")
    if "artist" in cfg.metadata and cfg.n_artists < 1:
        raise ConfigError(f"labels.n_artists must be at least 1, got {cfg.n_artists}")
    if "year" in cfg.metadata and (cfg.n_year_buckets < 1 or cfg.year_bucket_size < 1):
        raise ConfigError(f"labels.n_year_buckets and labels.year_bucket_size must be at least 1, "
                          f"got {cfg.n_year_buckets} and {cfg.year_bucket_size}")


def build_labels(records: Sequence[SongRecord], cfg: LabelConfig,
                 dataset: str = "this dataset") -> LabelledSongs:
    """Choose moods and metadata labels (rules in the module docstring) and build the targets.

    ``dataset`` only names the data in error messages. Rows keep the order of ``records``.
    """
    _check(cfg)
    if not records:
        raise DatasetError(f"{dataset} has no songs")
    ids = Counter(record.song_id for record in records)
    duplicates = [song for song, count in ids.items() if count > 1]
    if duplicates:
        raise DatasetError(f"{dataset} repeats song id(s) {', '.join(map(repr, duplicates[:5]))}")

    ranked = rank_tags(records)
    if not ranked:
        raise DatasetError(f"{dataset}: no song carries a mood tag")
    if len(ranked) < cfg.n_moods:
        log.warning("%s has %d distinct tags; labels.n_moods=%d, keeping all %d",
                    dataset, len(ranked), cfg.n_moods, len(ranked))
    mood_names = [tag for tag, _ in ranked[:cfg.n_moods]]
    mood_index = {tag: i for i, tag in enumerate(mood_names)}
    kept = [record for record in records if any(tag in mood_index for tag in record.tags)]

    mood_targets = np.zeros((len(kept), len(mood_names)), dtype=np.float32)
    for row, record in enumerate(kept):
        for tag in record.tags:
            if tag in mood_index:
                mood_targets[row, mood_index[tag]] = 1.0

    meta_names: list[str] = []
    meta_columns: list[np.ndarray] = []
    if "artist" in cfg.metadata:
        artists = [artist for artist, _ in rank_artists(kept)[:cfg.n_artists]]
        if not artists:
            raise DatasetError(f"{dataset} has no artist metadata; use labels.metadata=none or year")
        artist_index = {artist: i for i, artist in enumerate(artists)}
        block = np.zeros((len(kept), len(artists)), dtype=np.float32)
        for row, record in enumerate(kept):
            if record.artist in artist_index:
                block[row, artist_index[record.artist]] = 1.0
        meta_names += [f"artist:{artist}" for artist in artists]
        meta_columns.append(block)
    if "year" in cfg.metadata:
        buckets = year_buckets(kept, cfg.n_year_buckets, cfg.year_bucket_size)
        if not buckets:
            raise DatasetError(f"{dataset} has no year metadata; use labels.metadata=none or artist")
        first, size = buckets[0].first, cfg.year_bucket_size
        block = np.zeros((len(kept), len(buckets)), dtype=np.float32)
        for row, record in enumerate(kept):
            if record.year is not None and record.year >= first:
                block[row, (record.year - first) // size] = 1.0
        meta_names += [bucket.name for bucket in buckets]
        meta_columns.append(block)
    meta_targets = (np.concatenate(meta_columns, axis=1) if meta_columns
                    else np.zeros((len(kept), 0), dtype=np.float32))

    return LabelledSongs(
        song_ids=[record.song_id for record in kept],
        mood_names=mood_names,
        meta_names=meta_names,
        mood_targets=mood_targets,
        meta_targets=meta_targets,
        groups=[record.split_group for record in kept],
        official_splits=[record.official_split for record in kept],
        audio_paths=[str(record.audio_path) for record in kept],
    )
