"""The curve's work before it runs: its jobs (an arm of a cell over a chunk of seeds) and how
they are packed into trials. No Ray here: `mtlmood study plan` counts the same trials the
study runs (study.plan), and study.runner runs them."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from study.cells import Cell, cell_key, metadata_cells
from study.config import StudyConfig
from study.results import arm_name, job_name, tuned_alpha_factor
from study.trial import LEARNED


def curve_jobs(study: StudyConfig, search: pd.DataFrame, cells: dict[str, Cell]) -> list[dict[str, Any]]:
    """Phase 2 jobs: per mood count the baseline; per metadata cell every grid multiple of the
    heuristic, the tuned alpha (unless it is a grid point: then the table says so) and the
    learned weight; each over the curve's fresh seeds, ``seeds_per_trial`` seeds per job."""
    arms: list[dict[str, Any]] = []
    for n in study.search.n_moods:
        arms.append({"cell": cell_key(n, "none"), "arm": "baseline", "alpha": 0.0, "alpha_factor": 0.0})
    for cell in metadata_cells(cells):
        for factor in study.curve.grid:
            arms.append(
                {
                    "cell": cell.key,
                    "arm": arm_name(factor),
                    "alpha": factor * cell.heuristic_alpha,
                    "alpha_factor": float(factor),
                }
            )
        tuned = tuned_alpha_factor(search, cell.key) if study.curve.tuned and not search.empty else None
        if tuned is not None and not any(math.isclose(tuned, f, rel_tol=1e-6) for f in study.curve.grid):
            arms.append(
                {"cell": cell.key, "arm": "tuned", "alpha": tuned * cell.heuristic_alpha, "alpha_factor": tuned}
            )
        if study.curve.learned:
            arms.append({"cell": cell.key, "arm": LEARNED, "alpha": LEARNED, "alpha_factor": math.nan})
    return [{**arm, "seeds": chunk} for arm in arms for chunk in seed_chunks(study)]


def seed_chunks(study: StudyConfig) -> list[list[int]]:
    """The curve seeds, ``seeds_per_trial`` per job."""
    seeds = [int(s) for s in study.curve.seeds]
    return [seeds[i : i + study.curve.seeds_per_trial] for i in range(0, len(seeds), study.curve.seeds_per_trial)]


def curve_trials(jobs: list[dict[str, Any]], arms_per_trial: int) -> list[list[dict[str, Any]]]:
    """The trials of a curve round: the jobs of one cell over the same seeds, ``arms_per_trial``
    at a time, in the order of ``jobs`` (a cell's arms are never split across seed chunks)."""
    groups: dict[tuple[str, tuple[int, ...]], list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault((str(job["cell"]), tuple(job["seeds"])), []).append(job)
    size = max(1, arms_per_trial)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def unreported_trials(
    trials: list[list[dict[str, Any]]], reported: list[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """The trials of ``trials`` of which Tune reported none of the jobs (``reported``: the jobs of
    each trial in its result grid, errored ones included).

    A resumed round can miss one: Tune saves its trial list and its variant generator's position
    in separate files, uploaded one after the other, so a driver killed between the two can
    leave a generator that already handed out a trial the saved list lacks. Restored, that
    generator never hands it out again, and the round would end with its runs missing (what
    the search's generator did on 2026-12-07; study.space.CellSearchGenerator)."""
    names = {job_name(job) for jobs in reported for job in jobs}
    return [trial for trial in trials if not any(job_name(job) in names for job in trial)]
