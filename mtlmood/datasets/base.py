"""The one small interface every dataset adapter implements, and the registry of adapters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol, TypeVar

from mtlmood.config import DatasetConfig
from mtlmood.errors import DatasetError


@dataclass(frozen=True)
class SongRecord:
    """One song as a dataset describes it, before labels are chosen.

    ``group`` keeps songs together in splits (for MagnaTagATune all clips of one
    track share a group); ``official_split`` is "train" / "validation" / "test"
    when the dataset ships a split that contains this song, else None.
    """

    song_id: str
    audio_path: Path  # absolute, or relative to the working directory
    tags: tuple[str, ...]  # mood tags (names without any "mood/theme---" prefix)
    artist: Optional[str] = None
    year: Optional[int] = None
    group: str = ""  # "" = the song is its own group
    official_split: Optional[str] = None

    @property
    def split_group(self) -> str:
        return self.group or self.song_id


class DatasetAdapter(Protocol):
    """Reads a dataset's metadata into SongRecords. Audio is not touched here."""

    name: str

    def load(self, config: DatasetConfig, official_split: int = 0) -> list[SongRecord]:
        """All songs of the dataset (honouring ``config.limit``); ``official_split`` picks
        which of several official splits fills ``SongRecord.official_split``."""
        ...


REGISTRY: dict[str, Callable[[], DatasetAdapter]] = {}

AdapterClass = TypeVar("AdapterClass", bound=type[DatasetAdapter])


def register(name: str) -> Callable[[AdapterClass], AdapterClass]:
    """Class decorator: make an adapter available by name (no if/elif chains over names)."""

    def decorate(cls: AdapterClass) -> AdapterClass:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return decorate


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter registered under ``name``; a clear error lists the known names."""
    import mtlmood.datasets  # noqa: F401  (importing the package registers every adapter)

    try:
        return REGISTRY[name]()
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def load_songs(config: DatasetConfig, official_split: int = 0) -> list[SongRecord]:
    """Load a dataset's songs through its registered adapter."""
    return get_adapter(config.name).load(config, official_split=official_split)
