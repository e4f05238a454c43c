"""Batch prediction to a file: a resumable output, the local scoring loop.

    tracks = resolve_inputs(["music/", "s3://bucket/more/", "list.csv"])   # paths and URIs, in order
    output = BatchOutput("s3://bucket/moods.parquet", card.mood_names, card.checkpoint_id)
    with output.lock():                           # RunDirInUse when another run writes this output
        todo = output.todo(tracks)                # tracks not already in the output (or its parts)
        score_to_output(predictor, todo, output)  # a part file every `part_rows` tracks
        output.finalize(tracks)                   # streamed merge -> moods.parquet (whole), parts removed

Memory stays bounded whatever the catalogue's size: a resume reads the key column of the
output and its parts (mtlmood.batch_parts), the merge streams rows window by window
(mtlmood.batch_merge); rows are never all held as Python objects.

Resumability: finished tracks go to ``<output>.parts/`` as Parquet part files of at least
``part_rows`` rows (or what ``part_seconds`` gathered), each complete or absent, so a kill
loses at most the part in flight. A re-run skips the tracks already in the output or a
part and merges everything into the output, published whole, before removing the parts.
The Ray Data path (catalog/) writes its parts into the same folder and finishes with the
same ``finalize``. One run writes an output at a time (``lock``, mtlmood.runlock).

Locations: inputs, the output and its parts may be local paths or URIs (``s3://``, any
store mtlmood.storage opens). Failures never stop a run: a track that cannot be scored is
a row with an ``error`` (its prediction fields empty; mtlmood.batch_audio says why), listed
again in ``<output>.failures.csv``. A re-run does not retry them unless asked
(``retry_failed``). Rows follow the schema of mtlmood.records (the HTTP answer's fields).
"""

from __future__ import annotations

import collections
import csv
import io
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from mtlmood.batch_audio import failure_reason, track_features
from mtlmood.batch_inputs import AUDIO_SUFFIXES, MANIFEST_COLUMN, MANIFEST_SUFFIX, read_manifest, resolve_inputs
from mtlmood.batch_merge import convert_previous, merge
from mtlmood.batch_parts import (
    PART_ROWS,
    PART_SECONDS,
    PartBuffer,
    Sources,
    check_model,
    done_keys,
    list_parts,
    open_sources,
    todo_of,
)
from mtlmood.errors import ConfigError
from mtlmood.records import ERROR_FIELD, KEY_FIELD, batch_record, failure_record
from mtlmood.storage import exists, is_dir, is_uri, join, location_problem, normalize, remove, write_text

if TYPE_CHECKING:
    from mtlmood.inference import Prediction, Predictor
    from mtlmood.runlock import RunLock

OUTPUT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
PARTS_SUFFIX = ".parts"
LOCK_SUFFIX = ".lock"  # <output>.lock/: the run lock of a local output (mtlmood.runlock)
PREVIOUS_OUTPUT = "_previous-output.parquet"  # in the parts folder: an earlier CSV/JSONL output, as Parquet
RECORD_ROWS = 64  # rows turned into Arrow at a time by the local loop
MIN_BATCH = 32  # segments per forward pass of the local loop (as Predictor.predict_files)


# ------------------------------------------------------------------ scoring


def iter_predictions(
    predictor: "Predictor", paths: Sequence[str], top_k: int = 3, workers: int = 1, min_batch: int = MIN_BATCH
) -> Iterator[tuple[str, Optional["Prediction"], Optional[str]]]:
    """(path, prediction, None) or (path, None, reason) for every path (local or URI), in order.

    ``Predictor.predict_files``'s scheme, with batch decoding (mtlmood.batch_audio: any
    location, only the first seconds read, reasons that name the cause): ``workers``
    threads decode ahead (a bounded look-ahead: memory stays flat however many paths)
    while the network runs, and consecutive files share forward passes of at least
    ``min_batch`` segments. A file that cannot be decoded is a failure, not the end.
    """
    cfg, method = predictor.feature_config, predictor.mel_method

    def load(path: str) -> tuple[Optional[np.ndarray], Optional[str]]:
        try:
            return track_features(path, cfg, method), None
        except Exception as exc:  # one bad file is that file's failure
            return None, failure_reason(exc)

    source = iter(paths)
    ahead: collections.deque[tuple[str, Future]] = collections.deque()
    pending: list[tuple[str, np.ndarray, np.ndarray]] = []  # (path, features, segments) waiting for a forward

    def scored() -> Iterator[tuple[str, Optional["Prediction"], Optional[str]]]:
        songs = predictor.predict_songs([segments for _, _, segments in pending])
        for (path, features, segments), song in zip(pending, songs):
            yield path, predictor.make_prediction(song, len(segments), features.shape[0], top_k), None
        pending.clear()

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mtlmood-batch") as pool:
        while True:
            while len(ahead) < 2 * max(1, workers):
                path = next(source, None)
                if path is None:
                    break
                ahead.append((path, pool.submit(load, path)))
            if not ahead:
                break
            path, future = ahead.popleft()
            features, error = future.result()
            if features is None:
                yield from scored()  # the files before it first: rows stay in input order
                yield path, None, error
                continue
            pending.append((path, features, predictor.segments(features)))
            if sum(len(segments) for _, _, segments in pending) >= min_batch or not ahead:
                yield from scored()
        yield from scored()


