"""Batch outputs in bounded memory (mtlmood.batch_parts, mtlmood.batch_merge, mtlmood.batch_audio):
a resume reads the key column alone, parts hold `part_rows` rows, the streamed merge keeps one
row per track in input order whatever order the parts came in, and a decode reads only the
first seconds of a long file."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import mtlmood.batch_audio as batch_audio
import mtlmood.batch_merge as batch_merge
import mtlmood.batch_predict as batch_predict
from mtlmood.batch_parts import PART_ROWS, PartBuffer, done_keys, list_parts, open_sources, write_parquet
from mtlmood.batch_predict import BatchOutput
from mtlmood.config import FeatureConfig
from mtlmood.inference import Prediction
from mtlmood.records import batch_record, failure_record, to_table

MOODS = ["calm", "sad"]


def _row(i: int, p: float = 0.5, error: str = "") -> dict[str, Any]:
    if error:
        return failure_record(f"/m/{i:03d}.mp3", error, "abc")
    prediction = Prediction({"calm": p, "sad": 1 - p}, [("sad", 1 - p), ("calm", p)], 3, 9.0)
    return batch_record(f"/m/{i:03d}.mp3", prediction, "abc")


class _Spy:
    """A pyarrow dataset that records which columns each read asks for."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.reads: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.dataset, name)
        if name in ("to_table", "to_batches", "scanner", "head", "take"):

            def read(*args: Any, **kwargs: Any) -> Any:
                self.reads.append((name, kwargs.get("columns")))
                return attr(*args, **kwargs)

            return read
        return attr


def test_a_resume_reads_the_key_column_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = BatchOutput(tmp_path / "moods.parquet", MOODS, "abc")
    output.write_part([_row(i) for i in range(5)] + [_row(5, error="cannot decode: x")])
    spies: list[_Spy] = []

    def spied(*args: Any, **kwargs: Any) -> Any:
        sources = open_sources(*args, **kwargs)
        spies.append(_Spy(sources.dataset))
        sources.dataset = spies[-1]  # type: ignore[assignment]
        return sources

    monkeypatch.setattr(batch_predict, "open_sources", spied)
    tracks = [f"/m/{i:03d}.mp3" for i in range(8)]
    assert output.todo(tracks) == tracks[6:]
    assert output.todo(tracks, retry_failed=True) == tracks[5:]  # the failure's key is filtered on its error
    assert [read for spy in spies for read in spy.reads] == [("to_table", ["path"])] * 2


def test_parts_hold_part_rows_rows(tmp_path: Path) -> None:
    buffer = PartBuffer(str(tmp_path / "parts"), MOODS, part_rows=4)
    written = [buffer.add([_row(i) for i in range(start, start + 3)]) for start in range(0, 9, 3)]
    assert written[0] is None and written[1] is not None and buffer.pending == 3  # a part at 6 rows, 3 held...
    last = buffer.flush()
    sizes = [pq.ParquetFile(part).metadata.num_rows for part in buffer.written]
    assert sizes == [6, 3] and last == buffer.written[-1]  # ... >= part_rows each, the rest at the end
    assert buffer.flush() is None
    from mtlmood_cli.commands.predict import PART_ROWS as CLI_DEFAULT  # written out there: --help imports nothing

    assert CLI_DEFAULT == PART_ROWS
    assert [Path(i.path).name for i in list_parts(str(tmp_path / "parts"))] == [Path(p).name for p in buffer.written]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_streamed_merge_keeps_one_row_per_track_in_input_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    # Windows of 3 rows and a cache of one row group: every path of the gather is taken.
    monkeypatch.setattr(batch_merge, "CACHE_BYTES", 1)
    output = BatchOutput(tmp_path / f"moods{suffix}", MOODS, "abc")
    rows = {i: _row(i, p=i / 100) for i in range(20)}
    # What an earlier run left: tracks 0-7 merged, 8 a failure.
    output.write_part([rows[i] for i in range(8)] + [_row(8, error="old reason")])
    output.finalize([f"/m/{i:03d}.mp3" for i in range(9)])
    # Then: a Ray-like folder of shuffled parts, a repeat of track 3 (scored again), track 8 scored
    # now (beats its failure), track 9 failing twice (the later reason wins), a part cut short.
    ray = Path(output.parts_dir) / "ray-x"
    order = np.random.default_rng(1).permutation(np.arange(10, 20))
    write_parquet(to_table([rows[int(i)] for i in order[:6]] + [_row(9, error="first")], MOODS), str(ray / "a.parquet"))
    write_parquet(to_table([rows[int(i)] for i in order[6:]] + [rows[3], rows[8]], MOODS), str(ray / "b.parquet"))
    output.write_part([_row(9, error="second")])
    (ray / "c.parquet").write_bytes(b"PAR1 cut short")
    tracks = [f"/m/{i:03d}.mp3" for i in [*range(19, 9, -1), *range(10)]]  # this run's input order
    assert output.todo(tracks) == []
    result = batch_merge.merge(output.sources(), tracks, output.path, output.format, MOODS, output.parts_dir, 3)
    expected = [rows[int(t[3:6])] for t in tracks]
    expected[tracks.index("/m/009.mp3")] = _row(9, error="second")
    assert result.rows == 20 and result.failures == [("/m/009.mp3", "second")]
    assert read_output(Path(output.path)) == expected
    if suffix == ".parquet":  # one row group per window: what a reader of the output holds at a time
        metadata = pq.ParquetFile(output.path).metadata
        assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [3] * 6 + [2]


