"""Label selection: the paper's MTG-Jamendo counts, artist top-K, year buckets, ties, errors;
metadata classes from training songs only (label_and_split) and the split facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtlmood.config import DatasetConfig, LabelConfig, RunConfig, SplitConfig
from mtlmood.datasets import SongRecord, load_songs
from mtlmood.errors import ConfigError, DatasetError
from mtlmood.labels import build_labels, year_buckets
from mtlmood.rundata import label_and_split, split_facts


def song(
    song_id: str, tags: tuple[str, ...], artist: str | None = None, year: int | None = None, group: str = ""
) -> SongRecord:
    return SongRecord(
        song_id=song_id, audio_path=Path(f"{song_id}.wav"), tags=tags, artist=artist, year=year, group=group
    )


@pytest.fixture(scope="module")
def mtg_records(mtg_jamendo_dir: Path) -> list[SongRecord]:
    return load_songs(DatasetConfig(name="mtg-jamendo", root=str(mtg_jamendo_dir)))


@pytest.mark.parametrize(
    "n_moods, songs, last_mood", [(3, 4346, "energetic"), (9, 10041, "dream"), (50, 17946, "retro")]
)
def test_paper_song_counts_on_mtg_jamendo(
    mtg_records: list[SongRecord], n_moods: int, songs: int, last_mood: str
) -> None:
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
    records = [
        song("a", ("zen", "blue")),
        song("b", ("blue",)),
        song("c", ("zen",)),
        song("d", ("amber",)),
        song("e", ()),
    ]
    labelled = build_labels(records, LabelConfig(n_moods=2, metadata="none"))
    assert labelled.mood_names == ["blue", "zen"]  # both 2 songs; "amber" (1) is cut
    assert labelled.song_ids == ["a", "b", "c"]
    assert labelled.mood_targets.tolist() == [[1, 1], [1, 0], [0, 1]]


def test_fewer_tags_than_asked_keeps_them_all() -> None:
    labelled = build_labels([song("a", ("x",)), song("b", ("y",))], LabelConfig(n_moods=50, metadata="none"))
    assert labelled.mood_names == ["x", "y"]


def test_artist_top_k_ties_by_name_and_others_all_zero() -> None:
    records = [
        song("1", ("m",), "bob"),
        song("2", ("m",), "bob"),
        song("3", ("m",), "cat"),
        song("4", ("m",), "ann"),
        song("5", ("m",), None),
        song("6", ("other",), "zed"),
        song("7", ("other",), "zed"),
        song("8", ("other",), "zed"),
    ]
    labelled = build_labels(records, LabelConfig(n_moods=1, metadata="artist", n_artists=2))
    # "zed" has the most songs overall, but none of them is kept ("other" is not a top-1 mood).
    assert labelled.mood_names == ["m"]  # 5 songs carry "m", 3 carry "other"
    assert labelled.meta_names == ["artist:bob", "artist:ann"]  # ann and cat tie at 1: by name
    assert labelled.meta_targets.tolist() == [[1, 0], [1, 0], [0, 0], [0, 1], [0, 0]]


def test_year_buckets_end_at_latest_year() -> None:
    records = [song(str(y), ("m",), "a", y) for y in (1970, 1976, 1977, 1981, 1982, 2019, 2021)] + [
        song("none", ("m",), "a", None)
    ]
    buckets = year_buckets(records, 9, 5)
    assert [b.name for b in buckets] == [
        "year:1977-1981",
        "year:1982-1986",
        "year:1987-1991",
        "year:1992-1996",
        "year:1997-2001",
        "year:2002-2006",
        "year:2007-2011",
        "year:2012-2016",
        "year:2017-2021",
    ]
    labelled = build_labels(records, LabelConfig(n_moods=1, metadata="year"))
    # The grid is 9 buckets; the 6 that hold no song are not classes.
    assert labelled.meta_names == ["year:1977-1981", "year:1982-1986", "year:2017-2021"]
    hot = {
        song_id: (row.argmax() if row.any() else None) for song_id, row in zip(labelled.song_ids, labelled.meta_targets)
    }
    assert hot == {"1970": None, "1976": None, "1977": 0, "1981": 0, "1982": 1, "2019": 2, "2021": 2, "none": None}


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


# ------------------------------------------------ metadata classes from the training songs only


def test_top_k_artists_are_counted_on_training_songs_only() -> None:
    # "tess" has the most songs overall, all of them outside training: not a class.
    records = [
        song("1", ("m",), "bob"),
        song("2", ("m",), "bob"),
        song("3", ("m",), "ann"),
        song("4", ("m",), "tess"),
        song("5", ("m",), "tess"),
        song("6", ("m",), "tess"),
        song("7", ("m",), "cat"),
    ]
    cfg = LabelConfig(n_moods=1, metadata="artist", n_artists=2)
    everyone = build_labels(records, cfg)
    assert everyone.meta_names == ["artist:tess", "artist:bob"]  # without a split: all kept songs
    labelled = build_labels(records, cfg, metadata_from=["1", "2", "3", "7"])
    assert labelled.meta_names == ["artist:bob", "artist:ann"]  # ann and cat tie at 1: by name
    assert labelled.n_meta == 2 and len(labelled) == 7  # every kept song still gets targets
    assert labelled.meta_targets.tolist() == [[1, 0], [1, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]]
    assert labelled.artists == ["bob", "bob", "ann", "tess", "tess", "tess", "cat"]
    with pytest.raises(DatasetError, match="no artist metadata among the training songs"):
        build_labels([song("a", ("m",)), song("b", ("m",), "bob")], cfg, metadata_from=["a"])


def test_year_buckets_come_from_training_songs_and_empty_ones_are_dropped() -> None:
    years = {"a": 2000, "b": 2001, "c": 2012, "d": 2014, "e": 2006, "f": 2020, "g": 1990}
    records = [song(s, ("m",), "x", y) for s, y in years.items()]
    train = ["a", "b", "c", "d"]  # 2000-2014: the grid ends at 2014 (2010-2014, 2005-2009, 2000-2004, ...)
    labelled = build_labels(records, LabelConfig(n_moods=1, metadata="year", n_year_buckets=4), metadata_from=train)
    # 2005-2009 holds only "e", a non-training song: no class. N_meta counts training classes only.
    assert labelled.meta_names == ["year:2000-2004", "year:2010-2014"] and labelled.n_meta == 2
    hot = {s: (row.argmax() if row.any() else None) for s, row in zip(labelled.song_ids, labelled.meta_targets)}
    # "e" is in the dropped bucket, "f" newer than every training song, "g" older than the grid.
    assert hot == {"a": 0, "b": 0, "c": 1, "d": 1, "e": None, "f": None, "g": None}


def _run_config(method: str = "random", metadata: str = "artist", seed: int = 0, **labels: int) -> RunConfig:
    return RunConfig(
        labels=LabelConfig(n_moods=labels.pop("n_moods", 3), metadata=metadata, **labels),
        split=SplitConfig(method=method, seed=seed),
    )  # type: ignore[arg-type]


def test_label_and_split_chooses_metadata_from_the_training_split() -> None:
    records = [song(f"s{i:02d}", ("m", "n") if i % 3 else ("m",), f"art{i % 7}", 2000 + i % 11) for i in range(40)] + [
        song("untagged", ("zzz",), "art0")
    ]
    config = _run_config(metadata="artist+year", n_moods=2, n_artists=3)
    labelled, splits = label_and_split(records, config)
    assert "untagged" not in labelled.song_ids and labelled.mood_names == ["m", "n"]
    train = [labelled.song_ids[i] for i in splits["train"]]
    assert labelled.meta_names == build_labels(records, config.labels, metadata_from=train).meta_names
    # The split is the one the moods alone give: metadata never moves a song.
    from mtlmood.splits import split_songs

    alone = split_songs(build_labels(records, LabelConfig(n_moods=2, metadata="none")), config.split)
    assert all(np.array_equal(splits[k], alone[k]) for k in splits)
    # Every metadata class has a positive among the training songs.
    assert labelled.meta_targets[splits["train"]].sum(axis=0).min() >= 1


def test_split_facts_count_songs_labels_and_artist_overlap() -> None:
    records = [
        song("1", ("m",), "ann", 2001),
        song("2", ("m",), "ann", 2002),
        song("3", ("m",), "bob", 2003),
        song("4", ("m",), "ann", 2004),
        song("5", ("m",), "cat", 2005),
        song("6", ("m",), None, 2006),
        song("7", ("m",), "dan", 2007),
    ]
    labelled = build_labels(
        records, LabelConfig(n_moods=1, metadata="artist+year", n_artists=5), metadata_from=["1", "2", "3"]
    )
    splits = {"train": np.array([0, 1, 2]), "validation": np.array([6]), "test": np.array([3, 4, 5])}
    facts = split_facts(labelled, splits)
    assert facts == {
        "songs": {"train": 3, "validation": 1, "test": 3},
        "n_mood_labels": 1,
        "n_meta": 3,
        "n_artist_classes": 2,
        "n_year_classes": 1,
        "artists_train": 2,
        "artists_test": 2,
        "artists_shared_train_test": 1,
        "test_songs_artist_in_train": 1,
        "test_songs_artist_in_train_percent": pytest.approx(100 / 3),
    }


def test_mtg_jamendo_official_split_is_artist_disjoint(mtg_records: list[SongRecord]) -> None:
    config = _run_config(method="official", metadata="artist", n_moods=3)
    labelled, splits = label_and_split(mtg_records, config)
    assert len(labelled) == 4346  # moods are still ranked over every song
    facts = split_facts(labelled, splits)
    assert facts["n_meta"] == facts["n_artist_classes"] == 50 and facts["n_year_classes"] == 0
    assert facts["artists_train"] > 0 and facts["artists_test"] > 0
    # MTG-Jamendo's official splits keep every artist in one part: no test song's artist is a class.
    assert facts["artists_shared_train_test"] == 0 and facts["test_songs_artist_in_train"] == 0
    assert labelled.meta_targets[splits["test"]].sum() == 0
    assert labelled.meta_targets[splits["train"]].sum(axis=0).min() >= 1
    # All-songs counting (the old rule) would have made some test-only artists classes.
    everyone = build_labels(mtg_records, config.labels)
    assert set(everyone.meta_names) != set(labelled.meta_names)


def test_mtg_jamendo_random_split_shares_artists(mtg_records: list[SongRecord]) -> None:
    labelled, splits = label_and_split(mtg_records, _run_config(method="random", n_moods=3))
    facts = split_facts(labelled, splits)
    assert sum(facts["songs"].values()) == 4346
    assert facts["artists_shared_train_test"] > 0 and facts["test_songs_artist_in_train_percent"] > 50
