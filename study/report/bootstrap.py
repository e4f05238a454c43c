"""The data of a cell's statistics: each arm's test predictions over its training seeds, and
the arm's metric per seed on the full test set and under a clustered song bootstrap.

All metrics are macro PR-AUC or ROC-AUC in PERCENT. Songs are resampled by *cluster* (all
clips of one track, or all songs of one artist, drawn together; by default every song is
its own cluster), as integer weights per song, so every arm of a cell can be scored on the
SAME song draws: comparisons are then paired over songs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd

from mtlmood.metrics import Metric, macro_metric

METRICS: tuple[Metric, ...] = ("pr_auc", "roc_auc")


@dataclass(frozen=True)
class ArmRuns:
    """Test predictions of one arm of a cell: one probability matrix per training seed,
    rows aligned to the cell's test songs."""

    seeds: tuple[int, ...]
    probs: np.ndarray  # (S, n_songs, n_labels)

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=float)
        if probs.ndim == 2:  # one seed given as a plain (n, L) matrix
            probs = probs[None]
        if probs.ndim != 3:
            raise ValueError(f"probs must be (n_seeds, n_songs, n_labels), got shape {probs.shape}")
        seeds = tuple(int(s) for s in self.seeds)
        if len(seeds) != probs.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {probs.shape[0]} probability matrices")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicate seeds {seeds}")
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "seeds", seeds)


@dataclass(frozen=True)
class ArmDraws:
    """An arm's metric per seed on the full test set (``full``, (S,)) and under each song draw (``boot``, (S, B)).

    ``sources``: the real arm each row comes from (one name per seed). A real arm
    repeats its own name; a virtual arm such as the cross-fitted best alpha names
    the arm chosen for each seed, so the pooled seed model knows which runs a
    contrast really involves (rows of the same run cancel exactly).
    """

    seeds: tuple[int, ...]
    full: np.ndarray
    boot: np.ndarray
    sources: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.sources:
            object.__setattr__(self, "sources", ("",) * len(self.seeds))
        if len(self.sources) != len(self.seeds):
            raise ValueError(f"{len(self.sources)} sources for {len(self.seeds)} seeds")

    def take(self, rows: Sequence[int]) -> ArmDraws:
        """The draws of a subset of this arm's seeds (row indices)."""
        idx = np.asarray(rows, dtype=int)
        return ArmDraws(
            tuple(self.seeds[i] for i in idx), self.full[idx], self.boot[idx], tuple(self.sources[i] for i in idx)
        )

    @staticmethod
    def stack(parts: Sequence[tuple[ArmDraws, int]]) -> ArmDraws:
        """A virtual arm made of row ``i`` of each ``(draws, i)`` (e.g. the cross-fitted best-alpha arm)."""
        if not parts:
            raise ValueError("a virtual arm needs at least one run")
        seeds = tuple(d.seeds[i] for d, i in parts)
        full = np.array([d.full[i] for d, i in parts], dtype=float)
        sources = tuple(d.sources[i] for d, i in parts)
        return ArmDraws(seeds, full, np.stack([d.boot[i] for d, i in parts]), sources)


def cluster_weights(clusters: Sequence[str] | np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_songs) song weights of a cluster bootstrap.

    Each row draws the n_clusters clusters (e.g. the track or artist of each
    test song) with replacement; every song of a drawn cluster counts once per
    draw, so songs of one cluster always carry the same weight.
    """
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    codes, uniques = pd.factorize(np.asarray(clusters, dtype=object), sort=False)
    if np.any(codes < 0):
        raise ValueError("clusters hold missing values")
    k = len(uniques)
    draws = rng.integers(0, k, size=(n_boot, k))
    flat = draws + (np.arange(n_boot) * k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_boot * k).reshape(n_boot, k)
    return counts[:, codes].astype(float)


def n_clusters(clusters: Sequence[str] | np.ndarray) -> int:
    """Number of distinct clusters (the song level's bootstrap units)."""
    return len(pd.unique(np.asarray(clusters, dtype=object)))


def default_clusters(clusters: Sequence[str] | np.ndarray | None, n_songs: int) -> np.ndarray:
    """The given clusters, or one cluster per song."""
    if clusters is None:
        return np.arange(n_songs)
    c = np.asarray(clusters, dtype=object)
    if c.shape != (n_songs,):
        raise ValueError(f"clusters has shape {c.shape}, expected ({n_songs},)")
    return c


def arm_draws(
    y_true: np.ndarray, arm: ArmRuns, weights: np.ndarray, metric: str = "pr_auc", name: str = ""
) -> ArmDraws:
    """The arm's metric per seed on the full test set and under every weight row (one macro_metric call per seed).

    ``name`` identifies the arm's runs in the pooled seed model (see ``ArmDraws.sources``).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    y = np.asarray(y_true)
    y2 = y[:, None] if y.ndim == 1 else y
    if arm.probs.shape[1:] != y2.shape:
        raise ValueError(f"predictions {arm.probs.shape[1:]} do not match y_true {y2.shape}")
    # The unit-weight row first: the full-test-set value from the same evaluator.
    w = np.vstack([np.ones((1, y2.shape[0])), np.asarray(weights, dtype=float)])
    checked = cast(Metric, metric)
    values = np.stack([np.asarray(macro_metric(y2, p, checked, sample_weight=w)) for p in arm.probs])
    return ArmDraws(arm.seeds, values[:, 0], values[:, 1:], (name,) * len(arm.seeds))


def chance_pr_auc(y_true: np.ndarray) -> float:
    """Macro PR-AUC (%) of a predictor that knows nothing: the mean positive rate of the scorable labels."""
    y = np.asarray(y_true, dtype=float)
    y2 = y[:, None] if y.ndim == 1 else y
    rate = y2.mean(axis=0)
    scorable = (rate > 0) & (rate < 1)
    return float(100.0 * rate[scorable].mean()) if scorable.any() else float("nan")
