"""Configs as files: defaults + a YAML file + ``--set`` overrides in, a resolved YAML out.

Every config can be read from YAML, overridden from the command line with dotted
``section.key=value`` strings (validated by mtlmood.coerce at each step), and written back
(resolved: relative paths made absolute) next to a run's results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mtlmood.coerce import apply_overrides, from_dict, one_line, show_value, to_dict
from mtlmood.config import RunConfig
from mtlmood.errors import ConfigError

C = TypeVar("C")


def load_config(cls: type[C], path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> C:
    """Defaults, then a YAML file (if given), then dotted overrides; validated at each step."""
    data: Any = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            raise ConfigError(one_line(f"config file {path} is not valid YAML: {exc}")) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of settings at the top level, not {show_value(loaded)}"
            )
        data = loaded or {}
    try:
        config = from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}" if path is not None else str(exc)) from None
    return apply_overrides(config, overrides or [])


def _absolute(path: str, base: Path) -> str:
    """``path`` made absolute against ``base`` ("" and URIs stay as they are)."""
    if not path or "://" in path:
        return path
    return str((base / Path(path).expanduser()).resolve())


def resolve_run_paths(config: RunConfig, base: str | os.PathLike[str] | None = None) -> RunConfig:
    """The config with every relative path (dataset root, audio root, cache, output) made absolute.

    Relative paths mean "from where the command was typed". Ray workers run in other
    working directories, so paths are resolved once, here, before anything reaches Ray,
    and the run's saved config records them resolved.
    """
    where = Path(base) if base is not None else Path.cwd()
    return dataclasses.replace(
        config,
        dataset=dataclasses.replace(
            config.dataset,
            root=_absolute(config.dataset.root, where),
            audio_root=_absolute(config.dataset.audio_root, where),
        ),
        cache_dir=_absolute(config.cache_dir, where),
        output_dir=_absolute(config.output_dir, where),
    )


def save_config(config: Any, path: str | os.PathLike[str]) -> None:
    """Write a resolved config as YAML (atomically)."""
    from mtlmood.fileio import atomic_write_text  # imported here: it loads numpy, which reading a config needs not

    atomic_write_text(Path(path), yaml.safe_dump(to_dict(config), sort_keys=False))


def config_hash(config: Any) -> str:
    """A short stable hash of a config, used to tell caches and runs apart."""
    blob = json.dumps(to_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
