"""What a run lock file is: its name (``.mtlmood.lock``), the JSON record of its owner
(``pid``, ``hostname``, ``command``, ``started``, ``heartbeat``, ``token``, ``pid_start``),
and whether the process it names still lives on this host.

mtlmood.runlock takes, refreshes and releases the lock; this module only reads and describes
it, so ``read_owner(directory)`` can say who writes a directory without taking anything.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence, Union

LOCK_FILE = ".mtlmood.lock"
_MAX_COMMAND = 300  # characters of the command line kept in the lock


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """This process's command line, as a user would type it (``mtlmood train ...``)."""
    argv = list(sys.argv if argv is None else argv) or ["python"]
    program = Path(argv[0]).name
    if program == "__main__.py":  # python -m package
        program = Path(argv[0]).parent.name
    if program in ("mtlmood_cli", "main.py"):
        program = "mtlmood"
    text = shlex.join([program, *argv[1:]])
    return text if len(text) <= _MAX_COMMAND else text[: _MAX_COMMAND - 3] + "..."


def now_stamp() -> str:
    """This moment as a lock stamps it: UTC, ISO 8601, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def age_seconds(stamp: str) -> Optional[float]:
    """Seconds since an ISO time stamp (None when unparseable)."""
    try:
        then = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - then).total_seconds()


def _proc_stat(pid: int) -> Optional[list[str]]:
    """The fields of /proc/<pid>/stat after the command name (Linux), None elsewhere or when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" when unknown): a pid plus its
    start time names one process, even after the pid is reused."""
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else ""


def pid_running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True  # cannot tell: assume it runs, which never steals a live lock
    fields = _proc_stat(pid)
    return not (fields is not None and fields and fields[0] in ("Z", "X"))


@dataclass(frozen=True)
class LockOwner:
    """What a lock file says about its holder."""

    pid: int
    hostname: str
    command: str
    started: str
    heartbeat: str
    token: str = ""
    pid_start: str = ""

    @classmethod
    def from_json(cls, data: Any) -> "LockOwner":
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(
            pid=int(data["pid"]),
            hostname=str(data["hostname"]),
            command=str(data.get("command", "")),
            started=str(data.get("started", "")),
            heartbeat=str(data.get("heartbeat", data.get("started", ""))),
            token=str(data.get("token", "")),
            pid_start=str(data.get("pid_start", "")),
        )

    def describe(self) -> str:
        """``pid 123 on host (`mtlmood train ...`) since <time>, heartbeat 2 s ago``."""
        age = age_seconds(self.heartbeat)
        beat = f", heartbeat {age:.0f} s ago" if age is not None else ""
        command = f" (`{self.command}`)" if self.command else ""
        return f"pid {self.pid} on {self.hostname}{command} since {self.started}{beat}"


def read_raw(path: Path) -> Optional[bytes]:
    """The raw lock file, None when there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def parse_owner(raw: bytes) -> Optional[LockOwner]:
    """The owner a lock file names, None when it is unreadable."""
    try:
        return LockOwner.from_json(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def read_owner(directory: Union[str, os.PathLike[str]]) -> Optional[LockOwner]:
    """Who holds the lock of ``directory`` (None when nobody does, or it is unreadable)."""
    raw = read_raw(Path(directory) / LOCK_FILE)
    return parse_owner(raw) if raw is not None else None


__all__ = [
    "LOCK_FILE",
    "LockOwner",
    "age_seconds",
    "command_line",
    "now_stamp",
    "parse_owner",
    "pid_running",
    "process_start",
    "read_owner",
    "read_raw",
]
