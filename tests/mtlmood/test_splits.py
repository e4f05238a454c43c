"""Splits: group-aware seeded 80/10/10 on real metadata, and the official MTG-Jamendo / MTT splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtlmood.config import DatasetConfig, LabelConfig, SplitConfig
from mtlmood.datasets import SongRecord, load_songs
from mtlmood.errors import ConfigError, DatasetError
from mtlmood.labels import LabelledSongs, build_labels
from mtlmood.splits import split_songs, unassigned


@pytest.fixture(scope="module")
def mtg50(mtg_jamendo_dir: Path) -> LabelledSongs:
    records = load_songs(DatasetConfig(name="mtg-jamendo", root=str(mtg_jamendo_dir)))
    return build_labels(records, LabelConfig(n_moods=50, metadata="none"))


@pytest.fixture(scope="module")
def mtt50(magnatagatune_dir: Path) -> LabelledSongs:
    records = load_songs(DatasetConfig(name="magnatagatune", root=str(magnatagatune_dir), tag_set="all"))
    return build_labels(records, LabelConfig(n_moods=50, metadata="none"))


def _check_partition(splits: dict[str, np.ndarray], n: int) -> None:
    assert list(splits) == ["train", "validation", "test"]
    for rows in splits.values():
        assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)  # sorted, no repeats
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(n))


def test_random_split_is_80_10_10_and_seeded(mtg50: LabelledSongs) -> None:
    n = len(mtg50)  # 17946 songs, each its own group
    splits = split_songs(mtg50, SplitConfig(seed=0))
    _check_partition(splits, n)
    # Singleton groups: the cut lands on the nearest whole song.
    assert len(splits["train"]) == round(0.8 * n)
    assert len(splits["train"]) + len(splits["validation"]) == round(0.9 * n)
    again = split_songs(mtg50, SplitConfig(seed=0))
    assert all(np.array_equal(splits[k], again[k]) for k in splits)
    other = split_songs(mtg50, SplitConfig(seed=1))
    assert not np.array_equal(splits["test"], other["test"])


def test_random_split_keeps_magnatagatune_tracks_together(mtt50: LabelledSongs) -> None:
    n = len(mtt50)
    splits = split_songs(mtt50, SplitConfig(seed=3))
    _check_partition(splits, n)
    groups = np.asarray(mtt50.groups, dtype=object)
    members = [set(groups[rows]) for rows in splits.values()]
    assert not (members[0] & members[1] or members[0] & members[2] or members[1] & members[2])
    largest = max(np.unique(groups, return_counts=True)[1])
    assert abs(len(splits["train"]) - 0.8 * n) <= largest / 2 + 1
    assert abs(len(splits["validation"]) - 0.1 * n) <= largest + 1


def test_official_split_0_of_mtg_jamendo(mtg_jamendo_dir: Path) -> None:
    records = load_songs(DatasetConfig(name="mtg-jamendo", root=str(mtg_jamendo_dir)))
    labelled = build_labels(records, LabelConfig(n_moods=59, metadata="none"))  # every tag: every track
    assert len(labelled) == 18486
    splits = split_songs(labelled, SplitConfig(method="official", official_split=0))
    assert {k: len(v) for k, v in splits.items()} == {"train": 9949, "validation": 3802, "test": 4231}
    assert unassigned(labelled, splits) == 504
    ids = np.asarray(labelled.song_ids)
    lines = (mtg_jamendo_dir / "splits/split-0/autotagging_moodtheme-validation.tsv").read_text().splitlines()
    assert set(ids[splits["validation"]]) == {line.split("\t")[0] for line in lines[1:]}


def test_official_split_counts_only_kept_songs(mtt50: LabelledSongs) -> None:
    splits = split_songs(mtt50, SplitConfig(method="official"))
    assert sum(len(v) for v in splits.values()) + unassigned(mtt50, splits) == len(mtt50)
    official = np.asarray([s or "" for s in mtt50.official_splits], dtype=object)
    assert set(official[splits["test"]]) == {"test"}


def _toy(n: int, groups: list[str] | None = None) -> LabelledSongs:
    records = [
        SongRecord(song_id=f"s{i}", audio_path=Path(f"s{i}.wav"), tags=("m",), group=groups[i] if groups else "")
        for i in range(n)
    ]
    return build_labels(records, LabelConfig(n_moods=1, metadata="none"))


def test_small_datasets_still_get_three_nonempty_splits() -> None:
    splits = split_songs(_toy(3), SplitConfig())
    assert [len(v) for v in splits.values()] == [1, 1, 1]
    splits = split_songs(_toy(10), SplitConfig(seed=5))
    assert [len(v) for v in splits.values()] == [8, 1, 1]
    with pytest.raises(DatasetError, match="at least 3 songs/groups, got 2"):
        split_songs(_toy(6, ["a", "a", "a", "b", "b", "b"]), SplitConfig())


def test_split_errors() -> None:
    with pytest.raises(DatasetError, match="no official split.*split.method=random"):
        split_songs(_toy(5), SplitConfig(method="official"))
    with pytest.raises(ConfigError, match="sum to less than 1"):
        split_songs(_toy(5), SplitConfig(train_fraction=0.9, validation_fraction=0.1))
