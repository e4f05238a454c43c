"""One song's feature job: what a worker gets (SongTask), what comes back (SongOutcome), the
work itself (compute_song: decode, log-mel, write the shard atomically) and the TaskRunner
protocol through which a caller computes the songs elsewhere (study/prepare_ray.py: Ray tasks).

compute_song is a plain top-level function of picklable arguments, so the local process pool
(mtlmood.prepare_pool) and a Ray task can both call it; it never raises for a bad song.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol, Sequence

from mtlmood.config import FeatureConfig
from mtlmood.errors import AudioDecodeError, MtlmoodError
from mtlmood.fileio import atomic_save_npy


@dataclass(frozen=True)
class SongTask:
    """Everything one worker needs for one song (picklable; no open handles)."""

    song_id: str
    audio_path: str
    shard_path: str
    config: FeatureConfig


@dataclass(frozen=True)
class SongOutcome:
    """What became of one SongTask: ``error`` is None on success."""

    song_id: str
    audio_path: str
    n_frames: int = 0
    error: Optional[str] = None


def compute_song(task: SongTask) -> SongOutcome:
    """Decode one song, compute its log-mel features and write its shard atomically.

    Never raises for a bad song: the reason comes back in ``SongOutcome.error``.
    """
    from mtlmood.features import features_from_file

    try:
        features = features_from_file(task.audio_path, task.config)
        atomic_save_npy(Path(task.shard_path), features)
    except AudioDecodeError as exc:
        return SongOutcome(task.song_id, task.audio_path, error=exc.reason)
    except MtlmoodError as exc:
        return SongOutcome(task.song_id, task.audio_path, error=str(exc))
    except Exception as exc:  # a decoder/library bug on one odd file must not end a day-long run
        return SongOutcome(task.song_id, task.audio_path, error=f"{type(exc).__name__}: {exc}")
    return SongOutcome(task.song_id, task.audio_path, n_frames=int(features.shape[0]))


class TaskRunner(Protocol):
    """Computes SongTasks somewhere other than the local process pool (e.g. Ray tasks).

    The caller of :func:`prepare_features` supplies it. It must yield exactly one
    SongOutcome per task, in any order, and leave a song's shard at ``task.shard_path``
    exactly when its outcome has no error. ``workers`` and ``description`` only feed the
    report.
    """

    workers: int
    description: str

    def __call__(self, tasks: Sequence[SongTask]) -> Iterator[SongOutcome]: ...


__all__ = ["SongOutcome", "SongTask", "TaskRunner", "compute_song"]
