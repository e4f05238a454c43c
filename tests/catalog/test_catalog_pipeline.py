"""The Ray Data path of `mtlmood predict` on a local Ray: the same rows as the local path
(probabilities within 1e-5) on the real clips, failures listed, and resuming from parts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.s3_server import FAKE_KEYS, s3_server
from mtlmood import storage
from mtlmood.batch_predict import BatchOutput, resolve_inputs
from mtlmood.remote_cache import CACHE_ENV
from mtlmood.synth.checkpoints import untrained_checkpoint
from mtlmood_cli.main import main

MOODS = ["calm", "dark", "energetic", "happy", "sad"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """One local Ray for the module (2 CPUs, no dashboard: Ray Data needs none). Its workers
    get the S3 test's fake keys (as a node has its own credentials) but not its endpoint,
    which does not exist yet: the pipeline must forward the driver's."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**FAKE_KEYS, "AWS_EC2_METADATA_DISABLED": "true"}.items():
            patch.setenv(key, value)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained paper-input model, 8 filters wide, with non-trivial BatchNorm statistics."""
    artists = [f"a{i}" for i in range(50)]
    directory = tmp_path_factory.mktemp("ckpt")
    return untrained_checkpoint(
        directory, n_filters=8, moods=MOODS, meta_names=artists, alpha=0.1, realistic_batchnorm=True
    )


@pytest.fixture
def clips(real_audio_dir: Path, tmp_path: Path) -> Path:
    """The real clips (links) plus a corrupt .mp3 and an empty .wav."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in real_audio_dir.iterdir():
        if clip.suffix != ".md":
            (folder / clip.name).symlink_to(clip)
    (folder / "corrupt.mp3").write_bytes(np.random.default_rng(0).bytes(20_000))
    (folder / "empty.wav").write_bytes(b"")
    return folder


def test_ray_data_path_gives_the_local_paths_rows(
    ray_local: None, checkpoint: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    assert main(["predict", str(checkpoint), str(clips), "-o", str(local), "--quiet"]) == 0
    assert main(["predict", str(checkpoint), str(clips), "-o", str(remote), "--ray", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "(8 scored now, 2 failed now)" in err and f"failed: {clips / 'corrupt.mp3'}: " in err
    a, b = pq.read_table(local), pq.read_table(remote)
    assert a.schema == b.schema
    rows_a, rows_b = a.to_pylist(), b.to_pylist()
    assert [r["path"] for r in rows_a] == [r["path"] for r in rows_b] == resolve_inputs([clips])
    for ra, rb in zip(rows_a, rows_b):
        assert (ra["n_segments"], ra["duration_s"]) == (rb["n_segments"], rb["duration_s"])
        assert ra["error"] == rb["error"]  # both paths decode through mtlmood.batch_audio: same reasons
        if ra["error"] is None:
            pa_, pb_ = np.array(list(ra["moods"].values())), np.array(list(rb["moods"].values()))
            assert np.abs(pa_ - pb_).max() <= 1e-5, ra["path"]
            assert [t["mood"] for t in ra["top"]] == [t["mood"] for t in rb["top"]]
    reasons = {r["path"]: r["error"] for r in rows_b if r["error"]}
    assert set(reasons) == {str(clips / "corrupt.mp3"), str(clips / "empty.wav")}
    assert reasons[str(clips / "empty.wav")] == "the file is empty (0 bytes)"
    assert reasons[str(clips / "corrupt.mp3")].startswith("cannot decode: libsndfile: Format not recognised")


def test_ray_data_path_resumes_from_what_is_already_there(
    ray_local: None, checkpoint: Path, clips: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "moods.parquet"
    first = sorted(clips.glob("*.ogg"))[:3]
    assert main(["predict", str(checkpoint), *map(str, first), "-o", str(out), "--quiet"]) == 0
    before = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    # A part left by a killed Ray run: one finished track in a readable file, plus a half-written file.
    output = BatchOutput(out, MOODS, before[str(first[0])]["checkpoint_id"])
    killed = Path(output.parts_dir) / "ray-killed"
    killed.mkdir(parents=True)
    next_track = str(sorted(clips.glob("*.ogg"))[3])
    shutil.copy(out, killed / "a.parquet")  # the 3 done tracks again: duplicates must not matter
    (killed / "b.parquet").write_bytes(b"PAR1 cut short")
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(clips), "-o", str(out), "--ray", "--quiet"]) == 0
    err = capsys.readouterr().err
    tracks = resolve_inputs([clips])
    assert f"{len(tracks)} tracks: 3 already in moods.parquet, scoring {len(tracks) - 3}" in err
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(tracks) and len(rows) == len(tracks)
    for path, row in before.items():  # what was there is kept, not scored again
        assert next(r for r in rows if r["path"] == path) == row
    assert next(r for r in rows if r["path"] == next_track)["error"] is None
    assert not Path(output.parts_dir).exists()


def test_ray_data_path_reads_and_writes_an_object_store(
    ray_local: None, checkpoint: Path, real_audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Audio and output in a bucket (a local moto server started after Ray: only the
    endpoint forwarded in the tasks' runtime_env reaches it), resuming from a local run's output."""
    audio, out = "s3://batch-ray/audio", "s3://batch-ray/moods/moods.parquet"
    with s3_server("batch-ray"), pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path / "cache"))
        names = sorted(p.name for p in real_audio_dir.glob("*.ogg"))[:3]
        for name in names:
            storage.write_bytes(f"{audio}/{name}", (real_audio_dir / name).read_bytes())
        storage.write_bytes(f"{audio}/corrupt.mp3", np.random.default_rng(0).bytes(20_000))
        tracks = resolve_inputs([audio])
        assert main(["predict", str(checkpoint), tracks[0], "-o", out, "--quiet"]) == 0
        capsys.readouterr()
        assert main(["predict", str(checkpoint), audio, "-o", out, "--ray", "--quiet"]) == 0
        err = capsys.readouterr().err
        assert "4 tracks: 1 already in moods.parquet, scoring 3" in err and "(2 scored now, 1 failed now)" in err
        rows = pq.read_table(pa.BufferReader(storage.read_bytes(out))).to_pylist()
        assert [r["path"] for r in rows] == tracks == [*(f"{audio}/{n}" for n in names), f"{audio}/corrupt.mp3"]
        assert rows[-1]["error"].startswith("cannot decode: libsndfile: Format not recognised")
        assert all(r["error"] is None and r["n_segments"] >= 1 for r in rows[:-1])
        assert not storage.exists(out + ".parts") and storage.exists(out + ".failures.csv")
