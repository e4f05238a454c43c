"""Compute a dataset's log-mel features once: parallel, resumable, atomic, with a failure report.

    report = prepare_features(load_songs(config.dataset), "runs/synthetic/features", FeatureConfig())

How it survives interruptions. Each song's features are written as its own shard,
``<cache>/shards/<song id, escaped>.npy``, through a temp file and a rename, so a
shard either exists complete or not at all (leftover temp files are ignored and
removed). Only when every song has been tried are the shards, together with the
songs of any existing bank, streamed into one new memory-mapped bank
(:func:`mtlmood.cache.write_cache`), whose ``index.json`` is the commit marker;
the shards are then deleted. A run that is killed loses at most the songs in
flight; the next run skips every song already in the bank or in a shard and
computes the rest, so every song ends up cached exactly once.

Disk: the consolidation briefly needs room for the old bank, the new bank and the
shards at once (MTG-Jamendo full: ~12 GB of features).

The per-song work is ``mtlmood.prepare_tasks.compute_song``, a plain top-level function of
picklable arguments, so the local process pool and a Ray task in the cluster layer can call it.
Where the songs are computed is pluggable: by default a local process pool
(``mtlmood.prepare_pool.run_tasks``); ``prepare_features(..., runner=...)`` takes any
``mtlmood.prepare_tasks.TaskRunner`` from its caller, e.g. the Ray-task runner of the cluster
layer (study/prepare_ray.py). The core never imports a runner, so it stays Ray-free.
What to skip, the failure report and the consolidation stay here (the shard files and the
checks of an earlier run's files are mtlmood.prepare_files, the two locks
mtlmood.prepare_lock), so both paths build the same cache.
A song that fails (missing file, undecodable audio, even a decoder crash that takes
its worker process down) is recorded in ``<cache>/failures.csv`` and never stops
the run; re-running retries it.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

from mtlmood.cache import FeatureSource, write_cache
from mtlmood.config import FeatureConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.errors import DatasetError
from mtlmood.fileio import atomic_write_text
from mtlmood.prepare_files import (
    FAILURES_FILE,
    clear_cache,
    existing_cache,
    remove_if_only_tag,
    shard_dir,
    shard_name,
    valid_shard,
)
from mtlmood.prepare_lock import exclusive_cache
from mtlmood.prepare_pool import default_workers, run_tasks
from mtlmood.prepare_tasks import SongTask, TaskRunner


class Failure(NamedTuple):
    """A song whose features could not be computed."""

    song_id: str
    path: str
    reason: str


@dataclass
class PrepareReport:
    """Counts of one `prepare` run; ``skipped`` songs were already cached (bank or shard)."""

    computed: int
    skipped: int
    failures: list[Failure]
    cache_dir: Path
    failures_path: Path
    cached_songs: int = 0  # songs in the cache after this run (all song lists so far)
    seconds: float = 0.0
    workers: int = 1
    executor: str = ""  # where the songs were computed, when not the local process pool

    @property
    def failed(self) -> int:
        return len(self.failures)

    def summary(self, max_failures: int = 10) -> str:
        """A few human-readable lines: counts, where the cache and the failure report are."""
        total = self.computed + self.skipped + self.failed
        where = self.executor or f"{self.workers} worker(s)"
        lines = [
            f"{total} songs in {self.seconds:.1f} s ({where}): "
            f"{self.computed} computed, {self.skipped} already cached, {self.failed} failed",
            f"feature cache: {self.cache_dir} ({self.cached_songs} songs)",
        ]
        if self.failures:
            lines.append(f"failures ({self.failed}) listed in {self.failures_path}:")
            lines += [f"  {f.song_id}: {f.reason}" for f in self.failures[:max_failures]]
            if self.failed > max_failures:
                lines.append(f"  ... and {self.failed - max_failures} more")
        return "\n".join(lines)


def _write_failures(path: Path, failures: list[Failure]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(Failure._fields)
    writer.writerows(failures)
    # Written on every run (header only when nothing failed) so an old report never misleads.
    atomic_write_text(path, buffer.getvalue())


def prepare_features(
    songs: Sequence[SongRecord],
    cache_dir: str | os.PathLike[str],
    cfg: FeatureConfig,
    workers: int = 0,
    progress: bool = True,
    rebuild: bool = False,
    runner: Optional[TaskRunner] = None,
) -> PrepareReport:
    """Compute and cache the log-mel features of ``songs`` (see the module docstring).

    ``workers``: processes to use, 0 = every available core. ``rebuild``: discard an
    existing cache (and unfinished shards) first; without it, a cache built with another
    FeatureConfig raises CacheError. Songs already cached are skipped; the cache keeps
    songs of earlier runs that are not in ``songs``. ``runner``: compute the songs with
    it instead of local processes (``workers`` is then unused).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for song in songs:
        if song.song_id in seen:
            raise DatasetError(f"song id {song.song_id!r} appears twice in the song list; song ids must be unique")
        seen.add(song.song_id)

    with exclusive_cache(cache_dir):
        if rebuild:
            clear_cache(cache_dir)
        existing = existing_cache(cache_dir, cfg)
        shards = shard_dir(cache_dir, cfg)

        tasks: list[SongTask] = []
        skipped = 0
        for song in songs:
            shard = shards / shard_name(song.song_id)
            if (existing is not None and song.song_id in existing) or valid_shard(shard, cfg):
                skipped += 1
            else:
                tasks.append(SongTask(song.song_id, str(song.audio_path), str(shard), cfg))

        if runner is None:
            n_workers = min(workers if workers > 0 else default_workers(), max(len(tasks), 1))
            outcomes = run_tasks(tasks, n_workers)
            executor = ""
        else:
            outcomes, n_workers, executor = runner(tasks), runner.workers, runner.description
        failures: list[Failure] = []
        computed = 0
        with tqdm(
            total=len(tasks), desc="log-mel features", unit="song", disable=not progress, dynamic_ncols=True
        ) as bar:
            for outcome in outcomes:
                if outcome.error is None:
                    computed += 1
                else:
                    failures.append(Failure(outcome.song_id, outcome.audio_path, outcome.error))
                    bar.set_postfix(failed=len(failures), refresh=False)
                bar.update(1)
        # Song-list order, not completion order: the report is the same whoever computed it.
        position = {song.song_id: i for i, song in enumerate(songs)}
        failures.sort(key=lambda f: position[f.song_id])
        failures_path = cache_dir / FAILURES_FILE
        _write_failures(failures_path, failures)

        # Consolidate: the existing bank's songs keep their order, then new songs in list order.
        new_ids = [
            s.song_id
            for s in songs
            if (existing is None or s.song_id not in existing) and (shards / shard_name(s.song_id)).exists()
        ]
        final = existing
        if new_ids:
            items: list[tuple[str, FeatureSource]] = []
            if existing is not None:
                items += [(song_id, existing.features(song_id)) for song_id in existing.song_ids]
            items += [(song_id, shards / shard_name(song_id)) for song_id in new_ids]
            final = write_cache(cache_dir, items, cfg)
        if final is not None:
            # A shard is redundant once its song is in the committed bank (this also
            # clears shards of songs that were already banked when a run died).
            for song in songs:
                if song.song_id in final:
                    (shards / shard_name(song.song_id)).unlink(missing_ok=True)
        cached = len(final) if final is not None else 0
        remove_if_only_tag(shards)

    return PrepareReport(
        computed=computed,
        skipped=skipped,
        failures=failures,
        cache_dir=cache_dir,
        failures_path=failures_path,
        cached_songs=cached,
        seconds=time.perf_counter() - start,
        workers=n_workers,
        executor=executor,
    )


__all__ = ["Failure", "PrepareReport", "prepare_features"]
