"""One writer per feature cache: `mtlmood prepare` holds the cache directory's run lock
(mtlmood.runlock, which names the other process on any host) and an OS lock on
``<cache>/.prepare.lock`` (released by the kernel even when the process dies).

    with exclusive_cache(cache_dir): ...   # CacheError / RunDirInUse when another prepare writes it
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from mtlmood.errors import CacheError
from mtlmood.runlock import RunLock, held_here

LOCK_FILE = ".prepare.lock"


@contextmanager
def exclusive_cache(cache_dir: Path) -> Iterator[None]:
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


__all__ = ["LOCK_FILE", "exclusive_cache"]
