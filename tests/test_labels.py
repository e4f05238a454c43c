"""Label selection: the paper's MTG-Jamendo counts, artist top-K, year buckets, ties, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtlmood.config import DatasetConfig, LabelConfig
from mtlmood.datasets import SongRecord, load_songs
from mtlmood.errors import ConfigError, DatasetError
from mtlmood.labels import build_labels, year_buckets


def song(song_id: str, tags: tuple[str, ...], artist: str | None = None, year: int | None = None,
         group: str = "") -> SongRecord:
    return SongRecord(song_id=song_id, audio_path=Path(f"{song_id}.wav"), tags=tags, artist=artist,
                      year=year, group=group)


@pytest.fixture(scope="module")
def mtg_records(mtg_jamendo_dir: Path) -> list[SongRecord]:
    return load_songs(DatasetConfig(name="mtg-jamendo", root=str(mtg_jamendo_dir)))


@pytest.mark.parametrize("n_moods, songs, last_mood", [(3, 4346, "energetic"), (9, 10041, "dream"),
                                                       (50, 17946, "retro")])
def test_paper_song_counts_on_mtg_jamendo(mtg_records: list[SongRecord], n_moods: int, songs: int,
                                          last_mood: str) -> None:
    labelled = build_labels(mtg_records, LabelConfig(n_moods=n_moods, metadata="artist"), dataset="mtg-jamendo")
    assert len(labelled) == songs
    assert labelled.n_moods == n_moods and labelled.mood_names[-1] == last_mood
    assert labelled.mood_targets.shape == (songs, n_moods) and labelled.mood_targets.dtype == np.float32
    assert labelled.mood_targets.sum(axis=1).min() == 1  # every kept song has a kept mood
    assert labelled.n_meta == 50 and labelled.meta_targets.shape == (songs, 50)
    assert all(name.startswith("artist:artist_") for name in labelled.meta_names)
    assert len(labelled.groups) == len(labelled.official_splits) == len(labelled.audio_paths) == songs


def test_top3_moods_and_artist_counts_among_kept_songs(mtg_records: list[SongRecord]) -> None:
    labelled = build_labels(mtg_records, LabelConfig(n_moods=3, metadata="artist", n_artists=5))
    assert labelled.mood_names == ["happy", "film", "energetic"]
    assert labelled.mood_targets.sum(axis=0).tolist() == [1657, 1502, 1357]
    # The top artists are counted among the 4346 kept songs, not all 18486.
    kept = [r for r in mtg_records if set(r.tags) & {"happy", "film", "energetic"}]
    counts: dict[str, int] = {}
    for record in kept:
        counts[record.artist] = counts.get(record.artist, 0) + 1
    expected = sorted(counts, key=lambda a: (-counts[a], a))[:5]
    assert labelled.meta_names == [f"artist:{a}" for a in expected]
    assert labelled.meta_targets.sum(axis=0).tolist() == [counts[a] for a in expected]
    assert labelled.meta_targets.sum(axis=1).max() == 1


def test_all_188_magnatagatune_tags_top50(magnatagatune_dir: Path) -> None:
    records = load_songs(DatasetConfig(name="magnatagatune", root=str(magnatagatune_dir), tag_set="all"))
    labelled = build_labels(records, LabelConfig(n_moods=50, metadata="none"))
    assert labelled.mood_names[:3] == ["guitar", "classical", "slow"]
    assert {"female voice", "metal", "choral"} <= set(labelled.mood_names)  # the usual top-50 edge
    assert len(labelled) == 21111  # clips with at least one top-50 tag (SOURCE.md)
    assert labelled.meta_targets.shape == (21111, 0)


def test_mood_ties_are_broken_by_name_and_untagged_songs_dropped() -> None:
    records = [song("a", ("zen", "blue")), song("b", ("blue",)), song("c", ("zen",)), song("d", ("amber",)),
               song("e", ())]
    labelled = build_labels(records, LabelConfig(n_moods=2, metadata="none"))
    assert labelled.mood_names == ["blue", "zen"]  # both 2 songs; "amber" (1) is cut
    assert labelled.song_ids == ["a", "b", "c"]
    assert labelled.mood_targets.tolist() == [[1, 1], [1, 0], [0, 1]]


def test_fewer_tags_than_asked_keeps_them_all() -> None:
    labelled = build_labels([song("a", ("x",)), song("b", ("y",))], LabelConfig(n_moods=50, metadata="none"))
    assert labelled.mood_names == ["x", "y"]


def test_artist_top_k_ties_by_name_and_others_all_zero() -> None:
    records = [song("1", ("m",), "bob"), song("2", ("m",), "bob"), song("3", ("m",), "cat"),
               song("4", ("m",), "ann"), song("5", ("m",), None), song("6", ("other",), "zed"),
               song("7", ("other",), "zed"), song("8", ("other",), "zed")]
    labelled = build_labels(records, LabelConfig(n_moods=1, metadata="artist", n_artists=2))
    # "zed" has the most songs overall, but none of them is kept ("other" is not a top-1 mood).
    assert labelled.mood_names == ["m"]  # 5 songs carry "m", 3 carry "other"
    assert labelled.meta_names == ["artist:bob", "artist:ann"]  # ann and cat tie at 1: by name
    assert labelled.meta_targets.tolist() == [[1, 0], [1, 0], [0, 0], [0, 1], [0, 0]]


def test_year_buckets_end_at_latest_year() -> None:
    records = [song(str(y), ("m",), "a", y) for y in (1970, 1976, 1977, 1981, 1982, 2019, 2021)] + \
              [song("none", ("m",), "a", None)]
    buckets = year_buckets(records, 9, 5)
    assert [b.name for b in buckets] == ["year:1977-1981", "year:1982-1986", "year:1987-1991",
                                         "year:1992-1996", "year:1997-2001", "year:2002-2006",
                                         "year:2007-2011", "year:2012-2016", "year:2017-2021"]
    labelled = build_labels(records, LabelConfig(n_moods=1, metadata="year"))
    assert labelled.meta_names == [b.name for b in buckets]
    hot = {song_id: (row.argmax() if row.any() else None)
           for song_id, row in zip(labelled.song_ids, labelled.meta_targets)}
    assert hot == {"1970": None, "1976": None, "1977": 0, "1981": 0, "1982": 1, "2019": 8, "2021": 8,
                   "none": None}


def test_artist_plus_year_is_59_labels() -> None:
    records = [song(f"s{i}", ("m",), f"artist_{i % 60:02d}", 1980 + i % 45) for i in range(600)]
    labelled = build_labels(records, LabelConfig(n_moods=3, metadata="artist+year"))
    assert labelled.n_meta == 59
    assert labelled.meta_names[0] == "artist:artist_00" and labelled.meta_names[50] == "year:1980-1984"
    assert labelled.meta_targets.sum(axis=1).min() == 1  # every song has its year bucket
    assert labelled.meta_targets[:, 50:].sum(axis=1).max() == 1


def test_metadata_errors_are_clear(mtg_records: list[SongRecord]) -> None:
    with pytest.raises(DatasetError, match="mtg-jamendo has no year metadata"):
        build_labels(mtg_records, LabelConfig(n_moods=3, metadata="artist+year"), dataset="mtg-jamendo")
    with pytest.raises(DatasetError, match="has no artist metadata"):
        build_labels([song("a", ("m",))], LabelConfig(metadata="artist"))
    with pytest.raises(ConfigError, match="labels.metadata 'genre'"):
        build_labels([song("a", ("m",))], LabelConfig(metadata="genre"))
    with pytest.raises(ConfigError, match="labels.n_moods must be at least 1"):
        build_labels([song("a", ("m",))], LabelConfig(n_moods=0))
    with pytest.raises(DatasetError, match="repeats song id"):
        build_labels([song("a", ("m",)), song("a", ("m",))], LabelConfig(metadata="none"))
    with pytest.raises(DatasetError, match="no song carries a mood tag"):
        build_labels([song("a", ())], LabelConfig(metadata="none"))
