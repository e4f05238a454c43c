"""This machine's cache of remote run folders: local copies of folders on an object store
(downloaded once, again only when they change) and the local home of the lock of a URI run.

    folder = local_copy("s3://bucket/studies/s1/runs/best/model")   # a local Path, cached
    with RunLock(lock_directory("s3://bucket/studies/s1")): ...     # the lock lives here

Both live under ``cache_root()``: ``$MTLMOOD_REMOTE_CACHE``, default ``$XDG_CACHE_HOME/mtlmood``
or ``~/.cache/mtlmood``. A local location is never copied: it is its own copy and its own
lock folder. File operations on the locations themselves are mtlmood.storage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from mtlmood.storage import Location, filesystem, is_uri, join, name, normalize, read_bytes

CACHE_ENV = "MTLMOOD_REMOTE_CACHE"  # where downloaded copies and URI locks live
SOURCE_FILE = ".mtlmood-source.json"  # in a downloaded copy: what it was copied from


def cache_root() -> Path:
    """Where downloaded copies and the locks of URI run folders live (``$MTLMOOD_REMOTE_CACHE``,
    default ``$XDG_CACHE_HOME/mtlmood`` or ``~/.cache/mtlmood``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mtlmood"


def _listing(location: str) -> list[list[Any]]:
    """[relative path, size, modified (ns)] of every file below a URI: what a copy is checked against."""
    import pyarrow.fs

    fs, path = filesystem(location)
    selector = pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
    rows = []
    for info in fs.get_file_info(selector):
        if info.type == pyarrow.fs.FileType.File and info.path.startswith(path + "/"):
            rows.append([info.path[len(path) + 1 :], int(info.size or 0), int(info.mtime_ns or 0)])
    return sorted(rows)


def _copy_is(folder: Path, source: dict[str, Any]) -> bool:
    try:
        return bool(json.loads((folder / SOURCE_FILE).read_text()) == source)
    except (OSError, ValueError):
        return False


def local_copy(location: Location, cache_dir: Optional[Location] = None) -> Path:
    """A local folder with the files of ``location``: the folder itself when it is local; for
    a URI a copy under ``cache_dir`` (default ``cache_root()/remote``), downloaded once and
    downloaded again only when the files there changed (names, sizes, modification times).

    Concurrent callers (replicas on one node) each download into a private folder and rename
    it into place; a copy is never seen half-written. FileNotFoundError when nothing is there.
    """
    text = normalize(location)
    if not is_uri(text):
        return Path(text).expanduser().resolve()
    listing = _listing(text)
    if not listing:
        raise FileNotFoundError(f"nothing at {text}")
    source = {"uri": text, "files": listing}
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "remote"
    target = root / f"{name(text) or 'root'}-{key}"
    if _copy_is(target, source):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new.", dir=root))
    old = staging.with_name(staging.name.replace(".new.", ".old.", 1))
    try:
        for relative, _, _ in listing:
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(read_bytes(join(text, relative)))
        (staging / SOURCE_FILE).write_text(json.dumps(source))
        try:
            os.rename(target, old)  # an older copy is set aside (its readers keep their open files)
        except OSError:
            pass  # none, or another caller moved it already
        try:
            os.rename(staging, target)
        except OSError:  # another caller put its copy there first: use it when it is the same
            if not _copy_is(target, source):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return target


def lock_directory(location: Location) -> Path:
    """Where the run lock (mtlmood.runlock) of a run folder lives: the folder itself when it
    is local; for a URI, a local folder named after it under ``cache_root()/locks``. An
    object store has no atomic "create if absent" that pyarrow exposes, so the lock of a
    URI run is taken on the machine that runs its driver: two drivers of one study on one
    machine are refused, drivers on two machines are not (start studies from one place,
    e.g. as Ray jobs on the cluster's head)."""
    text = normalize(location)
    if not is_uri(text):
        return Path(text)
    parts = urlsplit(text)  # the ?options are not part of the name: urlsplit keeps them apart
    readable = [parts.scheme, parts.netloc.replace(":", "_"), *[p for p in parts.path.split("/") if p]]
    return cache_root().joinpath("locks", *readable)


__all__ = ["CACHE_ENV", "SOURCE_FILE", "cache_root", "local_copy", "lock_directory"]
