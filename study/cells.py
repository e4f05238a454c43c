"""Study cells: one per (dataset, n_moods, metadata set), with the paper's heuristic alpha.

The heuristic alpha = N_mood / N_meta depends on how many labels the data really
yields (a small dataset may have fewer than 50 artists), so it is computed from
the labelled songs before the search starts, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mtlmood.datasets import load_run_songs
from mtlmood.labels import build_labels
from study.config import StudyConfig


@dataclass(frozen=True)
class Cell:
    """One (dataset, n_moods, metadata) combination of the study."""

    dataset: str
    n_moods: int
    metadata: str
    n_meta: int
    heuristic_alpha: float  # N_mood / N_meta; 0 for the baseline cell (metadata none)

    @property
    def key(self) -> str:
        return f"{self.n_moods}|{self.metadata}"


def study_cells(study: StudyConfig) -> dict[str, Cell]:
    """Every cell of the study, baselines (metadata "none") included, keyed by ``n_moods|metadata``."""
    records = load_run_songs(study.run)
    cells: dict[str, Cell] = {}
    for n_moods in study.search.n_moods:
        for metadata in ["none", *study.search.metadata]:
            labels = build_labels(records, replace(study.run.labels, n_moods=int(n_moods), metadata=metadata),
                                  dataset=study.run.dataset.name)
            n_mood_labels = labels.n_moods  # may be < n_moods when the data has fewer tags
            heuristic = n_mood_labels / labels.n_meta if labels.n_meta else 0.0
            cell = Cell(study.run.dataset.name, int(n_moods), metadata, labels.n_meta, heuristic)
            cells[cell.key] = cell
    return cells
