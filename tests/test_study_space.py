"""The phase-1 search space, its TPE sampler and the scheduler's seeded arms, without a Ray cluster.

OptunaSearch and ASHA are driven by hand (suggest / on_trial_complete / on_trial_result),
exactly as Tune calls them, so each test takes well under a second.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from mtlmood.errors import ConfigError
from study.config import load_study_config
from study.space import SEEDED, make_sampler, make_space, n_startup_trials, sampled_trials, seeded_points

pytest.importorskip("optuna")


def synthetic(*overrides: str) -> Any:
    """The embedded demo config: 6 moods, metadata artist and artist+year (3 seeded points)."""
    return load_study_config("synthetic", list(overrides))


def score(config: dict[str, Any]) -> float:
    """A made-up validation PR-AUC that peaks at artist+year, alpha_factor 4."""
    if config["metadata"] == "none":
        return 50.0
    bonus = 8.0 if config["metadata"] == "artist+year" else 4.0
    return 50.0 + bonus - 3.0 * abs(math.log(config["alpha_factor"] / 4.0))


def run_searcher(study: Any, trials: int, sampler: Any = None) -> tuple[list[dict[str, Any]], Any]:
    """Drive Ray's OptunaSearch as Tune does, one trial at a time: suggest, then complete."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(make_space(study), metric="val_pr_auc", mode="max",
                            points_to_evaluate=seeded_points(study), sampler=sampler or make_sampler(study))
    configs = []
    for i in range(trials):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"val_pr_auc": score(config), "training_iteration": 3})
    return configs, searcher


def tpe_model_calls(sampler: Any) -> list[int]:
    """Record the numbers of the trials for which TPE modelled past results (not random start-up)."""
    calls: list[int] = []
    original = sampler._sample

    def spy(study: Any, trial: Any, search_space: Any) -> Any:
        calls.append(trial.number)
        return original(study, trial, search_space)

    sampler._sample = spy
    return calls


def test_seeded_points_come_first_and_sampled_trials_never_choose_the_baseline() -> None:
    study = synthetic()
    points = seeded_points(study)
    assert [p["metadata"] for p in points] == ["none", "artist", "artist+year"]
    configs, _ = run_searcher(study, 30)
    seeded, sampled = configs[:len(points)], configs[len(points):]
    assert seeded == [{"n_moods": 6, "metadata": "none", SEEDED: True},
                      {"n_moods": 6, "metadata": "artist", "alpha_factor": 1.0, SEEDED: True},
                      {"n_moods": 6, "metadata": "artist+year", "alpha_factor": 1.0, SEEDED: True}]
    assert all(c["metadata"] in ("artist", "artist+year") for c in sampled)
    assert all(SEEDED not in c for c in sampled)
    assert all(0.05 <= c["alpha_factor"] <= 20.0 for c in sampled)
    # The baseline ran once; no (metadata, alpha) pair ran twice.
    keys = [(c["n_moods"], c["metadata"], c.get("alpha_factor")) for c in configs]
    assert len(set(keys)) == len(keys)


def test_several_mood_counts_each_get_one_seeded_baseline() -> None:
    study = synthetic("search.n_moods=[3,9]", "search.metadata=[artist]")
    configs, _ = run_searcher(study, 16)
    baselines = [c for c in configs if c["metadata"] == "none"]
    assert sorted(c["n_moods"] for c in baselines) == [3, 9]
    assert all(c.get(SEEDED) for c in baselines)
    assert {c["n_moods"] for c in configs[4:]} <= {3, 9}


def test_tpe_models_results_right_after_the_seeded_points_by_default() -> None:
    study = synthetic()  # "auto": 3 seeded points -> 3 start-up trials
    assert n_startup_trials(study) == 3
    sampler = make_sampler(study)
    calls = tpe_model_calls(sampler)
    run_searcher(study, 10, sampler)
    assert calls and min(calls) == 3 and set(range(3, 10)) <= set(calls)


def test_explicit_start_up_count_keeps_the_first_trials_random() -> None:
    study = synthetic("search.n_startup_trials=6")
    assert n_startup_trials(study) == 6
    sampler = make_sampler(study)
    calls = tpe_model_calls(sampler)
    run_searcher(study, 9, sampler)
    assert min(calls) == 6 and set(range(6, 9)) <= set(calls)


def test_tpe_concentrates_on_the_better_cell() -> None:
    """With TPE from trial 3, most sampled trials pick the cell the seeded points show is better."""
    configs, _ = run_searcher(synthetic(), 24)
    sampled = configs[3:]
    assert sum(c["metadata"] == "artist+year" for c in sampled) > len(sampled) / 2


def test_auto_start_up_is_the_seeded_points_capped_at_optunas_default() -> None:
    assert n_startup_trials(synthetic("search.n_moods=[3,9,50]", "search.metadata=[artist]")) == 6
    big = synthetic("search.n_moods=[3,9,50]", "search.metadata=[artist,year,artist+year]")
    assert len(seeded_points(big)) == 12 and n_startup_trials(big) == 10
    assert n_startup_trials(synthetic("search.n_startup_trials=0")) == 0