# ------------------------------------------------------------------ the output


def output_format(path: Any) -> str:
    """ "parquet", "csv" or "jsonl" from the output's suffix (ConfigError for any other)."""
    suffix = os.path.splitext(normalize(os.fspath(path)).split("?", 1)[0])[1].lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(OUTPUT_FORMATS)
        raise ConfigError(f"unknown output format {suffix or '(no suffix)'!r} of {path}: use {known}")
    return OUTPUT_FORMATS[suffix]


def _sibling(location: str, suffix: str) -> str:
    """``location`` + ``suffix`` (a URI's ?options stay last)."""
    base, mark, query = location.partition("?")
    return base + suffix + mark + query


@dataclass
class BatchSummary:
    """What a finished batch run wrote."""

    output: str  # the output's location (an absolute path or a URI)
    rows: int
    failures: list[tuple[str, str]]  # (path, reason) of every failure row in the output
    failures_file: Optional[str]  # None when there are none

    @property
    def failed(self) -> int:
        return len(self.failures)


class BatchOutput:
    """The output file of a batch run and its part files (see the module docstring).

    ``path`` is a local path or a URI; ``part_rows`` the rows of a part file of the local
    path (the Ray Data path takes it as its files' minimum).
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        mood_names: Sequence[str],
        checkpoint_id: str,
        part_rows: int = PART_ROWS,
    ) -> None:
        text = normalize(os.fspath(path))
        if is_uri(text):
            problem = location_problem(text)
            if problem:
                raise ConfigError(f"--output {text}: {problem}")
        else:
            text = os.path.abspath(os.path.expanduser(text))
        self.path = text
        self.mood_names = list(mood_names)
        self.checkpoint_id = checkpoint_id
        self.part_rows = part_rows
        self.format = output_format(text)
        if is_dir(text):
            known = ", ".join(OUTPUT_FORMATS)
            raise ConfigError(f"--output {text} is a folder; give a file name ending in {known}")
        self._stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"

    @property
    def parts_dir(self) -> str:
        """Where finished tracks wait for the final merge (removed by ``finalize``)."""
        return _sibling(self.path, PARTS_SUFFIX)

    @property
    def failures_path(self) -> str:
        """``<output>.failures.csv`` (moods.parquet.failures.csv): path and reason of every track not scored."""
        return _sibling(self.path, ".failures.csv")

    def lock_dir(self) -> Path:
        """The folder of this output's run lock: ``<output>.lock/`` beside a local output; for
        a URI a local folder keyed on it (mtlmood.remote_cache.lock_directory: one machine)."""
        if is_uri(self.path):
            from mtlmood.remote_cache import lock_directory

            return lock_directory(self.path)
        return Path(self.path + LOCK_SUFFIX)

    @contextmanager
    def lock(self, command: Optional[str] = None) -> Iterator["RunLock"]:
        """Hold the run lock of this output: a second run on it is refused with RunDirInUse
        naming the first; a dead holder's lock is taken over (mtlmood.runlock)."""
        from mtlmood.runlock import RunLock

        folder = self.lock_dir()
        with RunLock(folder, command=command) as held:
            yield held
        if not is_uri(self.path):
            try:
                folder.rmdir()  # when empty: a killed run's folder, taken over, goes too
            except OSError:
                pass

    def staging_dir(self) -> str:
        """A fresh folder under the parts folder for another writer's part files (the Ray Data path)."""
        return join(self.parts_dir, f"ray-{self._stamp}")

    # -------------------------------------------------------------- reading what exists

    def _first_sources(self) -> list[str]:
        """The final output as a Parquet source, when there is one (a CSV/JSONL one converted)."""
        if not exists(self.path):
            return []
        if self.format == "parquet":
            return [self.path]
        converted = join(self.parts_dir, PREVIOUS_OUTPUT)
        if not _newer(converted, self.path):  # once per output file: todo() and finalize() both read it
            convert_previous(self.path, self.format, converted, self.mood_names, self.checkpoint_id)
        return [converted]

    def sources(self) -> Sources:
        """The output and its readable parts as one dataset, checked to be this model's rows
        (ConfigError otherwise); unreadable parts (cut short by a kill) are left out."""
        from mtlmood.storage import filesystem

        first = self._first_sources()
        sources = open_sources(self.parts_dir, self.mood_names, first=first)
        # Problems of a converted CSV/JSONL output are the output's.
        check_model(sources, self.mood_names, self.checkpoint_id, {filesystem(f)[1]: self.path for f in first})
        return sources

    def todo(self, tracks: Sequence[str], retry_failed: bool = False) -> list[str]:
        """The tracks (in order) not already in the output; with ``retry_failed``, failures too.
        Reads the key column only."""
        return todo_of(tracks, done_keys(self.sources(), retry_failed))

    # -------------------------------------------------------------- writing

    def buffer(self, part_seconds: float = PART_SECONDS) -> PartBuffer:
        """A writer of this output's part files (``part_rows`` rows each)."""
        return PartBuffer(self.parts_dir, self.mood_names, self.part_rows, part_seconds)

    def write_part(self, records: Sequence[dict[str, Any]]) -> Optional[str]:
        """Write finished rows as one part file now; None when there are none."""
        buffer = self.buffer()
        buffer.add(records)
        return buffer.flush()

    def finalize(self, order: Sequence[str] = ()) -> BatchSummary:
        """Merge the final output and every part into the final output (published whole), write
        or remove the failures file, then remove the parts. Rows of ``order``'s paths follow
        its order, after any older rows of other paths. With no part to add, a Parquet output
        is left as it is (a re-run that scored nothing rewrites nothing)."""
        sources = self.sources()
        if self.format == "parquet" and exists(self.path) and not list_parts(self.parts_dir):
            failures = _failure_rows(sources)
            rows = sources.dataset.count_rows()
        else:
            result = merge(sources, order, self.path, self.format, self.mood_names, self.parts_dir)
            failures, rows = result.failures, result.rows
        if failures:
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow([KEY_FIELD, ERROR_FIELD])
            writer.writerows(failures)
            write_text(self.failures_path, text.getvalue())
        else:
            remove(self.failures_path)
        remove(self.parts_dir)
        return BatchSummary(self.path, rows, failures, self.failures_path if failures else None)


