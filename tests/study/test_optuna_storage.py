"""Each cell's Optuna study in Optuna's own storage (study.optuna_store): where it is, what it
is called, the setting's checks; and, with the real CellSearcher driven as Tune drives it
(no Ray cluster), that a stored search samples exactly as the in-memory one and that a
search resumed from Tune's saved state writes no trial twice and asks the heuristic again
when the driver died after asking it."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from mtlmood.errors import ConfigError
from study.config import load_study_config
from study.optuna_store import STALE_ATTR, TUNE_TRIAL_ATTR, fresh_storage, storage_url
from study.optuna_urls import cell_study_name, default_storage_url

CELLS = ["3|artist", "3|artist@10"]


def _study(tmp_path: Path, *sets: str, name: str = "alpha") -> Any:
    return load_study_config(
        "synthetic", [f"name={name}", f"storage_path={tmp_path / 'studies'}", "search.trials_per_cell=5", *sets]
    )


def test_default_storage_names_and_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _study(tmp_path)
    assert storage_url(study) == f"sqlite:///{tmp_path / 'studies' / 'alpha' / 'optuna.db'}"
    assert cell_study_name(study.name, "3|artist@10") == "alpha:3|artist@10"
    # On an object store SQLite cannot live beside the study: a file on this machine, named after the URI.
    monkeypatch.setenv("MTLMOOD_REMOTE_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "cache" / "optuna" / "s3" / "bucket" / "studies" / "alpha" / "optuna.db"
    assert default_storage_url("s3://bucket/studies/alpha?region=eu-west-1") == f"sqlite:///{local}"
    # The setting wins; a relative SQLite file is resolved once against the working directory.
    monkeypatch.chdir(tmp_path)
    assert storage_url(_study(tmp_path, "search.optuna_storage=sqlite:///dbs/o.db")) == (
        f"sqlite:///{tmp_path / 'dbs' / 'o.db'}"
    )
    server = "postgresql://mtlmood@db.internal:5432/studies"
    assert storage_url(_study(tmp_path, f"search.optuna_storage={server}")) == server
    for bad, why in (
        ("not a url", "database URL"),
        ("postgress://u@host/db", "no database SQLAlchemy knows"),
        ("postgresql://u:secret@host/db", "must not hold a password"),
        ("sqlite://", "name a database file"),
        ("'sqlite:///:memory:'", "name a database file"),
    ):
        with pytest.raises(ConfigError, match=why) as error:
            _study(tmp_path, f"search.optuna_storage={bad}")
        assert str(error.value).startswith("search.optuna_storage=")


def _run(searcher: Any, trial_id: str, complete: bool = True) -> dict[str, Any]:
    """One trial as Tune drives the searcher: suggest, then (optionally) a result and completion."""
    config = searcher.suggest(trial_id)
    if complete:
        _finish(searcher, trial_id, config)
    return config


def _finish(searcher: Any, trial_id: str, config: dict[str, Any]) -> None:
    score = 60.0 - (config["alpha_factor"] - 0.7) ** 2  # deterministic: a rerun reports the same
    searcher.on_trial_result(trial_id, {"val_pr_auc": score - 1, "training_iteration": 1})
    searcher.on_trial_complete(trial_id, {"val_pr_auc": score, "training_iteration": 2})


def _killed_and_resumed(study: Any, storage: Any, tmp_path: Path, tag: str) -> tuple[list, Any]:
    """The search of two cells, its driver killed and resumed the way Tune does it; the
    suggestions after the resume and the resumed searcher."""
    from study.space import CELL, make_cell_searcher

    searcher = make_cell_searcher(study, CELLS, storage)
    tuner_pkl = pickle.dumps(searcher)  # Tune pickles the search algorithm into tuner.pkl at once
    first = _run(searcher, "t0", complete=False)
    saved = tmp_path / f"searcher-{tag}.pkl"
    searcher.save(str(saved))  # Tune's last experiment checkpoint: t0 asked, running
    _finish(searcher, "t0", first)  # after the save: t0 told, the next cell's heuristic asked...
    _run(searcher, "t1", complete=False)
    _run(searcher, "t2", complete=False)  # ...and a sampled trial; then the driver dies

    resumed = pickle.loads(tuner_pkl)  # Tuner.restore: tuner.pkl, then the saved searcher state
    resumed.restore(str(saved))
    _finish(resumed, "t0", first)  # Tune runs t0 again: it was running in the saved state
    after = [_run(resumed, f"r{i}") for i in range(6)]
    assert after[0] == {"alpha_factor": 1.0, CELL: CELLS[1]}  # the second cell's heuristic, asked again
    return after, resumed


def test_a_stored_search_samples_as_in_memory_and_resumes_without_duplicates(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import optuna

    study = _study(tmp_path)
    in_memory, _ = _killed_and_resumed(study, None, tmp_path, "memory")
    stored, resumed = _killed_and_resumed(study, fresh_storage(study, CELLS), tmp_path, "db")
    assert stored == in_memory  # the same alphas, TPE's included, before and after the resume

    url = storage_url(study)
    assert sorted(optuna.get_all_study_names(url)) == sorted(cell_study_name("alpha", key) for key in CELLS)
    for key in CELLS:
        trials = optuna.load_study(study_name=cell_study_name("alpha", key), storage=url).trials
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        told = [t.user_attrs[TUNE_TRIAL_ATTR] for t in complete]
        assert len(told) == len(set(told)) == resumed.issued[key]  # every issued trial once, t0 included
        stale = [t for t in trials if t.state != optuna.trial.TrialState.COMPLETE]
        assert all(t.state == optuna.trial.TrialState.FAIL and STALE_ATTR in t.user_attrs for t in stale)
        assert {t.user_attrs[TUNE_TRIAL_ATTR] for t in stale} == ({"t1"} if key == CELLS[1] else {"t2"})
    heuristic = optuna.load_study(study_name=cell_study_name("alpha", CELLS[1]), storage=url)
    assert [t.params["alpha_factor"] for t in heuristic.trials if t.state.is_finished()].count(1.0) == 2


def test_a_fresh_search_replaces_its_own_leftover_and_refuses_anothers(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import optuna

    from study.space import make_cell_searcher

    shared = f"search.optuna_storage=sqlite:///{tmp_path / 'shared.db'}"
    study = _study(tmp_path, shared)
    _run(make_cell_searcher(study, CELLS, fresh_storage(study, CELLS)), "t0", complete=False)
    # The same study started afresh (its Tune state set aside): its leftover study is replaced.
    make_cell_searcher(study, CELLS, fresh_storage(study, CELLS))
    left = optuna.load_study(study_name=cell_study_name("alpha", CELLS[0]), storage=storage_url(study))
    assert [t.state for t in left.trials] == [optuna.trial.TrialState.WAITING]  # the heuristic, enqueued
    # Another study of the same name in that database is never touched.
    other = load_study_config("synthetic", ["name=alpha", f"storage_path={tmp_path / 'elsewhere'}", shared])
    with pytest.raises(ConfigError, match="another name"):
        fresh_storage(other, CELLS)
