"""Everything one run reads: labelled songs, their song-level splits and the feature cache.

``load_run_data(config)`` is the whole data side of a run:

    records          = load_run_songs(config)                # dataset adapter
    labelled, splits = label_and_split(records, config)      # moods -> split -> metadata from train
    cache            = FeatureCache(cache_dir)                # features computed by `mtlmood prepare`

``label_and_split`` ranks the moods over all songs, splits the kept songs, then
chooses the artist / year classes from the training songs only (see
mtlmood/labels.py), so the test set never decides a label. ``split_facts`` counts
what a report needs about the split: songs per split, label counts, and how many
test songs have an artist the model saw in training.

Songs without features in the cache (e.g. audio that failed to decode during
``prepare``) are dropped from every split and listed in ``RunData.dropped``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from mtlmood.cache import FeatureCache, default_cache_dir
from mtlmood.config import RunConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.errors import CacheError, ConfigError
from mtlmood.labels import LabelledSongs

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class RunData:
    """Labelled songs + split row indices + feature cache, ready for ``mtlmood.train.fit``.

    ``splits[name]`` are row indices into ``labelled`` (only songs present in the
    cache); ``dropped`` are the song ids that were left out for lack of features.
    """

    config: RunConfig
    labelled: LabelledSongs
    splits: dict[str, np.ndarray]
    cache: FeatureCache
    dropped: list[str] = field(default_factory=list)

    @property
    def n_moods(self) -> int:
        return self.labelled.n_moods

    @property
    def n_meta(self) -> int:
        return self.labelled.n_meta

    @property
    def mood_names(self) -> list[str]:
        return list(self.labelled.mood_names)

    @property
    def meta_names(self) -> list[str]:
        return list(self.labelled.meta_names)

    def song_ids(self, split: str) -> list[str]:
        """Song ids of one split, in row order."""
        return [self.labelled.song_ids[i] for i in self._rows(split)]

    def targets(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(mood (n, N_mood), meta (n, N_meta)) float32 targets of one split."""
        rows = self._rows(split)
        meta = np.asarray(self.labelled.meta_targets, dtype=np.float32)
        if meta.ndim != 2:
            meta = meta.reshape(len(self.labelled), -1)
        return (np.asarray(self.labelled.mood_targets, dtype=np.float32)[rows], meta[rows])

    def _rows(self, split: str) -> np.ndarray:
        try:
            return self.splits[split]
        except KeyError:
            raise ConfigError(f"unknown split {split!r}; known: {', '.join(self.splits)}") from None

    def summary(self) -> dict[str, object]:
        """Counts for logs and metrics.json (``split_facts``: after dropping songs without features)."""
        return {
            "songs": {name: int(len(rows)) for name, rows in self.splits.items()},
            "n_moods": self.n_moods,
            "n_meta": self.n_meta,
            "dropped_without_features": len(self.dropped),
            "cache_dir": str(self.cache.directory),
            "split_facts": split_facts(self.labelled, self.splits),
        }


def label_and_split(records: Sequence[SongRecord], config: RunConfig) -> tuple[LabelledSongs, dict[str, np.ndarray]]:
    """(labelled songs, {"train", "validation", "test"} -> row indices) the way a run builds them.

    Moods are chosen over all songs and songs without a kept mood dropped; the kept
    songs are split; then the artist / year classes are chosen from the training
    songs only (``build_labels(metadata_from=...)``). The split depends only on the
    kept songs' groups and official splits, which the metadata does not change, so
    it is the same in both passes (checked). The feature cache is not consulted:
    a training song that later turns out to lack features still counted here.
    """
    from mtlmood.labels import build_labels
    from mtlmood.splits import split_songs

    name = config.dataset.name
    moods_only = build_labels(records, replace(config.labels, metadata="none"), dataset=name)
    splits = split_songs(moods_only, config.split)
    train_ids = [moods_only.song_ids[i] for i in splits["train"]]
    labelled = build_labels(records, config.labels, dataset=name, metadata_from=train_ids)
    if labelled.song_ids != moods_only.song_ids:  # would silently misalign the split's rows
        raise AssertionError("the metadata pass kept other songs than the mood pass")
    return labelled, splits


