"""A ServeConfig from its sources: defaults <- a YAML file <- dotted overrides <- explicit fields.

    config = load_serve_config("serve.yaml", ["ingress.max_replicas=4"], port=8080)

The file holds ServeConfig fields (serve/config.py), or is a Ray Serve config file that
`mtlmood serve build` wrote (serve/build.py): then its application's ``args`` are the
fields, checked against the rest of the file. This sits above both modules, so that the
settings (serve.config) never import the file format that is derived from them (serve.build).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import yaml

from mtlmood.coerce import apply_overrides
from mtlmood.config_io import load_config
from serve.build import serve_file_config
from serve.config import ServeConfig


def load_serve_config(
    path: Optional[str | os.PathLike[str]] = None,
    overrides: Optional[list[str]] = None,
    check: bool = True,
    **fields: Any,
) -> ServeConfig:
    """Defaults <- YAML file <- dotted overrides <- explicit keyword fields (e.g. from CLI flags).

    The file holds ServeConfig fields, or is a Ray Serve config (it has ``applications:``, as
    `mtlmood serve build` writes): then its application's ``args`` are the fields, and with
    ``check`` the rest of the file must agree with them (serve.build.check_serve_file)."""
    serve_file = _serve_file(path)
    if serve_file is not None:
        config = apply_overrides(serve_file_config(serve_file, str(path), check), overrides or [])
    else:
        config = load_config(ServeConfig, path, overrides or [])
    given = {k: v for k, v in fields.items() if v is not None}
    return replace(config, **given).validate() if given else config.validate()


def _serve_file(path: Optional[str | os.PathLike[str]]) -> Optional[dict[str, Any]]:
    """The parsed file when it is a Ray Serve config (None otherwise, or when it cannot be read:
    load_config then says why, in its words)."""
    if path is None:
        return None
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and "applications" in data else None
