"""A tiny synthetic dataset with its feature cache, and the settings and command of a tiny
study, shared by the tests that run real studies."""

from __future__ import annotations

import sys
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


# The demo's config (study/configs/synthetic.yaml) studies its own cells and arms; tests that
# start from it reset those choices to the plain study they describe: the default artist
# count only, the tuned and learned arms on, the paper's stopping rule.
NEUTRAL_STUDY = [
    "search.n_artists=[]",
    "curve.tuned=true",
    "curve.learned=true",
    "run.train.min_epochs=0",
    "run.train.stop_smoothing=1",
]


def small_overrides(data_dir: Path | str, storage: Path | str, name: str) -> list[str]:
    """Small settings: 8 filters, 6 batches per epoch, 3 epochs; 3 search trials; a curve of
    alpha = 0, x1/3, the heuristic, tuned and learned over 2 fresh seeds, never extended beyond
    the grid; one trial per cell (its arms and seeds one after another: 2 trials instead of 5,
    each run far shorter than Ray Train's start-up).
    ``storage`` is a path or a URI (s3://...)."""
    return [
        *NEUTRAL_STUDY,
        f"name={name}",
        f"storage_path={storage}",
        f"run.dataset.root={data_dir}",
        "run.model.n_filters=8",
        "run.train.max_epochs=3",
        "run.train.patience=2",
        "run.train.max_batches_per_epoch=6",
        "run.train.eval_batch_size=64",
        "run.train.num_threads=1",
        "search.trials_per_cell=3",  # 2 run at once; the 3rd is still to come when the driver is killed
        "search.n_moods=[4]",
        "search.metadata=[artist]",
        "search.seeds=[0]",
        "curve.grid=[1/3,1]",
        "curve.seeds=[1,2]",
        "curve.seeds_per_trial=2",
        "curve.arms_per_trial=4",
        "curve.max_extensions=0",  # a 2-point grid is never bracketed: tests that extend say so
        "scheduler.grace_period=1",
        "report.n_boot=200",
    ]


def study_run_command(overrides: list[str]) -> list[str]:
    """`mtlmood study run synthetic --set ...` joining the Ray this process started."""
    import ray

    address = ray.get_runtime_context().gcs_address
    return [
        sys.executable,
        "-m",
        "mtlmood_cli",
        "study",
        "run",
        "synthetic",
        "--address",
        address,
        *[arg for o in overrides for arg in ("--set", o)],
    ]
