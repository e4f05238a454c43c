"""Optional API keys in front of the endpoint: the ``auth`` settings, the keys they name, and the
ASGI middleware that checks every request's ``Authorization: Bearer <key>`` against them.

    auth:                               # a section of the ServeConfig (serve/config.py); off by default
      enabled: true
      keys_env: MTLMOOD_API_KEYS        # an environment variable of the router replicas, and/or
      keys_file: /etc/mtlmood/api-keys/keys   # a mounted secret file (a Kubernetes Secret volume)

Both sources hold one key per line (blank lines and ``#`` comments skipped; commas separate
keys too, so an environment variable can hold ``key1,key2``); the keys of both are accepted,
which lets a new key go in before an old one goes out. The settings name where the keys are,
never a key: nothing that prints or ships a config (``mtlmood serve build``, the Serve file's
``args``, ``GET /model``, error lines) can show one.

Each router replica reads the keys when it starts (``ApiKeys.load``; an enabled auth without a
usable key stops the replica with a one-line reason) and keeps only their SHA-256 digests. A
request's token is hashed and compared with every digest by ``hmac.compare_digest``, without
stopping at a match, so the time taken tells nothing about which key, or how much of one,
matched. A token is never logged or echoed.

Open without a key: ``/healthz`` (load balancers and Kubernetes probes; it tells whether the
service is up and which checkpoint it serves) and the API description (``/docs``,
``/openapi.json``: no model data, and the docs page needs it to load). Every other path, unknown
ones included (so routes cannot be probed), answers 401 JSON with ``WWW-Authenticate: Bearer``.
The endpoint's Prometheus metrics are not on this port (Ray's metrics export port of each node).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping, Optional

from pydantic import AfterValidator

from mtlmood.config import PathText
from mtlmood.errors import ConfigError
from serve.schemas import error_response
from serve.telemetry import ASGIApp, Receive, Scope, Send

DEFAULT_KEYS_ENV = "MTLMOOD_API_KEYS"
MIN_KEY_LENGTH = 16  # characters: `openssl rand -hex 32` gives 64; shorter keys are guessable
REALM = "mtlmood"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(value: str) -> str:
    # Only a name: a pasted key would be shown back in error lines and written into Serve files.
    if value and not _ENV_NAME.fullmatch(value):
        raise ValueError("must be the name of an environment variable (letters, digits, _), not a key")
    return value


@dataclass(frozen=True)
class AuthSettings:
    """Whether requests need an API key, and where the router replicas find the keys."""

    enabled: bool = False
    # The environment variable of each router replica's process that holds keys ("" = none).
    keys_env: Annotated[str, AfterValidator(_env_name)] = DEFAULT_KEYS_ENV
    # A file of keys on every node that runs a router replica, e.g. a mounted Kubernetes Secret
    # ("" = none). Absolute: a replica does not run in the directory the config was written in.
    keys_file: PathText = ""

    def problems(self) -> list[str]:
        """What makes these settings unusable (for ServeConfig.validate); never names a key."""
        out = []
        if self.keys_file and not Path(self.keys_file).is_absolute():
            out.append(f"auth.keys_file must be an absolute path (each replica reads it), got {self.keys_file!r}")
        if self.enabled and not (self.keys_env or self.keys_file):
            out.append("auth.enabled needs auth.keys_env or auth.keys_file: where the router finds the API keys")
        return out


def parse_keys(text: str) -> list[str]:
    """The keys of a keys file or variable: one per line (or comma-separated), stripped; blank
    lines and lines starting with ``#`` skipped."""
    keys = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        keys += [part.strip() for part in line.split(",") if part.strip()]
    return keys


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class ApiKeys:
    """The accepted keys, as SHA-256 digests only (a key itself is not kept, so no repr, log line
    or crash dump of this object can show one)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key.encode("utf-8")) for key in keys)
        if not self._digests:
            raise ValueError("ApiKeys needs at least one key")

    @classmethod
    def load(cls, settings: AuthSettings, environ: Optional[Mapping[str, str]] = None) -> "ApiKeys":
        """The keys ``settings`` name (its variable in ``environ``, default this process's
        environment, and its file). ConfigError, naming the source but never a key, when a source
        cannot be read, holds a key shorter than MIN_KEY_LENGTH, or no source holds a key."""
        environ = os.environ if environ is None else environ
        keys: list[str] = []
        if settings.keys_env:
            keys += _checked(parse_keys(environ.get(settings.keys_env, "")), f"${settings.keys_env}")
        if settings.keys_file:
            try:
                text = Path(settings.keys_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ConfigError(f"auth.keys_file: cannot read {settings.keys_file}: {reason}") from None
            keys += _checked(parse_keys(text), settings.keys_file)
        if not keys:
            sources = " or ".join(
                s for s in (f"${settings.keys_env}" if settings.keys_env else "", settings.keys_file) if s
            )
            raise ConfigError(f"auth is enabled but {sources} holds no API key (one key per line)")
        return cls(keys)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"ApiKeys({len(self)} keys)"

    def accepts(self, token: bytes) -> bool:
        """Whether ``token`` is one of the keys: compared in constant time with every key."""
        given = _digest(token)
        match = False
        for digest in self._digests:  # no early exit: every request costs the same comparisons
            match |= hmac.compare_digest(given, digest)
        return match


def _checked(keys: list[str], source: str) -> list[str]:
    short = sum(len(key) < MIN_KEY_LENGTH for key in keys)
    if short:
        raise ConfigError(
            f"auth: {short} key(s) in {source} shorter than {MIN_KEY_LENGTH} characters; "
            "make keys with e.g. `openssl rand -hex 32`"
        )
    return keys


# The keys of this process's router replica: Serve runs each replica in a process of its own, and
# freezes a copy of the FastAPI app when the class is decorated, so the replica cannot hand its app
# state; it installs its keys here when it starts (serve.router.MoodRouter), and the middleware
# reads them per request. None = auth off.
_installed: Optional[ApiKeys] = None


def install_keys(keys: Optional[ApiKeys]) -> None:
    """Make ``keys`` the ones this process's middleware checks (None: every request passes)."""
    global _installed
    _installed = keys


