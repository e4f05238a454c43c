"""Where a run's files live: a local path, or the URI of an object store or remote file system
(``s3://bucket/prefix``, ``gs://``, ``abfs://``, ``hdfs://``: what pyarrow.fs reads, which
is what Ray Tune and Ray Train read for their ``storage_path``).

    run_dir = "s3://bucket/studies/my-study"         # or "/mnt/shared/studies/my-study"
    write_json(join(run_dir, "cells.json"), cells)    # local: temp file + rename; S3: one PUT
    frame = pd.read_parquet(io.BytesIO(read_bytes(join(run_dir, "search", "trials.parquet"))))

Local copies of remote folders (and where the lock of a URI run lives) are
mtlmood.remote_cache; a checkpoint or a study's chosen one as a local folder is
mtlmood.checkpoint_pointer.local_checkpoint.

Every write of one file is atomic: a local file is written to a temp file and renamed
(mtlmood.fileio), an object appears only when its PUT (single or multipart) completes. A
*folder* is never atomic on an object store, so writers that need "finished or absent"
upload its files first and a marker last (a study run's ``result.json``, a checkpoint's
``model_card.json``), and readers look for the marker.

Credentials and endpoint come from where pyarrow (and so Ray) looks, never from here: for
S3 the AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_DEFAULT_REGION / AWS_REGION, AWS_ENDPOINT_URL for S3-compatible stores such as MinIO),
``~/.aws`` files or an instance profile; or pyarrow's URI options
(``s3://bucket/prefix?endpoint_override=host:9000&scheme=http&region=us-east-1``).

Local paths (and ``file://`` URIs) take the plain os/pathlib route, byte for byte what the
code did before URIs were allowed; only URIs go through pyarrow.fs.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Type, Union
from urllib.parse import unquote, urlsplit

from mtlmood.errors import ConfigError
from mtlmood.fileio import atomic_write_bytes

if TYPE_CHECKING:
    import pyarrow.fs

Location = Union[str, "os.PathLike[str]"]

# URI schemes pyarrow.fs.FileSystem.from_uri opens (file:// is a local path here).
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
# Settings (never secrets) a driver forwards to the Ray workers of its job, so that they
# reach the same store: the endpoint of an S3-compatible store, the region.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_")  # a change of these opens new file systems


# ------------------------------------------------------------------ names
def normalize(location: Location) -> str:
    """``location`` as text: ``file://`` URIs become local paths, trailing slashes go."""
    text = os.fspath(location)
    if text.startswith("file://"):
        return unquote(urlsplit(text).path) or "/"
    if "://" in text:
        base, query = _split_query(text)
        stripped = base.rstrip("/")
        return (stripped if "://" in stripped else base) + query  # "s3://" stays a (bad) URI
    return text


def is_uri(location: Location) -> bool:
    """Whether ``location`` is a URI read through pyarrow.fs (not a local path, not file://)."""
    text = os.fspath(location)
    return "://" in text and not text.startswith("file://")


def location_problem(location: Location) -> str:
    """Why ``location`` cannot hold a run ("" when it can): an unknown scheme, no bucket."""
    text = os.fspath(location)
    if not is_uri(text):
        return ""
    parts = urlsplit(text)
    if parts.scheme.lower() not in SCHEMES:
        return f"{parts.scheme}:// is not a storage that Ray and pyarrow.fs open; use a path, or a URI of " + ", ".join(
            f"{s}://" for s in SCHEMES
        )
    if not parts.netloc:
        return "names no bucket (or host)"
    return ""


def _split_query(text: str) -> tuple[str, str]:
    base, mark, query = text.partition("?")
    return base, (mark + query if query else "")


def join(base: Location, *parts: str) -> str:
    """``base`` / parts: a local path, or a URI with the parts joined by "/" (options kept last)."""
    text = normalize(base)
    if not is_uri(text):
        return str(Path(text, *parts))
    root, query = _split_query(text)
    tail = "/".join(str(p).strip("/") for p in parts if str(p).strip("/"))
    return (f"{root}/{tail}" if tail else root) + query


