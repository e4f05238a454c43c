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

The per-song work is :func:`compute_song`, a plain top-level function of picklable
arguments, so a process pool here (and a Ray task in the cluster layer) can call it.
Where the songs are computed is pluggable: by default a local process pool
(:func:`run_tasks`); ``prepare_features(..., runner=...)`` takes any
:class:`TaskRunner` from its caller, e.g. the Ray-task runner of the cluster layer
(study/prepare_ray.py). This module never imports a runner, so the core stays Ray-free.
Everything else (skipping, shards, failures, consolidation) stays here, so both paths
build the same cache.
A song that fails (missing file, undecodable audio, even a decoder crash that takes
its worker process down) is recorded in ``<cache>/failures.csv`` and never stops
the run; re-running retries it.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from hashlib import sha256
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Protocol, Sequence

from mtlmood.cache import INDEX_FILE, FeatureCache, FeatureSource, npy_header, write_cache
from mtlmood.config import FeatureConfig
from mtlmood.datasets.base import SongRecord
from mtlmood.errors import AudioDecodeError, CacheError, DatasetError, MtlmoodError
from mtlmood.fileio import atomic_save_npy, atomic_write_json, atomic_write_text
from mtlmood.runlock import RunLock, held_here

SHARD_DIR = "shards"
FAILURES_FILE = "failures.csv"
LOCK_FILE = ".prepare.lock"
_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_MAX_NAME = 200  # file names stay well below the usual 255-byte limit


class Failure(NamedTuple):
    """A song whose features could not be computed."""

    song_id: str
    path: str
    reason: str


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


def shard_name(song_id: str) -> str:
    """A file name for a song's shard: letters, digits, '-' and '_' kept, every other byte
    %XX-escaped (so no name starts with '.' like our temp files, and no two ids collide);
    ids too long for a file name are hashed (an escaped name never holds '%s')."""
    escaped = "".join(ch if ch in _SAFE_CHARS else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in song_id)
    if len(escaped) > _MAX_NAME:
        escaped = "%sha256-" + sha256(song_id.encode("utf-8")).hexdigest()
    return escaped + ".npy"


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


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: let only the parent react (it cancels
    # queued songs and lets in-flight ones finish) instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One BLAS/OpenMP thread per worker: parallelism comes from the processes.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_tasks(
    tasks: Sequence[SongTask], workers: int, compute: Callable[[SongTask], SongOutcome] = compute_song
) -> Iterator[SongOutcome]:
    """Yield one outcome per task, as they finish, computed by ``workers`` processes.

    ``workers <= 1`` computes in this process. Otherwise a bounded number of tasks is in
    flight (memory stays flat for any dataset size). If a worker process dies (a
    decoder segfault), the songs it may have held are re-run one at a time in a fresh
    single-worker pool, so only the song that really crashes is reported as failed.
    """
    if workers <= 1:
        for task in tasks:
            yield compute(task)
        return
    # spawn, not fork: the parent may hold threads (torch, BLAS) that fork would copy half-way.
    context = multiprocessing.get_context("spawn")
    queue = iter(tasks)
    pool: Optional[ProcessPoolExecutor] = None
    in_flight: dict[Future[SongOutcome], SongTask] = {}
    try:
        while True:
            # Keep every worker busy with a short queue of its own, never the whole dataset.
            while len(in_flight) < 4 * workers and (queued := next(queue, None)) is not None:
                if pool is None:
                    pool = _start_pool(workers, context)
                in_flight[pool.submit(compute, queued)] = queued
            if not in_flight:
                return
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            suspects: list[SongTask] = []
            for future in done:
                task = in_flight.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    suspects.append(task)
                    continue
                yield outcome
            if suspects:
                # A worker died; the pool is unusable and any song still in it is a suspect.
                suspects.extend(in_flight.values())
                in_flight.clear()
                assert pool is not None
                pool.shutdown(wait=False, cancel_futures=True)
                pool = None  # a fresh one starts when more songs remain
                yield from _run_isolated(suspects, context, compute)
    finally:
        for future in in_flight:
            future.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _ready() -> bool:
    return True


