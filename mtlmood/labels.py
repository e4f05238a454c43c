"""Labelled songs: top-N moods, top-K artists, 5-year buckets -> multi-hot targets.

The rules, in the order :func:`build_labels` applies them:

1. **Moods.** Rank tags by the number of songs carrying them (most first, ties
   by tag name), keep the top ``n_moods``; songs with none of the kept tags are
   dropped. Moods are ranked over *all* songs (every split): on MTG-Jamendo this
   gives the paper's 4346 / 10041 / 17946 songs for 3 / 9 / 50 moods. If a
   dataset has fewer distinct tags than ``n_moods``, all of them are kept (and a
   warning is logged).
2. **Artist** (metadata "artist" or "artist+year"). The ``n_artists`` artists
   with the most songs, counted among the kept *training songs* (``metadata_from``;
   all kept songs when no split is given), ties by artist name. Metadata is only a
   training signal: counting test songs would let the test set pick the classes,
   and a class with no training song (an artist found only in the test set of an
   artist-disjoint split) would be a dead output that still counts in N_meta.
   Songs of other artists, or with no artist, get an all-zero artist target.
3. **Year** (metadata "year" or "artist+year"). ``n_year_buckets`` buckets of
   ``year_bucket_size`` contiguous years, the last bucket ending at the latest
   year among the kept *training songs* (9 x 5 years: e.g. 1977-1981 ... 2017-2021
   when the latest year is 2021). A bucket that no training song falls in is not
   a class (dropped, so N_meta may be below ``n_year_buckets``). Like artists
   outside the top K, songs outside the buckets (older, newer than every
   training song, in a dropped bucket) or with no year get an all-zero year
   target; every bucket is exactly ``year_bucket_size`` years wide, as in the paper.

Metadata columns are the artist labels first, then the year buckets, named
``artist:<artist>`` and ``year:<first>-<last>``. Targets are built for every kept
song (validation and test too), against the classes chosen from training songs.
``mtlmood.rundata.label_and_split`` runs moods -> split -> metadata from the
training songs in one call.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Collection, Optional, Sequence

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
    artists: list[str] = field(default_factory=list)  # each song's artist, "" when unknown

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
    return [
        YearBucket(latest - (n_buckets - i) * size + 1, latest - (n_buckets - 1 - i) * size) for i in range(n_buckets)
    ]


def _check(cfg: LabelConfig) -> None:
    if cfg.n_moods < 1:
        raise ConfigError(f"labels.n_moods must be at least 1, got {cfg.n_moods}")
    if cfg.metadata not in METADATA_SETS:
        raise ConfigError(f"labels.metadata {cfg.metadata!r} is not one of {list(METADATA_SETS)}")
    if "artist" in cfg.metadata and cfg.n_artists < 1:
        raise ConfigError(f"labels.n_artists must be at least 1, got {cfg.n_artists}")
    if "year" in cfg.metadata and (cfg.n_year_buckets < 1 or cfg.year_bucket_size < 1):
        raise ConfigError(
            f"labels.n_year_buckets and labels.year_bucket_size must be at least 1, "
            f"got {cfg.n_year_buckets} and {cfg.year_bucket_size}"
        )


def build_labels(
    records: Sequence[SongRecord],
    cfg: LabelConfig,
    dataset: str = "this dataset",
    metadata_from: Optional[Collection[str]] = None,
) -> LabelledSongs:
    """Choose moods and metadata labels (rules in the module docstring) and build the targets.

    ``metadata_from`` are the song ids whose metadata decides the artist and year
    classes (the training songs); None = every kept song, for callers with no split.
    ``dataset`` only names the data in error messages. Rows keep the order of ``records``.
    """
    _check(cfg)
    if not records:
        raise DatasetError(f"{dataset} has no songs")
    ids = Counter(record.song_id for record in records)
    duplicates = [song for song, count in ids.items() if count > 1]
    if duplicates:
        raise DatasetError(f"{dataset} repeats song id(s) {', '.join(map(repr, duplicates[:5]))}")

    mood_names, kept, mood_targets = _select_moods(records, cfg.n_moods, dataset)
    if metadata_from is None:
        source, where = kept, ""
    else:
        chosen = set(metadata_from)
        source, where = [record for record in kept if record.song_id in chosen], " among the training songs"

    meta_names: list[str] = []
    meta_columns: list[np.ndarray] = []
    if "artist" in cfg.metadata:
        names, block = _artist_targets(kept, source, cfg.n_artists)
        if not names:
            raise DatasetError(f"{dataset} has no artist metadata{where}; use labels.metadata=none or year")
        meta_names += names
        meta_columns.append(block)
    if "year" in cfg.metadata:
        names, block = _year_targets(kept, source, cfg.n_year_buckets, cfg.year_bucket_size)
        if not names:
            raise DatasetError(f"{dataset} has no year metadata{where}; use labels.metadata=none or artist")
        meta_names += names
        meta_columns.append(block)
    meta_targets = np.concatenate(meta_columns, axis=1) if meta_columns else np.zeros((len(kept), 0), dtype=np.float32)

    return LabelledSongs(
        song_ids=[record.song_id for record in kept],
        mood_names=mood_names,
        meta_names=meta_names,
        mood_targets=mood_targets,
        meta_targets=meta_targets,
        groups=[record.split_group for record in kept],
        official_splits=[record.official_split for record in kept],
        audio_paths=[str(record.audio_path) for record in kept],
        artists=[record.artist or "" for record in kept],
    )


def _select_moods(
    records: Sequence[SongRecord], n_moods: int, dataset: str
) -> tuple[list[str], list[SongRecord], np.ndarray]:
    """(top-N mood names, songs carrying one of them, their (n, N_mood) multi-hot targets): rule 1."""
    ranked = rank_tags(records)
    if not ranked:
        raise DatasetError(f"{dataset}: no song carries a mood tag")
    if len(ranked) < n_moods:
        log.warning(
            "%s has %d distinct tags; labels.n_moods=%d, keeping all %d", dataset, len(ranked), n_moods, len(ranked)
        )
    mood_names = [tag for tag, _ in ranked[:n_moods]]
    mood_index = {tag: i for i, tag in enumerate(mood_names)}
    kept = [record for record in records if any(tag in mood_index for tag in record.tags)]
    targets = np.zeros((len(kept), len(mood_names)), dtype=np.float32)
    for row, record in enumerate(kept):
        for tag in record.tags:
            if tag in mood_index:
                targets[row, mood_index[tag]] = 1.0
    return mood_names, kept, targets


def _artist_targets(
    kept: Sequence[SongRecord], source: Sequence[SongRecord], n_artists: int
) -> tuple[list[str], np.ndarray]:
    """(column names, (len(kept), K) targets) for the top-``n_artists`` artists of ``source``: rule 2."""
    artists = [artist for artist, _ in rank_artists(source)[:n_artists]]
    index = {artist: i for i, artist in enumerate(artists)}
    block = np.zeros((len(kept), len(artists)), dtype=np.float32)
    for row, record in enumerate(kept):
        if record.artist in index:
            block[row, index[record.artist]] = 1.0
    return [f"artist:{artist}" for artist in artists], block


def _year_targets(
    kept: Sequence[SongRecord], source: Sequence[SongRecord], n_buckets: int, size: int
) -> tuple[list[str], np.ndarray]:
    """(column names, (len(kept), B) targets) for the year buckets of ``source`` that hold at least
    one of its songs: rule 3."""
    grid = year_buckets(source, n_buckets, size)
    if not grid:
        return [], np.zeros((len(kept), 0), dtype=np.float32)
    first = grid[0].first

    def slot(year: Optional[int]) -> Optional[int]:
        """Index of the grid bucket holding ``year``; None outside the grid (or no year)."""
        if year is None or year < first or (year - first) // size >= len(grid):
            return None
        return (year - first) // size

    present = sorted({bucket for record in source if (bucket := slot(record.year)) is not None})
    column = {bucket: j for j, bucket in enumerate(present)}
    block = np.zeros((len(kept), len(present)), dtype=np.float32)
    for row, record in enumerate(kept):
        bucket = slot(record.year)
        j = column.get(bucket) if bucket is not None else None
        if j is not None:  # songs in a dropped bucket, or newer than every training song: all zero
            block[row, j] = 1.0
    return [grid[bucket].name for bucket in present], block
