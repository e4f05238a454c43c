"""The feature cache builder: failures reported, resumable after a kill, exactly-once, atomic."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mtlmood.cache import FeatureCache, default_cache_dir, write_cache
from mtlmood.config import DatasetConfig, FeatureConfig, RunConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.errors import CacheError, DatasetError
from mtlmood.features import features_from_file
from mtlmood.prepare import prepare_features
from mtlmood.prepare_files import SHARD_DIR, shard_name
from mtlmood.prepare_lock import exclusive_cache
from mtlmood.prepare_pool import run_tasks
from mtlmood.prepare_tasks import SongOutcome, SongTask, compute_song
from mtlmood_cli.main import main

CFG = FeatureConfig()
REPO_ROOT = Path(__file__).resolve().parents[2]
LONG_CLIPS = (
    "Kevin_MacLeod_-_Vibe_Ace.ogg",
    "Karissa_Hobbs_-_Lets_Go_Fishin.ogg",
    "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg",
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg",
)


def _tones(folder: Path, n: int, seconds: float = 2.0) -> list[SongRecord]:
    """n short WAVs with different pitches and lengths (synthetic, so tests need no data)."""
    folder.mkdir(parents=True, exist_ok=True)
    songs = []
    for i in range(n):
        t = np.arange(int((seconds + 0.25 * i) * 22050)) / 22050
        path = folder / f"tone{i}.wav"
        sf.write(path, 0.3 * np.sin(2 * np.pi * (220 * (i + 1)) * t), 22050)
        songs.append(SongRecord(f"tone-{i}", path, ("calm",)))
    return songs


def _assert_cache_matches(cache: FeatureCache, songs: list[SongRecord]) -> None:
    """Every song is in the cache exactly once, with the features a direct computation gives."""
    assert len(cache.song_ids) == len(set(cache.song_ids))
    direct: dict[Path, np.ndarray] = {}
    for song in songs:
        if song.audio_path not in direct:
            direct[song.audio_path] = features_from_file(song.audio_path, CFG)
        np.testing.assert_array_equal(cache.features(song.song_id), direct[song.audio_path])
    offsets, lengths = cache.positions([s.song_id for s in songs])
    assert (lengths > 0).all() and (offsets + lengths <= cache.bank.shape[0]).all()


def test_real_clips_are_cached_and_failures_reported(real_audio_dir: Path, tmp_path: Path) -> None:
    names = (
        "sorohanro_-_solo-trumpet-06.ogg",
        "gs-16b-2c-44100hz.wav",
        "gs-16b-2c-44100hz.mp3",
        "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg",
    )
    good = [SongRecord(name, real_audio_dir / name, ()) for name in names]
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).bytes(30000))
    bad = [SongRecord("missing", tmp_path / "missing.ogg", ()), SongRecord("corrupt", corrupt, ())]
    cache_dir = tmp_path / "cache"

    report = prepare_features(good + bad, cache_dir, CFG, workers=2, progress=False)

    assert (report.computed, report.skipped, report.failed, report.cached_songs) == (4, 0, 2, 4)
    reasons = {f.song_id: f.reason for f in report.failures}
    assert reasons["missing"] == "file not found"
    assert "unsupported or corrupt audio" in reasons["corrupt"]
    with open(report.failures_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["song_id"], r["path"]) for r in rows] == [
        ("missing", str(tmp_path / "missing.ogg")),
        ("corrupt", str(corrupt)),
    ]
    assert "missing: file not found" in report.summary()
    cache = FeatureCache(cache_dir)
    cache.check_config(CFG)
    assert cache.song_ids == list(names)
    _assert_cache_matches(cache, good)
    assert not (cache_dir / SHARD_DIR).exists()  # consolidated and cleaned up
    assert [p.name for p in cache_dir.glob("bank*.npy")] == [cache.bank_file.name]

    # A re-run computes nothing, retries the failures, and leaves the bank untouched.
    again = prepare_features(good + bad, cache_dir, CFG, workers=1, progress=False)
    assert (again.computed, again.skipped, again.failed) == (0, 4, 2)
    assert FeatureCache(cache_dir).bank_file == cache.bank_file


def test_rerun_with_a_superset_computes_only_new_songs(tmp_path: Path) -> None:
    songs = _tones(tmp_path / "audio", 6)
    cache_dir = tmp_path / "cache"
    first = prepare_features(songs[:3], cache_dir, CFG, workers=1, progress=False)
    assert (first.computed, first.skipped) == (3, 0)

    second = prepare_features(songs, cache_dir, CFG, workers=2, progress=False)
    assert (second.computed, second.skipped, second.failed, second.cached_songs) == (3, 3, 0, 6)
    cache = FeatureCache(cache_dir)
    assert cache.song_ids == [s.song_id for s in songs]
    _assert_cache_matches(cache, songs)

    # A smaller list later keeps the songs it does not name.
    third = prepare_features(songs[:2], cache_dir, CFG, workers=1, progress=False)
    assert (third.computed, third.skipped, third.cached_songs) == (0, 2, 6)


_CHILD = """
import sys
from pathlib import Path
from mtlmood.config import FeatureConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.prepare import prepare_features
audio, cache, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
names = sys.argv[4:]
songs = [SongRecord(f"song-{i:03d}", audio / names[i % len(names)], ()) for i in range(n)]
prepare_features(songs, cache, FeatureConfig(), workers=2, progress=False)
"""


def test_killed_run_resumes_and_caches_every_song_exactly_once(real_audio_dir: Path, tmp_path: Path) -> None:
    n = 200
    cache_dir = tmp_path / "cache"
    shards = cache_dir / SHARD_DIR
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(real_audio_dir), str(cache_dir), str(n), *LONG_CLIPS],
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if shards.is_dir() and len(list(shards.glob("song-*.npy"))) >= 6:
                break
            time.sleep(0.01)
        assert child.poll() is None, f"prepare ended before it could be killed: {child.stderr.read()!r}"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)  # the child's session: it and its workers
        child.wait()
    assert not (cache_dir / "index.json").exists()  # killed before the commit
    done = sorted(shards.glob("song-*.npy"))
    assert 6 <= len(done) < n

    # What a crash can leave: a half-written temp file of an in-flight song (never read),
    # and, to be thorough, a shard whose bytes were cut short (rejected by its header check).
    valid = done[0].read_bytes()
    (shards / f".{shard_name('song-199')}.k3j2.tmp").write_bytes(valid[: len(valid) // 2])
    done[1].write_bytes(valid[: len(valid) // 3])

    songs = [SongRecord(f"song-{i:03d}", real_audio_dir / LONG_CLIPS[i % len(LONG_CLIPS)], ()) for i in range(n)]
    report = prepare_features(songs, cache_dir, CFG, workers=2, progress=False)

    assert report.failed == 0
    assert report.skipped == len(done) - 1  # the cut shard was recomputed
    assert report.computed + report.skipped == n
    cache = FeatureCache(cache_dir)
    assert sorted(cache.song_ids) == [s.song_id for s in songs]
    _assert_cache_matches(cache, songs)
    assert not shards.exists()  # no shard or temp file survives consolidation


def test_a_changed_feature_config_needs_rebuild(tmp_path: Path) -> None:
    songs = _tones(tmp_path / "audio", 2)
    cache_dir = tmp_path / "cache"
    prepare_features(songs, cache_dir, CFG, workers=1, progress=False)
    other = FeatureConfig(n_mels=64)
    with pytest.raises(CacheError, match="rebuild"):
        prepare_features(songs, cache_dir, other, workers=1, progress=False)
    report = prepare_features(songs, cache_dir, other, workers=1, progress=False, rebuild=True)
    assert (report.computed, report.skipped) == (2, 0)
    cache = FeatureCache(cache_dir)
    cache.check_config(other)
    assert cache.bank.shape[1] == 64
    with pytest.raises(CacheError):
        cache.check_config(CFG)


def test_unfinished_shards_of_another_config_are_not_mixed_in(tmp_path: Path) -> None:
    songs = _tones(tmp_path / "audio", 2)
    cache_dir = tmp_path / "cache"
    (cache_dir / SHARD_DIR).mkdir(parents=True)
    (cache_dir / SHARD_DIR / "feature_config.json").write_text(json.dumps({**CFG.__dict__, "n_mels": 64}))
    with pytest.raises(CacheError, match="unfinished shards"):
        prepare_features(songs, cache_dir, CFG, workers=1, progress=False)


def test_duplicate_song_ids_are_refused(tmp_path: Path) -> None:
    song = _tones(tmp_path / "audio", 1)[0]
    with pytest.raises(DatasetError, match="tone-0"):
        prepare_features([song, song], tmp_path / "cache", CFG, workers=1, progress=False)


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    songs = _tones(tmp_path / "audio", 1)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    with exclusive_cache(cache_dir):  # as if another prepare were running
        with pytest.raises(CacheError, match="another `mtlmood prepare`"):
            prepare_features(songs, cache_dir, CFG, workers=1, progress=False)
    prepare_features(songs, cache_dir, CFG, workers=1, progress=False)  # free again


def _crash_on_boom(task: SongTask) -> SongOutcome:
    """A worker that dies like a segfaulting decoder on one song, and works on the others."""
    if task.song_id == "boom":
        os._exit(139)
    return compute_song(task)


def test_a_crashing_worker_fails_only_its_song(tmp_path: Path) -> None:
    songs = _tones(tmp_path / "audio", 5, seconds=0.5)
    songs.insert(2, SongRecord("boom", songs[0].audio_path, ()))
    tasks = [SongTask(s.song_id, str(s.audio_path), str(tmp_path / shard_name(s.song_id)), CFG) for s in songs]
    outcomes = {o.song_id: o for o in run_tasks(tasks, workers=2, compute=_crash_on_boom)}
    assert sorted(outcomes) == sorted(s.song_id for s in songs)
    assert "crashed" in (outcomes["boom"].error or "")
    assert all(o.error is None and o.n_frames > 0 for k, o in outcomes.items() if k != "boom")


def test_shard_names_are_safe_and_distinct() -> None:
    ids = ["track_0000214", ".", "..", "a/b", "a%2Fb", "a.b", "A.b", "ü", " ", "x" * 300, "x" * 301]
    names = [shard_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert names[0] == "track_0000214.npy"
    for name in names:
        assert not name.startswith(".") and "/" not in name and len(name) < 255
        assert name[:-4].replace("%", "").replace("-", "").replace("_", "").isalnum()


def test_write_cache_streams_from_files_and_keeps_readers_valid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 96), dtype=np.float32), rng.random((7, 96), dtype=np.float32)
    np.save(tmp_path / "b.npy", b)
    old = write_cache(tmp_path / "c", [("a", a)], CFG)
    new = write_cache(tmp_path / "c", [("a", a), ("b", tmp_path / "b.npy")], CFG)
    np.testing.assert_array_equal(new.features("b"), b)
    np.testing.assert_array_equal(old.features("a"), a)  # an open reader's map survives the swap
    assert sorted(p.name for p in (tmp_path / "c").glob("bank*")) == [new.bank_file.name]
    (tmp_path / "cut.npy").write_bytes((tmp_path / "b.npy").read_bytes()[:200])
    with pytest.raises(CacheError, match="incomplete"):
        write_cache(tmp_path / "c", [("a", a), ("cut", tmp_path / "cut.npy")], CFG)
    assert FeatureCache(tmp_path / "c").song_ids == ["a", "b"]  # the failed write changed nothing


def test_default_cache_dir(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,moods\n")
    assert default_cache_dir(RunConfig(cache_dir="/x/y")) == Path("/x/y")
    run = RunConfig()
    assert default_cache_dir(run) == Path(run.dataset.root) / "features"
    as_file = RunConfig(dataset=DatasetConfig(name="csv", root=str(tmp_path / "manifest.csv")))
    assert default_cache_dir(as_file) == tmp_path / "features"


def test_cli_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    songs = _tones(tmp_path, 3)
    rows = [f"{s.song_id},{s.audio_path.name},calm" for s in songs] + ["gone,gone.wav,calm"]
    (tmp_path / "manifest.csv").write_text("song_id,path,moods\n" + "\n".join(rows) + "\n")
    args = ["prepare", "--set", "dataset.name=csv", "--set", f"dataset.root={tmp_path}", "--no-progress"]

    assert main(args + ["--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 computed, 0 already cached, 1 failed" in out and "gone: file not found" in out
    assert FeatureCache(tmp_path / "features").song_ids == ["tone-0", "tone-1", "tone-2"]

    # Other feature settings on the same cache: one clear error line, exit 2.
    assert main(args + ["--set", "features.n_mels=64"]) == 2
    assert "--rebuild" in capsys.readouterr().err

    for song in songs:
        song.audio_path.write_bytes(b"")
    assert main(args + ["--cache-dir", str(tmp_path / "fresh")]) == 1  # every song failed
    assert "0 computed, 0 already cached, 4 failed" in capsys.readouterr().out
