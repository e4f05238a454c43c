"""Atomic file writes: a crash never leaves a half-written file that later reads as valid."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Type

import numpy as np


def publish(staged: str | os.PathLike[str], path: str | os.PathLike[str], mode: int = 0o666) -> None:
    """Give a finished temp file (or folder: ``mode=0o777``) the usual umask-based mode and
    rename it onto ``path``, atomically on POSIX when both are in one directory.

    mkstemp/mkdtemp create 0600/0700 entries; results on shared storage must be readable by
    the other nodes' users."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staged, mode & ~umask)
    os.replace(staged, path)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives in the same directory, so the final rename is atomic on POSIX.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically (temp file + fsync + rename)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    _atomic(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write an object as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save a numpy array as .npy atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())

    _atomic(path, write)


def read_json_object(path: Path, error: Type[Exception], what: str = "") -> dict[str, Any]:
    """A JSON object from ``path``; ``error`` (naming the file) when it is unreadable,
    not JSON, or not an object — so callers turn corrupt files into one clear line."""
    label = f"{what} {path}" if what else str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"corrupt {label}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"corrupt {label}: not a JSON object")
    return data
