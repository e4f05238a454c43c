"""`mtlmood data stats`: what a run config's dataset, labels and split come to, before any audio is read.

    mtlmood data stats --set dataset.name=mtg-jamendo --set dataset.root=../shared/data/mtg-jamendo \\
        --set labels.n_moods=3

Songs are labelled and split by ``mtlmood.rundata.label_and_split``, exactly as a run
does: moods ranked over all songs, then the split, then the artist / year classes
chosen from the training songs only. So ``n_meta`` and the coverage counts are what a
run would train with, and ``split_facts`` (songs per split, label counts, how many test
songs have an artist the model saw in training) is what a study report prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Collection, Optional

import numpy as np

from mtlmood.config import RunConfig
from mtlmood.datasets import SongRecord, load_run_songs, missing_audio
from mtlmood.errors import ConfigError, DatasetError
from mtlmood.labels import build_labels, year_buckets
from mtlmood.rundata import label_and_split, split_facts
from mtlmood.splits import split_songs, unassigned


@dataclass
class DatasetStats:
    """Counts for one (dataset, labels, split) config. Coverage counts are over the kept songs,
    against the metadata classes chosen from ``metadata_songs`` songs (the training split;
    every kept song when no split can be made)."""

    dataset: str
    root: str
    songs_in_metadata: int
    songs_kept: int
    mood_counts: list[tuple[str, int]]  # (mood label, kept songs carrying it), most first
    metadata: str  # the labels.metadata set
    n_meta: int  # metadata labels the model gets (0 for "none")
    metadata_songs: int  # songs whose metadata chose the artist / year classes
    n_artists: int  # the top-K asked for
    artist_coverage: int  # kept songs whose artist is one of the top-K artists
    artists_known: int  # kept songs with any artist
    year_range: Optional[tuple[int, int]]  # first and last year of the buckets; None = no years
    year_coverage: int  # kept songs whose year falls in a bucket with a training song
    years_known: int  # kept songs with any year
    split_method: str
    split_sizes: dict[str, int]
    split_left_out: int  # kept songs in no split (official splits only)
    missing_audio: int  # kept songs whose audio file does not exist
    missing_audio_example: str = ""
    split_error: str = ""  # why no split could be made (e.g. no official split), else ""
    split_facts: dict[str, Any] = field(default_factory=dict)  # mtlmood.rundata.split_facts; {} without a split

    def to_dict(self) -> dict[str, Any]:
        """The fields as strict JSON (a NaN percentage of an empty test split becomes null)."""
        from mtlmood.metrics import json_safe  # lazy: only --json needs it (the module imports scipy)

        return json_safe(asdict(self))


def _covered(records: list[SongRecord], config: RunConfig, kind: str, metadata_from: Optional[Collection[str]]) -> int:
    """Kept songs that get a ``kind`` ("artist" or "year") target when its classes are chosen
    from ``metadata_from``, as a run with that metadata would label them; 0 when the songs
    have no such metadata. Reported for every metadata setting, so you can decide on one."""
    try:
        labelled = build_labels(
            records, replace(config.labels, metadata=kind), config.dataset.name, metadata_from=metadata_from
        )
    except (DatasetError, ConfigError):  # no such metadata, or a setting only that metadata uses
        return 0
    return int(np.count_nonzero(labelled.meta_targets.any(axis=1)))


def dataset_stats(config: RunConfig) -> DatasetStats:
    """Load the dataset, label and split it exactly as a run would (``label_and_split``), and count."""
    records = load_run_songs(config)
    name, cfg = config.dataset.name, config.labels
    split_error = ""
    try:
        # The split only needs the moods; trying it first tells a missing split (still
        # worth showing the rest) from a labelling error (which a run would stop on too).
        split_songs(build_labels(records, replace(cfg, metadata="none"), dataset=name), config.split)
    except DatasetError as exc:  # e.g. an official split on a dataset without one
        split_error = str(exc)
    splits: dict[str, np.ndarray] = {}
    metadata_from: Optional[list[str]] = None  # None: every kept song chooses the classes
    if split_error:
        labelled = build_labels(records, cfg, dataset=name)
    else:
        labelled, splits = label_and_split(records, config)
        metadata_from = [labelled.song_ids[i] for i in splits["train"]]

    kept_ids = set(labelled.song_ids)
    kept = [record for record in records if record.song_id in kept_ids]
    chosen = set(metadata_from) if metadata_from is not None else kept_ids
    buckets = year_buckets(
        [record for record in kept if record.song_id in chosen], cfg.n_year_buckets, cfg.year_bucket_size
    )
    missing = missing_audio(kept)
    return DatasetStats(
        dataset=name,
        root=config.dataset.root,
        songs_in_metadata=len(records),
        songs_kept=len(labelled),
        mood_counts=[(mood, int(count)) for mood, count in zip(labelled.mood_names, labelled.mood_targets.sum(axis=0))],
        metadata=cfg.metadata,
        n_meta=labelled.n_meta,
        metadata_songs=len(chosen),
        n_artists=cfg.n_artists,
        artist_coverage=_covered(records, config, "artist", metadata_from),
        artists_known=sum(1 for record in kept if record.artist),
        year_range=(buckets[0].first, buckets[-1].last) if buckets else None,
        year_coverage=_covered(records, config, "year", metadata_from),
        years_known=sum(1 for record in kept if record.year is not None),
        split_method=config.split.method,
        split_sizes={split: len(rows) for split, rows in splits.items()},
        split_left_out=unassigned(labelled, splits) if splits else 0,
        missing_audio=len(missing),
        missing_audio_example=str(missing[0].audio_path) if missing else "",
        split_error=split_error,
        split_facts=split_facts(labelled, splits) if splits else {},
    )


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def render_stats(stats: DatasetStats) -> str:
    """The plain-text report `mtlmood data stats` prints."""
    kept = stats.songs_kept
    source = (
        f"all {stats.metadata_songs} kept songs: no split"
        if stats.split_error
        else f"the {stats.metadata_songs} training songs"
    )
    lines = [
        f"dataset            {stats.dataset}  ({stats.root})",
        f"songs in metadata  {stats.songs_in_metadata}",
        f"songs kept         {kept}  (with at least one of the top {len(stats.mood_counts)} moods)",
        "",
        f"{'mood label':<24}{'songs':>8}{'share':>9}",
    ]
    lines += [f"{name:<24}{count:>8}{_percent(count, kept):>9}" for name, count in stats.mood_counts]
    lines += [
        "",
        f"metadata           {stats.metadata}  ({stats.n_meta} labels, classes chosen from {source})",
        f"artist coverage    {stats.artist_coverage} songs with a top-{stats.n_artists} artist "
        f"({_percent(stats.artist_coverage, kept)}); {stats.artists_known} with any artist",
    ]
    if stats.year_range is None:
        lines.append("year coverage      no year metadata")
    else:
        first, last = stats.year_range
        lines.append(
            f"year coverage      {stats.year_coverage} songs in {first}-{last} "
            f"({_percent(stats.year_coverage, kept)}); {stats.years_known} with any year"
        )
    if stats.split_error:
        lines.append(f"split ({stats.split_method})     not available: {stats.split_error}")
    else:
        sizes = "  ".join(f"{name} {size} ({_percent(size, kept)})" for name, size in stats.split_sizes.items())
        lines.append(f"split ({stats.split_method})".ljust(19) + sizes)
        if stats.split_left_out:
            lines.append(f"{'':19}{stats.split_left_out} kept songs are in no part of the official split")
        facts = stats.split_facts
        if stats.artists_known:
            n_test = stats.split_sizes.get("test", 0)
            lines.append(
                f"artist overlap     {facts['test_songs_artist_in_train']} of {n_test} test songs "
                f"({_percent(facts['test_songs_artist_in_train'], n_test)}) have an artist with "
                f"training songs; {facts['artists_shared_train_test']} of {facts['artists_test']} "
                f"test artists"
            )
    missing = f"missing audio      {stats.missing_audio} of {kept} kept songs"
    if stats.missing_audio:
        missing += f" (e.g. {stats.missing_audio_example})"
    lines.append(missing)
    return "\n".join(lines)
