"""`mtlmood predict --output` with everything on an object store (a local moto S3 server):
audio under an s3:// prefix, the output and its parts in the bucket. The command is killed
(SIGKILL, in a subprocess) after its first parts reach the bucket, and the same command
run again scores each track once: the finished tracks are read back from the parts, the
rest are scored, the merge writes the output into the bucket and removes the parts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.s3_server import s3_server
from mtlmood import storage
from mtlmood.batch_inputs import resolve_inputs
from mtlmood.remote_cache import CACHE_ENV
from mtlmood.synth.checkpoints import untrained_checkpoint
from mtlmood_cli.main import main

pytestmark = pytest.mark.slow  # ~15 s: a server, a CLI subprocess started and killed, a second run
REPO = Path(__file__).resolve().parents[2]
MOODS = ["calm", "dark", "energetic", "happy", "sad"]
AUDIO = "s3://batch-local/audio"
OUT = "s3://batch-local/moods/moods.parquet"


@pytest.fixture
def bucket(tmp_path: Path, real_audio_dir: Path) -> Iterator[list[str]]:
    """The bucket with 16 short clips and a corrupt .mp3 under AUDIO; the tracks, in order."""
    with s3_server("batch-local"), pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # where the lock of an s3:// output lives
        clip = (real_audio_dir / "sorohanro_-_solo-trumpet-06.ogg").read_bytes()
        for i in range(16):
            storage.write_bytes(f"{AUDIO}/t{i:02d}.ogg", clip)
        storage.write_bytes(f"{AUDIO}/corrupt.mp3", np.random.default_rng(0).bytes(20_000))
        storage.write_text("s3://batch-local/list.csv", "path\naudio/t03.ogg\ns3://batch-local/audio/t04.ogg\n")
        yield [f"{AUDIO}/corrupt.mp3", *(f"{AUDIO}/t{i:02d}.ogg" for i in range(16))]


def _keys_in_parts() -> list[str]:
    parts = [p for p in storage.list_files(OUT + ".parts") if p.endswith(".parquet")]
    tables = [pq.read_table(pa.BufferReader(storage.read_bytes(f"{OUT}.parts/{p}"))) for p in parts]
    return [key for table in tables for key in table.column("path").to_pylist()]


def test_an_s3_run_killed_and_run_again_scores_each_track_once(
    bucket: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert resolve_inputs([AUDIO]) == bucket  # one listing, sorted; a prefix given with or without "/"
    assert resolve_inputs(["s3://batch-local/list.csv"]) == [f"{AUDIO}/t03.ogg", f"{AUDIO}/t04.ogg"]
    checkpoint = untrained_checkpoint(tmp_path / "ckpt", n_filters=8, moods=MOODS, meta_names=["a", "b"], alpha=0.1)
    argv = ["predict", str(checkpoint), AUDIO + "/", "-o", OUT, "--part-rows", "1", "--quiet", "--workers", "1"]
    first = subprocess.Popen([sys.executable, "-m", "mtlmood_cli", *argv], cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(storage.list_files(OUT + ".parts")) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert not storage.exists(OUT), "the run finished before the kill: nothing was tested"
    done = _keys_in_parts()
    assert 2 <= len(done) < len(bucket) and len(set(done)) == len(done)

    assert main(argv) == 0  # the same command again (the killed run's lock is taken over)
    err = capsys.readouterr().err
    assert f"{len(bucket)} tracks: {len(done)} already in moods.parquet, scoring {len(bucket) - len(done)}" in err
    rows = pq.read_table(pa.BufferReader(storage.read_bytes(OUT))).to_pylist()
    assert [r["path"] for r in rows] == bucket  # every track once, in input order
    failed = {r["path"]: r["error"] for r in rows if r["error"]}
    assert list(failed) == [f"{AUDIO}/corrupt.mp3"]
    assert failed[f"{AUDIO}/corrupt.mp3"].startswith("cannot decode: libsndfile: Format not recognised")
    assert storage.read_text(OUT + ".failures.csv").startswith(f"path,error\n{AUDIO}/corrupt.mp3,cannot decode")
    assert not storage.exists(OUT + ".parts")
    assert all(r["n_segments"] >= 1 for r in rows if not r["error"])
    assert not any(p.name.startswith("s3:") for p in REPO.iterdir())  # no URI taken for a local path
    assert os.listdir(tmp_path / "cache" / "locks" / "s3" / "batch-local" / "moods" / "moods.parquet") == []
