"""One writer per run directory: ``<dir>/.mtlmood.lock`` (its content and its reader:
mtlmood.lock_file).

    with RunLock(output_dir):      # RunDirInUse (one line naming the owner) if another process has it
        train(...)

Two processes writing one run directory (two `mtlmood train --output DIR`, two `mtlmood
prepare` on one cache, two `mtlmood study run` of one study) would interleave checkpoints,
states and tables. The lock file says who writes the directory: JSON with ``pid``,
``hostname``, ``command``, ``started`` and ``heartbeat`` (UTC, ISO 8601), plus a random
``token`` naming this holder and, on Linux, the owner's process start time.

Taking it is atomic: the content is written to a temp file first and hard-linked to the
lock's name, which fails when the name exists (``O_CREAT | O_EXCL`` where hard links are
not supported), so two processes can never both create it and a reader never sees a
half-written lock. A daemon thread rewrites it (temp file + rename) every ``heartbeat_s``
seconds; leaving the ``with`` block, normally or by an exception (Ctrl-C too), stops the
thread and removes the file.

A process killed outright (SIGKILL, power loss) leaves its lock behind. The next taker
treats it as stale, and takes it over with one log line, when its owner is gone:

* on this host (same hostname), when its pid is not running, is a zombie, or is now a
  different process (another start time; or our own pid, which is not holding it);
* on another host, whose processes cannot be seen from here, when its heartbeat is older
  than ``stale_after_s`` (default 60 s; the owner refreshes it every 5 s).

The takeover renames the stale file to a private name and checks that what it moved is
byte for byte the stale lock it judged (an owner that was only late and has just written
a heartbeat is put back and keeps its lock); then it creates its own as above, so two
takers of one stale lock cannot both win.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Optional, Type, Union

from mtlmood.errors import MtlmoodError
from mtlmood.lock_file import (
    LOCK_FILE,
    LockOwner,
    age_seconds,
    command_line,
    now_stamp,
    parse_owner,
    pid_running,
    process_start,
    read_raw,
)

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0
_ATTEMPTS = 5  # create / take-over rounds before giving up (others keep taking it)

# The locks this process holds, token -> directory: a lock with our pid but another token
# is a leftover of an earlier process that had the same pid (containers reuse small pids).
_HELD: dict[str, Path] = {}


class RunDirInUse(MtlmoodError):
    """Another process is writing the directory (the CLI prints it as one line, exit 2)."""


class RunLock:
    """The lock of one run directory (see the module docstring); a context manager.

    ``command`` is what the lock says this process is doing (default: its command line).
    ``heartbeat_s``: how often the lock is refreshed; ``stale_after_s``: how old another
    host's heartbeat must be before its lock is taken over.
    """

    def __init__(
        self,
        directory: Union[str, os.PathLike[str]],
        command: Optional[str] = None,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command if command is not None else command_line()
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.token = secrets.token_hex(8)
        self.hostname = socket.gethostname()
        self.started = ""
        self.lost = False  # set when another process took the lock from us (we were presumed dead)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ file content

    def _payload(self) -> bytes:
        pid = os.getpid()
        data = {
            "pid": pid,
            "hostname": self.hostname,
            "command": self.command,
            "started": self.started,
            "heartbeat": now_stamp(),
            "token": self.token,
            "pid_start": process_start(pid),
        }
        return (json.dumps(data, indent=2) + "\n").encode("utf-8")

    def _temp(self, kind: str) -> Path:
        return self.directory / f"{LOCK_FILE}.{self.token}.{kind}"

    def _create(self) -> bool:
        """Create the lock file with our content, atomically; False when it exists."""
        payload = self._payload()
        tmp = self._temp("new")
        try:
            with open(tmp, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.path)  # fails when the name exists: the one atomic step
                return True
            except FileExistsError:
                return False
            except OSError as exc:  # no hard links here (some network or FUSE file systems)
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
                    raise
        finally:
            tmp.unlink(missing_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    # ------------------------------------------------------------ staleness

    def _stale(self, owner: Optional[LockOwner]) -> bool:
        """Whether the lock's owner is gone (see the module docstring)."""
        if owner is None:  # unreadable: a crash while it was written without hard links
            try:
                written = self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            return time.time() - written > self.stale_after_s
        if owner.hostname == self.hostname:
            if owner.pid == os.getpid():
                return owner.token not in _HELD  # ours only if this process holds that token
            if not pid_running(owner.pid):
                return True
            now_start = process_start(owner.pid)
            return bool(owner.pid_start and now_start and owner.pid_start != now_start)  # pid reused
        beat_age = age_seconds(owner.heartbeat)
        return beat_age is None or beat_age > self.stale_after_s

    def _remove_stale(self, raw: bytes) -> bool:
        """Remove the lock file if it still holds exactly ``raw``; True when it is gone."""
        grave = self._temp("stale")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return True  # someone else removed it: try to create ours
        try:
            if grave.read_bytes() == raw:
                return True
            # We moved a lock that changed since we judged it (a late heartbeat, or another
            # taker's fresh lock): put it back unless a newer one is already there.
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
            except OSError:
                os.replace(grave, self.path)
            return False
        finally:
            grave.unlink(missing_ok=True)

    # ------------------------------------------------------------ acquire / release

    def acquire(self) -> "RunLock":
        """Take the lock, or raise RunDirInUse naming its owner; starts the heartbeat."""
        try:
            # A directory this lock made and the run left empty goes again at release:
            # a run refused for bad data or settings leaves nothing behind.
            self.created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MtlmoodError(f"cannot use {self.directory} as a run directory: {exc}") from None
        self.started = now_stamp()
        for _ in range(_ATTEMPTS):
            if self._create():
                _HELD[self.token] = self.directory.resolve()
                self.lost = False
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._beat_forever, name=f"runlock-heartbeat {self.directory}", daemon=True
                )
                self._thread.start()
                return self
            raw = read_raw(self.path)
            if raw is None:
                continue  # released between our two steps
            owner = parse_owner(raw)
            if not self._stale(owner):
                if owner is None:
                    raise RunDirInUse(
                        f"{self.directory} is being locked by another process right now ({self.path} is "
                        "unreadable); try again, or delete it if no other mtlmood process uses the directory"
                    )
                same = owner.pid == os.getpid() and owner.hostname == self.hostname
                raise RunDirInUse(
                    f"{self.directory} is in use by "
                    + ("this process, " if same else "")
                    + f"{owner.describe()}; wait for it to finish or stop it "
                    f"(if it is gone for good, delete {self.path})"
                )
            if self._remove_stale(raw):
                what = owner.describe() if owner is not None else "an unreadable lock"
                log.warning("taking over the stale lock of %s: %s (its owner is gone)", self.directory, what)
        raise RunDirInUse(f"could not lock {self.directory}: other processes keep taking {self.path}")

    def beat(self) -> None:
        """Refresh the heartbeat now (the thread does it every ``heartbeat_s``)."""
        raw = read_raw(self.path)
        owner = parse_owner(raw) if raw is not None else None
        if owner is None or owner.token != self.token:
            if not self.lost:
                self.lost = True
                taker = owner.describe() if owner is not None else "nobody (the lock file is gone)"
                log.error("lost the lock of %s, now held by %s; stop this process", self.directory, taker)
            self._stop.set()
            return
        tmp = self._temp("beat")
        try:
            tmp.write_bytes(self._payload())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except OSError as exc:  # a full disk or a storage hiccup: keep trying
                log.warning("cannot refresh the lock heartbeat of %s: %s", self.directory, exc)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(10.0, 2 * self.heartbeat_s))
            self._thread = None
        _HELD.pop(self.token, None)
        raw = read_raw(self.path)
        owner = parse_owner(raw) if raw is not None else None
        if owner is not None and owner.token == self.token:
            self.path.unlink(missing_ok=True)
            if getattr(self, "created", False):
                try:
                    self.directory.rmdir()  # only when empty
                except OSError:
                    pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.release()


def held_here(directory: Union[str, os.PathLike[str]]) -> bool:
    """Whether this process holds the lock of ``directory`` (so a callee need not take it)."""
    return Path(directory).resolve() in _HELD.values()


__all__ = [
    "HEARTBEAT_S",
    "STALE_AFTER_S",
    "RunDirInUse",
    "RunLock",
    "held_here",
]