def installed_keys() -> Optional[ApiKeys]:
    """The keys ``install_keys`` installed in this process (None: auth off)."""
    return _installed


def route_path(scope: Scope) -> str:
    """The path below the app's route prefix (Serve hands the prefix as ``root_path``), the way
    Starlette's router matches routes, so open paths are exactly the routes of those names."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


def bearer_token(scope: Scope) -> Optional[bytes]:
    """The token of the request's ``Authorization: Bearer <token>`` header (None when absent or of
    another scheme). Bytes as sent: a key is compared as its UTF-8 bytes."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


class ApiKeyAuth:
    """ASGI middleware: a request to a path outside ``open_paths`` passes only with a valid bearer
    token, when ``keys()`` gives keys; otherwise it gets 401 JSON (``unauthorized``) with
    ``WWW-Authenticate: Bearer``. ``keys`` defaults to this process's installed keys."""

    def __init__(
        self,
        app: ASGIApp,
        open_paths: Iterable[str] = (),
        keys: Callable[[], Optional[ApiKeys]] = installed_keys,
    ) -> None:
        self.app = app
        self.open_paths = frozenset(open_paths)
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keys = self.keys()
        if keys is None or scope.get("type") != "http" or route_path(scope) in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is not None and keys.accepts(token):
            await self.app(scope, receive, send)
            return
        await _refusal(token is None)(scope, receive, send)


def _refusal(missing: bool) -> Any:
    """The 401 answer (RFC 6750): no detail about the token sent beyond "missing" or "not valid"."""
    if missing:
        detail = "this endpoint needs an API key: send the header 'Authorization: Bearer <key>'"
        challenge = f'Bearer realm="{REALM}"'
    else:
        detail = "the API key is not valid"
        challenge = f'Bearer realm="{REALM}", error="invalid_token"'
    return error_response(401, "unauthorized", detail, {"WWW-Authenticate": challenge})
