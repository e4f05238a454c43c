"""The parts of serve/ that need no Ray: one job per module, request parsing, the scorer
(which must answer exactly what mtlmood.inference.Predictor does) and the response bodies.
The end-to-end behaviour through a real Ray Serve is in test_serve_http.py and test_serve_load.py."""

from __future__ import annotations

import ast
import asyncio
import io
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi import Request  # at module level: FastAPI resolves the route's annotations here

from helpers.serve_apps import MOODS
from mtlmood.synth.checkpoints import untrained_checkpoint

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 * 1024


# ------------------------------------------------------------------------- layout


def test_each_serve_module_states_its_job_and_stays_small() -> None:
    for path in sorted((REPO / "serve").glob("*.py")):
        source = path.read_text()
        assert ast.get_docstring(ast.parse(source)), f"{path.name} has no opening docstring"
        assert source.count("\n") <= 400, f"{path.name} has {source.count(chr(10))} lines"


def test_serve_app_import_path_is_light() -> None:
    """``serve.app:build_app`` (serve_config.yaml, k8s/rayservice.yaml) imports without torch:
    the model is loaded by the replicas, not by whoever builds the app."""
    code = "import sys\nfrom serve.app import build_app\nprint(callable(build_app), 'torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]


# ------------------------------------------------------------------------ parsing


class Client:
    """Posts to a bare FastAPI app whose one route runs serve.parsing.audio_from_request, in process."""

    def __init__(self) -> None:
        from fastapi import FastAPI

        from serve.parsing import audio_from_request
        from serve.schemas import ApiError

        self.app = FastAPI()

        @self.app.post("/audio")
        async def audio(request: Request) -> Any:
            try:
                data, name = await audio_from_request(request, LIMIT)
            except ApiError as exc:
                return exc.response()
            return {"size": len(data), "name": name}

    def post(self, path: str, **kwargs: Any) -> Any:
        import httpx

        async def send() -> Any:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test") as c:
                return await c.post(path, **kwargs)

        return asyncio.run(send())


@pytest.fixture(scope="module")
def client() -> Client:
    return Client()


def _error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and set(response.json()) == {"error", "detail"}


