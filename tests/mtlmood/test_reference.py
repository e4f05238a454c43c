"""The non-deep reference: log-mel mean/std + logistic regression per mood, C chosen on validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers.mtl_synthetic import N_MELS, make_run_data, small_config
from mtlmood.metrics import macro_scores
from mtlmood.reference import ReferenceResult, fit_reference, song_statistics
from mtlmood.rundata import RunData


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    directory = tmp_path_factory.mktemp("synthetic")
    return make_run_data(directory, small_config(directory))


@pytest.fixture(scope="module")
def result(data: RunData) -> ReferenceResult:
    return fit_reference(data)


def test_song_statistics_are_band_means_then_stds_of_the_first_frames() -> None:
    frames = np.arange(12, dtype=np.float32).reshape(6, 2)
    stats = song_statistics(frames, max_frames=4)  # rows 0..3 only
    np.testing.assert_allclose(stats, [3.0, 4.0, np.std([0, 2, 4, 6]), np.std([1, 3, 5, 7])])
    assert song_statistics(np.zeros((0, 2), np.float32), 4).tolist() == [0, 0, 0, 0]


def test_reference_learns_the_synthetic_moods(result: ReferenceResult) -> None:
    test = result.scores
    assert test["n_labels"] == 3
    assert test["pr_auc"] > test["prevalence"] + 25, test  # far above chance, on the CNN's % scale
    assert test["roc_auc"] > 75, test
    assert result.C in (0.01, 0.1, 1.0, 10.0) and set(result.val_pr_auc_by_C) == {0.01, 0.1, 1.0, 10.0}
    assert result.val_scores["pr_auc"] == max(result.val_pr_auc_by_C.values())  # chosen on validation
    assert "per_label" not in result.val_scores and result.seconds > 0
    assert result.to_dict()["C"] == result.C


def test_rows_align_with_the_test_song_ids(data: RunData, result: ReferenceResult) -> None:
    assert result.song_ids == data.song_ids("test")
    assert result.y_prob.shape == result.y_true.shape == (len(data.splits["test"]), data.n_moods)
    np.testing.assert_array_equal(result.y_true, data.targets("test")[0])
    assert ((result.y_prob >= 0) & (result.y_prob <= 1)).all()
    assert macro_scores(result.y_true, result.y_prob, data.mood_names) == result.scores
    # Row i is song i: scoring a shuffled copy with its shuffled targets gives the same scores.
    order = np.random.default_rng(0).permutation(len(result.song_ids))
    assert macro_scores(result.y_true[order], result.y_prob[order], data.mood_names)["pr_auc"] == pytest.approx(
        result.scores["pr_auc"]
    )


def test_labels_constant_in_training_predict_their_prevalence(data: RunData) -> None:
    n = len(data.labelled)
    moods = np.asarray(data.labelled.mood_targets)
    never, always = np.zeros((n, 1), np.float32), np.ones((n, 1), np.float32)
    labelled = dataclasses.replace(
        data.labelled,
        mood_names=[*data.mood_names, "never", "always"],
        mood_targets=np.concatenate([moods, never, always], axis=1),
    )
    result = fit_reference(dataclasses.replace(data, labelled=labelled), C_grid=(1.0,))
    assert (result.y_prob[:, 3] == 0).all() and (result.y_prob[:, 4] == 1).all()
    assert set(result.scores["excluded_labels"]) == {"never", "always"} and result.scores["n_labels"] == 3


def test_bad_c_grid_is_refused(data: RunData) -> None:
    with pytest.raises(ValueError, match="C_grid"):
        fit_reference(data, C_grid=(0.0, 1.0))
    assert N_MELS * 2 == len(song_statistics(data.cache.features(data.song_ids("train")[0]), 10))
