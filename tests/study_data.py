"""A tiny synthetic dataset with its feature cache, shared by the tests that run real studies."""

from __future__ import annotations

from pathlib import Path

from mtlmood.cache import default_cache_dir
from mtlmood.datasets import load_run_songs
from mtlmood.prepare import prepare_features
from mtlmood.synth import SynthConfig, synthesize
from study.config import StudyConfig


def make_study_data(data_dir: Path, seed: int) -> Path:
    """60 songs of 4-6 s from 6 artists in ``data_dir``; returns ``data_dir``."""
    synthesize(data_dir, SynthConfig(n_songs=60, n_artists=6, min_seconds=4.0, max_seconds=6.0, seed=seed))
    return data_dir


def prepare_study_features(study: StudyConfig) -> None:
    """Compute the features a study's trials read (one process; the suite runs on 2 cores)."""
    report = prepare_features(
        load_run_songs(study.run), default_cache_dir(study.run), study.run.features, workers=1, progress=False
    )
    assert not report.failures, report.failures
