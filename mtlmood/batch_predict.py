"""Batch prediction to a file: inputs -> tracks, a resumable output, the local scoring loop.

    tracks = resolve_inputs(["music/", "extra/*.flac", "list.csv"])   # absolute paths, in order
    output = BatchOutput(Path("moods.parquet"), card.mood_names, card.checkpoint_id)
    todo = output.todo(tracks)                    # tracks not already in the output (or its parts)
    score_to_output(predictor, todo, output)      # parts written every `chunk_size` tracks
    output.finalize(tracks)                       # merge -> moods.parquet (atomic), parts removed

Resumability: finished tracks go to ``<output>.parts/`` as Parquet part files, each written
atomically (temp file + rename), so a kill loses at most the tracks of the chunk in flight
and never leaves a file that reads half-written. A re-run reads the final output (if any)
and every readable part, skips the tracks already there, and merges all of it into the
final file, written atomically, before removing the parts. The Ray Data path (catalog/)
writes its parts into the same folder and finishes with the same ``finalize``.

Failures never stop a run: a track that cannot be scored is a row with an ``error`` (its
prediction fields empty), listed again in ``<output>.failures.csv`` next to the
output. A re-run does not retry them unless asked (``retry_failed``). Rows follow the
schema of mtlmood.records (the HTTP answer's fields).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

from mtlmood.errors import AudioDecodeError, ConfigError
from mtlmood.fileio import atomic_write_bytes, atomic_write_text
from mtlmood.records import ERROR_FIELD, KEY_FIELD, batch_record, failure_record, flat_row, nested_row

if TYPE_CHECKING:
    from mtlmood.inference import Prediction, Predictor

# What a folder or a glob contributes (libsndfile decodes all of these; an explicitly named
# file is taken whatever its suffix).
AUDIO_SUFFIXES = frozenset({".mp3", ".ogg", ".oga", ".opus", ".flac", ".wav", ".aif", ".aiff"})
OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
MANIFEST_SUFFIX = ".csv"
MANIFEST_COLUMN = "path"
PARTS_SUFFIX = ".parts"
CHUNK_SIZE = 64  # tracks per part file of the local path ...
CHUNK_SECONDS = 60.0  # ... or fewer, when this long has passed since the last part

PathText = Union[str, "os.PathLike[str]"]


# ------------------------------------------------------------------ inputs


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


def _absolute(path: PathText) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def read_manifest(path: Path) -> list[str]:
    """The ``path`` column of a CSV manifest; relative paths are relative to the manifest's folder."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if MANIFEST_COLUMN not in (reader.fieldnames or []):
                raise ConfigError(f"manifest {path} has no {MANIFEST_COLUMN!r} column (columns: {reader.fieldnames})")
            entries = [(row.get(MANIFEST_COLUMN) or "").strip() for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from None
    return [_absolute(path.parent / entry) for entry in entries if entry]


def resolve_inputs(inputs: Sequence[PathText]) -> list[str]:
    """Absolute paths of the tracks named by ``inputs``, in order, each once.

    An input is a file (taken whatever its suffix; ``.csv`` = a manifest with a ``path``
    column), a folder (its audio files, recursively, sorted), or a glob (``*``, ``?``, ``[``;
    ``**`` recurses; its audio files). A missing path with an audio suffix is kept: it becomes
    a "file not found" failure. ConfigError for any other input that names nothing, and when
    there are no tracks at all.
    """
    tracks: dict[str, None] = {}  # ordered set
    for raw in inputs:
        text = os.path.expanduser(os.fspath(raw))
        path = Path(text)
        if path.is_dir():
            found = [p for p in path.rglob("*") if _is_audio(p) and p.is_file()]
            tracks.update((_absolute(p), None) for p in sorted(found))
        elif path.is_file():
            entries = read_manifest(path) if path.suffix.lower() == MANIFEST_SUFFIX else [_absolute(path)]
            tracks.update((entry, None) for entry in entries)
        elif glob.has_magic(text):
            matches = (Path(m) for m in sorted(glob.glob(text, recursive=True)))
            for match in matches:
                found = sorted(p for p in match.rglob("*") if _is_audio(p) and p.is_file()) if match.is_dir() else []
                found = found or ([match] if match.is_file() and _is_audio(match) else [])
                tracks.update((_absolute(p), None) for p in found)
        elif _is_audio(path):
            tracks[_absolute(path)] = None  # reported as "file not found", like any unreadable track
        else:
            raise ConfigError(f"input not found: {text} (not a file, a folder or a glob that matches)")
    if not tracks:
        raise ConfigError(f"no audio files found in {', '.join(os.fspath(i) for i in inputs)}")
    return list(tracks)


# ------------------------------------------------------------------ scoring


def iter_predictions(
    predictor: "Predictor", paths: Sequence[str], top_k: int = 3, workers: int = 1
) -> Iterator[tuple[str, Optional["Prediction"], Optional[str]]]:
    """(path, prediction, None) or (path, None, reason) for every path, in order.

    ``Predictor.predict_files`` (decode-ahead threads, segments of several files per
    forward) stops at the first file it cannot decode; this resumes it after that file,
    so one bad file costs a failure row, not the run.
    """
    remaining = list(paths)
    while remaining:
        done = 0
        try:
            for prediction in predictor.predict_files(remaining, top_k=top_k, workers=workers):
                yield remaining[done], prediction, None
                done += 1
            return
        except AudioDecodeError as exc:
            rest = remaining[done:]
            bad = next((i for i, p in enumerate(rest) if p == exc.source), 0)
            # The files before the bad one were decoded but not yet scored: score them first (in order).
            yield from iter_predictions(predictor, rest[:bad], top_k, workers)
            yield rest[bad], None, exc.reason
            remaining = rest[bad + 1 :]


# ------------------------------------------------------------------ the output


def output_format(path: PathText) -> str:
    """ "parquet", "csv" or "jsonl" from the output's suffix (ConfigError for any other)."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise ConfigError(f"unknown output format {suffix or '(no suffix)'!r} of {path}: use {known}")
    return OUTPUT_FORMATS[suffix]


def _read_parquet_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    import pyarrow.parquet as pq

    from mtlmood.records import mood_names_of

    table = pq.read_table(path)
    return table.to_pylist(), mood_names_of(table.schema)


def _read_records(path: Path, fmt: str) -> tuple[list[dict[str, Any]], Optional[list[str]]]:
    """(rows, mood names or None when the file does not say) of a finished output file."""
    if fmt == "parquet":
        return _read_parquet_records(path)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        scored = next((r["moods"] for r in rows if r.get("moods")), None)
        return rows, list(scored) if scored else None
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        moods = [name[len("moods.") :] for name in reader.fieldnames or [] if name.startswith("moods.")]
        return [nested_row(row) for row in reader], moods


@dataclass
class BatchSummary:
    """What a finished batch run wrote."""

    output: Path
    rows: int
    failures: list[tuple[str, str]]  # (path, reason) of every failure row in the output
    failures_file: Optional[Path]  # None when there are none

    @property
    def failed(self) -> int:
        return len(self.failures)


@dataclass
class BatchOutput:
    """The output file of a batch run and its part files (see the module docstring)."""

    path: Path
    mood_names: Sequence[str]
    checkpoint_id: str
    format: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(_absolute(self.path))
        self.format = output_format(self.path)
        if self.path.is_dir():
            known = ", ".join(OUTPUT_FORMATS)
            raise ConfigError(f"--output {self.path} is a folder; give a file name ending in {known}")
        self._stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self._parts_written = 0

    @property
    def parts_dir(self) -> Path:
        """Where finished tracks wait for the final merge (removed by ``finalize``)."""
        return self.path.with_name(self.path.name + PARTS_SUFFIX)

    @property
    def failures_path(self) -> Path:
        """``<output>.failures.csv`` (moods.parquet.failures.csv): path and reason of every track not scored."""
        return self.path.with_name(self.path.name + ".failures.csv")

    def staging_dir(self) -> Path:
        """A fresh folder under the parts folder for another writer's part files (the Ray Data path)."""
        return self.parts_dir / f"ray-{self._stamp}"

    # -------------------------------------------------------------- reading what exists

    def _part_files(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(self.parts_dir.rglob("*.parquet"), key=lambda p: (p.stat().st_mtime_ns, str(p)))

    def existing(self) -> list[dict[str, Any]]:
        """Rows already written (final output first, then parts, oldest first), one per path:
        a scored row beats a failure, otherwise the later row wins. Part files that cannot be
        read (a writer killed mid-file) are ignored; ConfigError when the rows were written by
        another model."""
        rows: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                found, moods = _read_records(self.path, self.format)
            except Exception as exc:  # any reader's error: the file is not ours or is damaged
                raise ConfigError(
                    f"cannot read the existing output {self.path} to resume ({type(exc).__name__}: {exc}); "
                    "move it away or choose another --output"
                ) from None
            self._check_model(moods, self.path)
            rows.extend(found)
        for part in self._part_files():
            try:
                found, moods = _read_parquet_records(part)
            except Exception:  # unreadable = never finished (Parquet's footer is written last)
                continue
            self._check_model(moods, part)
            rows.extend(found)
        for row in rows:
            if row.get("checkpoint_id") not in (None, "", self.checkpoint_id):
                raise ConfigError(
                    f"{self.path} (or its parts) holds predictions of another checkpoint "
                    f"({row['checkpoint_id']} != {self.checkpoint_id}); choose another --output"
                )
        merged: dict[str, dict[str, Any]] = {}
        for row in rows:
            key = row[KEY_FIELD]
            if key in merged and merged[key].get(ERROR_FIELD) is None and row.get(ERROR_FIELD) is not None:
                continue
            merged[key] = row
        return list(merged.values())

    def _check_model(self, moods: Optional[Sequence[str]], source: Path) -> None:
        if moods is not None and list(moods) != list(self.mood_names):
            raise ConfigError(f"{source} holds other mood labels ({', '.join(moods)}); choose another --output")

    def todo(self, tracks: Sequence[str], retry_failed: bool = False) -> list[str]:
        """The tracks (in order) not already in the output; with ``retry_failed``, failures too."""
        done = {r[KEY_FIELD] for r in self.existing() if not (retry_failed and r.get(ERROR_FIELD) is not None)}
        return [t for t in tracks if t not in done]

    # -------------------------------------------------------------- writing

    def write_part(self, records: Sequence[dict[str, Any]]) -> Optional[Path]:
        """Write finished rows as one part file, atomically; None when there are none."""
        if not records:
            return None
        import pyarrow.parquet as pq

        from mtlmood.records import to_table

        buffer = io.BytesIO()
        pq.write_table(to_table(records, self.mood_names), buffer)
        self._parts_written += 1
        part = self.parts_dir / f"part-{self._stamp}-{self._parts_written:05d}.parquet"
        atomic_write_bytes(part, buffer.getvalue())
        return part

    def finalize(self, order: Sequence[str] = ()) -> BatchSummary:
        """Merge the final output and every part into the final output (atomically), write or
        remove the failures file, then remove the parts. Rows of ``order``'s paths follow its
        order, after any older rows of other paths."""
        rows = self.existing()
        position = {path: i for i, path in enumerate(order)}
        rows.sort(key=lambda r: position.get(r[KEY_FIELD], -1))  # stable: older rows keep their order
        self._write_final(rows)
        failures = [r for r in rows if r.get(ERROR_FIELD) is not None]
        if failures:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow([KEY_FIELD, ERROR_FIELD])
            writer.writerows([r[KEY_FIELD], r[ERROR_FIELD]] for r in failures)
            atomic_write_text(self.failures_path, text.getvalue())
        else:
            self.failures_path.unlink(missing_ok=True)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return BatchSummary(
            self.path,
            len(rows),
            [(r[KEY_FIELD], r[ERROR_FIELD]) for r in failures],
            self.failures_path if failures else None,
        )

    def _write_final(self, rows: Sequence[dict[str, Any]]) -> None:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            from mtlmood.records import to_table

            buffer = io.BytesIO()
            pq.write_table(to_table(rows, self.mood_names), buffer)
            atomic_write_bytes(self.path, buffer.getvalue())
        elif self.format == "jsonl":
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in rows))
        else:
            text = io.StringIO()
            flat = [flat_row(row, self.mood_names) for row in rows]
            columns = list(flat_row({KEY_FIELD: ""}, self.mood_names))
            writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(flat)
            atomic_write_text(self.path, text.getvalue())


