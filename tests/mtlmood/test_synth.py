"""Synthetic data: files and manifest, determinism (pinned plans), resume, audible moods,
artist priors, real metadata through the MTG-Jamendo adapter, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from scipy.stats import chi2_contingency
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mtlmood.errors import ConfigError, DatasetError
from mtlmood.synth import (
    CUES,
    MANIFEST_COLUMNS,
    MOOD_PROFILES,
    SynthConfig,
    mood_profile,
    plan_songs,
    read_manifest,
    read_mtg_jamendo_records,
    render_song,
    synthesize,
    synthesize_from_records,
)
from mtlmood_cli.main import main as cli_main

# Small and short: these tests check files and bookkeeping, not music.
TINY = SynthConfig(n_songs=8, n_artists=3, min_seconds=4.0, max_seconds=5.0)

# What TINY and the MTG-Jamendo rows of _write_tsv must plan, pinned. These depend only on
# numpy's seeded Generator streams and text formatting, so they hold on every platform; the
# audio bytes also depend on SIMD maths and on libsndfile's version, so they are not pinned
# here (the move of mtlmood/synth.py into a package was checked byte for byte against the
# old module, audio included). A change here changes every synthetic dataset: the demo's
# and the benchmarks' results move with it, so bump GENERATOR_VERSION if it is meant.
TINY_MANIFEST = """song_id,path,moods,artist,year
synth_00000,audio/synth_00000.wav,sad,artist_00,1992
synth_00001,audio/synth_00001.flac,happy,artist_00,1991
synth_00002,audio/synth_00002.ogg,happy,artist_00,1990
synth_00003,audio/synth_00003.wav,happy,artist_00,1993
synth_00004,audio/synth_00004.flac,happy;dark,artist_01,1995
synth_00005,audio/synth_00005.ogg,happy;dark,artist_01,2003
synth_00006,audio/synth_00006.wav,happy,artist_00,1996
synth_00007,audio/synth_00007.flac,sad,artist_02,1988
"""
TINY_STAMP_SHA256 = "25437daa10056eac6f9f07275ff31c3fb602b7cc937f6adc5960cc36f7c83dfe"  # synth_config.json
DEMO_PLAN_SHA256 = "0d4938a9884cdc8e6b546b115db9446a9be48bf2d9b7d24d3ec1a538558114de"  # SynthConfig()
TSV_MANIFEST = """song_id,path,moods,artist,year
track_1,audio/track_1.wav,happy,artist_1,2005
track_2,audio/track_2.flac,film;dark,artist_1,2011
track_4,audio/track_4.ogg,calm,artist_2,2019
"""


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_manifest_and_every_file_decodes(tmp_path: Path) -> None:
    cfg = SynthConfig(n_songs=8, n_artists=3, min_seconds=4.0, max_seconds=5.0, formats=("wav", "flac", "ogg", "mp3"))
    manifest = synthesize(tmp_path, cfg)
    assert manifest == tmp_path / "manifest.csv"
    with open(manifest, newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == MANIFEST_COLUMNS == ("song_id", "path", "moods", "artist", "year")
    rows = read_manifest(manifest)
    assert len(rows) == 8 and len({r["song_id"] for r in rows}) == 8
    assert {Path(r["path"]).suffix for r in rows} == {".wav", ".flac", ".ogg", ".mp3"}
    assert len({r["artist"] for r in rows}) == 3
    for row in rows:
        assert not Path(row["path"]).is_absolute() and row["path"].startswith("audio/")
        moods = row["moods"].split(";")
        assert 1 <= len(moods) <= 2 and set(moods) <= set(cfg.moods)
        assert cfg.min_year <= int(row["year"]) <= cfg.max_year
        wave, sr = sf.read(tmp_path / row["path"], dtype="float32")
        assert sr == 16000 and wave.ndim == 1
        # mp3 adds encoder padding; every other codec keeps the length exactly
        assert 4.0 * sr <= len(wave) <= 5.0 * sr + 2500
        assert np.abs(wave).max() <= 1.0 and np.sqrt(np.mean(wave**2)) > 0.01
    wav = next(r for r in rows if r["path"].endswith(".wav"))
    assert sf.info(str(tmp_path / wav["path"])).subtype == "PCM_16"
    stamp = json.loads((tmp_path / "synth_config.json").read_text())
    assert stamp["config"]["n_songs"] == 8 and stamp["config"]["moods"] == list(cfg.moods)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    synthesize(tmp_path / "a", TINY)
    synthesize(tmp_path / "b", TINY)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a == b and any(name.endswith(".ogg") for name in a)  # Vorbis too (fixed stream serial)
    assert (tmp_path / "a" / "manifest.csv").read_text() == TINY_MANIFEST
    assert a["synth_config.json"] == TINY_STAMP_SHA256
    synthesize(tmp_path / "c", SynthConfig(**{**TINY.__dict__, "seed": 1}))
    c = _digests(tmp_path / "c")
    assert c["manifest.csv"] != a["manifest.csv"]
    assert all(c[name] != a[name] for name in a if name.startswith("audio/"))


def test_resume_keeps_files_and_rejects_other_settings(tmp_path: Path) -> None:
    synthesize(tmp_path, TINY)
    before = _digests(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "audio").iterdir()}
    # Interrupted run: one song and the manifest missing. Re-running restores them exactly.
    victim = next((tmp_path / "audio").iterdir())
    victim.unlink()
    (tmp_path / "manifest.csv").unlink()
    synthesize(tmp_path, TINY)
    assert _digests(tmp_path) == before
    for p in (tmp_path / "audio").iterdir():
        if p.name != victim.name:
            assert p.stat().st_mtime_ns == mtimes[p.name], "kept files must not be rewritten"
    other = SynthConfig(**{**TINY.__dict__, "n_songs": 5})
    with pytest.raises(DatasetError, match="other settings"):
        synthesize(tmp_path, other)
    synthesize(tmp_path, other, overwrite=True)
    synthesize(tmp_path / "fresh", other)
    fresh = _digests(tmp_path / "fresh")
    assert {k: v for k, v in _digests(tmp_path).items() if not k.startswith("fresh/")} == fresh
    assert len(fresh) == 5 + 2  # the old dataset's songs are all gone
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        synthesize(tmp_path / "stranger", TINY)


def _window_features(wave: np.ndarray, rng: np.random.Generator, n_windows: int = 3) -> list[np.ndarray]:
    """Summary features of random 187-frame log-mel windows (the model's input size):
    per-band mean and std, spectral flux, and the flux's modulation spectrum (tempo)."""
    mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=512, hop_length=256, n_mels=96)
    logmel = np.log10(1.0 + 10000.0 * mel).T
    out = []
    for _ in range(n_windows):
        start = rng.integers(0, len(logmel) - 187 + 1)
        window = logmel[start : start + 187]
        flux = np.maximum(np.diff(window, axis=0), 0.0).sum(axis=1)
        spectrum = np.abs(np.fft.rfft(flux - flux.mean()))[1:]
        edges = np.unique(np.geomspace(1, len(spectrum), 9).astype(int))
        modulation = np.log1p([spectrum[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
        out.append(np.concatenate([window.mean(0), window.std(0), [flux.mean(), flux.std()], modulation]))
    return out


def _mood_aucs(difficulty: float, n_songs: int = 120, seed: int = 0) -> dict[str, float]:
    """Out-of-fold (song-grouped 5-fold) ROC-AUC per mood of a logistic regression on window features."""
    cfg = SynthConfig(n_songs=n_songs, difficulty=difficulty, min_seconds=4.5, max_seconds=5.5, seed=seed)
    plans = plan_songs(cfg)
    rng = np.random.default_rng(0)
    features, groups, labels = [], [], []
    for i, plan in enumerate(plans):
        for f in _window_features(render_song(plan, cfg), rng):
            features.append(f)
            groups.append(i)
            labels.append([m in plan.moods for m in cfg.moods])
    x, y, g = np.array(features), np.array(labels), np.array(groups)
    aucs = {}
    for j, mood in enumerate(cfg.moods):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        prob = cross_val_predict(model, x, y[:, j], groups=g, cv=GroupKFold(5), method="predict_proba")[:, 1]
        song_prob = np.bincount(g, prob) / np.bincount(g)  # mean over a song's windows
        aucs[mood] = roc_auc_score(np.bincount(g, y[:, j]) > 0, song_prob)
    return aucs


def test_moods_are_audible_in_any_3s_window_and_difficulty_hides_them() -> None:
    # One BLAS thread: these matrices are small, and spinning BLAS threads on a shared
    # 2-core machine cost several times the work itself.
    with threadpool_limits(limits=1):
        easy = _mood_aucs(SynthConfig().difficulty)
        hard = _mood_aucs(0.95)
    print("default difficulty AUC:", {k: round(v, 3) for k, v in easy.items()})
    print("difficulty 0.95 AUC:   ", {k: round(v, 3) for k, v in hard.items()})
    assert np.mean(list(easy.values())) >= 0.80
    assert min(easy.values()) >= 0.68, easy
    assert np.mean(list(hard.values())) <= min(0.68, np.mean(list(easy.values())) - 0.15)


def test_artists_favour_some_moods() -> None:
    def table(strength: float) -> np.ndarray:
        cfg = SynthConfig(n_songs=600, artist_prior_strength=strength)
        plans = plan_songs(cfg)
        artists = sorted({p.artist for p in plans})
        counts = np.zeros((len(artists), len(cfg.moods)))
        for p in plans:
            for m in p.moods:
                counts[artists.index(p.artist), cfg.moods.index(m)] += 1
        return counts

    assert chi2_contingency(table(0.7)).pvalue < 1e-10  # default: artist tells a lot about moods
    assert chi2_contingency(table(0.0)).pvalue > 1e-3  # no priors: artists look alike
    plans = plan_songs(SynthConfig())
    # The demo's dataset, pinned (see TINY_MANIFEST); hashed like synth_config.json's plan_sha256.
    assert hashlib.sha256(json.dumps([asdict(p) for p in plans]).encode()).hexdigest() == DEMO_PLAN_SHA256
    counts = np.bincount([len(p.moods) for p in plans])
    assert counts[0] == 0 and counts[1] > counts[2] > 40  # 1-2 moods per song, mostly one


def test_mood_profiles_known_and_hashed() -> None:
    assert mood_profile("happy") == MOOD_PROFILES["happy"]
    spooky = mood_profile("spooky-carnival")
    assert spooky == mood_profile("spooky-carnival")  # stable across calls (and processes)
    assert spooky != mood_profile("sunday-morning")
    assert len(spooky) == 3 and set(spooky) <= set(CUES)
    assert all(0.6 <= abs(v) <= 1.0 for v in spooky.values())


def test_from_records_uses_real_tags_artists_and_eras(tmp_path: Path) -> None:
    rows = [
        ("track/1", ("happy", "film"), "artist_A", 1999),
        ("track/2", "dark;spooky", "artist_A", None),
        ("track 3", ["calm"], "artist_B", None),
        ("track_4", ("spooky",), "artist_A", None),
    ]
    cfg = SynthConfig(min_seconds=4.0, max_seconds=4.5)
    out = synthesize_from_records(tmp_path, rows, cfg)
    got = {r["song_id"]: r for r in read_manifest(out)}
    assert list(got) == ["track/1", "track/2", "track 3", "track_4"]
    assert got["track/1"]["moods"] == "happy;film" and got["track/1"]["year"] == "1999"
    assert got["track/2"]["moods"] == "dark;spooky" and got["track 3"]["artist"] == "artist_B"
    years_a = [int(got[i]["year"]) for i in ("track/2", "track_4")]
    assert all(cfg.min_year <= y <= cfg.max_year for y in years_a)
    assert abs(years_a[0] - years_a[1]) <= 25  # both near artist_A's era
    for r in got.values():
        assert "/" not in r["path"][len("audio/") :] and " " not in r["path"]
        assert sf.info(str(tmp_path / r["path"])).samplerate == 16000
    with pytest.raises(DatasetError, match="duplicate"):
        synthesize_from_records(tmp_path / "dup", [("x", "happy", "a", 2000), ("x", "sad", "a", 2000)], cfg)


def _write_tsv(path: Path) -> Path:
    lines = [
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS",
        "track_1\tartist_1\talbum_1\t01/1.mp3\t212.7\tmood/theme---happy",
        "track_2\tartist_1\talbum_1\t02/2.mp3\t200.0\tmood/theme---film\tmood/theme---dark",
        "track_3\tartist_2\talbum_2\t03/3.mp3\t199.0\tgenre---rock",
        "track_4\tartist_2\talbum_2\t04/4.mp3\t180.0\tmood/theme---calm",
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())  # the official files use CRLF
    return path


def test_read_mtg_jamendo_records(tmp_path: Path) -> None:
    tsv = _write_tsv(tmp_path / "moods.tsv")
    records = read_mtg_jamendo_records(tsv)
    assert [r.song_id for r in records] == ["track_1", "track_2", "track_4"]  # no mood tag -> skipped
    assert records[1].moods == ("film", "dark") and records[1].artist == "artist_1"
    assert records[1].year is None
    assert len(read_mtg_jamendo_records(tsv, limit=2)) == 2
    # Read by the dataset adapter, so its folder works too, and its errors name file and line.
    folder = tmp_path / "mtg"
    folder.mkdir()
    _write_tsv(folder / "autotagging_moodtheme.tsv")
    assert read_mtg_jamendo_records(folder) == records
    with pytest.raises(DatasetError, match="not found: .*missing.tsv .*the synth source must be"):
        read_mtg_jamendo_records(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match="bad.tsv:1: expected header starting with TRACK_ID"):
        read_mtg_jamendo_records(tmp_path / "bad.tsv")
    (tmp_path / "short.tsv").write_text(tsv.read_text() + "track_9\tartist_9\n")
    with pytest.raises(DatasetError, match="short.tsv:6: .*column ALBUM_ID is missing"):
        read_mtg_jamendo_records(tmp_path / "short.tsv")
    (tmp_path / "latin1.tsv").write_bytes(tsv.read_bytes().replace(b"artist_1", b"artist_\xe9"))
    with pytest.raises(DatasetError, match="cannot read MTG-Jamendo metadata"):
        read_mtg_jamendo_records(tmp_path / "latin1.tsv")
    (tmp_path / "untagged.tsv").write_text(
        tsv.read_text().splitlines()[0] + "\ntrack_3\tartist_2\talbum_2\t03/3.mp3\t199.0\tgenre---rock\n"
    )
    with pytest.raises(DatasetError, match="no rows with mood/theme tags"):
        read_mtg_jamendo_records(tmp_path / "untagged.tsv")


def test_source_plan_is_pinned(tmp_path: Path) -> None:
    tsv = _write_tsv(tmp_path / "moods.tsv")
    manifest = synthesize(tmp_path / "out", SynthConfig(source=str(tsv), min_seconds=4.0, max_seconds=4.5))
    assert manifest.read_text() == TSV_MANIFEST


def test_read_real_mtg_jamendo_metadata(mtg_jamendo_dir: Path) -> None:
    records = read_mtg_jamendo_records(mtg_jamendo_dir / "autotagging_moodtheme.tsv", limit=200)
    assert len(records) == 200
    assert all(r.song_id.startswith("track_") and r.artist.startswith("artist_") for r in records)
    assert all(m and "\r" not in m and "---" not in m for r in records for m in r.moods)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"difficulty": 1.5}, "difficulty"),
        ({"n_songs": 2, "n_artists": 3}, "n_songs"),
        ({"min_seconds": 2.0}, "min_seconds"),
        ({"moods": ("happy", "happy")}, "duplicates"),
        ({"moods": ("happy;sad",)}, "mood"),
        ({"formats": ("aiff",)}, "unknown format"),
        ({"mood_count_probs": (0.5, 0.3, 0.2), "moods": ("a", "b")}, "mood_count_probs"),
        ({"min_year": 2020, "max_year": 2000}, "min_year"),
    ],
)
def test_bad_settings_are_config_errors(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**change).validate()


