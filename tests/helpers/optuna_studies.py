"""What a user finds in a finished (or resumed) study's Optuna storage: one Optuna study per
searched cell, opened by ``optuna.load_study`` under its documented name, holding exactly
the search trials of the trial table, none twice (study.optuna_store, docs/STUDY.md)."""

from __future__ import annotations

import json
import math

import pandas as pd

from mtlmood import storage
from study.optuna_store import STUDIES_FILE, TUNE_TRIAL_ATTR
from study.optuna_urls import cell_study_name


def assert_optuna_studies(run_dir: str, study_name: str, search: pd.DataFrame, url: str) -> None:
    """Each searched cell of ``search`` (the study's search rows) has its Optuna study in
    ``url`` (the storage the docs name for this study), listed once, and

    * its COMPLETE trials are the search rows that finished or that ASHA stopped (status
      TERMINATED: Tune tells Optuna the last score of a stopped trial), one per Tune trial
      (``tune_trial_id``), with the row's alpha factor;
    * no Tune trial has two COMPLETE trials, and nothing is left RUNNING or WAITING.
    """
    import optuna

    index = json.loads(storage.read_text(storage.join(run_dir, STUDIES_FILE)))
    assert index["storage"] == url, index
    cells = sorted(set(search["cell"]))
    assert index["studies"] == {cell: cell_study_name(study_name, cell) for cell in cells}, index
    names = optuna.get_all_study_names(url)
    assert sorted(names) == sorted(index["studies"].values()), names  # one study per cell, nothing else
    for cell in cells:
        rows = search[search["cell"] == cell]
        loaded = optuna.load_study(study_name=cell_study_name(study_name, cell), storage=url)
        complete = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        ids = [t.user_attrs.get(TUNE_TRIAL_ATTR) for t in complete]
        assert len(ids) == len(set(ids)), f"{cell}: a Tune trial told twice: {ids}"
        finished = rows[rows["status"] == "TERMINATED"]
        assert sorted(ids) == sorted(finished["trial_id"]), (cell, ids, list(finished["trial_id"]))
        factors = dict(zip(finished["trial_id"], finished["alpha_factor"]))
        assert all(math.isclose(t.params["alpha_factor"], factors[t.user_attrs[TUNE_TRIAL_ATTR]]) for t in complete)
        assert any(t.params["alpha_factor"] == 1.0 for t in complete), cell  # the heuristic (points_to_evaluate)
        waiting = loaded.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
        assert not waiting, f"{cell}: {[(t.number, t.state.name) for t in waiting]}"
