"""The final merge of a batch output, streamed: parts (and an earlier output) in, one file
out, one track per row in input order, never the whole table in memory.

    result = merge(sources, order=tracks, target="moods.parquet", fmt="parquet",
                   mood_names=..., scratch_dir="moods.parquet.parts")

1. **Plan** from two columns: the key and the error of every source row (a million rows:
   ~70 MB of Arrow, not 6 GB of Python dicts). A track in several rows keeps one: a
   scored row beats a failure, otherwise the later row wins (sources are in age order).
   The kept rows are sorted by their track's position in ``order`` (tracks not in it,
   rows of an earlier run, come first, in their old order).
2. **Gather** the kept rows window by window (``WINDOW_ROWS``), reading whole Parquet row
   groups through a small LRU cache (``CACHE_BYTES``): parts written in input order are
   read once each, whatever the order a Ray job finished them in.
3. **Write** each window as it is ready: Parquet through one ``ParquetWriter`` (a row
   group per window), CSV and JSON Lines a few thousand rows at a time. The file is
   published whole: a local file is written beside the target and renamed; on an object
   store it is uploaded under the parts folder and copied into place (S3's copy of one
   object: up to 5 GB), so a reader never sees half an output.

Earlier outputs in CSV or JSON Lines are first converted to a Parquet source
(``convert_previous``, streamed the same way).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from mtlmood.batch_parts import OUTPUT_OPTIONS, PARQUET_OPTIONS, ROW_GROUP_ROWS, Sources
from mtlmood.errors import ConfigError
from mtlmood.records import ERROR_FIELD, KEY_FIELD, arrow_schema, flat_row, nested_row, to_table
from mtlmood.storage import filesystem, is_uri, join, makedirs, name, parent

if TYPE_CHECKING:
    import pyarrow as pa

WINDOW_ROWS = ROW_GROUP_ROWS  # output rows gathered and written at a time (one row group)
CACHE_BYTES = 128 << 20  # row groups kept decoded while gathering (about 20 parts of 10,000 rows at 50 moods)
TEXT_ROWS = 2_048  # rows turned into CSV / JSON text at a time (Python objects: ~6 KB a row)


@dataclass
class MergeResult:
    """What a merge wrote: its rows, and (path, reason) of every failure row, in output order."""

    rows: int
    failures: list[tuple[str, str]]


# ------------------------------------------------------------------ the plan


@dataclass
class _Plan:
    unit: np.ndarray  # row group (global index over all sources) of each output row, in output order
    row: np.ndarray  # the row within that row group
    failures: list[tuple[str, str]]


def _plan(sources: Sources, order: Sequence[str]) -> _Plan:
    """Which source row becomes which output row (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index = {fragment.path: i for i, fragment in enumerate(sources.fragments)}
    keys: list[Any] = []
    errors: list[Any] = []
    seqs: list[np.ndarray] = []
    seen = [0] * len(sources.fragments)
    for tagged in sources.dataset.scanner(columns=[KEY_FIELD, ERROR_FIELD]).scan_batches():
        batch, i = tagged.record_batch, index[tagged.fragment.path]
        n = batch.num_rows
        keys.append(batch.column(0))
        errors.append(batch.column(1))
        # Age order = (source, row): one int64 that sorts the same way.
        seqs.append((np.int64(i) << 32) | np.arange(seen[i], seen[i] + n, dtype=np.int64))
        seen[i] += n
    if not seqs:
        empty = np.zeros(0, np.int64)
        return _Plan(empty, empty, [])
    key = pa.chunked_array(keys, pa.string()).combine_chunks()
    error = pa.chunked_array(errors, pa.string()).combine_chunks()
    seq = np.concatenate(seqs)
    scored = np.asarray(pc.is_null(error).to_numpy(zero_copy_only=False), dtype=bool)
    # Each row's track: its position in ``order`` (one hash pass over the keys), and for
    # tracks not in it (rows of an earlier run's inputs) a negative id from a second pass
    # over those rows only. Hashing a million strings twice is most of a plan's time.
    if order:
        found = pc.index_in(key, value_set=pa.array(list(order), pa.string()))
        position = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        position = np.full(len(key), -1, dtype=np.int64)
    track = position.copy()
    outside = np.flatnonzero(position < 0)
    if len(outside):
        codes = pc.dictionary_encode(key.take(pa.array(outside))).indices.to_numpy(zero_copy_only=False)
        track[outside] = -1 - np.asarray(codes, dtype=np.int64)
    # One row per track: sort by (track, scored, age); the last of each track's run wins.
    by_track = np.lexsort((seq, scored, track))
    last = np.ones(len(by_track), dtype=bool)
    last[:-1] = track[by_track[1:]] != track[by_track[:-1]]
    kept = by_track[last]
    # Output order: the position in ``order`` (-1: not in it, first), then age.
    kept = kept[np.lexsort((seq[kept], position[kept]))]
    failed = kept[~scored[kept]]
    failures = list(zip(key.take(pa.array(failed)).to_pylist(), error.take(pa.array(failed)).to_pylist()))
    # Source rows -> (row group, row in it), through each source's row-group sizes (its footer).
    starts, offset = [], 0
    source_offset = np.zeros(len(sources.fragments), dtype=np.int64)
    for i, fragment in enumerate(sources.fragments):
        source_offset[i] = offset
        metadata = fragment.metadata
        for group in range(metadata.num_row_groups):
            starts.append(offset)
            offset += metadata.row_group(group).num_rows
    group_start = np.asarray(starts, dtype=np.int64)
    global_row = source_offset[seq[kept] >> 32] + (seq[kept] & 0xFFFFFFFF)
    unit = np.searchsorted(group_start, global_row, side="right") - 1
    return _Plan(unit, global_row - group_start[unit], failures)


class _RowGroups:
    """Decoded row groups of the sources, least recently used dropped beyond ``limit`` bytes."""

    def __init__(self, sources: Sources, schema: "pa.Schema", limit: Optional[int] = None) -> None:
        self.schema = schema
        self.limit = CACHE_BYTES if limit is None else limit  # read now: a test may change it
        self.where = [
            (fragment, group) for fragment in sources.fragments for group in range(fragment.metadata.num_row_groups)
        ]
        self.cache: OrderedDict[int, "pa.Table"] = OrderedDict()
        self.bytes = 0

    def get(self, unit: int) -> "pa.Table":
        table = self.cache.get(unit)
        if table is not None:
            self.cache.move_to_end(unit)
            return table
        fragment, group = self.where[unit]
        table = fragment.subset(row_group_ids=[group]).to_table(schema=self.schema)
        self.cache[unit] = table
        self.bytes += table.nbytes
        while self.bytes > self.limit and len(self.cache) > 1:
            _, dropped = self.cache.popitem(last=False)
            self.bytes -= dropped.nbytes
        return table


def _runs(unit: np.ndarray, row: np.ndarray) -> Optional[list[tuple[int, int, int]]]:
    """(row group, first row, rows) slices that give the window in order, when it is made of
    consecutive rows of row groups in order (the local path's parts: no copy); else None."""
    if len(unit) > 1 and np.any(np.diff(unit) < 0):
        return None
    runs = []
    for part in np.split(np.arange(len(unit)), np.flatnonzero(np.diff(unit)) + 1):
        rows = row[part]
        if int(rows[-1]) - int(rows[0]) + 1 != len(rows) or (len(rows) > 1 and np.any(np.diff(rows) <= 0)):
            return None
        runs.append((int(unit[part[0]]), int(rows[0]), len(rows)))
    return runs


def _windows(sources: Sources, plan: _Plan, schema: "pa.Schema", window_rows: int) -> Iterator["pa.Table"]:
    """The output rows, ``window_rows`` at a time, in output order."""
    import pyarrow as pa

    groups = _RowGroups(sources, schema)
    for start in range(0, len(plan.unit), window_rows):
        unit, row = plan.unit[start : start + window_rows], plan.row[start : start + window_rows]
        runs = _runs(unit, row)
        if runs is not None:  # zero-copy slices
            yield pa.concat_tables([groups.get(u).slice(first, n) for u, first, n in runs])
            continue
        needed = np.unique(unit)  # the window's row groups, as one table of chunks (no copy) ...
        tables = [groups.get(int(u)) for u in needed]
        offset = np.concatenate([[0], np.cumsum([t.num_rows for t in tables])])[np.searchsorted(needed, unit)]
        yield pa.concat_tables(tables).take(pa.array(offset + row))  # ... and one take into output order


def _read_ahead(windows: Iterator["pa.Table"]) -> Iterator["pa.Table"]:
    """``windows``, the next one gathered in a thread while the caller writes this one
    (reading and writing Parquet both release the GIL: two cores do twice the work)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtlmood-merge") as pool:
        ahead = pool.submit(next, windows, None)
        while True:
            window = ahead.result()
            if window is None:
                return
            ahead = pool.submit(next, windows, None)
            yield window


# ------------------------------------------------------------------ writing the output


class _Target:
    """Where the merged file is written first, and how it is published whole (see the module docstring)."""

    def __init__(self, target: str, scratch_dir: str) -> None:
        self.target = target
        self.remote = is_uri(target)
        if self.remote:
            self.scratch = join(scratch_dir, f"_merge-{os.getpid()}-{name(target)}")
        else:
            folder, base = os.path.split(target)
            makedirs(folder)
            self.scratch = os.path.join(folder, f".{base}.{os.getpid()}.merge.tmp")
        self.fs, self.path = filesystem(self.scratch)

    def open(self) -> Any:
        """A writable binary stream on the scratch file (a pyarrow file: writers stay in C++)."""
        import pyarrow as pa

        return self.fs.open_output_stream(self.path) if self.remote else pa.OSFile(self.path, "wb")

    def publish(self) -> None:
        if self.remote:
            self.fs.move(self.path, filesystem(self.target)[1])
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.path, self.target)

    def discard(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except (FileNotFoundError, OSError):
            pass


def _write_text(stream: Any, windows: Iterator["pa.Table"], fmt: str, mood_names: Sequence[str]) -> int:
    """CSV or JSON Lines rows (mtlmood.records' flat and nested rows), a few thousand at a time."""
    rows = 0
    text = io.StringIO()
    writer: Any = None
    if fmt == "csv":
        writer = csv.DictWriter(text, fieldnames=list(flat_row({KEY_FIELD: ""}, mood_names)), lineterminator="\n")
        writer.writeheader()
    for window in windows:
        for batch in window.to_batches(max_chunksize=TEXT_ROWS):
            records = batch.to_pylist()
            if writer is not None:
                writer.writerows(flat_row(record, mood_names) for record in records)
            else:
                text.writelines(json.dumps(record) + "\n" for record in records)
            rows += len(records)
            stream.write(text.getvalue().encode("utf-8"))
            text.seek(0)
            text.truncate()
    stream.write(text.getvalue().encode("utf-8"))  # the CSV header of an empty output
    return rows


def merge(
    sources: Sources,
    order: Sequence[str],
    target: str,
    fmt: str,
    mood_names: Sequence[str],
    scratch_dir: str,
    window_rows: int = WINDOW_ROWS,
) -> MergeResult:
    """Write every track of ``sources`` once, in ``order``, to ``target`` (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan = _plan(sources, order)
    # The plan's hash tables are gone: give their pages back before the gather needs its own
    # (pyarrow's allocator keeps freed memory for reuse; RSS would carry both peaks).
    pa.default_memory_pool().release_unused()
    schema = arrow_schema(mood_names)
    windows = _read_ahead(_windows(sources, plan, schema, max(1, window_rows)))
    out = _Target(target, scratch_dir)
    try:
        with out.open() as stream:
            if fmt == "parquet":
                with pq.ParquetWriter(stream, schema, **OUTPUT_OPTIONS) as writer:
                    for window in windows:
                        writer.write_table(window, row_group_size=window_rows)
            else:
                _write_text(stream, windows, fmt, mood_names)
        out.publish()
    except BaseException:
        out.discard()
        raise
    return MergeResult(len(plan.unit), plan.failures)


# ------------------------------------------------------------------ an earlier CSV / JSONL output


def _previous_rows(location: str, fmt: str) -> Iterator[tuple[dict[str, Any], Optional[list[str]]]]:
    """(row, the file's mood names when it says them) of a CSV or JSON Lines output, one at a time."""
    fs, path = filesystem(location)
    # Buffered and decoded as it is read: a million-row CSV is never in memory at once.
    with io.TextIOWrapper(io.BufferedReader(fs.open_input_file(path)), encoding="utf-8", newline="") as stream:
        if fmt == "csv":
            reader = csv.DictReader(stream)
            moods = [n[len("moods.") :] for n in reader.fieldnames or [] if n.startswith("moods.")]
            for raw in reader:
                yield nested_row(raw), moods
            return
        for line in stream:
            if line.strip():
                row = json.loads(line)
                yield row, list(row["moods"]) if row.get("moods") else None


def convert_previous(location: str, fmt: str, converted: str, mood_names: Sequence[str], checkpoint_id: str) -> None:
    """Write a CSV / JSON Lines output's rows to ``converted`` as Parquet (published whole),
    checking they are this model's (ConfigError otherwise, or when the file cannot be read)."""
    import pyarrow.parquet as pq

    out = _Target(converted, parent(converted))
    batch: list[dict[str, Any]] = []
    try:
        with out.open() as stream, pq.ParquetWriter(stream, arrow_schema(mood_names), **PARQUET_OPTIONS) as writer:
            for row, moods in _previous_rows(location, fmt):
                if moods is not None and moods != list(mood_names):
                    raise ConfigError(
                        f"{location} holds other mood labels ({', '.join(moods)}); choose another --output"
                    )
                if row.get("checkpoint_id") not in (None, "", checkpoint_id):
                    raise ConfigError(
                        f"{location} holds predictions of another checkpoint "
                        f"({row['checkpoint_id']} != {checkpoint_id}); choose another --output"
                    )
                batch.append(row)
                if len(batch) >= TEXT_ROWS:
                    writer.write_table(to_table(batch, mood_names))
                    batch = []
            writer.write_table(to_table(batch, mood_names))
        out.publish()
    except ConfigError:
        out.discard()
        raise
    except Exception as exc:  # any reader's error: the file is not ours or is damaged
        out.discard()
        raise ConfigError(
            f"cannot read the existing output {location} to resume ({type(exc).__name__}: {exc}); "
            "move it away or choose another --output"
        ) from None


__all__ = ["CACHE_BYTES", "TEXT_ROWS", "WINDOW_ROWS", "MergeResult", "convert_previous", "merge"]
