"""Names and URLs of the Optuna studies of an alpha study (no Optuna, no study config: the
config validates ``search.optuna_storage`` with these); the storage itself is
study.optuna_store.

    cell_study_name("synthetic-alpha", "3|artist@3")   # "synthetic-alpha:3|artist@3"
    default_storage_url("/runs/studies/synthetic-alpha")  # "sqlite:////runs/.../optuna.db"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mtlmood import storage

OPTUNA_FILE = "optuna.db"  # the default SQLite file, in the run directory
LOCAL_DIR = "optuna"  # under mtlmood.remote_cache.cache_root(): the SQLite files of URI studies


def cell_study_name(study_name: str, cell_key: str) -> str:
    """The Optuna study name of one cell: ``<study name>:<cell key>`` ("synthetic-alpha:3|artist@3")."""
    return f"{study_name}:{cell_key}"


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file (an absolute path: ``sqlite:////abs/path.db``)."""
    return "sqlite:///" + str(Path(path).expanduser().resolve())


def local_database(run_dir: str) -> Path:
    """The default SQLite file of a study on an object store: on this machine, under the
    mtlmood cache, named after the URI (its ``?options`` left out)."""
    from mtlmood.remote_cache import cache_root

    parts = urlsplit(storage.normalize(run_dir))
    readable = [parts.scheme, parts.netloc.replace(":", "_"), *[p for p in parts.path.split("/") if p]]
    return cache_root().joinpath(LOCAL_DIR, *readable, OPTUNA_FILE)


def default_storage_url(run_dir: str) -> str:
    """``sqlite:///<run dir>/optuna.db``; for a run directory on an object store, a SQLite file
    on this machine (:func:`local_database`)."""
    if storage.is_uri(run_dir):
        return sqlite_url(local_database(run_dir))
    return sqlite_url(Path(run_dir) / OPTUNA_FILE)


def database_url(value: Any) -> str:
    """search.optuna_storage: "" (the default) or a SQLAlchemy database URL with a database,
    and without a password (the URL is recorded in study_config.yaml and in Tune's state)."""
    if not isinstance(value, str):
        raise ValueError("must be a database URL such as sqlite:///path/optuna.db or postgresql://user@host/db")
    text = value.strip()
    if not text:
        return ""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise ValueError(
            "must be a database URL such as sqlite:///path/optuna.db or postgresql://user@host/db"
        ) from None
    try:
        url.get_dialect()  # the dialect only: its driver (psycopg2, ...) is needed on the driver's machine alone
    except NoSuchModuleError:
        raise ValueError(
            f"names no database SQLAlchemy knows ({url.drivername!r}): e.g. sqlite, postgresql, mysql"
        ) from None
    if url.password is not None or any(key.lower() in ("password", "passwd") for key in url.query):
        raise ValueError(
            "must not hold a password (it is recorded in study_config.yaml and in Tune's state): "
            "give it to the database driver instead (PostgreSQL: PGPASSWORD or ~/.pgpass)"
        )
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("must name a database file: an in-memory SQLite database vanishes with the driver")
    return text


def resolve_database_url(url: str, base: Path) -> str:
    """A SQLite URL with a relative path made absolute against ``base``; other URLs unchanged."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or Path(parsed.database).is_absolute():
        return url
    path = (base / Path(parsed.database).expanduser()).resolve()
    return parsed.set(database=str(path)).render_as_string(hide_password=False)
