"""N_meta as a study factor (search.n_artists), cell keys that stay backward compatible, and
arm names that never become nested folders. No Ray cluster: config, cells and paths only."""

from __future__ import annotations

import pytest

from mtlmood.errors import ConfigError
from study.cells import cell_key, cell_metadata, cell_slug, metadata_factor, parse_cell_key, study_cells
from study.config import load_study_config, split_metadata, trial_run_config
from study.trial import arm_slug, job_runs, run_dir_of


def test_cell_keys_of_the_default_artist_count_are_unchanged() -> None:
    assert metadata_factor("artist", 50, 50) == "artist" and cell_key(3, "artist") == "3|artist"
    assert metadata_factor("artist", 10, 50) == "artist@10" and cell_key(3, "artist@10") == "3|artist@10"
    assert metadata_factor("artist+year", 10, 50) == "artist+year@10"
    assert metadata_factor("year", 10, 50) == "year"  # no artist head: the count means nothing
    assert parse_cell_key("3|artist") == (3, "artist") and parse_cell_key("9|artist@10") == (9, "artist@10")
    assert cell_slug(3, "artist@10") == "3-artist_10" and cell_slug(3, "artist+year") == "3-artist+year"
    assert split_metadata("artist@10") == ("artist", 10) and split_metadata("artist") == ("artist", None)
    with pytest.raises(ConfigError):
        split_metadata("year@10")


def test_n_artists_crosses_only_the_metadata_sets_with_artist() -> None:
    study = load_study_config(
        "internal", ["search.metadata=[artist,year,artist+year]", "search.n_artists=[50,10]", "run.labels.n_artists=50"]
    )
    assert cell_metadata(study) == ["artist", "artist@10", "year", "artist+year", "artist+year@10"]
    assert cell_metadata(load_study_config("internal", ["search.metadata=[artist]"])) == ["artist"]  # empty: as before
    run = trial_run_config(study, 3, "artist+year@10", 0.5, 7)
    assert (run.labels.metadata, run.labels.n_artists, run.labels.n_moods) == ("artist+year", 10, 3)
    assert trial_run_config(study, 3, "artist", 0.5, 7).labels.n_artists == 50


def test_n_artists_problems_are_reported_before_any_trial() -> None:
    with pytest.raises(ConfigError, match="no metadata set"):
        load_study_config("internal", ["search.metadata=[year]", "search.n_artists=[10]"])
    with pytest.raises(ConfigError, match="must not repeat"):
        load_study_config("internal", ["search.n_artists=[10,10]"])


def test_mtg_jamendo_cells_vary_n_meta_at_each_mood_count(mtg_jamendo_dir) -> None:
    """The shipped config: 3 mood counts x (50, 10) artists; N_meta counts the training songs'
    artist classes; >= 4 ratios, and each mood count has two of them."""
    study = load_study_config("mtg-jamendo", [f"run.dataset.root={mtg_jamendo_dir}"])
    cells = study_cells(study)
    keys = {f"{n}|{m}" for n in (3, 9, 50) for m in ("none", "artist", "artist@10")}
    assert set(cells) == keys
    for n in (3, 9, 50):
        wide, narrow = cells[f"{n}|artist"], cells[f"{n}|artist@10"]
        assert (wide.n_meta, narrow.n_meta) == (50, 10)
        assert narrow.heuristic_alpha == pytest.approx(narrow.n_mood_labels / 10)
        assert narrow.facts["n_artist_classes"] == 10 and narrow.metadata_set == "artist"
        assert narrow.label == f"mtg-jamendo · {n} moods · artist@10" and narrow.slug == f"{n}-artist_10"
        assert narrow.facts["songs"] == cells[f"{n}|none"].facts["songs"]  # the shared baseline's split
    ratios = {round(c.heuristic_alpha, 6) for c in cells.values() if c.metadata != "none"}
    assert len(ratios) >= 4


def test_arm_names_are_one_folder() -> None:
    assert arm_slug("x1/3") == "x1_3" and arm_slug("heuristic") == "heuristic" and arm_slug("x0.333") == "x0.333"
    out = run_dir_of("/s/run", "curve", "3-artist", "x1/3", 1)
    assert out == "/s/run/runs/curve/3-artist/x1_3/seed-1"


def test_curve_runs_of_a_fraction_arm_live_in_one_folder_and_keep_the_display_name(tmp_path) -> None:
    study = load_study_config("internal", [f"storage_path={tmp_path}", "search.n_artists=[50,10]"])
    cell = {"n_moods": 3, "metadata": "artist@10"}
    job = {"cell": "3|artist@10", "arm": "x1/27", "alpha": 0.01, "alpha_factor": 1 / 27, "seeds": [1001, 1002]}
    runs = job_runs(study, job, cell, "curve", "")
    assert [r["arm"] for r in runs] == ["x1/27", "x1/27"]  # the table's name
    for run in runs:
        relative = run["out_dir"][len(study.run_dir) + 1 :]
        assert relative.split("/") == ["runs", "curve", "3-artist_10", "x1_27", f"seed-{run['seed']}"]
        assert run["run_config"]["labels"]["n_artists"] == 10 and run["run_config"]["labels"]["metadata"] == "artist"
