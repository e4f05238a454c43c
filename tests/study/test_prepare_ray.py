"""`prepare` on Ray tasks builds the same cache as local processes, bit for bit; failures are
reported the same way, a crashing task fails only its song, and a re-run skips everything.

One real local Ray (2 CPUs) for the module. No Train/Tune here, so no dashboard.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ray = pytest.importorskip("ray")

from helpers import shared_ray  # noqa: E402
from mtlmood.cache import FeatureCache  # noqa: E402
from mtlmood.config import FeatureConfig  # noqa: E402
from mtlmood.datasets.base import SongRecord  # noqa: E402
from mtlmood.errors import CacheError  # noqa: E402
from mtlmood.features import features_from_file  # noqa: E402
from mtlmood.prepare import prepare_features  # noqa: E402
from mtlmood.prepare_files import FAILURES_FILE, SHARD_DIR  # noqa: E402
from mtlmood.prepare_tasks import SongOutcome, SongTask, compute_song  # noqa: E402
from mtlmood_cli.main import main  # noqa: E402
from study.prepare_ray import CRASHED, RayTaskRunner, compute_batch, not_shared_error  # noqa: E402

pytestmark = pytest.mark.slow
SHARED_RAY = "study"  # the Ray of the study modules before and after it (helpers.shared_ray)
CFG = FeatureConfig()
# The same setting as tests/conftest.py; the real-clip part of the dataset is skipped without it.
SHARED_DATA = Path(os.environ.get("MTLMOOD_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SHARED_AUDIO = SHARED_DATA / "audio"
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> None:
    """The study modules' shared Ray (helpers.shared_ray)."""
    # The crash helper below lives in this test module, which Ray's workers cannot import:
    # ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    shared_ray.shared(SHARED_RAY, shared_ray.start_study_ray)


def _tones(folder: Path, n: int, seconds: float = 1.5) -> list[SongRecord]:
    """n short WAVs of different pitches and lengths (one shorter than a 187-frame window)."""
    folder.mkdir(parents=True, exist_ok=True)
    songs = []
    for i in range(n):
        sr = (16000, 22050, 44100)[i % 3]
        t = np.arange(int((seconds + 0.4 * i) * sr)) / sr
        path = folder / f"tone{i}.wav"
        sf.write(path, 0.3 * np.sin(2 * np.pi * (180 * (i + 1)) * t), sr)
        songs.append(SongRecord(f"tone-{i}", path, ("calm",)))
    return songs


def _dataset(tmp_path: Path) -> tuple[list[SongRecord], set[str]]:
    """Generated WAVs + the real CC clips when present + a corrupt and a missing file."""
    songs = _tones(tmp_path / "audio", 7)
    if SHARED_AUDIO.is_dir():  # the real-audio part is skipped where the shared data is absent
        songs += [
            SongRecord(f"real/{p.name}", p, ()) for p in sorted(SHARED_AUDIO.iterdir()) if p.suffix in AUDIO_SUFFIXES
        ]
    corrupt = tmp_path / "audio" / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).bytes(20000))
    bad = [SongRecord("corrupt", corrupt, ()), SongRecord("missing", tmp_path / "audio" / "missing.ogg", ())]
    # The bad songs sit in the middle: their batch neighbours must not be affected.
    mid = len(songs) // 2
    return songs[:mid] + bad + songs[mid:], {"corrupt", "missing"}