def _meta_kind_count(labelled: LabelledSongs, kind: str) -> int:
    return sum(1 for name in labelled.meta_names if name.startswith(f"{kind}:"))


def split_facts(labelled: LabelledSongs, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a report needs to know about a split: songs per split, label counts, artist overlap.

    ``test_songs_artist_in_train``: test songs whose (known) artist has a song in the
    training split, also as a percentage of the test songs (NaN without test songs);
    an artist-disjoint split (e.g. MTG-Jamendo's official one) has 0. Artist facts
    are 0 when the songs have no artist metadata (``labelled.artists`` empty or "").
    """
    artists = labelled.artists or [""] * len(labelled)

    def known(split: str) -> list[str]:
        return [artists[i] for i in splits.get(split, []) if artists[i]]

    train_artists = set(known("train"))
    test_artists = known("test")
    n_test = len(splits.get("test", []))
    in_train = sum(1 for artist in test_artists if artist in train_artists)
    return {
        "songs": {name: int(len(rows)) for name, rows in splits.items()},
        "n_mood_labels": labelled.n_moods,
        "n_meta": labelled.n_meta,
        "n_artist_classes": _meta_kind_count(labelled, "artist"),
        "n_year_classes": _meta_kind_count(labelled, "year"),
        "artists_train": len(train_artists),
        "artists_test": len(set(test_artists)),
        "artists_shared_train_test": len(train_artists & set(test_artists)),
        "test_songs_artist_in_train": in_train,
        "test_songs_artist_in_train_percent": 100.0 * in_train / n_test if n_test else float("nan"),
    }


def assemble_run_data(
    config: RunConfig, labelled: LabelledSongs, splits: dict[str, np.ndarray], cache: FeatureCache
) -> RunData:
    """Check the pieces against each other and the config, drop songs the cache lacks."""
    cache.check_config(config.features)
    if config.model.n_mels != config.features.n_mels:
        raise ConfigError(f"model.n_mels={config.model.n_mels} but features.n_mels={config.features.n_mels}")
    missing = set(SPLITS) - set(splits)
    if missing:
        raise ConfigError(f"splits lack {sorted(missing)}")
    present = np.fromiter((song in cache for song in labelled.song_ids), dtype=bool, count=len(labelled))
    dropped_rows = sorted(
        set().union(*(set(np.asarray(r).tolist()) for r in splits.values())) - set(np.flatnonzero(present).tolist())
    )
    dropped = [labelled.song_ids[i] for i in dropped_rows]
    kept = {
        name: np.asarray(rows, dtype=np.int64)[present[np.asarray(rows, dtype=np.int64)]]
        for name, rows in splits.items()
    }
    if dropped:
        log.warning(
            "%d of %d songs have no features in %s and are left out (e.g. %s)",
            len(dropped),
            len(labelled),
            cache.directory,
            dropped[0],
        )
    for name in SPLITS:
        if len(kept[name]) == 0:
            raise CacheError(
                f"the {name} split has no songs with features in {cache.directory} "
                f"({len(splits[name])} before dropping); run `mtlmood prepare` first"
            )
    return RunData(config=config, labelled=labelled, splits=kept, cache=cache, dropped=dropped)


def load_run_data(config: RunConfig) -> RunData:
    """Dataset -> labels -> splits -> feature cache, for one run (see the module docstring)."""
    from mtlmood.datasets import load_run_songs

    records = load_run_songs(config)
    labelled, splits = label_and_split(records, config)
    cache = FeatureCache(default_cache_dir(config))
    return assemble_run_data(config, labelled, splits, cache)
