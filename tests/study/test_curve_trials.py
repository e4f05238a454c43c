"""How a curve round's jobs become trials (study.curve_jobs.curve_trials) and what the plan counts:
``curve.arms_per_trial`` arms of one cell over one chunk of seeds share a trial, in plan order;
a trial never mixes cells or seed chunks. The trained rows of packed trials are checked on Ray
by the study tests (tests/helpers/study_data.small_overrides packs every arm of a cell)."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.cells import Cell, cell_key
from study.config import load_study_config
from study.curve_jobs import curve_trials, unreported_trials
from study.plan import plan_table


def _job(cell: str, arm: str, seeds: list[int]) -> dict:
    return {"cell": cell, "arm": arm, "alpha": 0.0, "alpha_factor": 0.0, "seeds": seeds}


def _arms(trials: list[list[dict]]) -> list[list[tuple[str, str, tuple[int, ...]]]]:
    return [[(job["cell"], job["arm"], tuple(job["seeds"])) for job in trial] for trial in trials]


def test_arms_of_one_cell_and_one_seed_chunk_share_a_trial_in_plan_order() -> None:
    jobs = [_job("3|none", "baseline", [1, 2]), _job("3|none", "baseline", [3])]
    for arm in ("x1/3", "heuristic", "x3"):
        jobs += [_job("3|artist", arm, [1, 2]), _job("3|artist", arm, [3])]
    assert _arms(curve_trials(jobs, 2)) == [
        [("3|none", "baseline", (1, 2))],
        [("3|none", "baseline", (3,))],
        [("3|artist", "x1/3", (1, 2)), ("3|artist", "heuristic", (1, 2))],
        [("3|artist", "x3", (1, 2))],
        [("3|artist", "x1/3", (3,)), ("3|artist", "heuristic", (3,))],
        [("3|artist", "x3", (3,))],
    ]
    singles = curve_trials(jobs, 1)  # the default: one job a trial, none lost
    assert all(len(trial) == 1 for trial in singles) and len(singles) == len(jobs)
    packed = curve_trials(jobs, 10)
    assert len(packed) == 4 and sorted(j["arm"] for t in packed for j in t) == sorted(j["arm"] for j in jobs)


def test_a_trial_tune_never_reported_is_found_by_its_jobs() -> None:
    """What a resumed curve round runs again: the trials none of whose jobs are in the result grid
    (a generator restored ahead of the trial list never hands them out again)."""
    jobs = [_job("3|none", "baseline", [1, 2])] + [_job("3|artist", arm, [1, 2]) for arm in ("x1/3", "heuristic", "x3")]
    trials = curve_trials(jobs, 2)  # [baseline], [x1/3, heuristic], [x3]
    assert unreported_trials(trials, trials) == []
    assert unreported_trials(trials, [trials[0], trials[2]]) == [trials[1]]
    assert unreported_trials(trials, []) == trials
    # A reported trial counts by its jobs (the grid's configs are copies, not these objects).
    assert unreported_trials(trials, [[dict(job) for job in trial] for trial in trials[:2]]) == [trials[2]]
    # An errored trial is reported too: its runs are listed with its error, not run again.
    assert unreported_trials(trials[:1], [[_job("3|none", "baseline", [1, 2])]]) == []


@pytest.mark.parametrize(("arms_per_trial", "expected"), [(1, 5 * 2), (2, 3 * 2), (5, 1 * 2)])
def test_the_plan_counts_the_packed_curve_trials(tmp_path: Path, arms_per_trial: int, expected: int) -> None:
    study = load_study_config(
        "synthetic",
        [
            f"storage_path={tmp_path}",
            "search.n_artists=[]",
            "curve.grid=[1/3,1,3]",
            "curve.tuned=true",
            "curve.learned=true",
            "curve.seeds=[1,2,3]",
            "curve.seeds_per_trial=2",  # 2 chunks: [1, 2] and [3]
            f"curve.arms_per_trial={arms_per_trial}",
        ],
    )
    facts = {"songs": {"train": 100, "validation": 20, "test": 20}}
    cells = {
        cell_key(3, meta): Cell("synthetic", 3, meta, 3, n_meta, 3 / n_meta if n_meta else 0.0, "moods", facts)
        for meta, n_meta in (("none", 0), ("artist", 12))
    }
    _, trials = plan_table(study, cells)
    by_cell = dict(zip(trials["cell"], trials["curve trials"]))
    assert by_cell[cells["3|none"].label] == 2  # the baseline: one arm, two seed chunks
    assert by_cell[cells["3|artist"].label] == expected  # 5 arms (3 grid, tuned, learned) x 2 chunks
