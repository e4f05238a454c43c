"""Batch prediction (`mtlmood predict --output`): the shared record schema, inputs, the study
pointer, failures that never stop a run, part files and resuming after a SIGKILL, bad input."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mtlmood.batch_predict import BatchOutput, iter_predictions, resolve_inputs
from mtlmood.checkpoint import ModelCard
from mtlmood.checkpoint_pointer import local_checkpoint
from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.inference import Prediction, Predictor
from mtlmood.records import (
    BATCH_FIELDS,
    PREDICTION_FIELDS,
    batch_record,
    failure_record,
    flat_row,
    model_summary,
    nested_row,
    prediction_fields,
    response_body,
    to_table,
)
from mtlmood.synth.checkpoints import untrained_checkpoint
from mtlmood_cli.main import main

MOODS = ["calm", "dark", "energetic", "happy", "sad"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained paper-input model, 8 filters wide (fast), saved as a real checkpoint."""
    artists = [f"artist:{i}" for i in range(50)]
    return untrained_checkpoint(
        tmp_path_factory.mktemp("ckpt"), n_filters=8, moods=MOODS, meta_names=artists, alpha=0.1
    )


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint)


@pytest.fixture
def clips(real_audio_dir: Path, tmp_path: Path) -> Path:
    """A folder of the real clips (links) plus a corrupt .mp3 and a non-audio file."""
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for i, clip in enumerate(sorted(p for p in real_audio_dir.iterdir() if p.suffix != ".md")):
        (folder / ("sub" if i % 2 else "") / clip.name).symlink_to(clip)
    (folder / "corrupt.mp3").write_bytes(np.random.default_rng(0).bytes(20_000))
    (folder / "notes.txt").write_text("not audio")
    return folder