def _newer(location: str, than: str) -> bool:
    """Whether ``location`` exists and was written after ``than``."""
    from mtlmood.storage import filesystem

    (fs, a), (_, b) = filesystem(location), filesystem(than)
    mine, theirs = fs.get_file_info([a, b])
    return bool(mine.mtime_ns and theirs.mtime_ns and mine.mtime_ns >= theirs.mtime_ns)


def _failure_rows(sources: Sources) -> list[tuple[str, str]]:
    """(path, reason) of the failure rows of a merged output (one source, one row per track)."""
    import pyarrow.dataset as ds

    table = sources.dataset.to_table(columns=[KEY_FIELD, ERROR_FIELD], filter=ds.field(ERROR_FIELD).is_valid())
    return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))


# ------------------------------------------------------------------ the local run


def score_to_output(
    predictor: "Predictor",
    paths: Sequence[str],
    output: BatchOutput,
    top_k: int = 3,
    workers: int = 1,
    part_seconds: float = PART_SECONDS,
    on_track: Optional[Callable[[str, Optional[str]], None]] = None,
) -> tuple[int, int]:
    """Score ``paths`` with ``predictor`` into part files of ``output``; (scored, failed).

    A part is written every ``output.part_rows`` tracks or ``part_seconds``, and on the way
    out of an interrupted run (Ctrl-C), so a re-run redoes at most one part after a kill.
    ``on_track(path, error)`` is called after each track (a progress bar).
    """
    checkpoint_id = predictor.card.checkpoint_id
    buffer = output.buffer(part_seconds)
    pending: list[dict[str, Any]] = []
    scored = failed = 0
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
            # Rows go to Arrow a few at a time: cheap per row, and the buffer can cut a part at
            # any row count (part_rows=1 writes a part per track).
            if len(pending) >= min(RECORD_ROWS, output.part_rows):
                buffer.add(pending)
                pending = []
            else:
                buffer.add([])  # a part due by time is written even between conversions
    finally:
        buffer.add(pending)
        buffer.flush()
    return scored, failed


__all__ = [
    "AUDIO_SUFFIXES",
    "MANIFEST_COLUMN",
    "MANIFEST_SUFFIX",
    "OUTPUT_FORMATS",
    "PARTS_SUFFIX",
    "BatchOutput",
    "BatchSummary",
    "iter_predictions",
    "output_format",
    "read_manifest",
    "resolve_inputs",
    "score_to_output",
]
