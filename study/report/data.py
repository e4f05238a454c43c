"""From a study's files to each cell's evidence: the trial table, its cells, and the test
predictions of every curve run, aligned to the cell's test songs.

Only curve runs (fresh seeds) are evidence: search runs chose the tuned alpha and never
estimate a result. Paths in the trial table are relative to the run directory (a path or
an object store URI: files are read through mtlmood.storage).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import pandas as pd

from mtlmood import storage
from mtlmood.errors import ConfigError
from study.cells import TEST_SONGS_FILE, Cell, cell_key
from study.report.statistics import ArmRuns
from study.report.verdicts import BASELINE, LEARNED, CellEvidence

CURVE_PHASE = "curve"
RunDir = Union[str, "os.PathLike[str]"]


@dataclass
class Predictions:
    """One run's test predictions."""

    song_ids: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray


def read_predictions(location: RunDir) -> Optional[Predictions]:
    """A run's ``test_predictions.npz``, or None when it is missing or unreadable."""
    try:
        with np.load(io.BytesIO(storage.read_bytes(location)), allow_pickle=False) as f:
            return Predictions(
                f["song_ids"].astype(str), f["y_true"].astype(np.float32), f["y_prob"].astype(np.float64)
            )
    except (OSError, KeyError, ValueError):
        return None


def bootstrap_unit(setting: str, dataset: str, artist_overlap: bool = False) -> str:
    """The song bootstrap's unit. ``auto``: artist whenever test songs have an artist seen in
    training (a random split, and the auxiliary task is the artist: the errors of one
    artist's test songs are correlated through what the model learned of that artist; in
    simulation resampling songs then rejected a true null 21 % of the time, artists 4 %),
    else track on MagnaTagATune (its clips of one track), else song."""
    if setting != "auto":
        return setting
    if artist_overlap:
        return "artist"
    return "track" if dataset == "magnatagatune" else "song"


def artist_overlap(cell: Cell, songs: pd.DataFrame) -> bool:
    """Whether any test song of the cell is by an artist seen in training (from the cell's split facts)."""
    share = cell.facts.get("test_songs_artist_in_train_percent")
    if isinstance(share, (int, float)):
        return float(share) > 0
    return bool((songs.get("artist", pd.Series(dtype=str)).astype(str) != "").any())


def test_songs(run_dir: RunDir, cell: Cell) -> pd.DataFrame:
    """The cell's test songs: song_id, group (track), artist."""
    path = storage.join(run_dir, "cells", cell.slug, TEST_SONGS_FILE)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: the study did not record the cell's test songs") from None
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def clusters_of(songs: pd.DataFrame, unit: str) -> np.ndarray:
    """The bootstrap unit of each test song (songs without an artist are their own cluster)."""
    if unit == "song":
        return songs["song_id"].to_numpy(dtype=str)
    column = "group" if unit == "track" else "artist"
    values = songs[column].to_numpy(dtype=str)
    return np.where(values == "", "song:" + songs["song_id"].to_numpy(dtype=str), column + ":" + values)


def _arm_runs(
    rows: pd.DataFrame, run_dir: RunDir, order: pd.Index
) -> tuple[Optional[ArmRuns], np.ndarray, Optional[np.ndarray]]:
    """An arm's test predictions over its seeds (rows aligned to ``order``), its per-seed
    validation scores and the test labels."""
    seeds, probs, val = [], [], []
    y_true = None
    for _, row in rows.sort_values("seed").iterrows():
        if not row["predictions_path"]:
            continue
        pred = read_predictions(storage.join(run_dir, row["predictions_path"]))
        if pred is None:
            continue
        index = pd.Index(pred.song_ids)
        if not order.isin(index).all():
            raise ConfigError(f"{row['predictions_path']} lacks test songs of its cell")
        take = index.get_indexer(order)
        seeds.append(int(row["seed"]))
        probs.append(pred.y_prob[take])
        val.append(float(row["val_pr_auc"]))
        y_true = pred.y_true[take]
    if not seeds:
        return None, np.empty(0), None
    return ArmRuns(tuple(seeds), np.stack(probs)), np.asarray(val), y_true


def cell_evidence(trials: pd.DataFrame, cell: Cell, run_dir: RunDir, unit_setting: str) -> Optional[CellEvidence]:
    """The evidence of one metadata cell: its curve arms plus the baseline of its mood count."""
    songs = test_songs(run_dir, cell)
    order = pd.Index(songs["song_id"])
    curve = trials[(trials["phase"] == CURVE_PHASE) & (trials["status"] == "TERMINATED")]
    own = curve[curve["cell"] == cell.key]
    baseline = curve[(curve["cell"] == cell_key(cell.n_moods, "none")) & (curve["arm"] == BASELINE)]
    arms, alphas, val = {}, {}, {}
    y_true = None
    for name, rows in [(BASELINE, baseline), *own.groupby("arm", sort=False)]:
        runs, scores, labels = _arm_runs(rows, run_dir, order)
        if runs is None:
            continue
        arms[name] = runs
        alphas[name] = 0.0 if name == BASELINE else float(pd.to_numeric(rows["alpha"]).mean())
        val[name] = scores
        if labels is not None:
            if y_true is not None and not np.array_equal(y_true, labels):
                raise ConfigError(f"cell {cell.key}: runs disagree on the test labels")
            y_true = labels
    if y_true is None or BASELINE not in arms or "heuristic" not in arms:
        return None
    unit = bootstrap_unit(unit_setting, cell.dataset, artist_overlap(cell, songs))
    return CellEvidence(
        cell=cell.label,
        heuristic_alpha=cell.heuristic_alpha,
        y_true=y_true,
        clusters=clusters_of(songs, unit),
        arms=arms,
        alphas=alphas,
        val=val,
        unit=unit,
    )


def learned_alpha(evidence: CellEvidence) -> float:
    """The mean effective alpha the learned arm ended with (NaN without that arm)."""
    return evidence.alphas.get(LEARNED, float("nan"))
