"""The local process pool that computes songs for `mtlmood prepare`: a bounded queue per
worker, spawned processes with one BLAS thread each, and a worker that dies (a decoder crash)
costing only the song that crashed it.

    for outcome in run_tasks(tasks, workers=8): ...
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Optional, Sequence

from mtlmood.prepare_tasks import SongOutcome, SongTask, compute_song


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


__all__ = ["default_workers", "run_tasks"]