def read_rows(path: Path) -> list[dict]:
    """The rows of an output file in any of its formats, as mtlmood.records' nested rows."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, newline="") as handle:
        return [nested_row(row) for row in csv.DictReader(handle)]


def _prediction() -> Prediction:
    return Prediction({"calm": 0.25, "sad": 0.75}, [("sad", 0.75), ("calm", 0.25)], 3, 9.0)


# ------------------------------------------------------------------ the record schema


def test_batch_rows_have_the_http_answers_fields() -> None:
    prediction = _prediction()
    fields = prediction_fields(prediction)
    assert list(fields) == list(PREDICTION_FIELDS)
    assert fields["moods"] == {"calm": 0.25, "sad": 0.75}
    assert fields["top"] == [{"mood": "sad", "probability": 0.75}, {"mood": "calm", "probability": 0.25}]
    row = batch_record("/a.mp3", prediction, "abc")
    assert list(row) == list(BATCH_FIELDS) and row["error"] is None
    assert {k: row[k] for k in PREDICTION_FIELDS} == fields
    failed = failure_record("/b.mp3", "corrupt", "abc")
    assert list(failed) == list(BATCH_FIELDS) and failed["moods"] is None and failed["error"] == "corrupt"
    card = ModelCard(["calm", "sad"], [], ModelConfig(n_filters=8), FeatureConfig(), alpha=0.0, checkpoint_id="abc")
    body = response_body(prediction, model_summary(card))
    assert body["model"]["checkpoint_id"] == row["checkpoint_id"] and body["model"]["labels"] == ["calm", "sad"]
    # What the endpoint documents (serve/schemas.PredictResponse) is the same set of fields.
    schemas = pytest.importorskip("serve.schemas")
    assert set(schemas.PredictResponse.model_fields) == set(body)
    # Arrow keeps the nesting; CSV rows flatten and come back equal.
    table = to_table([row, failed], ["calm", "sad"])
    assert table.to_pylist() == [row, failed]
    for record in (row, failed):
        flat = {k: "" if v is None else str(v) for k, v in flat_row(record, ["calm", "sad"]).items()}
        assert nested_row(flat) == record


# ------------------------------------------------------------------ inputs and the model


def test_inputs_are_files_folders_globs_and_manifests(clips: Path, tmp_path: Path) -> None:
    audio = sorted(str(p) for p in clips.rglob("*") if p.suffix in {".ogg", ".mp3", ".flac", ".wav"})
    assert sorted(resolve_inputs([clips])) == audio and len(audio) == 9  # recursive; notes.txt left out
    by_glob = resolve_inputs([str(clips / "**" / "*.ogg")])
    assert by_glob and all(p.endswith(".ogg") for p in by_glob) and any("/sub/" in p for p in by_glob)
    manifest = clips / "list.csv"
    manifest.write_text("path,title\ncorrupt.mp3,x\n\n" + f"{clips / 'notes.txt'},y\n")
    assert resolve_inputs([manifest]) == [str(clips / "corrupt.mp3"), str(clips / "notes.txt")]
    # Order kept, each track once; a missing audio path stays (a "file not found" failure).
    tracks = resolve_inputs([clips / "corrupt.mp3", clips, str(tmp_path / "gone.mp3")])
    assert tracks[0] == str(clips / "corrupt.mp3") and len(tracks) == 10 and tracks[-1] == str(tmp_path / "gone.mp3")
    with pytest.raises(ConfigError, match="input not found"):
        resolve_inputs([tmp_path / "typo-folder"])
    with pytest.raises(ConfigError, match="no audio files found"):
        resolve_inputs([str(tmp_path / "*.flac")])
    (tmp_path / "bad.csv").write_text("file\nx.mp3\n")
    with pytest.raises(ConfigError, match="no 'path' column"):
        resolve_inputs([tmp_path / "bad.csv"])


def test_a_study_run_directory_names_its_best_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    assert local_checkpoint(checkpoint) == checkpoint.resolve()
    run = tmp_path / "study"
    run.mkdir()
    (run / "best_checkpoint.json").write_text(
        json.dumps({"default_cell": "3|artist", "cells": {"3|artist": {"checkpoint": str(checkpoint)}, "9|none": {}}})
    )
    assert local_checkpoint(run) == checkpoint.resolve()
    with pytest.raises(ConfigError, match="'50|year' is not in"):
        local_checkpoint(run, "50|year")
    with pytest.raises(CheckpointError, match="names no checkpoint"):
        local_checkpoint(run, "9|none")
    with pytest.raises(CheckpointError, match="not found"):
        local_checkpoint(tmp_path / "missing")


# ------------------------------------------------------------------ scoring and the output


def test_a_corrupt_file_is_a_failure_and_the_others_match_predict_file(predictor: Predictor, clips: Path) -> None:
    tracks = resolve_inputs([clips])
    results = list(iter_predictions(predictor, tracks, top_k=2, workers=2))
    assert [path for path, _, _ in results] == tracks
    failed = {path: error for path, prediction, error in results if prediction is None}
    assert list(failed) == [str(clips / "corrupt.mp3")]
    # The real cause, not libsndfile's "File does not exist or is not a regular file" for a
    # corrupt .mp3 opened by its path (the suffix picks the decoder, which then fails oddly).
    reason = str(failed[str(clips / "corrupt.mp3")])
    assert reason.startswith("cannot decode: libsndfile: Format not recognised"), reason
    assert "does not exist" not in reason and "regular file" not in reason
    for path, prediction, _ in results:
        if prediction is not None:
            alone = predictor.predict_file(path, top_k=2)
            assert prediction.n_segments == alone.n_segments and prediction.top[0][0] == alone.top[0][0]
            np.testing.assert_allclose(
                list(prediction.probabilities.values()), list(alone.probabilities.values()), atol=1e-5
            )


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_parts_merge_into_the_output_and_a_rerun_skips_what_is_there(tmp_path: Path, suffix: str) -> None:
    rows = [batch_record(f"/m/{i}.mp3", _prediction(), "abc") for i in range(3)] + [
        failure_record("/m/bad.mp3", "corrupt", "abc")
    ]
    output = BatchOutput(tmp_path / f"moods{suffix}", ["calm", "sad"], "abc")
    output.write_part(rows[:2])
    (Path(output.parts_dir) / "part-killed.parquet").write_bytes(b"PAR1 half a file")  # a writer killed mid-file
    tracks = [r["path"] for r in rows]
    assert output.todo(tracks) == tracks[2:]
    output.write_part(rows[:0:-1])  # out of order, and /m/1.mp3 a second time
    summary = output.finalize(tracks)
    assert summary.rows == 4 and summary.failures == [("/m/bad.mp3", "corrupt")]
    assert not Path(output.parts_dir).exists() and summary.failures_file == str(
        tmp_path / f"moods{suffix}.failures.csv"
    )
    assert Path(summary.failures_file).read_text() == "path,error\n/m/bad.mp3,corrupt\n"
    assert read_rows(tmp_path / f"moods{suffix}") == rows  # input order, each track once, as written
    again = BatchOutput(tmp_path / f"moods{suffix}", ["calm", "sad"], "abc")
    assert again.todo(tracks + ["/m/new.mp3"]) == ["/m/new.mp3"]
    assert again.todo(tracks, retry_failed=True) == ["/m/bad.mp3"]
    with pytest.raises(ConfigError, match="another checkpoint"):
        BatchOutput(tmp_path / f"moods{suffix}", ["calm", "sad"], "other").todo(tracks)


# ------------------------------------------------------------------ the command


def test_bad_input_is_one_line_and_exit_2(
    checkpoint: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cases = [
        ([str(tmp_path / "nope"), str(clips), "-o", str(tmp_path / "o.parquet")], "checkpoint directory not found"),
        ([str(checkpoint), str(clips), "-o", str(tmp_path / "o.xlsx")], "unknown output format '.xlsx'"),
        ([str(checkpoint), str(tmp_path / "*.mp3"), "-o", str(tmp_path / "o.csv")], "no audio files found"),
        ([str(checkpoint), str(clips), "--ray"], "give --output"),
    ]
    for argv, message in cases:
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_stdout_mode_is_unchanged(checkpoint: Path, clips: Path, capsys: pytest.CaptureFixture) -> None:
    trumpet = clips / "sub" / "sorohanro_-_solo-trumpet-06.ogg"
    if not trumpet.exists():
        trumpet = clips / "sorohanro_-_solo-trumpet-06.ogg"
    assert main(["predict", str(checkpoint), str(trumpet), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{trumpet}: ") and "segment" in line
    assert main(["predict", str(checkpoint), str(trumpet), str(clips / "corrupt.mp3"), "--json"]) == 2
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert set(results[0]["probabilities"]) == set(MOODS) and "corrupt.mp3" in results[1]["error"]
    assert "corrupt.mp3" in captured.err


def _parts_rows(parts: Path) -> list[str]:
    found = []
    for part in parts.rglob("*.parquet"):
        try:
            found += pq.read_table(part).column("path").to_pylist()
        except Exception:  # a part the kill interrupted: not written, not counted
            pass
    return found


def test_killed_halfway_and_rerun_scores_every_track_once(
    checkpoint: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for clip in list(clips.rglob("*.ogg")):  # more tracks (links to the same clips): the kill lands mid-run
        (clips / f"copy-{clip.name}").symlink_to(clip.resolve())
    tracks = resolve_inputs([clips])
    out = tmp_path / "moods.parquet"
    argv = ["predict", str(checkpoint), str(clips), "-o", str(out), "--part-rows", "1", "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "mtlmood_cli", *argv], cwd=REPO, stderr=subprocess.DEVNULL)
    lock = Path(str(out) + ".lock")
    parts = Path(str(out) + ".parts")
    deadline = time.monotonic() + 90
    while len(_parts_rows(parts)) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert not out.exists(), "the run finished before the kill: nothing was tested"
    assert (lock / ".mtlmood.lock").exists()  # the killed run's lock, taken over below (its pid is gone)
    done = _parts_rows(parts)
    assert 2 <= len(done) < len(tracks) and len(set(done)) == len(done)

    assert main(argv) == 0  # the same command again
    err = capsys.readouterr().err
    assert f"{len(tracks)} tracks: {len(done)} already in moods.parquet, scoring {len(tracks) - len(done)}" in err
    assert f"({len(tracks) - len(done) - 1} scored now, 1 failed now)" in err  # the corrupt file failed
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == tracks  # every track once, in input order
    assert table.schema.names == list(BATCH_FIELDS) and table.schema.field("moods").type.names == MOODS
    failed = [r for r in rows if r["error"] is not None]
    assert [r["path"] for r in failed] == [str(clips / "corrupt.mp3")] and failed[0]["moods"] is None
    assert f"failed: {clips / 'corrupt.mp3'}: " in err
    assert (tmp_path / "moods.parquet.failures.csv").read_text().startswith(f"path,error\n{clips / 'corrupt.mp3'},")
    assert all(r["n_segments"] >= 1 and len(r["top"]) == 3 for r in rows if r["error"] is None)
    assert not parts.exists() and not lock.exists()


HOLDER = """
import sys, time
from mtlmood.batch_predict import BatchOutput
with BatchOutput(sys.argv[1], [], "").lock(command="mtlmood predict (the first run)"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_one_output_is_refused_naming_the_first(
    checkpoint: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "moods.jsonl"
    argv = ["predict", str(checkpoint), str(clips / "corrupt.mp3"), "-o", str(out), "--quiet"]
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pid {first.pid} on " in err and "(the first run)" in err, err
        assert not out.exists() and not Path(str(out) + ".parts").exists()  # refused before anything was written
    finally:
        first.kill()  # SIGKILL: its lock stays behind, stale
        first.wait(timeout=30)
    assert main(argv) == 0  # the dead run's lock is taken over
    assert "1 rows (0 scored now, 1 failed now)" in capsys.readouterr().err
    assert not Path(str(out) + ".lock").exists()
