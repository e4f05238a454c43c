"""The synthetic dataset written by ``mtlmood synth``: ``<root>/manifest.csv``.

The manifest has the columns ``song_id,path,moods,artist,year`` (moods separated
by ";", paths relative to the manifest's folder), so this adapter is the CSV
manifest reader pointed at that file; its only job is a clearer message when
the dataset has not been generated yet.
"""

from __future__ import annotations

from pathlib import Path

from mtlmood.config import DatasetConfig
from mtlmood.datasets.base import SongRecord, register
from mtlmood.datasets.csv_manifest import read_manifest
from mtlmood.errors import DatasetError

MANIFEST = "manifest.csv"


@register("synthetic")
class Synthetic:
    """Adapter for a synthetic dataset folder (``<root>/manifest.csv``)."""

    name = "synthetic"

    def load(self, config: DatasetConfig, official_split: int = 0) -> list[SongRecord]:
        """Every synthetic song (or the first ``config.limit``); ``official_split`` is ignored."""
        path = Path(config.root) / MANIFEST
        if not path.is_file():
            raise DatasetError(
                f"no synthetic dataset at {config.root}: {path} does not exist; "
                f"create one with `mtlmood synth` (or set dataset.root)"
            )
        return read_manifest(path, config.audio_root, config.limit)
