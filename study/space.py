"""The phase-1 search space (define-by-run, for Optuna), its sampler and the points every study evaluates first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from study.config import StudyConfig

SEEDED = "seeded"  # config key that marks a seeded (reference) trial; the scheduler never stops those
OPTUNA_DEFAULT_STARTUP = 10  # optuna.samplers.TPESampler's own n_startup_trials


@dataclass(frozen=True)
class SearchSpace:
    """Define-by-run space for OptunaSearch: (n_moods, metadata set != none, alpha_factor).

    alpha is searched as ``alpha_factor`` x the cell's heuristic N_mood/N_meta (log-uniform),
    so one range fits every cell whatever its number of labels. A module-level class (not
    a closure) because Tune pickles the searcher into its experiment checkpoint.

    The baseline (metadata none) has no alpha, so sampling it again would only repeat its
    seeded run (same config, same seed, same result): sampled trials never choose it. The
    seeded points come first (``seeded``: their (n_moods, metadata) in ``seeded_points``
    order); Optuna hands out the points it was given (``enqueue_trial``) as its trials 0..k-1,
    so trial ``number`` says which seeded point a trial is. A seeded baseline suggests only
    n_moods and returns ``metadata: none`` as a constant: "none" is not one of the
    ``metadata`` choices, and Optuna keeps a parameter's choices fixed for the whole study.
    """

    n_moods: tuple[int, ...]
    metadata: tuple[str, ...]
    low: float
    high: float
    seeded: tuple[tuple[int, str], ...]

    def __call__(self, trial: Any) -> Optional[dict[str, Any]]:
        point = self.seeded[trial.number] if trial.number < len(self.seeded) else None
        n_moods = trial.suggest_categorical("n_moods", list(self.n_moods))
        if point is not None and point[1] == "none":
            _check_seeded(point, n_moods, "none")
            return {"metadata": "none", SEEDED: True}
        if not self.metadata:
            raise ValueError("search space: no metadata set to sample (only the seeded baselines exist); "
                             "the runner caps num_samples at the seeded points in that case")
        chosen = trial.suggest_categorical("metadata", list(self.metadata))
        trial.suggest_float("alpha_factor", self.low, self.high, log=True)
        if point is not None:
            _check_seeded(point, n_moods, chosen)
            return {SEEDED: True}
        return None


def _check_seeded(point: tuple[int, str], n_moods: int, metadata: str) -> None:
    """Guard the trial-number <-> seeded-point mapping (Optuna's enqueue order) instead of trusting it."""
    if (int(n_moods), metadata) != (int(point[0]), point[1]):
        raise RuntimeError(f"seeded trial got (n_moods={n_moods}, metadata={metadata}), expected {point}: "
                           "the Optuna study was not fresh when the seeded points were enqueued")


def make_space(study: StudyConfig) -> SearchSpace:
    """The phase-1 space of a study."""
    seeded = tuple((int(p["n_moods"]), str(p["metadata"])) for p in seeded_points(study))
    return SearchSpace(tuple(int(n) for n in study.search.n_moods), tuple(study.search.metadata),
                       study.search.alpha_factor_low, study.search.alpha_factor_high, seeded)


def seeded_points(study: StudyConfig) -> list[dict[str, Any]]:
    """The baseline and the heuristic alpha of every cell, evaluated before TPE explores.

    The baseline points are the only baseline trials of the search (see ``SearchSpace``).
    """
    points: list[dict[str, Any]] = []
    for n in study.search.n_moods:
        points.append({"n_moods": int(n), "metadata": "none"})
        for meta in study.search.metadata:
            points.append({"n_moods": int(n), "metadata": meta, "alpha_factor": 1.0})
    return points


def sampled_trials(study: StudyConfig) -> int:
    """Search trials left for the sampler after the seeded points (0 when there is nothing to sample)."""
    if not study.search.metadata:  # only baseline cells: all of them are seeded
        return 0
    return max(0, study.search.num_samples - len(seeded_points(study)))


def n_startup_trials(study: StudyConfig) -> int:
    """TPE's random start-up: finished trials before TPE models the results.

    "auto" = the number of seeded points, at most Optuna's default of 10. The seeded points
    already cover every cell (baseline + heuristic alpha) and count as finished trials in
    Optuna's study, so TPE starts as soon as they are in instead of after 10 random trials,
    which would leave a budget of 8-10 trials (the demo) pure random search. The cap keeps a
    study with many cells from waiting longer than Optuna itself would.
    """
    setting = study.search.n_startup_trials
    if setting == "auto":
        return min(len(seeded_points(study)), OPTUNA_DEFAULT_STARTUP)
    return int(setting)


def make_sampler(study: StudyConfig) -> Any:
    """The TPE sampler of phase 1.

    multivariate + group: the space is conditional (seeded baselines have no metadata or
    alpha_factor), so plain multivariate TPE (Optuna's default) would model only n_moods
    jointly and sample metadata and alpha_factor independently; group decomposes the space
    into {n_moods} and {metadata, alpha_factor} and models the best alpha per metadata set.
    constant_liar (Optuna's default, explicit here): concurrent trials are not suggested
    next to each other.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # "group" is experimental
        return optuna.samplers.TPESampler(seed=study.search.optuna_seed, n_startup_trials=n_startup_trials(study),
                                          multivariate=True, group=True, constant_liar=True)
