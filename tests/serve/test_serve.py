"""The Ray Serve endpoint end to end: real Ray, real Serve, real (small) checkpoints.

One Ray + Serve per module (ray.init takes seconds on 2 cores). Three shared applications:
``main`` (normal limits, split topology: ingress -> model replicas), ``one`` (the
CPU default, combined topology: one replica decodes and scores) and ``tight`` (a
paper-width model behind a queue of one, to force 503s). A test that breaks an app
(the replica-kill tests) or adds one (the CLI test) deploys its own and removes it, and
no test relies on what another left behind, so they pass in any order. Every HTTP call
has a timeout and every loop a bound, so a broken server fails the test instead of
hanging it; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest
import soundfile as sf
import yaml

from mtlmood.checkpoint import ModelCard, save_checkpoint
from mtlmood.config import FeatureConfig, LabelConfig, ModelConfig
from mtlmood.errors import ConfigError

requests = pytest.importorskip("requests")

MOODS = ["happy", "sad", "energetic", "calm", "dark"]
TIMEOUT = 60  # seconds per HTTP request; generous for a loaded 2-core machine
MAIN_BODY_LIMIT = 4 * 1024 * 1024  # above the largest real clip (2.8 MB wav)
TIGHT_BODY_LIMIT = 256 * 1024  # fits the 6 s mono clip of the overload test (192 KB)


# ------------------------------------------------------------------------ helpers


def make_checkpoint(directory: Path, n_filters: int, seed: int = 0) -> Path:
    """A real checkpoint of an untrained MoodCNN (seeded): enough to test serving exactly."""
    import torch

    from mtlmood.model import MoodCNN

    torch.manual_seed(seed)
    config = ModelConfig(n_filters=n_filters)
    model = MoodCNN(config, len(MOODS), 3)
    card = ModelCard(
        mood_names=list(MOODS),
        meta_names=["artist_a", "artist_b", "artist_c"],
        model=config,
        features=FeatureConfig(),
        alpha=5 / 3,
        labels=LabelConfig(n_moods=len(MOODS)),
    )
    save_checkpoint(directory, model, card)
    return directory


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int = 22050, stereo: bool = True, seed: int = 0) -> bytes:
    """A chord plus a little noise, stereo at 22.05 kHz (exercises downmix and resampling)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 277 * t) + 0.02 * rng.standard_normal(t.size)
    samples = np.stack([left, right], axis=1) if stereo else left
    return wav_bytes(samples.astype(np.float32), rate)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def small_app_config(checkpoint: Path, topology: str) -> Any:
    """A one-replica app on 0.1 + 0.1 CPU: fits beside the shared apps in the test's 2 CPUs."""
    from serve.config import BatchingConfig, IngressSettings, ModelSettings, ServeConfig

    return ServeConfig(
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
        # Fractional CPUs: the three apps (5 replicas, 1.7 CPUs) plus the one app a test deploys
        # for itself (0.2 CPUs: the CLI and replica-kill tests) fit in 2 CPUs.
        main = ServeConfig(
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
            checkpoint=str(checkpoints["small"]),
            max_body_bytes=MAIN_BODY_LIMIT,
            top_k=3,
            model_timeout_s=20.0,
            batching=BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.005),
            ingress=IngressSettings(min_replicas=1, max_replicas=1, num_cpus=0.2),
            model=ModelSettings(min_replicas=1, max_replicas=1, num_cpus=0.2, num_gpus=0),
        )
        tight = ServeConfig(
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
    assert requests.get(f"{server['one']}/healthz?deep=true", timeout=TIMEOUT).status_code == 200
    spec = requests.get(f"{server['main']}/openapi.json", timeout=TIMEOUT).json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"audio/*", "application/octet-stream", "multipart/form-data"} <= set(content)
    assert {"/healthz", "/model"} <= set(spec["paths"])
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
        ]
    )
    assert code == 0 and seen["health"] == 200
    assert f"127.0.0.1:{port}/cli/predict" in capsys.readouterr().out
    assert "cli" not in serve.status().applications


# ----------------------------------------------------------------------- failures