def test_cli_synth_summary_resume_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    args = [
        "synth",
        str(out),
        "--songs",
        "6",
        "--artists",
        "2",
        "--duration",
        "4-4.5",
        "--seed",
        "3",
        "--moods",
        "happy,sad,dark",
        "--formats",
        "flac",
        "-q",
    ]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "synthesized 6 songs from 2 artists" in text and "6 written, 0 kept" in text
    assert f"manifest: {out / 'manifest.csv'}" in text
    rows = read_manifest(out / "manifest.csv")
    assert all(r["path"].endswith(".flac") for r in rows)
    assert {m for r in rows for m in r["moods"].split(";")} <= {"happy", "sad", "dark"}
    assert cli_main(args) == 0
    assert "0 written, 6 kept" in capsys.readouterr().out

    assert cli_main(["synth", str(out), "--songs", "7", "--artists", "2", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["synth", str(tmp_path / "x"), "--difficulty", "2", "-q"]) == 2
    assert "difficulty=2.0: must be less than or equal to 1" in capsys.readouterr().err

    tsv = _write_tsv(tmp_path / "moods.tsv")
    mtg = tmp_path / "mtg"
    assert cli_main(["synth", str(mtg), "--from-mtg-jamendo", str(tsv), "--limit", "2", "--duration", "4", "-q"]) == 0
    assert [r["song_id"] for r in read_manifest(mtg / "manifest.csv")] == ["track_1", "track_2"]
    assert cli_main(["synth", str(tmp_path / "y"), "--from-mtg-jamendo", str(tsv), "--songs", "3"]) == 2
    assert "cannot be combined" in capsys.readouterr().err

    config = tmp_path / "synth.yaml"
    config.write_text("n_songs: 4\nn_artists: 2\nmin_seconds: 4\nmax_seconds: 4\nformats: [wav]\n")
    assert cli_main(["synth", str(tmp_path / "z"), "--config", str(config), "--seed", "5", "-q"]) == 0
    stamp = json.loads((tmp_path / "z" / "synth_config.json").read_text())["config"]
    assert stamp["n_songs"] == 4 and stamp["seed"] == 5 and stamp["formats"] == ["wav"]


def test_several_processes_write_the_same_files_as_one(tmp_path: Path) -> None:
    import hashlib

    cfg = SynthConfig(n_songs=8, n_artists=3, min_seconds=3.5, max_seconds=4.0, formats=("wav", "flac", "ogg"))

    def digests(root: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "audio").iterdir())}

    synthesize(tmp_path / "one", cfg)
    synthesize(tmp_path / "two", cfg, workers=2)
    assert digests(tmp_path / "one") == digests(tmp_path / "two") and len(digests(tmp_path / "one")) == 8
    assert (tmp_path / "one" / "manifest.csv").read_text() == (tmp_path / "two" / "manifest.csv").read_text()