def _same_cache(a: Path, b: Path) -> None:
    """Two cache directories hold the same songs, order, offsets, config and bytes."""
    ia, ib = (json.loads((d / "index.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ia.items() if k != "bank"} == {k: v for k, v in ib.items() if k != "bank"}
    ca, cb = FeatureCache(a), FeatureCache(b)
    assert ca.bank.dtype == cb.bank.dtype and ca.bank.shape == cb.bank.shape
    assert np.asarray(ca.bank).tobytes() == np.asarray(cb.bank).tobytes()
    assert (a / "feature_config.json").read_bytes() == (b / "feature_config.json").read_bytes()
    assert (a / FAILURES_FILE).read_bytes() == (b / FAILURES_FILE).read_bytes()
    assert not (a / SHARD_DIR).exists() and not (b / SHARD_DIR).exists()


def test_ray_cache_equals_the_local_one_bit_for_bit_and_a_rerun_skips_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative audio and cache paths, as a user types them: Ray workers run elsewhere, so
    # the runner must send absolute paths, and report the paths as given.
    monkeypatch.chdir(tmp_path)
    songs, bad = _dataset(Path("."))
    n_good = len(songs) - len(bad)
    local = prepare_features(songs, "local", CFG, workers=1, progress=False)

    runner = RayTaskRunner(songs_per_task=3)
    distributed = prepare_features(songs, "ray-cache", CFG, progress=False, runner=runner)

    assert (distributed.computed, distributed.skipped, distributed.failed) == (n_good, 0, 2)
    assert (local.computed, local.failed) == (n_good, 2)
    assert distributed.failures == local.failures  # same songs, same reasons, same order
    assert distributed.failures[1].path == str(Path("audio", "missing.ogg"))
    reasons = {f.song_id: f.reason for f in distributed.failures}
    assert reasons["missing"] == "file not found" and "corrupt" in reasons["corrupt"]
    assert "Ray tasks of 3 songs" in distributed.summary()
    _same_cache(tmp_path / "local", tmp_path / "ray-cache")
    cache = FeatureCache(tmp_path / "ray-cache")
    assert cache.song_ids == [s.song_id for s in songs if s.song_id not in bad]
    for song in songs[:2] + songs[-2:]:
        if song.song_id not in bad:
            np.testing.assert_array_equal(cache.features(song.song_id), features_from_file(song.audio_path, CFG))

    # A re-run computes nothing, retries only the failures, leaves the bank and no probe behind.
    again = prepare_features(songs, "ray-cache", CFG, progress=False, runner=RayTaskRunner(max_in_flight=1))
    assert (again.computed, again.skipped, again.failed) == (0, n_good, 2)
    assert FeatureCache(tmp_path / "ray-cache").bank_file == cache.bank_file
    assert not list((tmp_path / "ray-cache").rglob(".probe-*"))


def _crash_on_boom(task: SongTask) -> SongOutcome:
    """Dies like a segfaulting decoder on one song, works on the others."""
    if task.song_id == "boom":
        os._exit(139)
    return compute_song(task)


def test_a_crashing_task_fails_only_its_song(tmp_path: Path) -> None:
    songs = _tones(tmp_path / "audio", 6, seconds=0.5)
    songs.insert(2, SongRecord("boom", songs[0].audio_path, ()))
    runner = RayTaskRunner(songs_per_task=4, compute=_crash_on_boom)
    report = prepare_features(songs, tmp_path / "cache", CFG, progress=False, runner=runner)

    assert (report.computed, report.failed) == (6, 1)
    assert report.failures[0].song_id == "boom" and report.failures[0].reason == CRASHED
    cache = FeatureCache(tmp_path / "cache")
    assert cache.song_ids == [s.song_id for s in songs if s.song_id != "boom"]  # the batch-mates survived
    for song in songs:
        if song.song_id != "boom":
            np.testing.assert_array_equal(cache.features(song.song_id), features_from_file(song.audio_path, CFG))


def test_a_node_that_cannot_see_the_cache_is_named(tmp_path: Path) -> None:
    song = _tones(tmp_path / "audio", 1)[0]
    task = SongTask(song.song_id, str(song.audio_path), str(tmp_path / "x.npy"), CFG)
    # As on a node without the shared mount: the driver's probe file is not there.
    result = ray.get(ray.remote(compute_batch).remote([task], str(tmp_path / "no-such-probe")))
    assert not result.sees_cache and result.outcomes == [] and not (tmp_path / "x.npy").exists()
    error = not_shared_error(result.node, tmp_path)
    assert isinstance(error, CacheError) and result.node in str(error) and "same path" in str(error)


def test_cli_prepare_on_ray_with_a_study_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    songs = _tones(tmp_path, 3)
    rows = [f"{s.song_id},{s.audio_path.name},calm" for s in songs] + ["gone,gone.wav,calm"]
    (tmp_path / "manifest.csv").write_text("song_id,path,moods\n" + "\n".join(rows) + "\n")
    study = tmp_path / "study.yaml"  # a study config: prepare reads its run: section
    study.write_text(
        f"name: s\nrun:\n  dataset:\n    name: csv\n    root: {tmp_path}\n  cache_dir: {tmp_path / 'features'}\n"
    )
    address = ray.get_runtime_context().gcs_address
    args = ["prepare", "--config", str(study), "--address", address, "--no-progress"]

    assert main(args + ["--songs-per-task", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 computed, 0 already cached, 1 failed" in out and "Ray tasks of 2 songs" in out
    assert "gone: file not found" in out
    assert FeatureCache(tmp_path / "features").song_ids == ["tone-0", "tone-1", "tone-2"]
    assert main(args + ["--max-tasks", "1"]) == 0
    assert "0 computed, 3 already cached, 1 failed" in capsys.readouterr().out
    assert ray.is_initialized()  # the CLI did not disconnect a Ray it did not start
