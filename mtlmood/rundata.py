"""Everything one run reads: labelled songs, their song-level splits and the feature cache.

``load_run_data(config)`` is the whole data side of a run:

    records  = load_run_songs(config)                   # dataset adapter
    labelled = build_labels(records, config.labels)     # top-N moods, metadata targets
    splits   = split_songs(labelled, config.split)      # train / validation / test rows
    cache    = FeatureCache(cache_dir)                   # features computed by `mtlmood prepare`

Songs without features in the cache (e.g. audio that failed to decode during
``prepare``) are dropped from every split and listed in ``RunData.dropped``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from mtlmood.cache import FeatureCache, default_cache_dir
from mtlmood.config import RunConfig
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
        """Counts for logs and metrics.json."""
        return {"songs": {name: int(len(rows)) for name, rows in self.splits.items()},
                "n_moods": self.n_moods, "n_meta": self.n_meta, "dropped_without_features": len(self.dropped),
                "cache_dir": str(self.cache.directory)}


def assemble_run_data(config: RunConfig, labelled: LabelledSongs, splits: dict[str, np.ndarray],
                      cache: FeatureCache) -> RunData:
    """Check the pieces against each other and the config, drop songs the cache lacks."""
    cache.check_config(config.features)
    if config.model.n_mels != config.features.n_mels:
        raise ConfigError(f"model.n_mels={config.model.n_mels} but features.n_mels={config.features.n_mels}")
    missing = set(SPLITS) - set(splits)
    if missing:
        raise ConfigError(f"splits lack {sorted(missing)}")
    present = np.fromiter((song in cache for song in labelled.song_ids), dtype=bool, count=len(labelled))
    dropped_rows = sorted(set().union(*(set(np.asarray(r).tolist()) for r in splits.values()))
                          - set(np.flatnonzero(present).tolist()))
    dropped = [labelled.song_ids[i] for i in dropped_rows]
    kept = {name: np.asarray(rows, dtype=np.int64)[present[np.asarray(rows, dtype=np.int64)]]
            for name, rows in splits.items()}
    if dropped:
        log.warning("%d of %d songs have no features in %s and are left out (e.g. %s)",
                    len(dropped), len(labelled), cache.directory, dropped[0])
    for name in SPLITS:
        if len(kept[name]) == 0:
            raise CacheError(f"the {name} split has no songs with features in {cache.directory} "
                             f"({len(splits[name])} before dropping); run `mtlmood prepare` first")
    return RunData(config=config, labelled=labelled, splits=kept, cache=cache, dropped=dropped)


def load_run_data(config: RunConfig) -> RunData:
    """Dataset -> labels -> splits -> feature cache, for one run (see the module docstring)."""
    from mtlmood.datasets import load_run_songs
    from mtlmood.labels import build_labels
    from mtlmood.splits import split_songs

    records = load_run_songs(config)
    labelled = build_labels(records, config.labels, dataset=config.dataset.name)
    splits = split_songs(labelled, config.split)
    cache = FeatureCache(default_cache_dir(config))
    return assemble_run_data(config, labelled, splits, cache)