def _start_pool(workers: int, context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """A process pool whose first worker is known to start: a worker that dies before any
    song (e.g. the main script cannot be re-imported under spawn) is not a song's fault."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
    try:
        pool.submit(_ready).result()
    except BrokenProcessPool:
        pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(
            "feature worker processes failed to start (see the error above); under the "
            "'spawn' start method the main script must be importable and guarded by "
            "`if __name__ == '__main__':`; or use workers=1"
        ) from None
    return pool


def _run_isolated(
    tasks: list[SongTask], context: multiprocessing.context.BaseContext, compute: Callable[[SongTask], SongOutcome]
) -> Iterator[SongOutcome]:
    """Run tasks one at a time in a single-worker pool: a crash then names its song."""
    pool = _start_pool(1, context)
    try:
        for task in tasks:
            try:
                yield pool.submit(compute, task).result()
            except BrokenProcessPool:
                yield SongOutcome(task.song_id, task.audio_path, error="the decoder crashed (its worker process died)")
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _start_pool(1, context)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _exclusive(cache_dir: Path) -> Iterator[None]:
    """Hold the cache directory's run lock (``mtlmood.runlock``: refuses naming the other
    process, on any host; unless this process holds it already, e.g. `mtlmood prepare`
    takes it before starting Ray) and an OS lock on it: two prepares writing one cache would race."""
    with ExitStack() as stack:
        if not held_here(cache_dir):
            stack.enter_context(RunLock(cache_dir))
        with _os_lock(cache_dir):
            yield


@contextmanager
def _os_lock(cache_dir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the run lock above still holds
        yield
        return
    with open(cache_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(
                f"another `mtlmood prepare` is writing the feature cache {cache_dir}; wait for it to finish"
            ) from None
        yield  # the lock is released when the file closes, also if this process dies


def _clear(cache_dir: Path) -> None:
    """Delete everything a previous prepare wrote (for rebuild=True)."""
    (cache_dir / INDEX_FILE).unlink(missing_ok=True)  # first: the cache is then no longer valid
    for pattern in ("bank*.npy", ".bank*.tmp", "feature_config.json", FAILURES_FILE):
        for path in cache_dir.glob(pattern):
            path.unlink()
    shards = cache_dir / SHARD_DIR
    if shards.is_dir():
        for path in shards.iterdir():
            path.unlink()
        shards.rmdir()


def _existing_cache(cache_dir: Path, cfg: FeatureConfig) -> Optional[FeatureCache]:
    if not (cache_dir / INDEX_FILE).exists():
        return None
    try:
        cache = FeatureCache(cache_dir)
    except CacheError as exc:
        raise CacheError(f"{exc}; pass --rebuild (rebuild=True) to discard it and recompute") from None
    if cache.feature_config != cfg:
        raise CacheError(
            f"feature cache at {cache_dir} was built with other feature settings "
            f"({_differences(cache.feature_config, cfg)}); pass --rebuild (rebuild=True) "
            "to discard it and recompute, or choose another cache_dir"
        )
    return cache


def _differences(found: FeatureConfig, wanted: FeatureConfig) -> str:
    """'n_mels: 96 cached, 64 requested' for every setting that differs."""
    old, new = asdict(found), asdict(wanted)
    return "; ".join(f"{key}: {old[key]} cached, {new[key]} requested" for key in old if old[key] != new[key])


def _shard_dir(cache_dir: Path, cfg: FeatureConfig) -> Path:
    """The shard folder, tagged with the feature config its shards were computed with."""
    shards = cache_dir / SHARD_DIR
    shards.mkdir(exist_ok=True)
    tag = shards / "feature_config.json"
    if tag.exists():
        try:
            found = FeatureConfig(**json.loads(tag.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CacheError(f"{tag} is unreadable ({exc}); pass --rebuild to discard the shards") from None
        if found != cfg:
            raise CacheError(
                f"the unfinished shards in {shards} were computed with other feature settings "
                f"({_differences(found, cfg)}); pass --rebuild (rebuild=True) to discard "
                "them and recompute"
            )
    else:
        atomic_write_json(tag, asdict(cfg))
    # Temp files of songs that were in flight when a previous run died: never valid data.
    for leftover in shards.glob(".*.tmp"):
        leftover.unlink()
    return shards


def _valid_shard(path: Path, cfg: FeatureConfig) -> bool:
    """True when ``path`` is a complete (t, n_mels) float32 .npy; an invalid one is removed."""
    if not path.exists():
        return False
    try:
        shape, dtype = npy_header(path)
    except CacheError:
        shape, dtype = (), None
    if len(shape) == 2 and shape[0] > 0 and shape[1] == cfg.n_mels and dtype == "float32":
        return True
    path.unlink()
    return False


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

    with _exclusive(cache_dir):
        if rebuild:
            _clear(cache_dir)
        existing = _existing_cache(cache_dir, cfg)
        shards = _shard_dir(cache_dir, cfg)

        tasks: list[SongTask] = []
        skipped = 0
        for song in songs:
            shard = shards / shard_name(song.song_id)
            if (existing is not None and song.song_id in existing) or _valid_shard(shard, cfg):
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
        _remove_if_only_tag(shards)

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


def _remove_if_only_tag(shards: Path) -> None:
    """Drop the shard folder once nothing but its config tag is left in it."""
    if {p.name for p in shards.iterdir()} <= {"feature_config.json"}:
        for path in shards.iterdir():
            path.unlink()
        shards.rmdir()
