"""MagnaTagATune (Law et al., 2009).

Files read from ``DatasetConfig.root`` (all tab-separated, every field quoted):

- ``annotations_final.csv``: ``clip_id``, 188 binary tag columns, ``mp3_path``;
  25,863 clips. Every clip is one SongRecord (``song_id`` = clip_id), so the
  paper's "50 tags" count of 25,863 is every row of this file.
- ``clip_info_final.csv``: ``clip_id, track_number, title, artist, album, url, ...``.
  Gives the artist and the track a clip was cut from.
- ``magnatagatune.json.gz`` (optional, from jukemir): the commonly used
  train/valid/test split, as ``official_split`` ("valid" -> "validation"). There
  is one such split, so ``official_split`` (the split index) is ignored. Clips
  it leaves out (3 with a known bad mp3) get None.

**Groups.** The paper splits by song, and an MTT song is a track: all clips cut
from one track share ``group = "<artist> / <album> / <track_number>"``, so they
land in the same split. (On the official files this gives 5,405 tracks, the
same partition as Magnatune's album url + track_number.)

**Moods.** MagnaTagATune has no mood list, and the paper's 10,128 songs for
"3 moods" are not reachable with any subset of its tags. Our documented rule:
with ``tag_set="moods"`` (the default) a tag is a mood when it describes how the
music *feels*: its arousal (tempo, loudness, energy) or valence/character, and
not what plays (instruments, voices), its genre, era, language or production.
That gives :data:`MOOD_TAGS` (21 tags); ambiguous words are left out ("low",
"deep" and "hard" also name pitch, voices or genres; "ambient" and "new age"
are genres; "drone", "echo", "noise", "repetitive" describe production).
The top 3 by song count are then slow, fast and loud. With ``tag_set="all"``
every one of the 188 tags is a label, and ``labels.n_moods=50`` reproduces the
usual top-50 tag set (ranked by clip count, ties by name).

Artist comes from clip_info; MagnaTagATune has no year (``year`` None).
Audio is ``<audio_root>/<mp3_path>`` (``audio_root`` "" = the metadata directory).
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Iterator, Optional

from mtlmood.config import DatasetConfig
from mtlmood.datasets.base import SongRecord, register
from mtlmood.errors import DatasetError

ANNOTATIONS_FILE = "annotations_final.csv"
CLIP_INFO_FILE = "clip_info_final.csv"
SPLIT_FILE = "magnatagatune.json.gz"

# How the music feels (see the module docstring for the rule); ordered by clip count.
MOOD_TAGS: tuple[str, ...] = (
    "slow",
    "fast",
    "loud",
    "quiet",
    "soft",
    "weird",
    "heavy",
    "upbeat",
    "dark",
    "spacey",
    "strange",
    "calm",
    "mellow",
    "fast beat",
    "sad",
    "airy",
    "eerie",
    "light",
    "scary",
    "happy",
    "quick",
)
_SPLIT_NAMES = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty row, header included."""
    if not path.is_file():
        raise DatasetError(
            f"MagnaTagATune file not found: {path} "
            f"(dataset.root must be the folder holding {ANNOTATIONS_FILE} and {CLIP_INFO_FILE})"
        )
    # newline="" lets the csv module handle the files' CRLF endings and quoted fields.
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row in reader:
            if row:
                yield reader.line_num, row


def _read_clip_info(path: Path) -> dict[str, dict[str, str]]:
    """clip_id -> the clip_info row as a dict (only the columns we use are required)."""
    rows = _rows(path)
    first = next(rows, None)
    if first is None:
        raise DatasetError(f"{path}: file is empty")
    header = first[1]
    required = ("clip_id", "track_number", "title", "artist", "album")
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(f"{path}:{first[0]}: missing column(s) {', '.join(missing)}")
    info: dict[str, dict[str, str]] = {}
    for number, row in rows:
        if len(row) != len(header):
            raise DatasetError(f"{path}:{number}: {len(row)} fields, header has {len(header)}")
        record = dict(zip(header, row))
        info[record["clip_id"]] = record
    return info


def _read_official_split(path: Path) -> dict[str, str]:
    """clip_id -> "train"/"validation"/"test" from jukemir's metadata; {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the split file: {exc}") from None
    membership: dict[str, str] = {}
    for key, entry in data.items():
        split = entry.get("split")
        if split is None:
            continue
        if split not in _SPLIT_NAMES:
            raise DatasetError(f"{path}: clip {key} has unknown split {split!r}")
        clip_id = str(entry.get("extra", {}).get("clip_id") or int(key))
        membership[clip_id] = _SPLIT_NAMES[split]
    return membership


@register("magnatagatune")
class MagnaTagATune:
    """Adapter for MagnaTagATune's annotations_final.csv + clip_info_final.csv."""

    name = "magnatagatune"

    def load(self, config: DatasetConfig, official_split: int = 0) -> list[SongRecord]:
        """Every annotated clip (or the first ``config.limit``); ``official_split`` is ignored."""
        root = Path(config.root)
        audio_root = Path(config.audio_root) if config.audio_root else root
        annotations = root / ANNOTATIONS_FILE
        clip_info = _read_clip_info(root / CLIP_INFO_FILE)
        membership = _read_official_split(root / SPLIT_FILE)

        rows = _rows(annotations)
        header = next(rows, (1, []))[1]
        if not header or header[0] != "clip_id" or header[-1] != "mp3_path":
            raise DatasetError(f"{annotations}:1: expected columns clip_id, <tags...>, mp3_path")
        tag_names = header[1:-1]
        wanted: Optional[set[str]] = None if config.tag_set == "all" else set(MOOD_TAGS)
        columns = [(i + 1, name) for i, name in enumerate(tag_names) if wanted is None or name in wanted]

        records: list[SongRecord] = []
        seen: set[str] = set()
        for number, row in rows:
            where = f"{annotations}:{number}"
            if len(row) != len(header):
                raise DatasetError(f"{where}: {len(row)} fields, header has {len(header)}")
            clip_id, mp3_path = row[0], row[-1]
            if clip_id in seen:
                raise DatasetError(f"{where}: clip_id {clip_id} appears twice")
            seen.add(clip_id)
            tags = []
            for index, name in columns:
                value = row[index]
                if value == "1":
                    tags.append(name)
                elif value != "0":
                    raise DatasetError(f"{where}: tag column {name!r} holds {value!r}, expected 0 or 1")
            info = clip_info.get(clip_id)
            if info is None:
                raise DatasetError(f"{where}: clip_id {clip_id} has no row in {root / CLIP_INFO_FILE}")
            records.append(
                SongRecord(
                    song_id=clip_id,
                    audio_path=audio_root / mp3_path,
                    tags=tuple(tags),
                    artist=info["artist"] or None,
                    year=None,
                    group=f"{info['artist']} / {info['album']} / {info['track_number']}",
                    official_split=membership.get(clip_id),
                )
            )
            if config.limit and len(records) >= config.limit:
                break
        return records
