"""The Ray Serve endpoint end to end: real Ray, real Serve, real (small) checkpoints.

One Ray + Serve per module (ray.init takes seconds on 2 cores). Three shared applications,
each behind one router replica: ``main`` (normal limits, split topology: ingress -> model
replicas), ``one`` (combined topology, as on a CPU node: one replica decodes and scores) and
``tight`` (a paper-width model behind a queue of one, to force 503s). A test that breaks an
app (the replica-kill tests) or adds one (the CLI test) deploys its own and removes it, and
no test relies on what another left behind, so they pass in any order. The default layout
(two ingress replicas on 2 CPUs) losing a replica under load is in test_serve_replica_death.py. Every HTTP call
has a timeout and every loop a bound, so a broken server fails the test instead of
hanging it; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest
import soundfile as sf
import yaml
from serve_helpers import (
    MOODS,
    TIMEOUT,
    assert_clean_answer,
    free_port,
    kill_under_load,
    make_checkpoint,
    tone,
    wav_bytes,
)

from mtlmood.errors import ConfigError

requests = pytest.importorskip("requests")

MAIN_BODY_LIMIT = 4 * 1024 * 1024  # above the largest real clip (2.8 MB wav)
TIGHT_BODY_LIMIT = 256 * 1024  # fits the 6 s mono clip of the overload test (192 KB)


# ------------------------------------------------------------------------ helpers


def assert_error(response: "requests.Response", status: int, error: Optional[str] = None) -> dict[str, Any]:
    """The response has ``status`` and a JSON {"error", "detail"} body without a traceback."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    if error is not None:
        assert body["error"] == error, body
    return body


def cli_main() -> Callable[[list[str]], int]:
    """The `mtlmood` command's entry point."""
    from mtlmood_cli.main import main

    return main


def one_router() -> Any:
    """One router replica (0 CPU): the shared apps need no second one, and each costs a process."""
    from serve.config import RouterSettings

    return RouterSettings(min_replicas=1, max_replicas=1)


def small_app_config(checkpoint: Path, topology: str) -> Any:
    """A one-replica app on 0.1 + 0.1 CPU: fits beside the shared apps in the test's 2 CPUs."""
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, ServeConfig

    return ServeConfig(
        router=one_router(),
        checkpoint=str(checkpoint),
        max_body_bytes=MAIN_BODY_LIMIT,
        top_k=3,
        model_timeout_s=20.0,
        topology=topology,
        batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
        ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.1),
        model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.1, num_gpus=0),
    )


@contextmanager
def own_app(server: dict[str, str], name: str, config: Any) -> Iterator[str]:
    """An app of the test's own at ``/<name>``, deleted afterwards: what it breaks, no other test sees."""
    from ray import serve

    from serve.app import build_app

    serve.run(build_app(config), name=name, route_prefix=f"/{name}")
    try:
        yield f"{server['main']}/{name}"
    finally:
        serve.delete(name)


