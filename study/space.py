"""The phase-1 search space (define-by-run, for Optuna) and the points every study evaluates first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from study.config import StudyConfig


@dataclass(frozen=True)
class SearchSpace:
    """Define-by-run space for OptunaSearch: alpha exists only where a metadata set is chosen.

    alpha is searched as ``alpha_factor`` x the cell's heuristic N_mood/N_meta (log-uniform),
    so one range fits every cell whatever its number of labels. A module-level class (not
    a closure) because Tune pickles the searcher into its experiment checkpoint.
    """

    n_moods: tuple[int, ...]
    metadata: tuple[str, ...]
    low: float
    high: float

    def __call__(self, trial: Any) -> Optional[dict[str, Any]]:
        trial.suggest_categorical("n_moods", list(self.n_moods))
        chosen = trial.suggest_categorical("metadata", ["none", *self.metadata])
        if chosen != "none":
            trial.suggest_float("alpha_factor", self.low, self.high, log=True)
        return None


def make_space(study: StudyConfig) -> SearchSpace:
    """The phase-1 space of a study."""
    return SearchSpace(tuple(int(n) for n in study.search.n_moods), tuple(study.search.metadata),
                       study.search.alpha_factor_low, study.search.alpha_factor_high)


def seeded_points(study: StudyConfig) -> list[dict[str, Any]]:
    """The baseline and the heuristic alpha of every cell, evaluated before TPE explores."""
    points: list[dict[str, Any]] = []
    for n in study.search.n_moods:
        points.append({"n_moods": int(n), "metadata": "none"})
        for meta in study.search.metadata:
            points.append({"n_moods": int(n), "metadata": meta, "alpha_factor": 1.0})
    return points
