"""The synthetic default dataset for the training and study benchmarks, made once and cached.

benchmarks/.cache/synthetic/ (git-ignored) holds the demo's dataset (SynthConfig()
defaults: 240 songs) and its feature bank. The run config is the embedded study
default's (study/configs/synthetic.yaml: 16 filters, 24 batches per epoch, ...).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE


def ensure_synthetic(root: Path = CACHE / "synthetic") -> tuple[Any, float]:
    """(the synthetic study's StudyConfig pointed at the cached data, seconds spent preparing it)."""
    from mtlmood.cache import default_cache_dir
    from mtlmood.datasets import load_run_songs
    from mtlmood.prepare import prepare_features
    from mtlmood.synth import SynthConfig, synthesize
    from study.config import load_study_config

    started = time.perf_counter()
    data_dir = root / "data"
    if not (data_dir / "manifest.csv").exists():
        print(f"  synthesizing the default synthetic dataset in {data_dir} ...", flush=True)
        synthesize(data_dir, SynthConfig())
    study = load_study_config("synthetic", [f"run.dataset.root={data_dir}", f"storage_path={root / 'studies'}"])
    report = prepare_features(
        load_run_songs(study.run), default_cache_dir(study.run), study.run.features, progress=False
    )
    if report.failures:
        raise RuntimeError(f"{len(report.failures)} synthetic songs failed to decode")
    return study, time.perf_counter() - started


def run_config(study: Any, **train: Any) -> Any:
    """The study's base RunConfig with TrainConfig overrides (e.g. max_epochs=4)."""
    run = study.run
    return replace(run, train=replace(run.train, **train))