def read_output(path: Path) -> list[dict[str, Any]]:
    """An output's rows (Parquet or CSV) as mtlmood.records' nested rows."""
    import csv

    from mtlmood.records import nested_row

    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    with open(path, newline="") as handle:
        return [nested_row(row) for row in csv.DictReader(handle)]


class _Furthest(io.BufferedReader):
    """A local file that remembers the furthest byte read from it."""

    furthest = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        _Furthest.furthest = max(_Furthest.furthest, self.tell())
        return data

    def readinto(self, buffer: Any) -> int:
        n = super().readinto(buffer)
        _Furthest.furthest = max(_Furthest.furthest, self.tell())
        return n


def test_a_decode_reads_only_the_first_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = FeatureConfig()  # max_seconds 29
    wave = (np.random.default_rng(0).standard_normal(16_000 * 120) * 0.1).astype(np.float32)
    monkeypatch.setattr(batch_audio, "open", lambda file, mode: _Furthest(io.FileIO(file, mode)), raising=False)
    for suffix in (".wav", ".flac"):
        path = tmp_path / f"long{suffix}"
        sf.write(path, wave, 16_000)
        _Furthest.furthest = 0
        assert len(batch_audio.read_track(str(path), cfg)) == 29 * 16_000
        assert 0 < _Furthest.furthest < 0.4 * os.path.getsize(path), (suffix, _Furthest.furthest)


def test_a_missing_or_empty_track_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    cfg = FeatureConfig()
    for name, reason in (("gone.mp3", "file not found"), ("empty.wav", "the file is empty (0 bytes)")):
        with pytest.raises(batch_audio.AudioDecodeError) as caught:
            batch_audio.read_track(str(tmp_path / name), cfg)
        assert caught.value.reason == reason
    assert done_keys(open_sources(str(tmp_path / "none"), MOODS)).to_pylist() == []


@pytest.mark.slow  # ~5 s: two fresh measuring processes
def test_the_scale_benchmark_runs_small(tmp_path: Path) -> None:
    from benchmarks.batch_scale_bench import main as bench

    result = bench(
        ["--rows", "3000", "--part-rows", "1000", "--new", "10", "--before-rows", "0"]
        + ["--files", "0"]
        + ["--out", str(tmp_path)]
    )
    for layout in ("local", "ray"):
        after = result["scale"][layout]["after"]
        assert after["rows_out"] == 3000 and after["todo"] == 10 and after["failures"] == 30
        assert 0 < after["rss_tracks_mib"] <= after["rss_resume_mib"] <= after["rss_merge_mib"] < 1024
        assert result["scale"][layout]["parts"]["parts"] == 3
    assert "Peak driver RSS of a run" in (tmp_path / "batch_scale.md").read_text()
