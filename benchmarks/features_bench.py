"""Features: files/s of decode + resample + log-mel on the real clips, one process and all cores.

    .venv/bin/python -m benchmarks.features_bench [--rounds 5] [--repeat 3]

A pass computes the features of every clip ``--repeat`` times (first 29 s). Variants,
interleaved round by round:

- ``by hand``: librosa.load(sr=16000, duration=29) + librosa.feature.melspectrogram +
  log10(1 + 10000 x): the baseline a user would write;
- ``mtlmood``: ``features_from_file`` (libsndfile + soxr + librosa mel; BLAS limited to
  one thread around the mel matmul, the library default), the same with that limit
  removed, and with ``method="fast"`` (scipy.fft + cached filterbank);
- the same on a process pool with one worker per core (persistent pool, so start-up
  is not counted): parallel efficiency = pool throughput / (workers x one-process
  throughput of the same variant).

Plus a stage breakdown (decode, resample, mel) on the same clips.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmarks.common import fmt, interleaved, machine, machine_line, publish, require_audio_files, table

_MODE = "default"


def _by_hand(path: str) -> np.ndarray:
    import librosa

    y, sr = librosa.load(path, sr=16000, duration=29.0)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=256, n_mels=96).T
    return np.log10(10000 * mel + 1).astype(np.float32)


def _init_worker(mode: str) -> None:
    """Pool initializer: ``unlimited`` removes mtlmood's one-BLAS-thread limit in this worker."""
    global _MODE
    _MODE = mode
    if mode == "unlimited":
        import mtlmood.features as features

        features.one_blas_thread = contextlib.nullcontext()  # type: ignore[assignment]


def _features(path: str, method: str) -> int:
    from mtlmood.config import FeatureConfig
    from mtlmood.features import features_from_file

    if method == "by_hand":
        return int(_by_hand(path).shape[0])
    return int(features_from_file(path, FeatureConfig(), method=method).shape[0])  # type: ignore[arg-type]


def _unlimited(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` without mtlmood's BLAS limit (patched out for the call)."""
    import mtlmood.features as features

    def call() -> Any:
        saved = features.one_blas_thread
        features.one_blas_thread = contextlib.nullcontext()  # type: ignore[assignment]
        try:
            return fn()
        finally:
            features.one_blas_thread = saved

    return call


def stage_breakdown(files: list[Path], rounds: int) -> dict[str, float]:
    """Median ms per file of each stage, interleaved."""
    from mtlmood.audio import _finish, _read_soundfile
    from mtlmood.config import FeatureConfig
    from mtlmood.features import log_mel

    cfg = FeatureConfig()
    decoded = [_read_soundfile(str(f), cfg) for f in files]
    waves = [_finish(w, sr, cfg, str(f)) for (w, sr), f in zip(decoded, files)]
    variants = {
        "decode (libsndfile, first 29 s)": lambda: [_read_soundfile(str(f), cfg) for f in files],
        "downmix + resample (soxr_hq)": lambda: [_finish(w, sr, cfg, "x") for w, sr in decoded],
        "log-mel (librosa)": lambda: [log_mel(w, cfg) for w in waves],
        "log-mel (fast)": lambda: [log_mel(w, cfg, "fast") for w in waves],
    }
    t = interleaved(variants, rounds, warmup=1)
    return {name: 1000 * t.median(name) / len(files) for name in variants}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="passes over the clips per timed unit")
    parser.add_argument("--workers", type=int, default=0, help="pool size (0 = one per core)")
    args = parser.parse_args(argv)
    info = machine()
    files = require_audio_files()
    work = [str(f) for f in files] * args.repeat
    workers = args.workers or len(os.sched_getaffinity(0))
    print(f"features: {len(files)} clips x {args.repeat} per pass, pool of {workers}", flush=True)

    single: dict[str, Callable[[], Any]] = {
        "by hand: librosa.load + melspectrogram": lambda: [_features(p, "by_hand") for p in work],
        "mtlmood (librosa mel, 1 BLAS thread)": lambda: [_features(p, "librosa") for p in work],
        "mtlmood, BLAS threads unlimited": _unlimited(lambda: [_features(p, "librosa") for p in work]),
        "mtlmood, fast mel": lambda: [_features(p, "fast") for p in work],
    }
    ctx = __import__("multiprocessing").get_context("spawn")  # no forked torch/OpenMP state
    pools = {
        mode: ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(mode,))
        for mode in ("default", "unlimited")
    }
    try:
        for pool in pools.values():  # start the workers and import everything before timing
            list(pool.map(_features, work[:workers], ["librosa"] * workers))
            list(pool.map(_features, work[:workers], ["by_hand"] * workers))
        pooled: dict[str, Callable[[], Any]] = {
            f"pool x{workers}: by hand": lambda: list(pools["default"].map(_features, work, ["by_hand"] * len(work))),
            f"pool x{workers}: mtlmood (1 BLAS thread)": lambda: list(
                pools["default"].map(_features, work, ["librosa"] * len(work))
            ),
            f"pool x{workers}: mtlmood, BLAS unlimited": lambda: list(
                pools["unlimited"].map(_features, work, ["librosa"] * len(work))
            ),
            f"pool x{workers}: mtlmood, fast mel": lambda: list(
                pools["default"].map(_features, work, ["fast"] * len(work))
            ),
        }
        timings = interleaved({**single, **pooled}, args.rounds, warmup=1, progress="features")
    finally:
        for pool in pools.values():
            pool.shutdown()
    stages = stage_breakdown(files, args.rounds)

    base = timings.median("by hand: librosa.load + melspectrogram")
    pairs = {  # pool variant -> its one-process twin, for parallel efficiency
        f"pool x{workers}: by hand": "by hand: librosa.load + melspectrogram",
        f"pool x{workers}: mtlmood (1 BLAS thread)": "mtlmood (librosa mel, 1 BLAS thread)",
        f"pool x{workers}: mtlmood, BLAS unlimited": "mtlmood, BLAS threads unlimited",
        f"pool x{workers}: mtlmood, fast mel": "mtlmood, fast mel",
    }
    rows, results = [], {}
    for name in {**single, **pooled}:
        s = timings.median(name)
        files_per_s = len(work) / s
        eff = (timings.median(pairs[name]) / s) / workers if name in pairs else None
        results[name] = {"median_s": s, "files_per_s": files_per_s, "vs_by_hand": base / s, "parallel_efficiency": eff}
        rows.append([name, fmt(files_per_s), f"{base / s:.2f}×", f"{100 * eff:.0f} %" if eff else "–"])
    payload = {
        "machine": info,
        "files": [f.name for f in files],
        "repeat": args.repeat,
        "workers": workers,
        "rounds": args.rounds,
        "results": results,
        "stage_ms_per_file": stages,
    }
    md = [
        "# Features benchmark",
        "",
        machine_line(info),
        "",
        f"{len(files)} real clips x {args.repeat} per pass (first 29 s: decode + downmix + resample to 16 kHz "
        f"+ 96-band log-mel); median of {args.rounds} interleaved rounds; pool = {workers} spawned processes.",
        "",
        table(["variant", "files/s", "vs by hand (1 process)", "parallel efficiency"], rows),
        "",
        "Stages (ms per file, one process, median): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
    ]
    return publish("features", payload, md)


if __name__ == "__main__":
    main()
    sys.exit(0)
