"""MTG-Jamendo, mood/theme subset (Bogdanov et al., 2019).

Files read (``DatasetConfig.root`` is the metadata directory, or the ``.tsv`` itself):

- ``autotagging_moodtheme.tsv``: header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``;
  the TAGS field spans one or more tab-separated columns, each like
  ``mood/theme---happy``, so every line is split on tabs rather than read with a
  fixed number of columns.
- ``splits/split-<k>/autotagging_moodtheme-{train,validation,test}.tsv`` (same
  format): the official split ``k`` (0..4). Each split holds 17,982 of the 18,486
  tracks; the other 504 get ``official_split = None``. Without a ``splits/``
  folder every track gets None (only ``split.method=official`` needs them).

A song is a track (``song_id`` = TRACK_ID, its own split group); ``artist`` is
ARTIST_ID. The public metadata carries no release year, so ``year`` is None.
Audio is ``<audio_root>/<PATH>`` (``audio_root`` "" = the metadata directory).

Tag names drop the ``mood/theme---`` prefix (``happy``). With
``tag_set="all"`` and a full ``autotagging.tsv``, tags of other categories are
kept as ``<category>/<tag>`` (``genre/rock``) so names of different categories
cannot collide; with ``tag_set="moods"`` only mood/theme tags are kept.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional

from mtlmood.config import DatasetConfig
from mtlmood.datasets.base import SongRecord, register
from mtlmood.errors import DatasetError

METADATA_FILE = "autotagging_moodtheme.tsv"
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")
MOOD_PREFIX = "mood/theme---"
SPLIT_NAMES = ("train", "validation", "test")


def _metadata_path(root: Path, setting: str = "dataset.root") -> Path:
    """The metadata file: ``root`` itself, or ``root/autotagging_moodtheme.tsv`` for a folder."""
    path = root / METADATA_FILE if root.is_dir() else root
    if not path.is_file():
        raise DatasetError(
            f"MTG-Jamendo metadata not found: {path} "
            f"({setting} must be the folder holding {METADATA_FILE}, or that file)"
        )
    return path


def _tag_name(raw: str, tag_set: str, where: str) -> Optional[str]:
    """``mood/theme---happy`` -> ``happy``; other categories per ``tag_set``; None = skip."""
    if raw.startswith(MOOD_PREFIX):
        return raw[len(MOOD_PREFIX) :]
    if "---" not in raw:
        raise DatasetError(f"{where}: tag {raw!r} is not of the form 'category---tag' (like 'mood/theme---happy')")
    if tag_set != "all":
        return None
    category, name = raw.split("---", 1)
    return f"{category}/{name}"


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every data line; checks the header and the column count."""
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().rstrip("\r\n").split("\t")
            if tuple(header[: len(HEADER)]) != HEADER:
                raise DatasetError(
                    f"{path}:1: expected header starting with {' '.join(HEADER)} TAGS, got {' '.join(header)!r}"
                )
            for number, line in enumerate(handle, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue  # a trailing blank line is harmless
                fields = line.split("\t")
                if len(fields) < len(HEADER):
                    missing = HEADER[len(fields)]
                    raise DatasetError(
                        f"{path}:{number}: {len(fields)} tab-separated fields, column {missing} is missing"
                    )
                rows.append((number, fields))
    except (OSError, UnicodeDecodeError) as exc:  # unreadable or not text: one line, no traceback
        raise DatasetError(f"cannot read MTG-Jamendo metadata {path}: {exc}") from None
    return rows


def read_official_split(metadata: Path, k: int) -> dict[str, str]:
    """TRACK_ID -> "train"/"validation"/"test" for official split ``k``; {} without splits/."""
    splits_dir = metadata.parent / "splits"
    if not splits_dir.is_dir():
        return {}
    split_dir = splits_dir / f"split-{k}"
    if not split_dir.is_dir():
        available = sorted(p.name for p in splits_dir.glob("split-*"))
        raise DatasetError(
            f"official split {k} not found: {split_dir} does not exist "
            f"(available: {', '.join(available) or 'none'}); set split.official_split"
        )
    membership: dict[str, str] = {}
    for split in SPLIT_NAMES:
        path = split_dir / f"{metadata.stem}-{split}.tsv"
        if not path.is_file():
            raise DatasetError(f"official split file missing: {path}")
        for number, fields in _read_rows(path):
            track = fields[0]
            if track in membership:
                raise DatasetError(
                    f"{path}:{number}: track {track} is already in the {membership[track]} part of split-{k}"
                )
            membership[track] = split
    return membership


def read_tracks(
    root: str | Path, tag_set: str = "moods", audio_root: str | Path = "", *, setting: str = "dataset.root"
) -> Iterator[SongRecord]:
    """Every track of the metadata at ``root`` (the folder or the ``.tsv``) in file order,
    without split membership (``official_split`` None). Lazy, so a caller that stops early
    (a limit) is not failed by a bad line further down; ``setting`` names where ``root``
    came from in the not-found message. The synth reads its ``source`` through this.
    """
    metadata = _metadata_path(Path(root), setting)
    audio_dir = Path(audio_root) if audio_root else metadata.parent
    seen: dict[str, int] = {}
    for number, fields in _read_rows(metadata):
        where = f"{metadata}:{number}"
        track, artist, _album, rel_path = fields[0], fields[1], fields[2], fields[3]
        if track in seen:
            raise DatasetError(f"{where}: track {track} already appears on line {seen[track]}")
        seen[track] = number
        tags: list[str] = []
        for raw in fields[len(HEADER) :]:
            raw = raw.strip()
            name = _tag_name(raw, tag_set, where) if raw else None
            if name is not None and name not in tags:
                tags.append(name)
        yield SongRecord(
            song_id=track,
            audio_path=audio_dir / rel_path,
            tags=tuple(tags),
            artist=artist or None,
            year=None,  # not in the public metadata (raw.meta.tsv is not distributed here)
        )


@register("mtg-jamendo")
class MtgJamendo:
    """Adapter for MTG-Jamendo's ``autotagging_moodtheme.tsv`` and its official splits."""

    name = "mtg-jamendo"

    def load(self, config: DatasetConfig, official_split: int = 0) -> list[SongRecord]:
        """Every track (or the first ``config.limit``), with split ``official_split``'s membership."""
        metadata = _metadata_path(Path(config.root))
        membership = read_official_split(metadata, official_split)
        records: list[SongRecord] = []
        for track in read_tracks(metadata, config.tag_set, config.audio_root):
            records.append(dataclasses.replace(track, official_split=membership.get(track.song_id)))
            if config.limit and len(records) >= config.limit:
                break
        return records