@pytest.mark.parametrize("value", ["-1", "many", "2.5", "true", "[3]"])
def test_bad_start_up_count_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="n_startup_trials"):
        synthetic(f"search.n_startup_trials={value}")


def test_start_up_count_from_yaml_and_overrides() -> None:
    assert synthetic().search.n_startup_trials == "auto"
    assert synthetic("search.n_startup_trials=4").search.n_startup_trials == 4


def test_sampled_trials_leave_the_seeded_points_out_of_the_budget() -> None:
    assert sampled_trials(synthetic()) == 8 - 3
    assert sampled_trials(synthetic("search.num_samples=2")) == 0  # the seeded points always run
    # Only baselines: nothing to sample (each baseline is seeded once).
    only_baseline = synthetic("search.metadata=[]", "search.num_samples=5")
    assert sampled_trials(only_baseline) == 0 and len(seeded_points(only_baseline)) == 1
    configs, searcher = run_searcher(only_baseline, 1)
    assert configs == [{"n_moods": 6, "metadata": "none", SEEDED: True}]
    with pytest.raises(ValueError, match="no metadata set"):  # the runner never asks for more
        searcher.suggest("one-too-many")


def test_search_table_keeps_the_seeded_baseline_rows() -> None:
    """The trial table reads a seeded baseline config as the baseline row (alpha 0)."""
    from study.cells import Cell
    from study.results import trial_table

    study = synthetic()
    configs, _ = run_searcher(study, 4)
    grid = [SimpleNamespace(config=c, metrics={"val_pr_auc": score(c), "trial_id": f"t{i}"}, error=None, path="")
            for i, c in enumerate(configs)]
    cells = {"6|none": Cell("synthetic", 6, "none", 0, 0.0), "6|artist": Cell("synthetic", 6, "artist", 10, 0.6),
             "6|artist+year": Cell("synthetic", 6, "artist+year", 15, 0.4)}
    table = trial_table(grid, "search", cells, study)
    baseline = table[table["metadata"] == "none"]
    assert len(baseline) == 1 and baseline["role"].item() == "baseline" and baseline["alpha"].item() == 0.0
    heuristic = table[(table["metadata"] == "artist") & (table["trial_id"] == "t1")]
    assert heuristic["alpha"].item() == pytest.approx(0.6)


# --- the scheduler: seeded trials are never stopped -------------------------------------------------


def _asha(*overrides: str) -> Any:
    from study.runner import search_scheduler

    scheduler = search_scheduler(synthetic("scheduler.grace_period=1", "scheduler.reduction_factor=2", *overrides))
    scheduler.set_search_properties("val_pr_auc", "max")
    return scheduler


def _feed(scheduler: Any, trial_id: str, config: dict[str, Any], value: float) -> str:
    from ray.tune.schedulers import TrialScheduler

    trial = SimpleNamespace(trial_id=trial_id, config=config)
    scheduler.on_trial_add(None, trial)
    action = scheduler.on_trial_result(None, trial, {"training_iteration": 1, "val_pr_auc": value})
    return {TrialScheduler.STOP: "stop", TrialScheduler.CONTINUE: "continue"}[action]


def test_asha_never_stops_a_seeded_trial_but_stops_a_sampled_one() -> None:
    strong = {"n_moods": 6, "metadata": "artist", "alpha_factor": 3.0}
    for protect, seeded_decision in (("true", "continue"), ("false", "stop")):
        scheduler = _asha(f"scheduler.protect_seeded={protect}")
        for i in range(4):
            assert _feed(scheduler, f"s{i}", strong, 80.0 + i) == "continue"
        assert _feed(scheduler, "weak-sampled", strong, 10.0) == "stop"
        weak_seeded = {"n_moods": 6, "metadata": "none", SEEDED: True}
        assert _feed(scheduler, "weak-seeded", weak_seeded, 10.0) == seeded_decision


def test_protected_scheduler_survives_tunes_cloudpickle() -> None:
    """Tuner.restore unpickles the scheduler from tuner.pkl (ray.cloudpickle)."""
    from ray import cloudpickle

    scheduler = cloudpickle.loads(cloudpickle.dumps(_asha()))
    for i in range(4):
        _feed(scheduler, f"s{i}", {"metadata": "artist", "alpha_factor": 2.0}, 90.0)
    assert _feed(scheduler, "seeded", {"metadata": "none", SEEDED: True}, 1.0) == "continue"


def test_scheduler_off_is_fifo() -> None:
    from ray.tune.schedulers import FIFOScheduler

    from study.runner import search_scheduler

    assert isinstance(search_scheduler(synthetic("scheduler.enabled=false")), FIFOScheduler)
