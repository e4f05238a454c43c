"""The phase-1 search space (define-by-run, for Optuna) and the points every study evaluates first."""

from __future__ import annotations

from typing import Any, Callable, Optional

from study.config import StudyConfig


def make_space(study: StudyConfig) -> Callable[[Any], Optional[dict[str, Any]]]:
    """Conditional space: alpha exists only where a metadata set is chosen.

    alpha is searched as ``alpha_factor`` x the cell's heuristic N_mood/N_meta (log-uniform),
    so one range fits every cell whatever its number of labels.
    """
    n_moods = [int(n) for n in study.search.n_moods]
    metadata = ["none", *study.search.metadata]
    low, high = study.search.alpha_factor_low, study.search.alpha_factor_high

    def space(trial: Any) -> Optional[dict[str, Any]]:
        trial.suggest_categorical("n_moods", n_moods)
        chosen = trial.suggest_categorical("metadata", metadata)
        if chosen != "none":
            trial.suggest_float("alpha_factor", low, high, log=True)
        return None

    return space


def seeded_points(study: StudyConfig) -> list[dict[str, Any]]:
    """The baseline and the heuristic alpha of every cell, evaluated before TPE explores."""
    points: list[dict[str, Any]] = []
    for n in study.search.n_moods:
        points.append({"n_moods": int(n), "metadata": "none"})
        for meta in study.search.metadata:
            points.append({"n_moods": int(n), "metadata": meta, "alpha_factor": 1.0})
    return points
