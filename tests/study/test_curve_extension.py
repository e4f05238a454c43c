"""alpha* bracketed (the curve's grid extended beyond its end) and the tuned alpha chosen among
all search trials at a fair budget: pure functions of hand-built trial tables, no Ray."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from study.cells import Cell
from study.extension import extension_factor, extension_jobs, extension_summary, grid_means
from study.results import tuned_alpha_factor

GRID = [1 / 9, 1 / 3, 1.0, 3.0, 9.0]


def _cells() -> dict[str, Cell]:
    return {
        "3|none": Cell("d", 3, "none", 3, 0, 0.0),
        "3|artist": Cell("d", 3, "artist", 3, 50, 0.06),
        "3|artist@10": Cell("d", 3, "artist@10", 3, 10, 0.3),
    }


def _curve(scores: dict[str, dict[float, float]], seeds=(1, 2), round_of=None) -> pd.DataFrame:
    """Curve rows: per cell and multiple, one row per seed at score +- 1 (the seed mean is the score)."""
    from study.results import arm_name

    rows = []
    for key, by_factor in scores.items():
        rows.append({"cell": key.split("|")[0] + "|none", "arm": "baseline", "alpha_factor": 0.0, "val_pr_auc": 99.0})
        for factor, score in by_factor.items():
            for i, seed in enumerate(seeds):
                rows.append(
                    {
                        "cell": key,
                        "arm": arm_name(factor),
                        "alpha_factor": factor,
                        "seed": seed,
                        "val_pr_auc": score + (1 if i % 2 else -1),
                        "curve_round": (round_of or {}).get(factor, 0),
                    }
                )
        # Arms that are not grid multiples never decide the bracket, however well they score.
        rows.append({"cell": key, "arm": "tuned", "alpha_factor": 50.0, "val_pr_auc": 100.0, "curve_round": 0})
        rows.append({"cell": key, "arm": "learned", "alpha_factor": math.nan, "val_pr_auc": 100.0, "curve_round": 0})
    return pd.DataFrame(rows)


def test_the_grid_extends_past_the_end_that_holds_the_best_multiple() -> None:
    assert extension_factor(dict(zip(GRID, [1, 2, 5, 3, 2]))) is None  # bracketed
    assert extension_factor(dict(zip(GRID, [1, 2, 3, 4, 5]))) == pytest.approx(27.0)  # x9 best: x27
    assert extension_factor(dict(zip(GRID, [5, 4, 3, 2, 1]))) == pytest.approx(1 / 27)  # x1/9 best: x1/27
    assert extension_factor({**dict(zip(GRID, [1, 2, 3, 4, 5])), 27.0: 6}) == pytest.approx(81.0)  # round 2
    assert extension_factor({1.0: 1, 2.0: 3}) == pytest.approx(4.0)  # the grid's own end step
    assert extension_factor(dict(zip(GRID, [1, 2, 5, 3, 5]))) is None  # a tie with the interior: bracketed
    assert extension_factor({1.0: 5}) is None  # one point: no step to extend by
    # A failed end arm (NaN) is never retried: the best is then interior to what was tried.
    assert extension_factor(dict(zip(GRID, [1, 2, 3, 4, math.nan]))) is None
    assert extension_factor(dict(zip(GRID, [math.nan] * 5))) is None


def test_extension_jobs_use_seed_means_of_grid_arms_per_cell() -> None:
    curve = _curve({"3|artist": dict(zip(GRID, [1, 2, 3, 4, 5])), "3|artist@10": dict(zip(GRID, [1, 6, 3, 2, 1]))})
    assert grid_means(curve, "3|artist")[9.0] == pytest.approx(5.0)  # tuned (x50, 100) is not a grid arm
    jobs = extension_jobs(curve, _cells(), [[1, 2]], 1)
    assert jobs == [
        {
            "cell": "3|artist",
            "arm": "x27",
            "alpha": pytest.approx(27 * 0.06),
            "alpha_factor": pytest.approx(27.0),
            "round": 1,
            "seeds": [1, 2],
        }
    ]
    assert len(extension_jobs(curve, _cells(), [[1], [2]], 1)) == 2  # one job per seed chunk


def test_the_summary_says_which_cells_are_bound_at_the_limit() -> None:
    scores = {
        "3|artist": {**dict(zip(GRID, [1, 2, 3, 4, 5])), 27.0: 6, 81.0: 7},  # still rising after 2 rounds
        "3|artist@10": {**dict(zip(GRID, [5, 4, 3, 2, 1])), 1 / 27: 6, 1 / 81: 5.5},  # bracketed by round 2
    }
    curve = _curve(scores, round_of={27.0: 1, 81.0: 2, 1 / 27: 1, 1 / 81: 2})
    summary = extension_summary(curve, _cells(), 2)
    json.dumps(summary)  # written as JSON
    wide, narrow = summary["cells"]["3|artist"], summary["cells"]["3|artist@10"]
    assert wide["limit_reached"] and not wide["bracketed"] and wide["side"] == "high"
    assert wide["best_factor"] == 81.0 and wide["extensions"] == [27.0, 81.0]
    assert narrow["bracketed"] and not narrow["limit_reached"] and narrow["best_factor"] == pytest.approx(1 / 27)
    assert set(summary["cells"]) == {"3|artist", "3|artist@10"}  # baselines have no alpha*
    old_table = extension_summary(curve.drop(columns="curve_round"), _cells(), 0)  # before extension rounds
    assert old_table["cells"]["3|artist"]["extensions"] == [] and old_table["cells"]["3|artist"]["limit_reached"]


def _search(trials: list[tuple[float, list[float], bool]], status: str = "TERMINATED") -> pd.DataFrame:
    """Search rows: (alpha factor, validation curve, stopped by ASHA)."""
    return pd.DataFrame(
        {
            "cell": ["3|artist"] * len(trials),
            "status": [status] * len(trials),
            "alpha_factor": [t[0] for t in trials],
            "val_curve": [json.dumps(t[1]) for t in trials],
            "asha_stopped": [t[2] for t in trials],
            "val_pr_auc": [max(t[1]) if t[1] else math.nan for t in trials],
        }
    )


def test_a_trial_that_converged_early_counts_at_its_best() -> None:
    """The old rule compared at the deepest epoch two trials reached (9 here) and dropped the
    trial that stopped by its own early stopping at epoch 5 with the best score of all."""
    search = _search(
        [
            (1.0, [60, 65, 70, 72, 74, 76, 77, 78, 79, 80, 80, 80], False),  # the heuristic: 12 epochs, best 80
            (0.3, [70, 84, 83, 82, 81], False),  # converged: early stopping after epoch 5, best 84
            (3.0, [60, 70, 75, 78, 80, 81, 82, 83, 83], True),  # ASHA stopped it at epoch 9
            (9.0, [50, 52, 53], True),  # ASHA stopped it at epoch 3
        ]
    )
    assert tuned_alpha_factor(search, "3|artist") == 0.3


def test_a_stopped_trial_is_judged_at_the_depth_it_reached() -> None:
    # x3 leads everyone at epoch 2, where ASHA stopped it; the heuristic only passes it later.
    search = _search([(1.0, [50, 60, 70, 90], False), (3.0, [65, 66], True), (0.3, [40, 45, 50], True)])
    assert tuned_alpha_factor(search, "3|artist") == 3.0
    # A trial ahead at its own depth but behind a longer one there loses.
    search = _search([(1.0, [50, 70, 90], False), (3.0, [65, 66], True)])
    assert tuned_alpha_factor(search, "3|artist") == 1.0


def test_tuned_alpha_ignores_failed_and_other_cells_trials() -> None:
    ok = _search([(1.0, [50, 60], False), (2.0, [70, 80], True)])
    failed = _search([(5.0, [90, 99], False)], status="ERROR")
    assert tuned_alpha_factor(pd.concat([ok, failed], ignore_index=True), "3|artist") == 2.0
    assert tuned_alpha_factor(ok, "9|artist") is None
    assert tuned_alpha_factor(_search([(1.0, [50], False)]), "3|artist") == 1.0  # one trial: it
