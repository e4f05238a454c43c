"""Your own dataset ("internal" in the paper): a CSV or TSV manifest, one song a row.

``DatasetConfig.root`` is the manifest file, or a folder holding ``manifest.csv``
(or ``manifest.tsv``). The first row is a header; column names are matched
case-insensitively and may come in any order:

=========== ========= ==========================================================
column      required  meaning
=========== ========= ==========================================================
path        yes       audio file; relative paths are resolved against
                      ``dataset.audio_root``, or the manifest's folder when that is ""
moods       yes       mood tags separated by ``;`` or ``|`` (may be empty: such a
                      song is dropped when labels are built)
artist      no        artist name or id (empty = unknown)
year        no        release year, an integer like ``2005`` (empty = unknown)
song_id     no        unique id; default = the path as written
group       no        songs with the same group stay in one split (default: none)
split       no        a split shipped with the data: train / validation (or valid,
                      val) / test, empty = none (used by ``split.method=official``)
=========== ========= ==========================================================

The delimiter is a tab for ``.tsv``/``.tab`` files and a comma for ``.csv``;
other extensions are sniffed (comma, tab or semicolon). Quote a field that holds
the delimiter, as CSV does. Errors name the file, the line and the column.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Optional

from mtlmood.config import DatasetConfig
from mtlmood.datasets.base import SongRecord, register
from mtlmood.errors import DatasetError

MANIFEST_NAMES = ("manifest.csv", "manifest.tsv")
REQUIRED_COLUMNS = ("path", "moods")
OPTIONAL_COLUMNS = ("artist", "year", "song_id", "group", "split")
MOOD_SEPARATORS = re.compile(r"[;|]")
_SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation", "test": "test"}


def manifest_path(root: str | Path) -> Path:
    """The manifest file named by ``root`` (a file, or a folder holding manifest.csv/.tsv)."""
    root = Path(root)
    if root.is_dir():
        for name in MANIFEST_NAMES:
            if (root / name).is_file():
                return root / name
        raise DatasetError(f"no manifest in {root}: expected {' or '.join(MANIFEST_NAMES)}")
    if not root.is_file():
        raise DatasetError(f"manifest not found: {root}")
    return root


def _delimiter(path: Path, sample: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    try:
        return csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",\t;").delimiter
    except csv.Error:
        raise DatasetError(f"{path}:1: cannot tell the delimiter; name the file .csv or .tsv") from None


def _parse_year(value: str, where: str) -> Optional[int]:
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)  # "2005.0" comes out of spreadsheets and pandas
    except ValueError:
        raise DatasetError(f"{where}: column year holds {value!r}, expected an integer year like 2005") from None
    if not number.is_integer():
        raise DatasetError(f"{where}: column year holds {value!r}, expected an integer year like 2005")
    return int(number)


def parse_moods(value: str) -> tuple[str, ...]:
    """``"happy; sad|calm"`` -> ``("happy", "sad", "calm")``: stripped, empty parts and repeats dropped."""
    tags: list[str] = []
    for part in MOOD_SEPARATORS.split(value):
        part = part.strip()
        if part and part not in tags:
            tags.append(part)
    return tuple(tags)


def read_manifest(path: Path, audio_root: str = "", limit: int = 0) -> list[SongRecord]:
    """Parse one manifest into SongRecords (see the module docstring for the format)."""
    base = Path(audio_root) if audio_root else path.parent
    with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: tolerate an Excel BOM
        delimiter = _delimiter(path, handle.read(4096))
        handle.seek(0)
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: manifest is empty")
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(
                f"{path}:1: missing required column(s) {', '.join(missing)} "
                f"(header: {', '.join(header)}; delimiter {delimiter!r})"
            )

        def cell(row: list[str], name: str) -> str:
            index = columns.get(name)
            return row[index].strip() if index is not None and index < len(row) else ""

        records: list[SongRecord] = []
        seen: dict[str, int] = {}
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            where = f"{path}:{reader.line_num}"
            if len(row) > len(header):
                raise DatasetError(
                    f"{where}: {len(row)} fields but the header has {len(header)} "
                    f"(quote fields that contain {delimiter!r})"
                )
            raw_path = cell(row, "path")
            if not raw_path:
                raise DatasetError(f"{where}: column path is empty")
            song_id = cell(row, "song_id") or raw_path
            if song_id in seen:
                raise DatasetError(f"{where}: song_id {song_id!r} already appears on line {seen[song_id]}")
            seen[song_id] = reader.line_num
            split_value = cell(row, "split").lower()
            if split_value and split_value not in _SPLITS:
                raise DatasetError(f"{where}: column split holds {split_value!r}, expected train, validation or test")
            audio = Path(raw_path)
            records.append(
                SongRecord(
                    song_id=song_id,
                    audio_path=audio if audio.is_absolute() else base / audio,
                    tags=parse_moods(cell(row, "moods")),
                    artist=cell(row, "artist") or None,
                    year=_parse_year(cell(row, "year"), where),
                    group=cell(row, "group"),
                    official_split=_SPLITS.get(split_value),
                )
            )
            if limit and len(records) >= limit:
                break
    return records


@register("csv")
class CsvManifest:
    """Adapter for a user's own CSV/TSV manifest (path, moods, artist, year, ...)."""

    name = "csv"

    def load(self, config: DatasetConfig, official_split: int = 0) -> list[SongRecord]:
        """Every row of the manifest (or the first ``config.limit``); ``official_split`` is ignored
        (a manifest holds at most one split, in its ``split`` column)."""
        return read_manifest(manifest_path(config.root), config.audio_root, config.limit)
