"""The tracks of a batch run: files, folders, globs and CSV manifests, local or on an object store.

    tracks = resolve_inputs(["music/", "extra/*.flac", "list.csv", "s3://bucket/audio/"])

A track is named by its location: an absolute local path, or a URI (``s3://bucket/a.mp3``,
any scheme mtlmood.storage opens). That name is the key of its row in the output.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from pathlib import Path
from typing import Sequence, Union

from mtlmood.errors import ConfigError
from mtlmood.storage import is_uri, join, list_files, location_problem, normalize, parent, read_text

# What a folder or a glob contributes (libsndfile decodes all of these; an explicitly named
# file is taken whatever its suffix).
AUDIO_SUFFIXES = frozenset({".mp3", ".ogg", ".oga", ".opus", ".flac", ".wav", ".aif", ".aiff"})
MANIFEST_SUFFIX = ".csv"
MANIFEST_COLUMN = "path"

PathText = Union[str, "os.PathLike[str]"]


def _is_audio(name: str) -> bool:
    """Whether a file name (or a URI, its ?options aside) has an audio suffix."""
    if is_uri(name):
        name = name.split("?", 1)[0]
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


def _absolute(path: PathText) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _entry(base: str, entry: str) -> str:
    """A manifest entry as a track name: a URI as it is, else relative to the manifest's folder
    (an absolute local path in a manifest on an object store stays a local path)."""
    if is_uri(entry):
        return normalize(entry)
    if is_uri(base):
        return entry if entry.startswith("/") else join(base, entry)
    return _absolute(Path(base) / entry)


def read_manifest(location: PathText) -> list[str]:
    """The ``path`` column of a CSV manifest (a local file or a URI); relative paths are
    relative to the manifest's folder."""
    text = normalize(location)
    try:
        content = read_text(text) if is_uri(text) else Path(text).read_text(encoding="utf-8")
        reader = csv.DictReader(io.StringIO(content, newline=""))
        if MANIFEST_COLUMN not in (reader.fieldnames or []):
            raise ConfigError(f"manifest {text} has no {MANIFEST_COLUMN!r} column (columns: {reader.fieldnames})")
        entries = [(row.get(MANIFEST_COLUMN) or "").strip() for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read manifest {text}: {exc}") from None
    base = parent(text)
    return [_entry(base, entry) for entry in entries if entry]


def _uri_tracks(text: str) -> list[str]:
    """The tracks a URI names: an object (a manifest when it ends in .csv), or a prefix (its
    audio objects, from one listing, sorted)."""
    import pyarrow.fs

    from mtlmood.storage import filesystem

    problem = location_problem(text)
    if problem:
        raise ConfigError(f"{text}: {problem}")
    if glob.has_magic(text.split("?", 1)[0].split("://", 1)[1]):
        raise ConfigError(f"{text}: globs are for local paths; give a folder (prefix) or a CSV manifest")
    fs, path = filesystem(text)
    kind = fs.get_file_info(path).type
    if kind == pyarrow.fs.FileType.File:
        return read_manifest(text) if text.split("?", 1)[0].lower().endswith(MANIFEST_SUFFIX) else [text]
    if kind == pyarrow.fs.FileType.Directory:
        return [join(text, relative) for relative in list_files(text) if _is_audio(relative)]
    if _is_audio(text):
        return [text]  # reported as "file not found", like any unreadable track
    raise ConfigError(f"input not found: {text} (no object or prefix there)")


def resolve_inputs(inputs: Sequence[PathText]) -> list[str]:
    """The tracks named by ``inputs``, in order, each once: absolute paths and URIs.

    An input is a file (taken whatever its suffix; ``.csv`` = a manifest with a ``path``
    column), a folder (its audio files, recursively, sorted), or a glob (``*``, ``?``, ``[``;
    ``**`` recurses; its audio files); each may be local or a URI (no globs in URIs). A
    missing path with an audio suffix is kept: it becomes a "file not found" failure.
    ConfigError for any other input that names nothing, and when there are no tracks at all.
    """
    tracks: dict[str, None] = {}  # ordered set
    for raw in inputs:
        text = os.path.expanduser(normalize(raw))
        path = Path(text)
        if is_uri(text):
            tracks.update((track, None) for track in _uri_tracks(text))
        elif path.is_dir():
            found = [p for p in path.rglob("*") if _is_audio(p.name) and p.is_file()]
            tracks.update((_absolute(p), None) for p in sorted(found))
        elif path.is_file():
            entries = read_manifest(path) if path.suffix.lower() == MANIFEST_SUFFIX else [_absolute(path)]
            tracks.update((entry, None) for entry in entries)
        elif glob.has_magic(text):
            for match in (Path(m) for m in sorted(glob.glob(text, recursive=True))):
                found = (
                    sorted(p for p in match.rglob("*") if _is_audio(p.name) and p.is_file()) if match.is_dir() else []
                )
                found = found or ([match] if match.is_file() and _is_audio(match.name) else [])
                tracks.update((_absolute(p), None) for p in found)
        elif _is_audio(path.name):
            tracks[_absolute(path)] = None  # reported as "file not found", like any unreadable track
        else:
            raise ConfigError(f"input not found: {text} (not a file, a folder or a glob that matches)")
    if not tracks:
        raise ConfigError(f"no audio files found in {', '.join(os.fspath(i) for i in inputs)}")
    return list(tracks)


__all__ = ["AUDIO_SUFFIXES", "MANIFEST_COLUMN", "MANIFEST_SUFFIX", "read_manifest", "resolve_inputs"]