def name(location: Location) -> str:
    """The last component of ``location``."""
    text = normalize(location)
    return posixpath.basename(_split_query(text)[0]) if is_uri(text) else Path(text).name


def parent(location: Location) -> str:
    """The folder holding ``location``."""
    text = normalize(location)
    if not is_uri(text):
        return str(Path(text).parent)
    root, query = _split_query(text)
    return root.rsplit("/", 1)[0] + query


def relative_to(location: Location, base: Location) -> str:
    """``location`` relative to ``base`` (posix separators), or ``location`` itself when it is
    not below ``base``: what a run records, so that a copied or synced run still reads."""
    text, root = normalize(location), normalize(base)
    if is_uri(text) != is_uri(root):
        return text
    if is_uri(text):
        path, prefix = _split_query(text)[0], _split_query(root)[0].rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else text
    try:
        return Path(text).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return text


# ------------------------------------------------------------------ file systems
def _env_key() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))


@functools.lru_cache(maxsize=32)
def _open_root(root: str, env: tuple[tuple[str, str], ...]) -> tuple["pyarrow.fs.FileSystem", str]:
    """(file system, path of the root) of ``scheme://netloc/?options``; one per bucket and
    environment: opening an S3 URI asks the bucket for its region, once is enough."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(root)
    except (OSError, ValueError) as exc:
        base = _split_query(root)[0]
        raise ConfigError(f"cannot open {base}: {exc}".splitlines()[0]) from None
    return fs, path.rstrip("/")


def filesystem(location: Location) -> tuple["pyarrow.fs.FileSystem", str]:
    """(pyarrow file system, path on it) of a URI, as Ray would open it; ConfigError when
    the store cannot be opened (no such scheme, region or endpoint unreachable)."""
    text = normalize(location)
    if not is_uri(text):
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(Path(text).resolve())
    problem = location_problem(text)
    if problem:
        raise ConfigError(f"{text}: {problem}")
    base, query = _split_query(text)
    parts = urlsplit(base)
    fs, root_path = _open_root(f"{parts.scheme}://{parts.netloc}/{query}", _env_key())
    return fs, root_path + unquote(parts.path).rstrip("/")


def storage_env() -> dict[str, str]:
    """The storage settings of this process that Ray workers need too (endpoint, region;
    never credentials, which each node has from its own environment or instance profile)."""
    return {key: os.environ[key] for key in FORWARDED_ENV if os.environ.get(key)}


# ------------------------------------------------------------------ reading
def _type(location: str) -> Any:
    import pyarrow.fs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type, pyarrow.fs.FileType


def exists(location: Location) -> bool:
    """Whether a file or folder is at ``location`` (on an object store: an object, or a prefix
    with objects below it)."""
    text = normalize(location)
    if not is_uri(text):
        return Path(text).exists()
    kind, types = _type(text)
    return bool(kind != types.NotFound)


def is_file(location: Location) -> bool:
    text = normalize(location)
    if not is_uri(text):
        return Path(text).is_file()
    kind, types = _type(text)
    return bool(kind == types.File)


def is_dir(location: Location) -> bool:
    text = normalize(location)
    if not is_uri(text):
        return Path(text).is_dir()
    kind, types = _type(text)
    return bool(kind == types.Directory)


def read_bytes(location: Location) -> bytes:
    """The content of a file; FileNotFoundError when there is none."""
    text = normalize(location)
    if not is_uri(text):
        return Path(text).read_bytes()
    fs, path = filesystem(text)
    try:
        with fs.open_input_stream(path) as stream:
            return bytes(stream.readall())
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {text}") from None


def read_text(location: Location) -> str:
    return read_bytes(location).decode("utf-8")


def read_json_object(location: Location, error: Type[Exception], what: str = "") -> dict[str, Any]:
    """A JSON object from ``location``; ``error`` (naming it) when it is missing, unreadable,
    not JSON or not an object (mtlmood.fileio.read_json_object, for any location)."""
    label = f"{what} {normalize(location)}" if what else normalize(location)
    try:
        data = json.loads(read_bytes(location).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"corrupt {label}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"corrupt {label}: not a JSON object")
    return data


def list_files(location: Location) -> list[str]:
    """Every file below a folder, as sorted paths relative to it ([] when there is none)."""
    text = normalize(location)
    if not is_uri(text):
        root = Path(text)
        if not root.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    import pyarrow.fs

    fs, path = filesystem(text)
    selector = pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
    return sorted(
        info.path[len(path) + 1 :]
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.File and info.path.startswith(path + "/")
    )


# ------------------------------------------------------------------ writing
def makedirs(location: Location) -> None:
    """Create a local folder (and its parents); object stores have none to create."""
    text = normalize(location)
    if not is_uri(text):
        Path(text).mkdir(parents=True, exist_ok=True)


def write_bytes(location: Location, data: bytes) -> None:
    """Write a whole file atomically (local: temp file + rename; object store: one PUT)."""
    text = normalize(location)
    if not is_uri(text):
        atomic_write_bytes(Path(text), data)
        return
    fs, path = filesystem(text)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(location: Location, text: str) -> None:
    write_bytes(location, text.encode("utf-8"))


def write_json(location: Location, obj: Any) -> None:
    """An object as indented JSON (as mtlmood.fileio.atomic_write_json writes it)."""
    write_text(location, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_text(location: Location, text: str) -> None:
    """Add ``text`` at the end of a file (on an object store: read, then rewrite whole)."""
    target = normalize(location)
    if not is_uri(target):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as handle:
            handle.write(text)
        return
    try:
        before = read_text(target)
    except FileNotFoundError:
        before = ""
    write_text(target, before + text)


def remove(location: Location) -> None:
    """Delete a file or a folder with everything below it; nothing there is fine."""
    text = normalize(location)
    if not is_uri(text):
        path = Path(text)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return
    import pyarrow.fs

    fs, path_ = filesystem(text)
    kind = fs.get_file_info(path_).type
    if kind == pyarrow.fs.FileType.File:
        fs.delete_file(path_)
    elif kind == pyarrow.fs.FileType.Directory:
        fs.delete_dir_contents(path_, missing_dir_ok=True)
        try:
            fs.delete_dir(path_)
        except FileNotFoundError:  # an object store's "folder" went with its last object
            pass


def upload_dir(local_dir: Location, location: Location, last: Iterable[str] = ()) -> None:
    """Copy the files of a local folder to ``location`` (below it, same relative paths).
    Files named in ``last`` (relative paths) are copied after all others: a reader that
    waits for them sees a complete folder."""
    source = Path(local_dir)
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    final = [f for f in files if f in set(last)]
    for relative in [f for f in files if f not in final] + final:
        write_bytes(join(location, relative), (source / relative).read_bytes())


def download_dir(location: Location, local_dir: Location) -> list[str]:
    """Copy every file below ``location`` into a local folder; returns their relative paths."""
    target = Path(local_dir)
    files = list_files(location)
    for relative in files:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(read_bytes(join(location, relative)))
    return files


def move(source: Location, target: Location) -> None:
    """Move a file or folder (local: one rename; object store: copy, then delete: not atomic)."""
    src, dst = normalize(source), normalize(target)
    if not is_uri(src) and not is_uri(dst):
        shutil.move(src, dst)
        return
    if is_file(src):
        write_bytes(dst, read_bytes(src))
    else:
        for relative in list_files(src):
            write_bytes(join(dst, relative), read_bytes(join(src, relative)))
    remove(src)


__all__ = [
    "SCHEMES",
    "append_text",
    "download_dir",
    "exists",
    "filesystem",
    "is_dir",
    "is_file",
    "is_uri",
    "join",
    "list_files",
    "location_problem",
    "makedirs",
    "move",
    "name",
    "normalize",
    "parent",
    "read_bytes",
    "read_json_object",
    "read_text",
    "relative_to",
    "remove",
    "storage_env",
    "upload_dir",
    "write_bytes",
    "write_json",
    "write_text",
]
