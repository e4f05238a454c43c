"""The Ray Serve endpoint end to end, one request at a time: real Ray, real Serve, real
(small) checkpoints. Answers equal the library's on generated and real audio in both
topologies; short audio, silence and top_k; health, model card and docs; bad input gets 4xx
JSON; the body limit counts actual bytes; API keys (an app of its own with ``auth`` on).

One Ray + Serve, shared with test_serve_load.py, with the shared apps ``main``, ``one`` and
``tight`` (helpers/serve_apps.py, fixtures in conftest.py); no test relies on what another left
behind, so they pass in any order. Every HTTP call has a timeout, so a broken server fails
the test instead of hanging it; nothing asserts on wall-clock time.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest
import soundfile as sf

from helpers.audio import tone, wav_bytes
from helpers.serve_apps import MAIN_BODY_LIMIT, MOODS, own_app, small_app_config
from helpers.serve_http import TIMEOUT, assert_error, assert_matches, scored_counts

requests = pytest.importorskip("requests")

SHARED_RAY = "serve"  # the shared Ray + Serve of the modules using `server` (conftest.py)


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


# ----------------------------------------------------------------------- API keys


def test_api_keys_guard_every_route_but_health_and_model_describes_what_was_loaded(
    server: dict[str, str], checkpoints: dict[str, Path], predictor, tmp_path: Path
) -> None:
    """An app of its own with ``auth`` on, its key in a file (as a mounted Secret), serving a study:
    through Serve's proxy, /predict and /model answer 401 JSON without the key and work with it,
    /healthz and /docs stay open. GET /model tells the study's choice as read when the app was
    built: a pointer rewritten afterwards changes nothing until the next deployment."""
    from serve.auth import AuthSettings

    key = "test-key-" + "0123456789abcdef" * 2
    (tmp_path / "keys").write_text(f"# rotated by the test\n{key}\n")
    study = tmp_path / "study"
    study.mkdir()
    entry = {"checkpoint": str(checkpoints["small"]), "arm": "x1", "val_pr_auc": 50.0}
    pointer = study / "best_checkpoint.json"
    pointer.write_text(json.dumps({"default_cell": "5|none", "cells": {"5|none": entry}}))
    auth = AuthSettings(enabled=True, keys_env="", keys_file=str(tmp_path / "keys"))
    config = replace(small_app_config(checkpoints["small"], "combined"), checkpoint="", study=str(study), auth=auth)
    clip = tone(2.0, seed=9)
    with own_app(server, "guarded", config) as base:
        with_key = {"Authorization": f"Bearer {key}"}
        assert requests.get(f"{base}/healthz", timeout=TIMEOUT).json()["status"] == "ok"
        assert requests.get(f"{base}/docs", timeout=TIMEOUT).status_code == 200
        for response in (
            requests.post(f"{base}/predict", data=clip, headers={"Content-Type": "audio/wav"}, timeout=TIMEOUT),
            requests.get(f"{base}/model", timeout=TIMEOUT),
            requests.get(f"{base}/model/card", headers={"Authorization": f"Bearer {key[:-1]}"}, timeout=TIMEOUT),
        ):
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer") and key[:-1] not in response.text
        answer = requests.post(
            f"{base}/predict", data=clip, headers={"Content-Type": "audio/wav", **with_key}, timeout=TIMEOUT
        )
        assert answer.status_code == 200, answer.text
        assert_matches(answer.json(), predictor.predict_bytes(clip).probabilities)
        card = requests.get(f"{base}/model", headers=with_key, timeout=TIMEOUT).json()
        assert card["study"] == {"cell": "5|none", "default_cell": "5|none", **entry}
        pointer.write_text(json.dumps({"default_cell": "9|none", "cells": {"9|none": {**entry, "arm": "x9"}}}))
        again = requests.get(f"{base}/model", headers=with_key, timeout=TIMEOUT).json()
        assert again["study"] == card["study"] and again["checkpoint_id"] == predictor.card.checkpoint_id
