"""The endpoint as a user starts it, under a short load: `mtlmood serve` in a subprocess.

    python -m benchmarks.serve_smoke --study RUN_DIR [--clients 8] [--requests 64] [--out DIR]

Starts `mtlmood serve --study RUN_DIR` (or ``--checkpoint``) on a free loopback port with
its default settings (on a GPU machine: the model replicas on the GPU), waits for
/healthz, reads /model, then sends the real clips ($MTLMOOD_SHARED_DATA/audio) from
``--clients`` threads, ``--requests`` in all, and reports the status codes, requests/s
and latency percentiles. A non-JSON answer or a 5xx counts as a failure (exit 1).
``benchmarks/gpu_check.sh`` runs it on a lent GPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import numpy as np
import requests

from benchmarks.common import (
    REPO,
    RESULTS,
    fmt,
    free_port,
    machine,
    machine_line,
    publish,
    require_audio_files,
    table,
)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"mtlmood serve exited with {proc.returncode} before it was healthy")
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(1.0)
    raise SystemExit(f"mtlmood serve was not healthy within {timeout:.0f} s")


def _one(url: str, path: Path) -> tuple[int, bool, float]:
    t0 = time.perf_counter()
    response = requests.post(
        f"{url}/predict", data=path.read_bytes(), headers={"Content-Type": "application/octet-stream"}, timeout=120
    )
    seconds = time.perf_counter() - t0
    try:
        response.json()
        is_json = True
    except ValueError:
        is_json = False
    return response.status_code, is_json, seconds


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", help="a study run directory")
    source.add_argument("--checkpoint", help="a checkpoint directory")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    files = require_audio_files()
    info = machine()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    target = ["--study", args.study] if args.study else ["--checkpoint", args.checkpoint]
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "serve_smoke.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtlmood_cli", "serve", *target, "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            start_s = _wait_healthy(url, proc, args.start_timeout)
        except SystemExit:
            print(log_path.read_text()[-6000:], file=sys.stderr)  # why it did not come up
            raise
        model = requests.get(f"{url}/model", timeout=10).json()
        health = requests.get(f"{url}/healthz", timeout=10).json()
        jobs = [files[i % len(files)] for i in range(args.requests)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            answers = list(pool.map(lambda p: _one(url, p), jobs))
        wall = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the CLI shuts Serve and its local Ray down
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    codes = Counter(code for code, _, _ in answers)
    failures = sum(1 for code, is_json, _ in answers if code >= 500 or not is_json)
    latency = np.array([s for code, _, s in answers if code == 200])
    p50, p99 = (np.percentile(latency, [50, 99]) * 1000) if len(latency) else (float("nan"), float("nan"))
    facts = {"serving": model.get("serving"), "replica": health}
    md = [
        "# Serve smoke: `mtlmood serve` under a short load",
        "",
        machine_line(info),
        "",
        f"Started and healthy in {start_s:.0f} s; /model serving: {facts['serving']}; /healthz: {facts['replica']}",
        "",
        table(
            ["clients", "requests", "status codes", "non-JSON or 5xx", "req/s", "p50 ms", "p99 ms"],
            [
                [
                    args.clients,
                    args.requests,
                    dict(sorted(codes.items())),
                    failures,
                    fmt(args.requests / wall, 1),
                    fmt(p50, 0),
                    fmt(p99, 0),
                ]
            ],
        ),
    ]
    payload = {
        "machine": info,
        "start_s": start_s,
        "model": model,
        "health": health,
        "codes": dict(codes),
        "failures": failures,
        "requests_per_s": args.requests / wall,
        "p50_ms": p50,
        "p99_ms": p99,
    }
    publish("serve_smoke", payload, md, args.out)
    if failures or codes.get(200, 0) == 0:
        raise SystemExit(1)
    return payload


if __name__ == "__main__":
    main()
