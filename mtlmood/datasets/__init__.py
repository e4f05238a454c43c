"""Dataset adapters, chosen by name from a registry (see base.py).

Adapters: ``mtg-jamendo``, ``magnatagatune``, ``csv`` (your own manifest) and
``synthetic`` (the folder ``mtlmood synth`` writes). Each reads metadata only;
audio is never opened here, and a missing audio file is reported by
:func:`missing_audio`, not treated as an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtlmood.datasets.base import REGISTRY, DatasetAdapter, SongRecord, get_adapter, load_songs, register

# Importing each adapter module registers it.
from mtlmood.datasets import csv_manifest, magnatagatune, mtg_jamendo, synthetic  # noqa: E402,F401  isort:skip

if TYPE_CHECKING:
    from mtlmood.config import RunConfig


def load_run_songs(config: "RunConfig") -> list[SongRecord]:
    """A run's songs, with membership of the official split ``config.split.official_split``.

    Use this rather than ``load_songs(config.dataset)`` when a whole RunConfig is
    at hand: the split index lives in SplitConfig, and only datasets with several
    official splits (MTG-Jamendo's split-0..4) look at it.
    """
    return load_songs(config.dataset, official_split=config.split.official_split)


def missing_audio(records: list[SongRecord]) -> list[SongRecord]:
    """The records whose audio file does not exist (reported by `mtlmood data stats`, not fatal)."""
    return [record for record in records if not record.audio_path.is_file()]


__all__ = [
    "REGISTRY",
    "DatasetAdapter",
    "SongRecord",
    "get_adapter",
    "load_run_songs",
    "load_songs",
    "missing_audio",
    "register",
]
