"""Phase 1 keeps every cell to itself: the real CellSearcher (one Optuna study per cell) and
CellASHA (rungs per cell), driven with synthetic results on very different scales, as
PR-AUC of 3 moods (~70 %) and 50 moods (~17 %) are. No Ray cluster is needed: these
are the objects Tune calls."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from ray.tune.experiment import Trial  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from study.config import load_study_config  # noqa: E402
from study.space import CELL, make_cell_scheduler, make_cell_searcher  # noqa: E402

CELLS = ["3|artist", "9|artist", "50|artist"]
SCALE = {"3|artist": 70.0, "9|artist": 35.0, "50|artist": 17.0}


def _study(**overrides: object):
    sets = [f"{k}={v}" for k, v in overrides.items()]
    return load_study_config(
        "mtg-jamendo",
        [
            "search.trials_per_cell=6",
            "scheduler.grace_period=1",
            "scheduler.reduction_factor=2",
            "run.train.max_epochs=8",
            *sets,
        ],
    )


def _trial(config: dict) -> Trial:
    return Trial("__fake", config=config, stub=True)


def test_each_cell_gets_its_own_budget_and_starts_at_the_heuristic() -> None:
    searcher = make_cell_searcher(_study(), CELLS)
    configs = []
    for i in range(100):
        config = searcher.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            break
        configs.append(config)
    assert len(configs) == 18
    per_cell = {key: [c for c in configs if c[CELL] == key] for key in CELLS}
    assert all(len(v) == 6 for v in per_cell.values())
    # Round robin: the first three trials open the three cells, each at the heuristic (x1).
    assert [c[CELL] for c in configs[:3]] == CELLS
    assert all(per_cell[key][0]["alpha_factor"] == 1.0 for key in CELLS)


def test_results_reach_only_their_own_cells_study() -> None:
    searcher = make_cell_searcher(_study(), CELLS)
    for i in range(18):
        config = searcher.suggest(f"t{i}")
        scale = SCALE[config[CELL]]
        searcher.on_trial_complete(f"t{i}", {"val_pr_auc": scale + config["alpha_factor"], "training_iteration": 3})
    for key in CELLS:
        study = searcher.searchers[key]._ot_study
        values = [t.value for t in study.trials if t.value is not None]
        assert len(values) == 6
        # Every value of this cell's study sits on this cell's scale: nothing leaked in.
        assert all(SCALE[key] < v < SCALE[key] + 25 for v in values)


def test_asha_rungs_are_per_cell() -> None:
    """A 50-mood trial that leads its own cell is never stopped by 3-mood results."""
    scheduler = make_cell_scheduler(_study())
    global_asha = ASHAScheduler(
        time_attr="training_iteration", metric="val_pr_auc", mode="max", max_t=9, grace_period=1, reduction_factor=2
    )
    strong = [_trial({CELL: "3|artist"}) for _ in range(4)]
    weak = [_trial({CELL: "50|artist"}) for _ in range(4)]
    for trial in strong + weak:
        scheduler.on_trial_add(None, trial)
        global_asha.on_trial_add(None, trial)
    decisions_cell, decisions_global = {}, {}
    for rank, trial in enumerate(strong):
        result = {"training_iteration": 1, "val_pr_auc": 70.0 + rank}
        scheduler.on_trial_result(None, trial, result)
        global_asha.on_trial_result(None, trial, result)
    for rank in (1, 2, 0, 3):  # the cell's leader reports last, its worst trial after two better ones
        trial = weak[rank]
        result = {"training_iteration": 1, "val_pr_auc": 17.0 + rank}
        decisions_cell[rank] = scheduler.on_trial_result(None, trial, result)
        decisions_global[rank] = global_asha.on_trial_result(None, trial, result)
    # The best 50-mood trial (rank 3) leads its cell: it goes on. A single ASHA over all
    # cells would stop every 50-mood trial at its first rung.
    assert decisions_cell[3] == TrialScheduler.CONTINUE
    assert all(d == TrialScheduler.STOP for d in decisions_global.values())
    # Within its own cell ASHA still stops: the worst 50-mood trial, below the cell's median.
    assert decisions_cell[0] == TrialScheduler.STOP
    assert set(scheduler.cells) == {"3|artist", "50|artist"}


def test_searcher_survives_a_pickle_round_trip(tmp_path) -> None:
    searcher = make_cell_searcher(_study(), CELLS)
    first = [searcher.suggest(f"t{i}") for i in range(4)]
    searcher.save(str(tmp_path / "s.pkl"))
    restored = make_cell_searcher(_study(), CELLS)
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.issued == searcher.issued and first[3][CELL] == CELLS[0]
    assert searcher.suggest("t4") == restored.suggest("t4")


def _experiment_state(folder, trials: dict[str, tuple[dict, str]]) -> None:
    """An experiment state file as Tune's TuneController.save_to_dir writes it: these trials
    (id -> (config, Tune status))."""
    import json

    data = []
    for trial_id, (config, status) in trials.items():
        trial = Trial("__fake", config=config, trial_id=trial_id, stub=True)
        trial.status = status
        data.append(trial.get_json_state())
    state = {"trial_data": data, "runner_data": {}, "stats": {}}
    (folder / "experiment_state-2026-12-07_01-52-49.json").write_text(json.dumps(state))


def _run_to_the_end(searcher, first: int) -> None:
    """What Tune does until the search is over: end every live trial, ask for trial ``t<first>``
    and on, until the searcher says FINISHED (bounded)."""
    for i in range(first, first + 40):
        for live in sorted(searcher.live):
            searcher.on_trial_complete(live, {"val_pr_auc": 50.0})
        if searcher.suggest(f"t{i}") == Searcher.FINISHED:
            return
    raise AssertionError("the search did not end")


def test_searcher_runs_at_most_max_concurrent_trials() -> None:
    searcher = make_cell_searcher(_study(), CELLS, max_concurrent=2)
    assert searcher.suggest("t0") and searcher.suggest("t1")
    assert searcher.suggest("t2") is None  # two live: Tune asks again later
    searcher.on_trial_complete("t0", {"val_pr_auc": 50.0})
    assert searcher.suggest("t2")[CELL] == CELLS[2]


def test_a_resume_gives_back_a_trial_the_restored_experiment_lost(tmp_path) -> None:
    """Tune saves the searcher and the trial list in separate files; a driver killed between
    their uploads leaves a searcher that issued a trial the restored experiment lacks. The
    restored searcher gives that trial back to its cell (and fails it in the cell's Optuna
    study), so every cell still gets its whole budget and the concurrency limit is not held."""
    from optuna.trial import TrialState

    searcher = make_cell_searcher(_study(), CELLS, max_concurrent=2)
    configs = {t: searcher.suggest(t) for t in ("t0", "t1")}
    searcher.on_trial_complete("t0", {"val_pr_auc": 60.0})
    configs["t2"] = searcher.suggest("t2")  # then the driver dies: the experiment state has t0, t1
    searcher.save(str(tmp_path / "searcher-state-2026-12-07_01-52-49.pkl"))
    _experiment_state(tmp_path, {"t0": (configs["t0"], "TERMINATED"), "t1": (configs["t1"], "RUNNING")})

    restored = make_cell_searcher(_study(), CELLS, max_concurrent=2)
    restored.restore(str(tmp_path / "searcher-state-2026-12-07_01-52-49.pkl"))
    lost_cell = configs["t2"][CELL]
    assert "t2" not in restored.owner and restored.live == {"t1"}
    assert restored.issued[lost_cell] == searcher.issued[lost_cell] - 1
    # t2 was its cell's first trial, the heuristic (an enqueued point): failed, and enqueued again.
    states = [t.state for t in restored.searchers[lost_cell]._ot_study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    # The cell's trial comes back (the heuristic again), and every cell gets its whole budget of 6.
    again = restored.suggest("t3")
    assert again[CELL] == lost_cell and again["alpha_factor"] == configs["t2"]["alpha_factor"] == 1.0
    _run_to_the_end(restored, first=4)
    assert set(restored.issued.values()) == {6}
    assert sorted(restored.owner.values()).count(lost_cell) == 6


def test_a_resume_counts_a_trial_only_the_restored_experiment_has(tmp_path) -> None:
    """The other order: the trial list saved after the searcher. The restored trial the searcher
    never issued counts against its cell's budget (no cell gets more than 6), is live until it
    ends, and its result is kept out of Optuna (the searcher has no Optuna trial for it)."""
    searcher = make_cell_searcher(_study(), CELLS, max_concurrent=2)
    configs = {t: searcher.suggest(t) for t in ("t0", "t1")}
    searcher.save(str(tmp_path / "searcher-state-2026-12-07_01-52-49.pkl"))  # then t2 is issued
    searcher.on_trial_complete("t0", {"val_pr_auc": 60.0})
    extra = {"alpha_factor": 0.5, CELL: CELLS[2]}
    trials = {"t0": (configs["t0"], "TERMINATED"), "t1": (configs["t1"], "RUNNING"), "t2": (extra, "RUNNING")}
    _experiment_state(tmp_path, trials)

    restored = make_cell_searcher(_study(), CELLS, max_concurrent=2)
    restored.restore(str(tmp_path / "searcher-state-2026-12-07_01-52-49.pkl"))
    assert restored.owner["t2"] == CELLS[2] and restored.issued[CELLS[2]] == 1
    assert restored.live == {"t1", "t2"} and restored.suggest("t3") is None  # t0 ended: two live
    restored.on_trial_complete("t2", {"val_pr_auc": 40.0})  # no Optuna trial of ours: not told
    from optuna.trial import TrialState

    # The cell's study holds only its enqueued heuristic, still waiting: nothing was told.
    assert [t.state for t in restored.searchers[CELLS[2]]._ot_study.get_trials()] == [TrialState.WAITING]
    _run_to_the_end(restored, first=3)
    assert set(restored.issued.values()) == {6}


def test_a_restored_search_generator_leaves_the_end_to_its_searcher() -> None:
    """Tune's generator state, saved after the trial list, said "finished" while the restored
    searcher still had a trial to give (the S3 study's lost fourth trial, 2026-12-07)."""
    import sys

    from study.space import CellSearchGenerator

    generator = CellSearchGenerator(make_cell_searcher(_study(), CELLS))
    generator.set_state({"counter": 4, "total_samples": sys.maxsize + 1, "finished": True, "experiment": None})
    assert not generator.is_finished()


def test_a_resume_without_an_experiment_state_keeps_every_trial(tmp_path) -> None:
    searcher = make_cell_searcher(_study(), CELLS)
    for t in ("t0", "t1"):
        searcher.suggest(t)
    searcher.save(str(tmp_path / "s.pkl"))
    restored = make_cell_searcher(_study(), CELLS)
    restored.restore(str(tmp_path / "s.pkl"))
    assert set(restored.owner) == {"t0", "t1"}


def test_tuned_alpha_is_chosen_at_equal_budgets() -> None:
    """ASHA never stops the first trial of a rung, so with a small budget the heuristic (first)
    always "finishes": a trial ASHA stopped is compared at the epochs it reached, not on the
    heuristic's later epochs (tests/study/test_curve_extension.py has the rest of the rule)."""
    import json

    import pandas as pd

    from study.results import tuned_alpha_factor

    search = pd.DataFrame(
        {
            "cell": ["3|artist"] * 3 + ["3|year"],
            "status": ["TERMINATED"] * 4,
            "alpha_factor": [1.0, 0.3, 3.0, 1.0],
            "asha_stopped": [False, True, True, False],
            "val_curve": [
                json.dumps([60, 70, 75, 78, 80, 82, 90, 95]),  # the heuristic, never stopped
                json.dumps([65, 74, 77, 80, 83, 86]),  # stopped at epoch 6, ahead of it there
                json.dumps([50, 55]),  # stopped at epoch 2
                json.dumps([40, 41]),
            ],
        }
    )
    assert tuned_alpha_factor(search, "3|artist") == 0.3
    assert tuned_alpha_factor(search, "3|year") == 1.0  # one trial: it
    assert tuned_alpha_factor(search, "9|artist") is None


def test_study_plan_on_real_mtg_jamendo_metadata(mtg_jamendo_dir, capsys) -> None:
    """The dry run reads only metadata: three mood counts x two artist counts, each cell its own
    search budget, the paper's song counts, N_meta from the training songs, >= 4 ratios."""
    from mtlmood_cli.main import main

    code = main(
        [
            "study",
            "plan",
            "mtg-jamendo",
            "--set",
            f"run.dataset.root={mtg_jamendo_dir}",
            "--set",
            "search.trials_per_cell=16",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0

    def table_rows(column: str) -> list[dict[str, str]]:
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("| cell") and column in line)
        header = [c.strip() for c in lines[start].strip("|").split("|")]
        rows = []
        for line in lines[start + 2 :]:
            if not line.startswith("|"):
                break
            rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
        return rows

    cells = {row["cell"]: row for row in table_rows("mood labels")}
    for n_moods, songs in ((3, 4346), (9, 10041), (50, 17946)):
        row = cells[f"mtg-jamendo · {n_moods} moods · artist"]
        assert int(row["N_meta"]) == 50  # 50 artist classes, counted on the training songs
        assert sum(int(float(row[f"songs.{s}"])) for s in ("train", "validation", "test")) == songs
        narrow = cells[f"mtg-jamendo · {n_moods} moods · artist@10"]  # search.n_artists: 10 artist classes
        assert int(narrow["N_meta"]) == 10 and narrow["songs.train"] == row["songs.train"]
    plan = table_rows("search trials")
    searched = [row for row in plan if row["cell"].endswith(("· artist", "· artist@10"))]
    assert len(searched) == 6 and all(row["search trials"] == "16" for row in searched)
    assert len({row["N_mood/N_meta"] for row in searched}) == 6
    assert all(row["search trials"] == "0" for row in plan if row["cell"].endswith("· none"))