def _replica_names(app: str, deployment: str) -> list[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def _kill_under_load(
    url: str,
    app: str,
    deployment: str,
    clip: bytes,
    clients: int,
    ok_before_kill: int,
    max_requests: int,
    recovered: Callable[[list[int], float], bool],
) -> list[tuple[int, str]]:
    """``clients`` threads post ``clip`` to ``url``; once ``ok_before_kill`` answers were 200,
    the app's one replica of ``deployment`` is killed. Each client stops after ``max_requests``
    or when ``recovered(its statuses, seconds since the kill)``. Returns (status, body) of all."""
    import ray

    names = _replica_names(app, deployment)
    assert len(names) == 1, names
    ok = threading.Semaphore(0)
    killed_at: list[float] = []

    def client(_: int) -> list[tuple[int, str]]:
        seen: list[tuple[int, str]] = []
        for _ in range(max_requests):
            response = requests.post(url, data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
            seen.append((response.status_code, response.text))
            if response.status_code == 200:
                ok.release()
            if killed_at and recovered([s for s, _ in seen], time.monotonic() - killed_at[0]):
                break
        return seen

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client, i) for i in range(clients)]
        for _ in range(ok_before_kill):  # the load is there: requests are in flight
            assert ok.acquire(timeout=TIMEOUT), "no answers before the kill"
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        killed_at.append(time.monotonic())
        results = [r for f in futures for r in f.result(timeout=600)]

    statuses = [s for s, _ in results]
    print("statuses around the kill:", {s: statuses.count(s) for s in set(statuses)})  # shown with -s
    from ray import serve

    new: list[str] = []
    for _ in range(120):  # a new replica, and the deployment healthy again
        new = _replica_names(app, deployment)
        status = serve.status().applications[app].deployments[deployment].status
        if new and new != names and str(status).endswith("HEALTHY"):
            break
        time.sleep(0.5)
    assert new and new != names, (new, names)
    return results


def test_killed_model_replica_is_replaced(server: dict[str, str], checkpoints: dict[str, Path], predictor) -> None:
    """Kill the model replica under load: only in-flight requests fail (5xx JSON), none hang,
    Serve starts a new replica and the endpoint answers correctly again. On an app of its own."""
    clip = tone(4.0, seed=4)
    expected = predictor.predict_bytes(clip).probabilities
    with own_app(server, "killsplit", small_app_config(checkpoints["small"], "split")) as base:

        def recovered(seen: list[int], since_kill: float) -> bool:
            return len(seen) >= 8 and all(s == 200 for s in seen[-3:]) and since_kill > 3

        results = _kill_under_load(
            f"{base}/predict",
            "killsplit",
            "MoodModel",
            clip,
            clients=6,
            ok_before_kill=6,
            max_requests=40,
            recovered=recovered,
        )
        assert sum(status == 200 for status, _ in results) >= 6
        for status, text in results:
            if status == 200:
                assert_matches(json.loads(text), expected)
            else:
                assert status in (500, 503, 504), (status, text[:300])
                body = json.loads(text)  # 5xx JSON, no traceback
                assert set(body) == {"error", "detail"} and "Traceback" not in text
        after = requests.post(f"{base}/predict", data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
        assert after.status_code == 200, after.text
        assert_matches(after.json(), expected)
        assert requests.get(f"{base}/healthz?deep=true", timeout=TIMEOUT).status_code == 200


def test_killed_combined_replica_is_replaced(server: dict[str, str], checkpoints: dict[str, Path], predictor) -> None:
    """Combined topology: the one replica that decodes *and* scores dies under load; in-flight
    requests fail with a 5xx (from Serve's proxy: the replica that would answer is gone),
    none hangs, Serve starts a new replica and answers correctly again. On an app of its own."""
    clip = tone(4.0, seed=5)
    expected = predictor.predict_bytes(clip).probabilities
    with own_app(server, "killone", small_app_config(checkpoints["small"], "combined")) as base:
        results = _kill_under_load(
            f"{base}/predict",
            "killone",
            "MoodIngress",
            clip,
            clients=4,
            ok_before_kill=2,
            max_requests=30,
            recovered=lambda seen, since_kill: since_kill > 2,
        )
        statuses = [status for status, _ in results]
        assert statuses.count(200) >= 2 and set(statuses) <= {200, 500, 502, 503}, statuses
        after = None
        for _ in range(20):  # the proxy may need a moment to route to the new replica
            after = requests.post(f"{base}/predict", data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT)
            if after.status_code == 200:
                break
            time.sleep(0.5)
        assert after is not None and after.status_code == 200, after.text if after is not None else None
        assert_matches(after.json(), expected)
