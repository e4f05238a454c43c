"""`mtlmood data stats`: run as a user would (a subprocess) on the real metadata, and on a small manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtlmood.config import DatasetConfig, LabelConfig, RunConfig, SplitConfig
from mtlmood.stats import dataset_stats, render_stats


def mtlmood(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlmood.cli", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("n_moods, kept", [(3, 4346), (9, 10041), (50, 17946)])
def test_stats_prints_the_paper_counts(mtg_jamendo_dir: Path, n_moods: int, kept: int) -> None:
    result = mtlmood("data", "stats", "--set", "dataset.name=mtg-jamendo", "--set", f"dataset.root={mtg_jamendo_dir}",
                     "--set", f"labels.n_moods={n_moods}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "songs in metadata  18486" in out
    assert f"songs kept         {kept}  (with at least one of the top {n_moods} moods)" in out
    assert "happy                       1657" in out
    assert f"missing audio      {kept} of {kept} kept songs" in out  # the audio is not distributed
    assert "year coverage      no year metadata" in out


def test_stats_json_with_official_split_and_sugar_flags(mtg_jamendo_dir: Path) -> None:
    result = mtlmood("data", "stats", "--dataset", "mtg-jamendo", "--root", str(mtg_jamendo_dir),
                     "--n-moods", "59", "--split", "official", "--metadata", "artist", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["songs_kept"] == 18486 and len(stats["mood_counts"]) == 59
    assert stats["split_sizes"] == {"train": 9949, "validation": 3802, "test": 4231}
    assert stats["split_left_out"] == 504
    assert stats["n_meta"] == 50 and 0 < stats["artist_coverage"] < stats["artists_known"] == 18486


def test_stats_on_magnatagatune(magnatagatune_dir: Path) -> None:
    result = mtlmood("data", "stats", "--dataset", "magnatagatune", "--root", str(magnatagatune_dir),
                     "--set", "dataset.tag_set=all", "--set", "labels.n_moods=50", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["songs_in_metadata"] == 25863 and stats["songs_kept"] == 21111
    assert sum(stats["split_sizes"].values()) == 21111


def test_stats_user_errors_are_one_line(mtg_jamendo_dir: Path, tmp_path: Path) -> None:
    result = mtlmood("data", "stats", "--dataset", "mtg-jamendo", "--root", str(mtg_jamendo_dir),
                     "--metadata", "year")
    assert result.returncode == 2
    assert result.stderr.strip() == ("mtlmood data: error: mtg-jamendo has no year metadata; "
                                     "use labels.metadata=none or artist")
    (tmp_path / "bad.csv").write_text("path,mood\nx.wav,happy\n")
    result = mtlmood("data", "stats", "--dataset", "csv", "--root", str(tmp_path / "bad.csv"))
    assert result.returncode == 2 and "bad.csv:1: missing required column(s) moods" in result.stderr
    result = mtlmood("data", "stats", "--set", "labels.n_mood=3")
    assert result.returncode == 2 and "unknown key 'labels.n_mood'" in result.stderr


def test_dataset_stats_on_a_manifest_with_real_audio(real_audio_dir: Path, tmp_path: Path) -> None:
    clips = sorted(p for p in real_audio_dir.iterdir() if p.suffix in (".ogg", ".mp3", ".flac", ".wav"))
    rows = [f"{clip},happy;calm,artist_{i % 2},{2000 + i}" for i, clip in enumerate(clips)]
    rows += ["missing.mp3,sad;happy,artist_9,1950", "untagged.mp3,,artist_9,1990"]
    (tmp_path / "manifest.csv").write_text("path,moods,artist,year\n" + "\n".join(rows) + "\n")
    config = RunConfig(dataset=DatasetConfig(name="csv", root=str(tmp_path)),
                       labels=LabelConfig(n_moods=2, metadata="artist+year", n_artists=1,
                                          n_year_buckets=2, year_bucket_size=3),
                       split=SplitConfig(seed=0))
    stats = dataset_stats(config)
    n = len(clips)
    assert stats.songs_in_metadata == n + 2 and stats.songs_kept == n + 1
    assert stats.mood_counts == [("happy", n + 1), ("calm", n)]  # "sad" (1 song) is cut
    assert stats.n_meta == 1 + 2
    assert stats.artist_coverage == (n + 1) // 2 and stats.artists_known == n + 1
    latest = 2000 + n - 1
    assert stats.year_range == (latest - 5, latest)
    assert stats.year_coverage == min(n, 6) and stats.years_known == n + 1
    assert sum(stats.split_sizes.values()) == n + 1 and stats.split_left_out == 0
    assert stats.missing_audio == 1 and stats.missing_audio_example.endswith("missing.mp3")
    text = render_stats(stats)
    assert "missing audio      1 of" in text and f"year coverage      {min(n, 6)} songs in" in text
