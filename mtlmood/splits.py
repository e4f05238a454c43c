"""Song-level train/validation/test splits: group-aware random 80/10/10, or a dataset's official split.

``random``: groups (a song, or all clips of one MagnaTagATune track) are shuffled
with ``SplitConfig.seed``; the shuffled groups are cut into train / validation /
test where the running song count comes closest to ``train_fraction`` and
``train_fraction + validation_fraction`` of all songs. No group is in two splits,
every split gets at least one group, and the same seed gives the same split.

``official``: the split the dataset ships (``LabelledSongs.official_splits``);
songs that are in none of its parts are left out of all three, and counted by
:func:`unassigned`.
"""

from __future__ import annotations

import logging

import numpy as np

from mtlmood.config import SplitConfig
from mtlmood.errors import ConfigError, DatasetError
from mtlmood.labels import LabelledSongs

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def _check(cfg: SplitConfig) -> None:
    if cfg.method not in ("random", "official"):
        raise ConfigError(f"split.method {cfg.method!r} is not one of ['random', 'official']")
    if cfg.method == "random" and not (
        0 < cfg.train_fraction and 0 < cfg.validation_fraction and cfg.train_fraction + cfg.validation_fraction < 1
    ):
        raise ConfigError(
            f"split.train_fraction ({cfg.train_fraction}) and split.validation_fraction "
            f"({cfg.validation_fraction}) must be positive and sum to less than 1 "
            f"(the test set takes the rest)"
        )


def _closest_cut(cumulative: np.ndarray, target: float, low: int, high: int) -> int:
    """How many leading groups (between ``low`` >= 1 and ``high``) hold closest to ``target`` songs."""
    candidates = np.arange(low, high + 1)
    counts = cumulative[candidates - 1]  # cumulative[j - 1] = songs in the first j groups
    return int(candidates[np.argmin(np.abs(counts - target))])  # argmin: the smaller cut on ties


def random_split(groups: list[str], cfg: SplitConfig) -> dict[str, np.ndarray]:
    """Seeded group-level split of rows 0..len(groups)-1 (see the module docstring)."""
    names, inverse = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
    n_groups = len(names)
    if n_groups < 3:
        raise DatasetError(f"a random split needs at least 3 songs/groups, got {n_groups}")
    sizes = np.bincount(inverse, minlength=n_groups)
    # np.unique sorts the names, so the permutation depends only on the seed and the data.
    order = np.random.default_rng(cfg.seed).permutation(n_groups)
    cumulative = np.cumsum(sizes[order])
    total = cumulative[-1]
    train_cut = _closest_cut(cumulative, cfg.train_fraction * total, 1, n_groups - 2)
    valid_cut = _closest_cut(
        cumulative, (cfg.train_fraction + cfg.validation_fraction) * total, train_cut + 1, n_groups - 1
    )
    assignment = np.empty(n_groups, dtype=np.int64)
    assignment[order[:train_cut]] = 0
    assignment[order[train_cut:valid_cut]] = 1
    assignment[order[valid_cut:]] = 2
    row_split = assignment[inverse]
    return {name: np.flatnonzero(row_split == i) for i, name in enumerate(SPLITS)}


def official_split(labelled: LabelledSongs) -> dict[str, np.ndarray]:
    """Rows per part of the dataset's own split; rows with no official split are left out."""
    if not any(labelled.official_splits):
        raise DatasetError(
            "this dataset has no official split (or none of its kept songs is in it); use split.method=random"
        )
    parts = np.asarray([s or "" for s in labelled.official_splits], dtype=object)
    result = {name: np.flatnonzero(parts == name) for name in SPLITS}
    empty = [name for name, rows in result.items() if len(rows) == 0]
    if empty:
        raise DatasetError(f"the official split has no kept songs in: {', '.join(empty)}")
    left_out = unassigned(labelled, result)
    if left_out:
        log.info("official split: %d of %d songs are in no part and are left out", left_out, len(labelled))
    return result


def unassigned(labelled: LabelledSongs, splits: dict[str, np.ndarray]) -> int:
    """How many songs of ``labelled`` are in none of the splits."""
    return len(labelled) - sum(len(rows) for rows in splits.values())


def split_songs(labelled: LabelledSongs, cfg: SplitConfig) -> dict[str, np.ndarray]:
    """{"train", "validation", "test"} -> sorted int64 row indices into ``labelled``."""
    _check(cfg)
    if cfg.method == "official":
        result = official_split(labelled)
    else:
        result = random_split(labelled.groups, cfg)
    return {name: np.sort(rows).astype(np.int64) for name, rows in result.items()}
