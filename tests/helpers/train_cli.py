"""`mtlmood train` on the small synthetic feature set (helpers.mtl_synthetic) as a user runs
it: a csv manifest with cached features and a run config (``cli_dataset``), the command as a
real subprocess (``train_command``, ``child_env``, ``wait_for``), and one small model trained
in-process (``train_small_model``, behind the session fixture ``trained_checkpoint``)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest
import yaml

from helpers.mtl_synthetic import MOODS, N_MELS, SEGMENT, synthetic_songs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds any one `mtlmood train` process may take on a busy 2-core machine


def write_manifest(root: Path, extra_rows: Sequence[str] = ()) -> Path:
    """``root/manifest.csv`` of 150 synthetic songs (3 moods, 6 artists) plus ``extra_rows``, and
    their features cached in ``root/features`` (the default cache folder); returns the manifest."""
    from mtlmood.cache import write_cache
    from mtlmood.config import FeatureConfig

    root.mkdir(parents=True, exist_ok=True)
    items, labelled, _ = synthetic_songs(150)
    rows = ["song_id,path,moods,artist"]
    for i, song in enumerate(labelled.song_ids):
        moods = ";".join(m for m, on in zip(MOODS, labelled.mood_targets[i]) if on)
        artist = labelled.meta_names[int(labelled.meta_targets[i].argmax())].split(":")[1]
        rows.append(f"{song},audio/{song}.ogg,{moods},{artist}")
    (root / "manifest.csv").write_text("\n".join([*rows, *extra_rows]) + "\n")
    write_cache(root / "features", items, FeatureConfig(n_mels=N_MELS))
    return root / "manifest.csv"


def cli_dataset(root: Path, epochs: int = 4) -> Path:
    """The manifest of ``write_manifest`` and a run config for it (multi-task, alpha auto, 8
    filters, 32 batches of 16 per epoch, one thread, patience = epochs: every run trains all
    epochs); returns the config's path."""
    write_manifest(root)
    config = {
        "dataset": {"name": "csv", "root": str(root / "manifest.csv")},
        "features": {"n_mels": N_MELS},
        "labels": {"n_moods": len(MOODS), "metadata": "artist", "n_artists": 6},
        "model": {"n_filters": 8, "n_blocks": 3, "segment_frames": SEGMENT, "n_mels": N_MELS, "bn_momentum": 0.1},
        "train": {
            "alpha": "auto",
            "batch_size": 16,
            "max_batches_per_epoch": 32,
            "max_epochs": epochs,
            "patience": epochs,
            "num_threads": 1,
            "device": "cpu",
        },
    }
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    return root / "run.yaml"


def train_command(config: Path, output: Path, *extra: str) -> list[str]:
    """`python -m mtlmood_cli train` of ``config`` into ``output``."""
    return [sys.executable, "-m", "mtlmood_cli", "train", "--config", str(config), "--output", str(output), *extra]


def child_env() -> dict[str, str]:
    """This environment with one math thread: two trains side by side on 2 cores."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    """Poll until ``path`` exists; fail (after killing ``process``) if it does not in time
    or the process ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate(timeout=10)
            pytest.fail(f"the process ended ({process.returncode}) before {path.name} appeared:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate(timeout=30)
            pytest.fail(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.02)


def train_small_model(root: Path, epochs: int = 2) -> Path:
    """`mtlmood train` (in this process) of ``cli_dataset(root / 'data', epochs)`` into
    ``root / 'run'``: a multi-task checkpoint with real BatchNorm statistics; returns its folder."""
    from mtlmood_cli.main import main

    config = cli_dataset(root / "data", epochs=epochs)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "--config", str(config), "--output", str(root / "run")])
    assert code == 0, printed.getvalue()
    return root / "run"
