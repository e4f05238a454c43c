"""Dataset adapters, chosen by name from a registry (see base.py)."""

from mtlmood.datasets.base import REGISTRY, DatasetAdapter, SongRecord, get_adapter, load_songs, register

# Importing each adapter module registers it.
# (adapter modules are added here as they are written)

__all__ = ["REGISTRY", "DatasetAdapter", "SongRecord", "get_adapter", "load_songs", "register"]
