"""`mtlmood data stats`: what a run config's dataset, labels and split come to, before any audio is read.

    mtlmood data stats --set dataset.name=mtg-jamendo --set dataset.root=../shared/data/mtg-jamendo \\
        --set labels.n_moods=3
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from mtlmood.config import RunConfig
from mtlmood.datasets import load_run_songs, missing_audio
from mtlmood.errors import DatasetError
from mtlmood.labels import build_labels, rank_artists, year_buckets
from mtlmood.splits import split_songs, unassigned


@dataclass
class DatasetStats:
    """Counts for one (dataset, labels, split) config. Coverage counts are over the kept songs."""

    dataset: str
    root: str
    songs_in_metadata: int
    songs_kept: int
    mood_counts: list[tuple[str, int]]  # (mood label, kept songs carrying it), most first
    metadata: str  # the labels.metadata set
    n_meta: int  # metadata labels the model gets (0 for "none")
    n_artists: int  # the top-K asked for
    artist_coverage: int  # kept songs whose artist is one of the top-K artists
    artists_known: int  # kept songs with any artist
    year_range: Optional[tuple[int, int]]  # first and last year of the buckets; None = no years
    year_coverage: int  # kept songs whose year falls in a bucket
    years_known: int  # kept songs with any year
    split_method: str
    split_sizes: dict[str, int]
    split_left_out: int  # kept songs in no split (official splits only)
    missing_audio: int  # kept songs whose audio file does not exist
    missing_audio_example: str = ""
    split_error: str = ""  # why no split could be made (e.g. no official split), else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_stats(config: RunConfig) -> DatasetStats:
    """Load the dataset, build labels and the split exactly as a run would, and count."""
    records = load_run_songs(config)
    labelled = build_labels(records, config.labels, dataset=config.dataset.name)
    kept_ids = set(labelled.song_ids)
    kept = [record for record in records if record.song_id in kept_ids]
    cfg = config.labels

    # Coverage is reported for any metadata setting, so you can decide whether to use it.
    top = {artist for artist, _ in rank_artists(kept)[:cfg.n_artists]}
    buckets = year_buckets(kept, cfg.n_year_buckets, cfg.year_bucket_size)
    year_range = (buckets[0].first, buckets[-1].last) if buckets else None

    split_error = ""
    try:
        splits = split_songs(labelled, config.split)
        split_sizes = {name: len(rows) for name, rows in splits.items()}
        left_out = unassigned(labelled, splits)
    except DatasetError as exc:  # e.g. an official split on a dataset without one: still show the rest
        split_error, split_sizes, left_out = str(exc), {}, 0

    missing = missing_audio(kept)
    return DatasetStats(
        dataset=config.dataset.name,
        root=config.dataset.root,
        songs_in_metadata=len(records),
        songs_kept=len(labelled),
        mood_counts=[(name, int(count)) for name, count in
                     zip(labelled.mood_names, labelled.mood_targets.sum(axis=0))],
        metadata=cfg.metadata,
        n_meta=labelled.n_meta,
        n_artists=cfg.n_artists,
        artist_coverage=sum(1 for record in kept if record.artist in top),
        artists_known=sum(1 for record in kept if record.artist),
        year_range=year_range,
        year_coverage=sum(1 for record in kept
                          if year_range and record.year is not None and year_range[0] <= record.year),
        years_known=sum(1 for record in kept if record.year is not None),
        split_method=config.split.method,
        split_sizes=split_sizes,
        split_left_out=left_out,
        missing_audio=len(missing),
        missing_audio_example=str(missing[0].audio_path) if missing else "",
        split_error=split_error,
    )


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def render_stats(stats: DatasetStats) -> str:
    """The plain-text report `mtlmood data stats` prints."""
    kept = stats.songs_kept
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
        f"metadata           {stats.metadata}  ({stats.n_meta} labels)",
        f"artist coverage    {stats.artist_coverage} songs with a top-{stats.n_artists} artist "
        f"({_percent(stats.artist_coverage, kept)}); {stats.artists_known} with any artist",
    ]
    if stats.year_range is None:
        lines.append("year coverage      no year metadata")
    else:
        first, last = stats.year_range
        lines.append(f"year coverage      {stats.year_coverage} songs in {first}-{last} "
                     f"({_percent(stats.year_coverage, kept)}); {stats.years_known} with any year")
    if stats.split_error:
        lines.append(f"split ({stats.split_method})     not available: {stats.split_error}")
    else:
        sizes = "  ".join(f"{name} {size} ({_percent(size, kept)})" for name, size in stats.split_sizes.items())
        lines.append(f"split ({stats.split_method})".ljust(19) + sizes)
        if stats.split_left_out:
            lines.append(f"{'':19}{stats.split_left_out} kept songs are in no part of the official split")
    missing = f"missing audio      {stats.missing_audio} of {kept} kept songs"
    if stats.missing_audio:
        missing += f" (e.g. {stats.missing_audio_example})"
    lines.append(missing)
    return "\n".join(lines)
