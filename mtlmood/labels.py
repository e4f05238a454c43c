"""Labelled songs: top-N moods, top-K artists, 5-year buckets -> multi-hot targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class LabelledSongs:
    """Songs that survived label selection, with their targets.

    Row i of every array belongs to ``song_ids[i]``. ``meta_targets`` has zero
    columns when the metadata set is "none".
    """

    song_ids: list[str]
    mood_names: list[str]
    meta_names: list[str]  # e.g. "artist:artist_000087", "year:2005-2009"
    mood_targets: np.ndarray  # (n, N_mood) float32 multi-hot
    meta_targets: np.ndarray  # (n, N_meta) float32 multi-hot
    groups: list[str]  # split groups (track for MagnaTagATune; the song itself otherwise)
    official_splits: list[Optional[str]] = field(default_factory=list)
    audio_paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.song_ids)

    @property
    def n_moods(self) -> int:
        return len(self.mood_names)

    @property
    def n_meta(self) -> int:
        return len(self.meta_names)
