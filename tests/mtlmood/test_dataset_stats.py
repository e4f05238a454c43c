"""`mtlmood data stats`: run as a user would (a subprocess) on the real metadata, and on small manifests
whose official split makes every count known by construction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtlmood.config import DatasetConfig, LabelConfig, RunConfig, SplitConfig
from mtlmood.dataset_stats import dataset_stats, render_stats


def mtlmood(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtlmood_cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("n_moods, kept", [(3, 4346), (9, 10041), (50, 17946)])
def test_stats_prints_the_paper_counts(mtg_jamendo_dir: Path, n_moods: int, kept: int) -> None:
    result = mtlmood(
        "data",
        "stats",
        "--set",
        "dataset.name=mtg-jamendo",
        "--set",
        f"dataset.root={mtg_jamendo_dir}",
        "--set",
        f"labels.n_moods={n_moods}",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "songs in metadata  18486" in out
    assert f"songs kept         {kept}  (with at least one of the top {n_moods} moods)" in out
    assert "happy                       1657" in out
    assert f"missing audio      {kept} of {kept} kept songs" in out  # the audio is not distributed
    assert "year coverage      no year metadata" in out
    # Metadata classes come from the training songs, as in a run; the report says so and
    # counts the test songs whose artist the model saw in training.
    assert "classes chosen from the" in out and "training songs)" in out
    assert "artist overlap     " in out


def test_stats_json_with_official_split_and_sugar_flags(mtg_jamendo_dir: Path) -> None:
    result = mtlmood(
        "data",
        "stats",
        "--dataset",
        "mtg-jamendo",
        "--root",
        str(mtg_jamendo_dir),
        "--n-moods",
        "59",
        "--split",
        "official",
        "--metadata",
        "artist",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["songs_kept"] == 18486 and len(stats["mood_counts"]) == 59
    assert stats["split_sizes"] == {"train": 9949, "validation": 3802, "test": 4231}
    assert stats["split_left_out"] == 504
    assert stats["n_meta"] == 50 and 0 < stats["artist_coverage"] < stats["artists_known"] == 18486
    assert stats["metadata_songs"] == stats["split_sizes"]["train"]
    facts = stats["split_facts"]
    assert facts["songs"] == stats["split_sizes"] and facts["n_meta"] == facts["n_artist_classes"] == 50
    # MTG-Jamendo's official split is artist-disjoint: no test song has a training artist.
    assert facts["artists_shared_train_test"] == facts["test_songs_artist_in_train"] == 0


def test_stats_on_magnatagatune(magnatagatune_dir: Path) -> None:
    result = mtlmood(
        "data",
        "stats",
        "--dataset",
        "magnatagatune",
        "--root",
        str(magnatagatune_dir),
        "--set",
        "dataset.tag_set=all",
        "--set",
        "labels.n_moods=50",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["songs_in_metadata"] == 25863 and stats["songs_kept"] == 21111
    assert sum(stats["split_sizes"].values()) == 21111


def test_stats_user_errors_are_one_line(mtg_jamendo_dir: Path, tmp_path: Path) -> None:
    result = mtlmood("data", "stats", "--dataset", "mtg-jamendo", "--root", str(mtg_jamendo_dir), "--metadata", "year")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mtlmood data: error: mtg-jamendo has no year metadata among the training "
        "songs; use labels.metadata=none or artist"
    )
    (tmp_path / "bad.csv").write_text("path,mood\nx.wav,happy\n")
    result = mtlmood("data", "stats", "--dataset", "csv", "--root", str(tmp_path / "bad.csv"))
    assert result.returncode == 2 and "bad.csv:1: missing required column(s) moods" in result.stderr
    result = mtlmood("data", "stats", "--set", "labels.n_mood=3")
    assert result.returncode == 2 and "unknown key 'labels.n_mood'" in result.stderr


# (split, artist, year) of the 8 real clips, in file-name order. Over all songs "star" is
# the most frequent artist (4 songs); over the 3 training songs it is "a" (2 songs).
# The training years end in 2002, so with 2 buckets of 3 years the grid is 1997-1999,
# 2000-2002 and only 2000-2002 holds a training song: 1998 (dropped bucket), 2010 and
# 2011 (newer than every training song) get no year target.
CLIP_ROWS = [
    ("train", "a", 2000),
    ("train", "a", 2001),
    ("train", "b", 2002),
    ("validation", "star", 1998),
    ("validation", "star", 2001),
    ("validation", "star", 2010),
    ("test", "star", 2002),
    ("test", "a", 2011),
]


def _manifest(real_audio_dir: Path, directory: Path, with_split: bool = True) -> RunConfig:
    clips = sorted(p for p in real_audio_dir.iterdir() if p.suffix in (".ogg", ".mp3", ".flac", ".wav"))
    assert len(clips) == len(CLIP_ROWS), "the shared audio folder changed; update CLIP_ROWS"
    rows = [
        f"{clip},happy;calm,{artist},{year},{split if with_split else ''}"
        for clip, (split, artist, year) in zip(clips, CLIP_ROWS)
    ]
    rows += [
        f"missing.mp3,sad;happy,b,1950,{'test' if with_split else ''}",  # kept (happy), its audio is missing
        "untagged.mp3,,b,1990,",
    ]  # no mood: dropped before anything is counted
    (directory / "manifest.csv").write_text("path,moods,artist,year,split\n" + "\n".join(rows) + "\n")
    return RunConfig(
        dataset=DatasetConfig(name="csv", root=str(directory)),
        labels=LabelConfig(n_moods=2, metadata="artist+year", n_artists=1, n_year_buckets=2, year_bucket_size=3),
        split=SplitConfig(method="official"),
    )


def test_dataset_stats_choose_metadata_from_the_training_songs(real_audio_dir: Path, tmp_path: Path) -> None:
    stats = dataset_stats(_manifest(real_audio_dir, tmp_path))
    assert stats.songs_in_metadata == 10 and stats.songs_kept == 9
    assert stats.mood_counts == [("happy", 9), ("calm", 8)]  # "sad" (1 song) is cut
    assert stats.split_sizes == {"train": 3, "validation": 3, "test": 3} and stats.split_left_out == 0
    assert stats.metadata_songs == 3
    assert stats.n_meta == 1 + 1  # artist "a"; the one year bucket with a training song
    assert stats.artist_coverage == 3 and stats.artists_known == 9  # the songs of "a", not of "star"
    assert stats.year_range == (1997, 2002)
    assert stats.year_coverage == 5 and stats.years_known == 9  # 2000, 2001, 2002, 2001, 2002
    assert stats.missing_audio == 1 and stats.missing_audio_example.endswith("missing.mp3")
    facts = stats.split_facts
    assert facts["artists_train"] == 2 and facts["artists_test"] == 3 and facts["artists_shared_train_test"] == 2
    assert facts["test_songs_artist_in_train"] == 2  # "a" (2011) and "b" (missing.mp3), not "star"
    text = render_stats(stats)
    assert "classes chosen from the 3 training songs" in text
    assert "missing audio      1 of 9 kept songs" in text and "year coverage      5 songs in 1997-2002" in text
    assert "artist overlap     2 of 3 test songs (66.7%) have an artist with training songs; 2 of 3" in text


def test_dataset_stats_without_a_split_count_metadata_over_all_kept_songs(real_audio_dir: Path, tmp_path: Path) -> None:
    stats = dataset_stats(_manifest(real_audio_dir, tmp_path, with_split=False))
    assert stats.split_error.startswith("this dataset has no official split")
    assert stats.split_sizes == {} and stats.split_facts == {} and stats.metadata_songs == stats.songs_kept == 9
    assert stats.artist_coverage == 4  # "star" leads over all kept songs
    text = render_stats(stats)
    assert "not available" in text and "classes chosen from all 9 kept songs: no split" in text
    assert "artist overlap" not in text