def scored_counts(base: str) -> dict[str, int]:
    """What the app's (one) model replica has scored so far: immediate, batches, batched_requests."""
    response = requests.get(f"{base}/healthz?deep=true", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["model"]["scored"]


def assert_matches(body: dict[str, Any], expected: dict[str, float], tol: float = 1e-5) -> None:
    assert list(body["moods"]) == list(expected)
    got = np.array([body["moods"][m] for m in expected])
    np.testing.assert_allclose(got, np.array(list(expected.values())), rtol=0, atol=tol)


# ----------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-ckpt")
    return {
        "small": make_checkpoint(root / "small", n_filters=8),
        # Paper width (128 filters): slow enough per request on one thread to fill a tiny queue.
        "wide": make_checkpoint(root / "wide", n_filters=128),
    }


@pytest.fixture(scope="module")
def predictor(checkpoints: dict[str, Path]):
    from mtlmood.inference import Predictor

    return Predictor.from_checkpoint(checkpoints["small"])


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path]) -> Iterator[dict[str, str]]:
    """Ray (2 CPUs) + Serve on a free loopback port with the `main`, `one` and `tight` apps."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve.app import build_app
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, ServeConfig

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # Fractional CPUs: the three apps (5 replicas, 1.7 CPUs; routers take none) plus the one
        # app a test deploys for itself (0.2 CPUs: the CLI and replica-kill tests) fit in 2 CPUs.
        main = ServeConfig(
            router=one_router(),
            checkpoint=str(checkpoints["small"]),
            max_body_bytes=MAIN_BODY_LIMIT,
            top_k=3,
            model_timeout_s=20.0,
            topology="split",
            batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
            ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.4),
            model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.4, num_gpus=0),
        )
        # topology left at auto: no GPUs here, so one combined deployment (0.2 + 0.2 CPU).
        one = ServeConfig(
            router=one_router(),
            checkpoint=str(checkpoints["small"]),
            max_body_bytes=MAIN_BODY_LIMIT,
            top_k=3,
            model_timeout_s=20.0,
            batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
            ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.2),
            model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.2, num_gpus=0),
        )
        tight = ServeConfig(
            router=one_router(),
            checkpoint=str(checkpoints["wide"]),
            max_body_bytes=TIGHT_BODY_LIMIT,
            model_timeout_s=20.0,
            topology="split",
            batching=BatchingConfig(max_batch_size=1, batch_wait_timeout_s=0.0),
            ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.25, max_ongoing_requests=100),
            model=ModelSettings(
                min_replicas=1, max_replicas=1, num_cpus=0.25, num_gpus=0, max_ongoing_requests=1, max_queued_requests=1
            ),
        )
        serve.run(build_app(main), name="main", route_prefix="/")
        serve.run(build_app(tight), name="tight", route_prefix="/tight")
        serve.run(build_app(one), name="one", route_prefix="/one")
        yield {
            "main": f"http://127.0.0.1:{port}",
            "tight": f"http://127.0.0.1:{port}/tight",
            "one": f"http://127.0.0.1:{port}/one",
        }
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


# ------------------------------------------------------- config and CLI (no Ray)


def test_config_validation_and_sources(
    tmp_path: Path, checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.config import CHECKPOINT_ENV, STUDY_ENV, ServeConfig, load_serve_config, resolve_checkpoint

    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(STUDY_ENV, raising=False)

    with pytest.raises(ConfigError, match="max_batch_size"):
        load_serve_config(overrides=["batching.max_batch_size=64", "model.max_ongoing_requests=8"])
    with pytest.raises(ConfigError, match="max_queued_requests"):
        load_serve_config(overrides=["model.max_queued_requests=0"])
    with pytest.raises(ConfigError, match="unknown"):
        load_serve_config(overrides=["model.replicas=3"])
    with pytest.raises(ConfigError, match="no model to serve"):
        resolve_checkpoint(ServeConfig())
    # A partial YAML section keeps the other defaults of that section.
    (tmp_path / "serve.yaml").write_text("ingress: {max_replicas: 3}\nport: 9000\n")
    config = load_serve_config(tmp_path / "serve.yaml", port=9001)
    assert config.ingress.max_replicas == 3 and config.ingress.max_ongoing_requests == 64 and config.port == 9001

    # A study run directory: best_checkpoint.json names the checkpoint (absolute or relative).
    run = tmp_path / "study"
    run.mkdir()
    with pytest.raises(ConfigError, match="best_checkpoint.json"):
        resolve_checkpoint(ServeConfig(study=str(run)))
    (run / "best_checkpoint.json").write_text(json.dumps({"checkpoint": str(checkpoints["small"]), "trial_id": "t"}))
    assert resolve_checkpoint(ServeConfig(study=str(run))) == checkpoints["small"].resolve()
    with pytest.raises(ConfigError, match="not both"):
        resolve_checkpoint(ServeConfig(study=str(run), checkpoint=str(checkpoints["small"])))
    # The env vars are a fallback only (a Serve config's runtime_env); explicit fields win.
    monkeypatch.setenv(STUDY_ENV, str(tmp_path / "no-such-study"))
    assert resolve_checkpoint(ServeConfig(checkpoint=str(checkpoints["wide"]))) == checkpoints["wide"].resolve()
    monkeypatch.setenv(STUDY_ENV, str(run))
    assert resolve_checkpoint(ServeConfig()) == checkpoints["small"].resolve()
    with pytest.raises(ConfigError, match="cuda"):
        load_serve_config(device="cuda", overrides=["model.num_gpus=0"])
    with pytest.raises(ConfigError, match="topology must be one of auto, split, combined"):
        load_serve_config(overrides=["topology=single"])
    with pytest.raises(ConfigError, match="precision must be fp32 or bf16"):
        load_serve_config(overrides=["precision=int8"])
    # Overload must be refused by the ingress queue (JSON 503), not by Serve's proxy (plain text).
    with pytest.raises(ConfigError, match=r"router.max_ongoing_requests \(512\) must be >= .* \(768\)"):
        load_serve_config(overrides=["ingress.max_replicas=10"])
    with pytest.raises(ConfigError, match="unbounded"):
        load_serve_config(overrides=["ingress.max_queued_requests=-1"])
    with pytest.raises(ConfigError, match="request_timeout_s"):
        load_serve_config(overrides=["model_timeout_s=60"])
    with pytest.raises(ConfigError, match="router.num_gpus must be 0"):
        load_serve_config(overrides=["router.num_gpus=1"])
    # The default fits a 2-CPU node with two ingress replicas (combined: 0.5 + 0.5 CPU each).
    default = ServeConfig()
    per_replica = default.ingress.num_cpus + default.model.num_cpus
    assert default.ingress.min_replicas == 2 and default.ingress.min_replicas * per_replica <= 2
    assert default.router.num_cpus == 0 and default.router.min_replicas == 2


def test_cli_fails_in_one_line_without_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    main = cli_main()
    assert main(["serve", "--checkpoint", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint directory not found" in err and "Traceback" not in err


def test_serve_config_yaml_builds(checkpoints: dict[str, Path]) -> None:
    """serve/serve_config.yaml is a valid Serve config whose builder accepts its args."""
    import importlib

    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    application = schema.applications[0]
    module_name, attr = application.import_path.split(":")
    builder: Callable = getattr(importlib.import_module(module_name), attr)
    from ray.serve import Application

    app = builder(
        {
            **application.args,
            "checkpoint": str(checkpoints["small"]),
            "study": "",  # the file's study is a cluster path
            "model": {**application.args["model"], "num_gpus": 0},
        }
    )
    assert isinstance(app, Application)


# ---------------------------------------------------------------------- happy path


@pytest.mark.parametrize("app", ["main", "one"])
def test_generated_wav_equals_library(server: dict[str, str], predictor, app: str) -> None:
    """Works on a fresh clone: a generated 7 s stereo 22.05 kHz WAV, raw and multipart (both topologies)."""
    base = server[app]
    data = tone(7.0)
    expected = predictor.predict_bytes(data, top_k=3)
    raw = requests.post(f"{base}/predict", data=data, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert_matches(body, expected.probabilities)
    assert body["n_segments"] == expected.n_segments == 2
    assert body["duration_s"] == pytest.approx(expected.duration_s)
    assert [t["mood"] for t in body["top"]] == [m for m, _ in expected.top]
    assert body["model"]["labels"] == MOODS and body["model"]["alpha"] == pytest.approx(5 / 3)
    assert body["model"]["checkpoint_id"] == predictor.card.checkpoint_id

    multipart = requests.post(f"{base}/predict", files={"file": ("tone.wav", data, "audio/wav")}, timeout=TIMEOUT)
    assert multipart.status_code == 200, multipart.text
    assert_matches(multipart.json(), expected.probabilities)

    # No Content-Type at all is taken as raw audio.
    bare = requests.post(f"{base}/predict", data=data, timeout=TIMEOUT)
    assert bare.status_code == 200, bare.text


@pytest.mark.parametrize("app", ["main", "one"])
def test_real_clips_equal_library(server: dict[str, str], predictor, real_audio_dir: Path, app: str) -> None:
    """Real CC clips of every codec: the endpoint's probabilities equal Predictor.predict_file (both topologies)."""
    clips = sorted(p for p in real_audio_dir.iterdir() if p.suffix in (".ogg", ".mp3", ".flac", ".wav"))
    assert clips
    types = {".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".wav": "audio/wav"}
    for clip in clips:
        expected = predictor.predict_file(clip)
        response = requests.post(
            f"{server[app]}/predict",
            data=clip.read_bytes(),
            headers={"Content-Type": types[clip.suffix]},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, (clip.name, response.text)
        assert_matches(response.json(), expected.probabilities)
        assert response.json()["n_segments"] == expected.n_segments
    clip = clips[0]
    with clip.open("rb") as handle:
        multipart = requests.post(f"{server[app]}/predict", files={"file": (clip.name, handle)}, timeout=TIMEOUT)
    assert multipart.status_code == 200, multipart.text
    assert_matches(multipart.json(), predictor.predict_file(clip).probabilities)


def test_short_audio_silence_and_top_k(server: dict[str, str], predictor) -> None:
    short = tone(1.0)  # shorter than one 187-frame segment: zero-padded to one
    before = scored_counts(server["main"])
    response = requests.post(
        f"{server['main']}/predict", data=short, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    assert response.json()["n_segments"] == 1 and response.json()["duration_s"] == pytest.approx(1.0, abs=0.02)
    assert_matches(response.json(), predictor.predict_bytes(short).probabilities)

    # One request at a time finds the replica idle: scored at once, no batch wait.
    after = scored_counts(server["main"])
    assert after["immediate"] == before["immediate"] + 1 and after["batches"] == before["batches"], (before, after)
    silence = wav_bytes(np.zeros(16000 * 5, dtype=np.float32), 16000)
    response = requests.post(
        f"{server['main']}/predict", data=silence, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    probs = np.array(list(response.json()["moods"].values()))
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()

    url = f"{server['main']}/predict"
    for k, length in ((None, 3), (0, 0), (2, 2), (100, len(MOODS))):
        query = "" if k is None else f"?top_k={k}"
        response = requests.post(url + query, data=short, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
        top = response.json()["top"]
        assert len(top) == length
        assert [t["probability"] for t in top] == sorted((t["probability"] for t in top), reverse=True)
    assert_error(requests.post(url + "?top_k=-1", data=short, timeout=TIMEOUT), 422, "invalid_request")
    assert_error(requests.post(url + "?top_k=many", data=short, timeout=TIMEOUT), 422, "invalid_request")


def test_health_model_card_and_docs(server: dict[str, str], predictor) -> None:
    health = requests.get(f"{server['main']}/healthz?deep=true", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    card = requests.get(f"{server['main']}/model", timeout=TIMEOUT).json()
    assert card["mood_names"] == MOODS and card["checkpoint_id"] == predictor.card.checkpoint_id
    assert card["serving"]["max_body_bytes"] == MAIN_BODY_LIMIT and card["serving"]["topology"] == "split"
    one = requests.get(f"{server['one']}/model", timeout=TIMEOUT).json()
    assert one["serving"]["topology"] == "combined" and one["serving"]["precision"] == "fp32"
    # GET /model links MODEL_CARD.md (below the app's route prefix), served as Markdown.
    assert card["model_card"] == "/model/card" and one["model_card"] == "/one/model/card"
    assert "model_card_markdown" not in card
    markdown = requests.get(f"{server['main']}/model/card", timeout=TIMEOUT)
    assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text.startswith(f"# Model card: mtlmood mood classifier `{predictor.card.checkpoint_id}`")
    assert "## Intended use" in markdown.text and "## Limitations" in markdown.text
    assert requests.get(f"{server['one']}/healthz?deep=true", timeout=TIMEOUT).status_code == 200
    spec = requests.get(f"{server['main']}/openapi.json", timeout=TIMEOUT).json()
    # What a client gets when a replica dies, or the service is full, is in the OpenAPI text.
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert "replica_unavailable" in responses["503"]["description"] and "Retry-After" in responses["503"]["description"]
    assert {"500", "504"} <= set(responses) and "plain text" in spec["info"]["description"]
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"audio/*", "application/octet-stream", "multipart/form-data"} <= set(content)
    assert {"/healthz", "/model", "/model/card"} <= set(spec["paths"])
    assert requests.get(f"{server['main']}/docs", timeout=TIMEOUT).status_code == 200
    assert_error(requests.get(f"{server['main']}/nowhere", timeout=TIMEOUT), 404, "not_found")
    assert_error(requests.get(f"{server['main']}/predict", timeout=TIMEOUT), 405, "method_not_allowed")


# ---------------------------------------------------------------------- bad input


def test_bad_input_gets_4xx_json(server: dict[str, str]) -> None:
    url = f"{server['main']}/predict"

    def post(data: Any, content_type: Optional[str] = "application/octet-stream", **kwargs: Any):
        headers = {"Content-Type": content_type} if content_type else {}
        return requests.post(url, data=data, headers=headers, timeout=TIMEOUT, **kwargs)

    assert_error(post(b""), 400, "empty_body")
    assert_error(post(b"", content_type="audio/wav"), 400, "empty_body")
    for content_type in ("text/plain", "application/json", "application/x-www-form-urlencoded", "image/png"):
        assert_error(post(b'{"audio": 1}', content_type=content_type), 415, "unsupported_media_type")
    # Not audio at all, random bytes, and an mp3 cut inside its header: undecodable.
    rng = np.random.default_rng(0)
    sine_mp3 = io.BytesIO()
    sf.write(sine_mp3, (0.3 * np.sin(np.arange(48000) / 5)).astype(np.float32), 16000, format="MP3")
    for junk in (
        b"this is not audio" * 50,
        rng.bytes(50_000),
        sine_mp3.getvalue()[:300],
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
    ):
        assert_error(post(junk, content_type="audio/mpeg"), 422, "undecodable_audio")
    # NaN samples are refused by the decoder; finite but absurd samples overflow the mel power.
    assert_error(post(wav_bytes(np.full(16000, np.nan, np.float32), 16000, "FLOAT")), 422, "undecodable_audio")
    assert_error(post(wav_bytes(np.full(16000, 3e38, np.float32), 16000, "FLOAT")), 422, "non_finite_features")
    # A WAV header that promises samples but holds none.
    assert_error(post(wav_bytes(np.zeros(0, np.float32), 16000)), 422, "undecodable_audio")

    # Multipart without a `file` field, with an empty file, and a malformed body.
    assert_error(requests.post(url, files={"audio": ("a.wav", tone(1.0))}, timeout=TIMEOUT), 400, "missing_file")
    assert_error(
        requests.post(url, data={"file": "not a file"}, files={"other": ("x", b"1")}, timeout=TIMEOUT),
        400,
        "missing_file",
    )
    assert_error(requests.post(url, files={"file": ("a.wav", b"")}, timeout=TIMEOUT), 400, "empty_body")
    malformed = post(
        b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
        content_type="multipart/form-data; boundary=xyz",
    )
    assert malformed.status_code in (400, 422)
    assert_error(malformed, malformed.status_code)

    # Over the limit: refused from Content-Length before the body is read ...
    assert_error(post(b"\0" * (MAIN_BODY_LIMIT + 1)), 413, "payload_too_large")


def test_body_limit_counts_actual_bytes(server: dict[str, str]) -> None:
    """A chunked upload (no Content-Length) over the limit is cut off by counting bytes."""

    def chunks() -> Iterator[bytes]:
        for _ in range(8):  # 8 x 40 KiB = 320 KiB > 256 KiB; small enough to sit in socket buffers
            yield b"\1" * 40960

    response = requests.post(
        f"{server['tight']}/predict", data=chunks(), headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT
    )
    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_error(response, 413, "payload_too_large")
    small = requests.post(
        f"{server['tight']}/predict",
        data=iter([tone(1.0, rate=16000, stereo=False)]),
        headers={"Content-Type": "audio/wav"},
        timeout=TIMEOUT,
    )
    assert small.status_code == 200, small.text


# -------------------------------------------------------------------- concurrency


@pytest.mark.parametrize("app", ["main", "one"])
def test_200_requests_from_16_clients(server: dict[str, str], predictor, app: str) -> None:
    """All succeed, and batching never mixes up whose segments are whose (three different clips)."""
    clips = [tone(2.0, seed=1), tone(7.0, seed=2), tone(4.0, rate=16000, stereo=False, seed=3)]
    expected = [predictor.predict_bytes(c).probabilities for c in clips]
    session_url = f"{server[app]}/predict"

    def call(i: int) -> tuple[int, int, dict[str, Any]]:
        response = requests.post(session_url, data=clips[i % 3], headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
        return i, response.status_code, response.json()

    before = scored_counts(server[app])
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(200)))
    failures = [(i, s, b) for i, s, b in results if s != 200]
    assert not failures, failures[:3]
    for i, _, body in results:
        assert_matches(body, expected[i % 3])
    # 16 clients on one replica: arrivals found it busy, and this test's requests were batched
    # together (more requests than batches, counted from before it, whatever ran earlier).
    after = scored_counts(server[app])
    batches = after["batches"] - before["batches"]
    batched = after["batched_requests"] - before["batched_requests"]
    assert batches >= 1 and batched > batches, (before, after)
    assert batched + after["immediate"] - before["immediate"] == 200, (before, after)


def test_overload_beyond_queue_gets_503_json(server: dict[str, str]) -> None:
    """A queue of one in front of a slow model: extra requests get 503 JSON fast; then all is well."""
    clip = tone(6.0, rate=16000, stereo=False)  # 2 segments of a 128-filter model per request
    url = f"{server['tight']}/predict"

    def call(_: int) -> tuple[int, str]:
        response = requests.post(url, data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
        return response.status_code, response.text

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(call, range(48)))
    statuses = [status for status, _ in results]
    print("overload statuses:", {s: statuses.count(s) for s in set(statuses)})  # shown with -s
    assert statuses.count(503) >= 1, statuses
    assert statuses.count(200) >= 2, statuses
    assert set(statuses) <= {200, 503}, statuses
    # An unbounded queue would have held every request until its turn (all 200): the 503s
    # show the bound, and they are the app's JSON.
    for status, text in results:
        if status == 503:
            body = json.loads(text)
            assert body["error"] == "overloaded" and "Traceback" not in text

    assert requests.get(f"{server['tight']}/healthz?deep=true", timeout=TIMEOUT).status_code == 200
    after = requests.post(url, data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
    assert after.status_code == 200, after.text


def test_cli_serves_until_interrupted(
    server: dict[str, str],
    checkpoints: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mtlmood serve` deploys, answers while it blocks, and removes its app on Ctrl-C."""
    from ray import serve

    import serve.cli as cli

    main = cli_main()

    port = server["main"].rsplit(":", 1)[1]
    seen: dict[str, int] = {}

    def interrupt_after_a_request(*_: Any, **__: Any) -> None:  # stands in for waiting on Ctrl-C
        seen["health"] = requests.get(f"http://127.0.0.1:{port}/cli/healthz", timeout=TIMEOUT).status_code
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_block", interrupt_after_a_request)
    code = main(
        [
            "serve",
            "--checkpoint",
            str(checkpoints["small"]),
            "--port",
            port,
            "--set",
            "app_name=cli",
            "--set",
            "route_prefix=/cli",
            "--set",
            "model.num_gpus=0",
            "--set",
            "ingress.num_cpus=0.1",
            "--set",
            "model.num_cpus=0.1",
            "--set",
            "ingress.min_replicas=1",
            "--set",
            "router.min_replicas=1",
        ]
    )
    assert code == 0 and seen["health"] == 200
    assert f"127.0.0.1:{port}/cli/predict" in capsys.readouterr().out
    assert "cli" not in serve.status().applications


# ----------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "topology, deployment",
    [("split", "MoodModel"), ("split", "MoodIngress"), ("combined", "MoodIngress")],
)
def test_killed_replica_costs_503_json_and_is_replaced(
    server: dict[str, str], checkpoints: dict[str, Path], predictor, topology: str, deployment: str
) -> None:
    """SIGKILL of the only replica of a deployment under load, in each topology: the requests it
    held, and those sent before Serve replaced it, get 503 JSON with Retry-After (the replica in
    front answers for it); none gets another 5xx or hangs; afterwards every answer is 200 and
    correct. On an app of its own. (Two replicas, the default, in test_serve_replica_death.py.)"""
    clip = tone(4.0, seed=4)
    expected = predictor.predict_bytes(clip).probabilities
    name = f"kill{topology}{deployment.lower()}"
    with own_app(server, name, small_app_config(checkpoints["small"], topology)) as base:
        run = kill_under_load(f"{base}/predict", name, deployment, clip, clients=6, ok_before_kill=6, settle_s=3.0)
        for outcome in run.outcomes:
            body = assert_clean_answer(outcome)
            if body is not None:
                assert_matches(body, expected)
        assert run.statuses().get(200, 0) >= 6, run.statuses()
        after = [o for o in run.outcomes if o.started > run.replaced_at + 1.0]
        assert after and all(o.status == 200 for o in after), [(o.status, o.text[:200]) for o in after]
        assert requests.get(f"{base}/healthz?deep=true", timeout=TIMEOUT).status_code == 200
