"""API keys (serve/auth.py) without Ray: the ``auth`` settings and their one-line errors, reading
keys from a variable and a file, the constant-time check, the middleware's 401s and open paths
(in process, on a bare FastAPI app), and that no key ever shows in a repr, an error, a log line
or a built Serve file. The keys through a real Serve: test_serve_http.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from mtlmood.errors import ConfigError

KEY = "k" * 20 + "-first-key"
OTHER = "o" * 20 + "-second-key"


def test_auth_is_off_by_default_and_its_settings_are_checked(tmp_path: Path) -> None:
    from serve.config import ServeConfig
    from serve.config_file import load_serve_config

    assert ServeConfig().auth.enabled is False and load_serve_config().auth == ServeConfig().auth
    on = load_serve_config(overrides=["auth.enabled=true", f"auth.keys_file={tmp_path / 'keys'}"])
    assert on.auth.enabled and on.auth.keys_env == "MTLMOOD_API_KEYS"
    with pytest.raises(ConfigError, match="auth.enabled needs auth.keys_env or auth.keys_file"):
        load_serve_config(overrides=["auth.enabled=true", "auth.keys_env="])
    with pytest.raises(ConfigError, match="auth.keys_file must be an absolute path"):
        load_serve_config(overrides=["auth.keys_file=keys.txt"])
    # A name, not a key: what looks like a pasted key is refused before it reaches a file.
    with pytest.raises(ConfigError, match="auth.keys_env=.*name of an environment variable"):
        load_serve_config(overrides=["auth.keys_env=abc-123/xyz"])


def test_keys_come_from_the_variable_and_the_file(tmp_path: Path) -> None:
    from serve.auth import ApiKeys, AuthSettings, parse_keys

    assert parse_keys(f"# rotated 2026-12\n{KEY}\n\n  {OTHER}  \n") == [KEY, OTHER]
    assert parse_keys(f"{KEY},{OTHER}") == [KEY, OTHER]
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{OTHER}\n")
    both = ApiKeys.load(AuthSettings(enabled=True, keys_env="API_KEYS", keys_file=str(keys_file)), {"API_KEYS": KEY})
    assert len(both) == 2 and both.accepts(KEY.encode()) and both.accepts(OTHER.encode())
    assert not both.accepts(KEY[:-1].encode()) and not both.accepts(b"")
    assert ApiKeys.load(AuthSettings(enabled=True, keys_env="", keys_file=str(keys_file)), {}).accepts(OTHER.encode())

    (tmp_path / "empty").write_text("# no key yet\n")
    with pytest.raises(ConfigError, match=r"\$API_KEYS or .*empty holds no API key"):
        ApiKeys.load(AuthSettings(enabled=True, keys_env="API_KEYS", keys_file=str(tmp_path / "empty")), {})
    with pytest.raises(ConfigError, match=r"cannot read .*missing: No such file"):
        ApiKeys.load(AuthSettings(enabled=True, keys_file=str(tmp_path / "missing")), {})
    with pytest.raises(ConfigError, match=r"1 key\(s\) in \$API_KEYS shorter than 16") as short:
        ApiKeys.load(AuthSettings(enabled=True, keys_env="API_KEYS"), {"API_KEYS": f"{KEY}\nabc123"})
    assert "abc123" not in str(short.value)


def test_keys_are_kept_as_digests_and_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    import serve.auth as auth

    keys = auth.ApiKeys([KEY, OTHER])
    assert KEY not in repr(keys) and repr(keys) == "ApiKeys(2 keys)"
    assert KEY.encode() not in b"".join(keys._digests)
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert keys.accepts(KEY.encode())  # the first key matches: the second is still compared
    assert len(calls) == 2 and all(len(a) == len(b) == 32 for a, b in calls)


class Client:
    """A bare FastAPI app with the middleware (keys given, not installed) and the routes it guards."""

    def __init__(self, keys: Any) -> None:
        from fastapi import FastAPI

        from serve.auth import ApiKeyAuth

        self.app = FastAPI()
        self.app.add_middleware(ApiKeyAuth, open_paths=["/healthz", "/docs", "/openapi.json"], keys=lambda: keys)

        @self.app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @self.app.post("/predict")
        async def predict() -> dict[str, str]:
            return {"moods": "yes"}

    def call(self, method: str, path: str, key: Optional[str] = None, root_path: str = "", **kwargs: Any) -> Any:
        import httpx

        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"

        async def send() -> Any:
            transport = httpx.ASGITransport(app=self.app, root_path=root_path)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, root_path + path, headers=headers, **kwargs)

        return asyncio.run(send())


def _refused(response: Any, error: Optional[str]) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized" and set(response.json()) == {"error", "detail"}
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="mtlmood"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


def test_the_middleware_refuses_without_a_valid_key_and_leaves_health_and_docs_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from serve.auth import ApiKeys

    client = Client(ApiKeys([KEY]))
    caplog.set_level(logging.DEBUG)
    _refused(client.call("POST", "/predict"), None)
    wrong = client.call("POST", "/predict", key=OTHER)
    _refused(wrong, "invalid_token")
    assert OTHER not in wrong.text and "Bearer" not in wrong.json()["detail"].replace("Bearer <key>", "")
    _refused(client.call("POST", "/predict", headers={"Authorization": f"Basic {KEY}"}), None)
    _refused(client.call("GET", "/nowhere"), None)  # unknown paths too: routes cannot be probed
    assert client.call("POST", "/predict", key=KEY).json() == {"moods": "yes"}
    assert client.call("POST", "/predict", headers={"authorization": f"bearer  {KEY} "}).status_code == 200
    assert client.call("GET", "/nowhere", key=KEY).status_code == 404
    assert client.call("GET", "/healthz").json() == {"status": "ok"}
    assert client.call("GET", "/openapi.json").status_code == 200 and client.call("GET", "/docs").status_code == 200
    # Below a route prefix (Serve's root_path) the same paths are open, and only those.
    assert client.call("GET", "/healthz", root_path="/one").status_code == 200
    _refused(client.call("POST", "/predict", root_path="/one"), None)
    assert client.call("POST", "/predict", key=KEY, root_path="/one").status_code == 200
    assert KEY not in caplog.text and OTHER not in caplog.text
    # Auth off (no keys installed): every request passes, as before.
    assert Client(None).call("POST", "/predict").status_code == 200


def test_the_router_installs_its_keys_once_per_replica_process() -> None:
    import serve.auth as auth

    assert auth.installed_keys() is None  # nothing installed in a process that runs no router
    keys = auth.ApiKeys([KEY])
    try:
        auth.install_keys(keys)
        assert auth.installed_keys() is keys
    finally:
        auth.install_keys(None)


def test_a_built_serve_file_names_where_the_keys_are_never_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtlmood_cli.main import main

    monkeypatch.setenv("MTLMOOD_API_KEYS", KEY)
    out = tmp_path / "serve.yaml"
    sets = ["--set", "auth.enabled=true", "--set", "auth.keys_file=/etc/mtlmood/api-keys/keys"]
    assert main(["serve", "build", "--study", "/mnt/shared/s", *sets, "-o", str(out)]) == 0
    text = out.read_text()
    args = yaml.safe_load(text)["applications"][0]["args"]
    assert args["auth"] == {"enabled": True, "keys_env": "MTLMOOD_API_KEYS", "keys_file": "/etc/mtlmood/api-keys/keys"}
    assert KEY not in text and KEY not in capsys.readouterr().err
