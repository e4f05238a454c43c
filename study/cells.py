"""Study cells: one per (dataset, mood count, metadata set[, artist classes]), with the paper's heuristic alpha.

The heuristic alpha = N_mood / N_meta depends on how many labels the data really yields
(a small dataset may have fewer than 50 artists; metadata classes come from training
songs only), so it is computed from the labelled, split songs before the search starts,
not assumed. Each cell also keeps the facts a reviewer needs next to its results: label
counts, songs per split, and how many test songs have an artist seen in training.

**Cell keys.** ``"n_moods|metadata"`` (``"3|artist"``, ``"3|none"``) when the metadata
uses the run's own artist classes (``run.labels.n_artists``); a cell of another artist
count (``search.n_artists``) carries it in its metadata factor, ``"n_moods|metadata@K"``
(``"3|artist@10"``, ``"9|artist+year@10"``): label ``"mtg-jamendo · 3 moods · artist@10"``,
slug ``3-artist_10``. The metadata column of the trial table holds the same factor
(``artist@10``), so anything that tells cells apart by (n_moods, metadata) still does.
Keys of studies made before the factor existed are unchanged. The baseline (``none``) has
no metadata head: one per mood count, shared by every metadata cell of that count (the
split does not depend on the metadata, see mtlmood.rundata.label_and_split).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlmood import storage
from mtlmood.datasets import load_run_songs
from mtlmood.rundata import label_and_split, split_facts
from study.config import StudyConfig, split_metadata, trial_run_config

TEST_SONGS_FILE = "test_songs.csv"
CELLS_FILE = "cells.json"  # in a study's run directory: every cell, written when the study starts


@dataclass(frozen=True)
class Cell:
    """One (dataset, n_moods, metadata) combination of the study; metadata "none" = the baseline."""

    dataset: str
    n_moods: int  # the mood count asked for (the cell's factor)
    metadata: str
    n_mood_labels: int  # mood labels the data really has (fewer when it has fewer tags)
    n_meta: int  # metadata classes present in the training songs
    heuristic_alpha: float  # N_mood / N_meta; 0 for the baseline
    tag_set: str = "moods"
    facts: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def metadata_set(self) -> str:
        """The metadata set without its artist count ("artist@10" -> "artist")."""
        return split_metadata(self.metadata)[0]

    @property
    def key(self) -> str:
        return cell_key(self.n_moods, self.metadata)

    @property
    def label(self) -> str:
        unit = "tags" if self.tag_set == "all" else "moods"
        return f"{self.dataset} · {self.n_moods} {unit} · {self.metadata}"

    @property
    def slug(self) -> str:
        return cell_slug(self.n_moods, self.metadata)


def cell_key(n_moods: int, metadata: str) -> str:
    """The cell's key in configs and tables: ``"n_moods|metadata"``."""
    return f"{int(n_moods)}|{metadata}"


def cell_slug(n_moods: int, metadata: str) -> str:
    """A file-name-safe cell name, e.g. ``3-artist+year``."""
    return re.sub(r"[^A-Za-z0-9+_.-]", "_", f"{int(n_moods)}-{metadata}")


def parse_cell_key(key: str) -> tuple[int, str]:
    """``"3|artist"`` -> (3, "artist"); ``"3|artist@10"`` -> (3, "artist@10")."""
    n_moods, _, metadata = key.partition("|")
    return int(n_moods), metadata


def metadata_factor(metadata: str, n_artists: int, default_artists: int) -> str:
    """A metadata set at an artist count, as cells name it: the set itself at the run's own
    count (or when it has no artist), else ``"<set>@<count>"``."""
    if "artist" not in metadata or int(n_artists) == int(default_artists):
        return metadata
    return f"{metadata}@{int(n_artists)}"


def cell_metadata(study: StudyConfig) -> list[str]:
    """The metadata factors of the study's metadata cells, in config order: each metadata set,
    crossed with ``search.n_artists`` where it has artist (no repeats)."""
    default = study.run.labels.n_artists
    counts = list(study.search.n_artists) or [default]
    factors: list[str] = []
    for metadata in study.search.metadata:
        for count in counts:
            factor = metadata_factor(metadata, count, default)
            if factor not in factors:
                factors.append(factor)
    return factors


def study_cells(study: StudyConfig, write_to: str | Path | None = None) -> dict[str, Cell]:
    """Every cell of the study, baselines (metadata "none") included, keyed by ``n_moods|metadata``
    (``n_moods|metadata@K`` at another artist count than the run's, see the module docstring).
    N_meta and the heuristic count the classes the training songs really have.

    With ``write_to`` (a path or URI) each cell's test songs (id, split group, artist) go to
    ``<write_to>/<slug>/test_songs.csv``: the report's bootstrap resamples them by song,
    track or artist.
    """
    records = load_run_songs(study.run)
    cells: dict[str, Cell] = {}
    for n_moods in study.search.n_moods:
        for metadata in ["none", *cell_metadata(study)]:
            run = trial_run_config(study, int(n_moods), metadata, 0.0, 0)
            labelled, splits = label_and_split(records, run)
            heuristic = labelled.n_moods / labelled.n_meta if labelled.n_meta else 0.0
            cell = Cell(
                study.run.dataset.name,
                int(n_moods),
                metadata,
                labelled.n_moods,
                labelled.n_meta,
                heuristic,
                run.dataset.tag_set,
                split_facts(labelled, splits),
            )
            cells[cell.key] = cell
            if write_to is not None:
                _write_test_songs(storage.join(write_to, cell.slug, TEST_SONGS_FILE), labelled, splits["test"])
    return cells


def _write_test_songs(location: str, labelled: Any, rows: Any) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["song_id", "group", "artist"])
    artists = getattr(labelled, "artists", None) or [""] * len(labelled)
    for row in rows:
        writer.writerow([labelled.song_ids[row], labelled.groups[row], artists[row]])
    storage.write_text(location, buffer.getvalue())


def metadata_cells(cells: dict[str, Cell]) -> list[Cell]:
    """The cells alpha is searched in (metadata != none), in config order."""
    return [cell for cell in cells.values() if cell.metadata != "none"]


def load_cells(run_dir: str | os.PathLike[str]) -> dict[str, Cell]:
    """The cells a study recorded in ``cells.json`` (a run directory or URI)."""
    data = json.loads(storage.read_text(storage.join(run_dir, CELLS_FILE)))
    return {key: Cell(**value) for key, value in data.items()}