def test_raw_and_multipart_bodies_give_the_audio_bytes(client: Any) -> None:
    body = b"\1" * 1000
    for content_type in ("audio/mpeg", "audio/wav; rate=16000", "application/octet-stream", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/audio", content=body, headers=headers)
        assert response.json() == {"size": 1000, "name": "<request body>"}, (content_type, response.text)
    response = client.post("/audio", files={"file": ("song.ogg", body, "audio/ogg")})
    assert response.json() == {"size": 1000, "name": "song.ogg"}


def test_unusable_bodies_get_a_clear_4xx(client: Any) -> None:
    _error(client.post("/audio", content=b"", headers={"Content-Type": "audio/wav"}), 400, "empty_body")
    _error(
        client.post("/audio", content=b"{}", headers={"Content-Type": "application/json"}),
        415,
        "unsupported_media_type",
    )
    _error(
        client.post("/audio", content=b"\0" * (LIMIT + 1), headers={"Content-Type": "audio/wav"}),
        413,
        "payload_too_large",
    )

    # Chunked (no Content-Length): cut off by counting the bytes.
    async def chunks() -> Any:
        for _ in range(2):
            yield b"\0" * 40_000

    _error(client.post("/audio", content=chunks(), headers={"Content-Type": "audio/wav"}), 413, "payload_too_large")
    _error(
        client.post("/audio", content=b"12", headers={"Content-Type": "audio/wav", "Content-Length": "x"}),
        400,
        "bad_request",
    )
    _error(client.post("/audio", files={"audio": ("a.wav", b"1")}), 400, "missing_file")
    _error(client.post("/audio", files={"file": ("a.wav", b"")}), 400, "empty_body")
    _error(
        client.post("/audio", content=b"abc", headers={"Content-Type": "multipart/form-data"}), 400, "bad_multipart"
    )  # no boundary
    _error(
        client.post(
            "/audio",
            content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xyz--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        ),
        400,
        "bad_multipart",
    )


# ------------------------------------------------------------------------- scorer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("serve-modules") / "ckpt"
    return untrained_checkpoint(directory, n_filters=8, moods=MOODS, meta_names=["a", "b", "c"])


@pytest.fixture(scope="module")
def scorer(checkpoint: Path) -> Any:
    from serve.scorer import Scorer

    return Scorer(str(checkpoint), device="cpu", threads=1)


def test_scorer_answers_what_predictor_does(scorer: Any, checkpoint: Path) -> None:
    """Songs of different lengths (padded, a few segments, longer than max_seconds) scored in
    one forward give each song exactly Predictor.prediction of its features."""
    from mtlmood.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    songs = [rng.standard_normal((frames, 96)).astype(np.float32) for frames in (50, 600, 2500)]
    segments = [scorer.segments(song) for song in songs]
    assert [len(s) for s in segments] == [1, 3, predictor.max_frames // predictor.segment_frames]
    probabilities = scorer.score_songs(segments)
    for song, segs, probs in zip(songs, segments, probabilities):
        got = scorer.prediction(probs, len(segs), len(song), top_k=3)
        expected = predictor.prediction(song, top_k=3)
        assert list(got.probabilities) == MOODS and [m for m, _ in got.top] == [m for m, _ in expected.top]
        np.testing.assert_allclose(
            list(got.probabilities.values()), list(expected.probabilities.values()), rtol=0, atol=1e-6
        )
        assert (got.n_segments, got.duration_s) == (expected.n_segments, expected.duration_s)


def test_scorer_takes_read_only_features_and_refuses_bad_shapes(scorer: Any) -> None:
    features = np.zeros((400, 96), dtype=np.float32)
    features.setflags(write=False)  # as numpy arrays come out of Ray's object store
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about non-writable arrays
        assert len(scorer.score_songs([scorer.segments(features)])[0]) == len(MOODS)
    for bad in (np.zeros((400, 40), np.float32), np.zeros((2, 187, 96), np.float32)):
        with pytest.raises(ValueError):
            scorer.segments(bad)


def test_a_cuda_error_marks_the_scorer_unhealthy(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serve.scorer import Scorer

    scorer = Scorer(str(checkpoint), device="cpu", threads=1)
    segments = scorer.segments(np.zeros((400, 96), np.float32))
    scorer.check_health()

    def out_of_memory(_: np.ndarray) -> np.ndarray:
        raise RuntimeError("CUDA out of memory")  # not a CUDA *error*: the replica stays usable

    monkeypatch.setattr(scorer.predictor, "predict_segments", out_of_memory)
    with pytest.raises(RuntimeError):
        scorer.score_songs([segments])
    scorer.check_health()

    def lost_device(_: np.ndarray) -> np.ndarray:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(scorer.predictor, "predict_segments", lost_device)
    with pytest.raises(RuntimeError):
        scorer.score_songs([segments])
    with pytest.raises(RuntimeError, match="unusable after a device error"):
        scorer.check_health()


# ---------------------------------------------------------------------- responses


def test_the_response_body_is_a_predict_response(scorer: Any) -> None:
    from mtlmood.records import model_summary, response_body
    from serve.schemas import PredictResponse

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(16000, np.float32), 16000, format="WAV")
    prediction = scorer.predictor.predict_bytes(buffer.getvalue(), top_k=2)
    body = response_body(prediction, model_summary(scorer.predictor.card))
    assert list(body) == ["moods", "top", "n_segments", "duration_s", "model"]
    assert body["moods"] == prediction.probabilities and body["n_segments"] == 1
    assert body["top"] == [{"mood": mood, "probability": p} for mood, p in prediction.top]
    assert body["model"]["labels"] == MOODS and body["model"]["alpha"] == pytest.approx(5 / 3)
    assert PredictResponse.model_validate(body).model_dump() == body
    # One record schema (mtlmood.records): the HTTP answer is a batch row's fields + the model summary.
    from mtlmood.records import MODEL_FIELD, PREDICTION_FIELDS, batch_record

    row = batch_record("/x.wav", prediction, scorer.predictor.card.checkpoint_id)
    assert {k: row[k] for k in PREDICTION_FIELDS} == {k: body[k] for k in PREDICTION_FIELDS}
    schema = PredictResponse.model_json_schema()["properties"]
    assert list(schema) == [*PREDICTION_FIELDS, MODEL_FIELD]
    assert all(schema[k]["description"] == PREDICTION_FIELDS[k] for k in PREDICTION_FIELDS)


# ----------------------------------------------------------------------- soak rule


def _soak_run(
    p99_ms: tuple[float, float],
    rss_mb: tuple[float, float],
    other: tuple[float, float],
    in_flight: tuple[int, int] = (3, 3),
) -> Any:
    """A synthetic 30 s soak: 10 s warm-up, two 10 s windows whose p99, RSS, other CPU and requests
    in flight are given."""
    from benchmarks.load.soak import Sample, Sent, SoakRun

    run = SoakRun(rate_rps=20.0, duration_s=30.0)
    for i in range(600):
        due = i / 20
        window = min(int(due // 10), 2)
        slow = p99_ms[max(window - 1, 0)] if i % 25 == 0 else 50.0  # 4 % of requests are the tail
        run.sent.append(Sent(due, slow / 1000, 200))
    busy = own = 0.0
    for t in range(0, 31):
        window = min(t // 10, 2)
        busy += 1.0 + (other[max(window - 1, 0)] if t % 10 else 0.0)  # other CPU over each 1 s step
        own += 1.0
        mb = rss_mb[max(window - 1, 0)]
        rss = {"MoodIngress a": int(mb * 2**20), "proxy n": 200 * 2**20}
        run.samples.append(Sample(float(t), rss, busy, own, in_flight[max(window - 1, 0)]))
    return run


def test_soak_rule_compares_first_and_last_window_after_warm_up() -> None:
    from benchmarks.load.soak import judge, summarise, table

    steady = summarise(_soak_run((100, 110), (500, 520), (0.0, 0.0)), window_s=10, warmup_s=10)
    assert [w.warmup for w in steady] == [True, False, False] and [w.requests for w in steady] == [200, 200, 200]
    assert steady[1].p50_ms == pytest.approx(50) and steady[1].p99_ci_ms[0] <= steady[1].p99_ms
    verdict = judge(steady)
    assert verdict.passed and not verdict.reasons and verdict.memory_growth["MoodIngress a"] == pytest.approx(0.04)
    assert "| 2 | 10-20 | 200 | 0 |" in table(steady)

    leak = judge(summarise(_soak_run((100, 110), (500, 600), (0.0, 0.0)), window_s=10, warmup_s=10))
    assert not leak.passed and "MoodIngress a RSS grew +20.0%" in leak.reasons[0]
    slower = judge(summarise(_soak_run((100, 200), (500, 500), (0.0, 0.0)), window_s=10, warmup_s=10))
    assert not slower.passed and not slower.inconclusive and "p99 drifted" in slower.reasons[0]
    # The same drift while another job used a core: not the service's doing, or not provably.
    busy = judge(summarise(_soak_run((100, 200), (500, 500), (0.1, 1.0)), window_s=10, warmup_s=10))
    assert busy.inconclusive and not busy.passed and "inconclusive" in busy.reasons[-1]
    # Memory growth on a busy machine: explained when the service fell behind (requests held) ...
    behind = judge(summarise(_soak_run((100, 100), (500, 600), (0.1, 1.0), (3, 40)), window_s=10, warmup_s=10))
    assert behind.inconclusive and not behind.passed
    # ... a leak when it did not.
    leak_busy = judge(summarise(_soak_run((100, 100), (500, 600), (0.1, 1.0), (3, 3)), window_s=10, warmup_s=10))
    assert not leak_busy.passed and not leak_busy.inconclusive
    with pytest.raises(ValueError, match="two windows"):
        judge(summarise(_soak_run((100, 100), (500, 500), (0.0, 0.0)), window_s=20, warmup_s=10))


def test_soak_judge_counts_a_p99_drift_only_beyond_its_interval() -> None:
    """A +50 % p99 that rests on 8 tail requests per window (intervals overlapping) passes; the
    same windows with a tail that moved as a whole (points, intervals apart) fail."""
    import numpy as np

    from benchmarks.load.soak import Sample, Sent, SoakRun, judge, summarise

    def run_with_tails(first: Any, last: Any) -> Any:
        run = SoakRun(rate_rps=20.0, duration_s=30.0)
        tails = {0: first, 1: first, 2: last}
        for i in range(600):
            due = i / 20
            window, k = min(int(due // 10), 2), i % 200
            latency = tails[window][k // 25] if k % 25 == 0 else 50.0
            run.sent.append(Sent(due, latency / 1000, 200))
        for t in range(31):
            run.samples.append(Sample(float(t), {"MoodIngress a": 500 * 2**20}, float(t), float(t), 3))
        return run

    noisy = judge(summarise(run_with_tails(np.linspace(100, 400, 8), np.linspace(150, 600, 8)), 10, 10))
    assert noisy.p99_drift == pytest.approx(0.5) and noisy.passed, noisy.reasons
    moved = judge(summarise(run_with_tails(np.full(8, 300.0), np.full(8, 450.0)), 10, 10))
    assert not moved.passed and "p99 drifted +50.0%" in moved.reasons[0] and "intervals" in moved.reasons[0]


def test_the_installed_starlette_has_the_form_limits_parsing_uses() -> None:
    """serve/parsing.py calls ``Request.form(max_files=, max_fields=, max_part_size=)``;
    ``max_part_size`` came in Starlette 0.44.0, so pyproject.toml admits no older Starlette."""
    import inspect
    import re

    from packaging.version import Version
    from starlette.requests import Request as StarletteRequest

    assert {"max_files", "max_fields", "max_part_size"} <= set(inspect.signature(StarletteRequest.form).parameters)
    floor = re.search(r'"starlette>=([0-9.]+)', (REPO / "pyproject.toml").read_text())
    assert floor and Version(floor.group(1)) >= Version("0.44")


def test_every_deployment_has_the_one_replica_lifecycle() -> None:
    from serve.config import HEALTH_CHECK_PERIOD_S, REPLICA_LIFECYCLE
    from serve.deployments import MoodIngress, MoodModel
    from serve.router import MoodRouter

    assert REPLICA_LIFECYCLE["health_check_period_s"] == HEALTH_CHECK_PERIOD_S
    for deployment in (MoodRouter, MoodIngress, MoodModel):
        config = deployment._deployment_config  # what Serve deploys it with
        for option, value in REPLICA_LIFECYCLE.items():
            assert getattr(config, option) == value, (deployment.name, option)
