"""The part files of a batch output, where finished tracks wait for the final merge: writing
them, finding them, and what a resuming run reads of them (the key column, nothing else).

    sources = open_sources(parts_dir, first=[final_output])   # one listing, one pyarrow dataset
    check_model(sources, mood_names, checkpoint_id)           # Parquet footers only
    done = done_keys(sources, retry_failed=False)             # columns=[path]: a few MB per million rows
    buffer = PartBuffer(parts_dir, mood_names, part_rows=10_000)
    buffer.add(records); buffer.flush()                       # one part per >= part_rows rows

Layout of ``<output>.parts/``: ``part-<stamp>-<pid>-<n>.parquet`` from the local path,
``ray-<stamp>/*.parquet`` from the Ray Data path, names starting with ``_`` or ``.`` are
scratch (a merge's temp file, a converted earlier output) and never parts. Every part is
complete or absent: a local part is written to a temp file and renamed, an object is
visible only when its upload completes; a part that does not read as Parquet (a Ray write
task killed mid-file on a local disk) is left out by the discovery (``exclude_invalid_files``)
and its tracks are scored again.

Why the listing is one call: the parts of a million tracks were 15,600 files (62,500 on
the Ray path), each found by a recursive glob and stat-ed for its time. Now parts hold at
least ``PART_ROWS`` rows (~100 files per million tracks) and one ``FileSelector`` listing
gives every name, size and time at once (one LIST request per 1,000 objects on S3).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

from mtlmood.errors import ConfigError
from mtlmood.records import ERROR_FIELD, KEY_FIELD, arrow_schema, mood_names_of, to_table
from mtlmood.storage import filesystem, is_uri, join, makedirs

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs

PART_ROWS = 10_000  # rows per part file (at least; the last part of a run may hold fewer)
PART_SECONDS = 600.0  # ... or fewer, when this long has passed: a kill loses at most this much work
ROW_GROUP_ROWS = 32_768  # rows per Parquet row group: what a merge holds of one file at a time
SCRATCH_PREFIXES = ("_", ".")  # names in the parts folder that are not parts
CHECKPOINT_FIELD = "checkpoint_id"
# Writer settings of parts: dictionaries only where values repeat (a dictionary of unique
# paths costs time and saves nothing), min/max statistics only where a reader uses them
# (the checkpoint check reads them instead of the column): 3x faster to write than
# pyarrow's defaults. LZ4: parts are read back by the merge alone, and 4x faster to read
# than Snappy (random-like probabilities barely compress either way; benchmarks/README.md).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "lz4",
    "use_dictionary": [CHECKPOINT_FIELD, ERROR_FIELD, "top.list.element.mood"],
    "write_statistics": [CHECKPOINT_FIELD],
}
# The merged output is read by everyone's tools: Snappy, which every Parquet reader knows.
OUTPUT_OPTIONS: dict[str, Any] = {**PARQUET_OPTIONS, "compression": "snappy"}


# ------------------------------------------------------------------ finding parts


def _is_part(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and not name.startswith(SCRATCH_PREFIXES)


def list_parts(parts_dir: str) -> list["pyarrow.fs.FileInfo"]:
    """Every part below ``parts_dir``, oldest first (by time, then name), from one listing."""
    import pyarrow.fs

    fs, root = filesystem(parts_dir)
    selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
    infos = [i for i in fs.get_file_info(selector) if i.type == pyarrow.fs.FileType.File and _is_part(i.path)]
    return sorted(infos, key=lambda info: (info.mtime_ns or 0, info.path))


@dataclass
class Sources:
    """The Parquet files a resume reads keys from and a merge reads rows from, in age order
    (an earlier final output first, then the parts, oldest first), as one pyarrow dataset."""

    dataset: "ds.FileSystemDataset"
    fragments: list["ds.ParquetFileFragment"] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.fragments


def open_sources(parts_dir: str, mood_names: Sequence[str], first: Sequence[str] = ()) -> Sources:
    """The dataset of ``first`` (locations of Parquet files that exist, e.g. the final output)
    and every readable part below ``parts_dir``, with the batch schema of ``mood_names``."""
    import pyarrow.dataset as ds
    import pyarrow.fs

    fs, _ = filesystem(parts_dir)
    head = [fs.get_file_info(filesystem(location)[1]) for location in first]
    infos = [i for i in head if i.type == pyarrow.fs.FileType.File] + list_parts(parts_dir)
    options = ds.FileSystemFactoryOptions(exclude_invalid_files=True)  # a half-written part is no part
    factory = ds.FileSystemDatasetFactory(fs, infos, ds.ParquetFileFormat(), options)
    dataset = factory.finish(arrow_schema(mood_names))
    kept = set(dataset.files)
    for location, info in zip(first, head):
        if info.type == pyarrow.fs.FileType.File and info.path not in kept:  # a part may be cut short, not these
            raise ConfigError(
                f"cannot read the existing output {location} to resume (not a Parquet file); "
                "move it away or choose another --output"
            )
    return Sources(dataset, list(dataset.get_fragments()))


def check_model(
    sources: Sources, mood_names: Sequence[str], checkpoint_id: str, labels: Optional[dict[str, str]] = None
) -> None:
    """ConfigError when a source holds other mood labels or another checkpoint's rows
    (``labels``: what to call a source in the message, by its path, e.g. the output it was
    converted from).

    Reads Parquet footers only: the schema's mood fields, and the min/max statistics of
    ``checkpoint_id`` (written for that column on purpose); a file without them (written
    by other code) has that one column read instead.
    """
    import pyarrow.compute as pc

    for fragment in sources.fragments:
        label = (labels or {}).get(fragment.path, fragment.path)
        moods = mood_names_of(fragment.physical_schema)
        if moods != list(mood_names):
            raise ConfigError(f"{label} holds other mood labels ({', '.join(moods)}); choose another --output")
        metadata = fragment.metadata
        column = metadata.schema.names.index(CHECKPOINT_FIELD)
        seen: set[Any] = set()
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                values = fragment.subset(row_group_ids=[group]).to_table(columns=[CHECKPOINT_FIELD]).column(0)
                seen.update(pc.unique(values.drop_null()).to_pylist())
            else:
                seen.update((stats.min, stats.max))
        other = sorted(str(s) for s in seen - {"", checkpoint_id})
        if other:
            raise ConfigError(
                f"{label} holds predictions of another checkpoint ({other[0]} != {checkpoint_id}); "
                "choose another --output"
            )


def done_keys(sources: Sources, retry_failed: bool = False) -> "pa.ChunkedArray":
    """The keys (``path``) already in the sources: every row's, or with ``retry_failed``
    only scored rows'. Reads the key column alone (the error column only as a filter)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if sources.empty:
        return pa.chunked_array([], pa.string())
    where = ds.field(ERROR_FIELD).is_null() if retry_failed else None
    return sources.dataset.to_table(columns=[KEY_FIELD], filter=where).column(KEY_FIELD)