# ------------------------------------------------------------------ the local run


def score_to_output(
    predictor: "Predictor",
    paths: Sequence[str],
    output: BatchOutput,
    top_k: int = 3,
    workers: int = 1,
    chunk_size: int = CHUNK_SIZE,
    chunk_seconds: float = CHUNK_SECONDS,
    on_track: Optional[Callable[[str, Optional[str]], None]] = None,
) -> tuple[int, int]:
    """Score ``paths`` with ``predictor`` into part files of ``output``; (scored, failed).

    A part is written every ``chunk_size`` tracks or ``chunk_seconds``, and on the way out
    of an interrupted run (Ctrl-C), so a re-run redoes at most one chunk after a kill.
    ``on_track(path, error)`` is called after each track (a progress bar).
    """
    checkpoint_id = predictor.card.checkpoint_id
    pending: list[dict[str, Any]] = []
    scored = failed = 0
    last = time.monotonic()
    try:
        for path, prediction, error in iter_predictions(predictor, paths, top_k, workers):
            if prediction is not None:
                pending.append(batch_record(path, prediction, checkpoint_id))
                scored += 1
            else:
                pending.append(failure_record(path, error or "", checkpoint_id))
                failed += 1
            if on_track is not None:
                on_track(path, error)
            if len(pending) >= chunk_size or time.monotonic() - last >= chunk_seconds:
                output.write_part(pending)
                pending, last = [], time.monotonic()
    finally:
        output.write_part(pending)
    return scored, failed