def todo_of(tracks: Sequence[str], done: "pa.ChunkedArray") -> list[str]:
    """The tracks (in order) whose key is not in ``done``, compared in Arrow, not in a Python set."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(done) or not tracks:
        return list(tracks)
    present = pc.is_in(pa.array(tracks, pa.string()), value_set=done.combine_chunks())
    mask = np.asarray(present.to_numpy(zero_copy_only=False), dtype=bool)
    del present
    pa.default_memory_pool().release_unused()  # the hash table's pages, before the run needs memory
    return [track for track, there in zip(tracks, mask) if not there]


# ------------------------------------------------------------------ writing parts


def write_parquet(table: "pa.Table", location: str) -> None:
    """Write ``table`` to ``location`` as a complete file or not at all (local: temp + fsync
    + rename; object store: one upload, visible when it completes)."""
    import pyarrow.parquet as pq

    fs, path = filesystem(location)
    if is_uri(location):
        pq.write_table(table, path, filesystem=fs, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
        return
    makedirs(os.path.dirname(path))
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class PartBuffer:
    """Finished rows of one run, held as Arrow tables until there are ``part_rows`` of them
    (or ``part_seconds`` have passed since the last part), then written as one part."""

    def __init__(
        self,
        parts_dir: str,
        mood_names: Sequence[str],
        part_rows: int = PART_ROWS,
        part_seconds: float = PART_SECONDS,
    ) -> None:
        self.parts_dir = parts_dir
        self.mood_names = list(mood_names)
        self.part_rows = max(1, int(part_rows))
        self.part_seconds = part_seconds
        # Time first (names sort by age), then what makes two buffers of one second differ.
        self.stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{secrets.token_hex(3)}"
        self.written: list[str] = []  # locations of the parts written so far
        self._tables: list["pa.Table"] = []
        self._rows = 0
        self._since = time.monotonic()

    @property
    def pending(self) -> int:
        """Rows held, not yet in a part."""
        return self._rows

    def add(self, records: Sequence[dict[str, Any]]) -> Optional[str]:
        """Hold finished rows (mtlmood.records batch rows); the part written when one is due."""
        if records:
            self._tables.append(to_table(records, self.mood_names))
            self._rows += len(records)
        if self._rows >= self.part_rows or (self._rows and time.monotonic() - self._since >= self.part_seconds):
            return self.flush()
        return None

    def flush(self) -> Optional[str]:
        """Write what is held as one part (None when nothing is)."""
        import pyarrow as pa

        self._since = time.monotonic()
        if not self._rows:
            return None
        table = pa.concat_tables(self._tables)
        location = join(self.parts_dir, f"part-{self.stamp}-{len(self.written) + 1:05d}.parquet")
        write_parquet(table, location)
        self.written.append(location)
        self._tables, self._rows = [], 0
        return location


__all__ = [
    "OUTPUT_OPTIONS",
    "PARQUET_OPTIONS",
    "PART_ROWS",
    "PART_SECONDS",
    "ROW_GROUP_ROWS",
    "PartBuffer",
    "Sources",
    "check_model",
    "done_keys",
    "list_parts",
    "open_sources",
    "todo_of",
    "write_parquet",
]
