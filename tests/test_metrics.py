"""Song-level evaluation: segmentation, mean of segment sigmoids, macro scores in percent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from mtlmood.config import ModelConfig
from mtlmood.metrics import json_safe, macro_scores, segment_song, song_probabilities
from mtlmood.model import MoodCNN

MAX_FRAMES = int(29 * 62.5)


def test_segment_song_keeps_non_overlapping_segments_of_the_first_29_s() -> None:
    features = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    segments = segment_song(features, 187, MAX_FRAMES)
    assert MAX_FRAMES == 1812 and segments.shape == (9, 187, 4)
    np.testing.assert_array_equal(segments.reshape(-1, 4), features[: 9 * 187])
    assert segment_song(features[:374], 187).shape == (2, 187, 4)
    assert segment_song(features[:373], 187).shape == (1, 187, 4)  # the remainder is dropped


def test_short_song_is_one_zero_padded_segment() -> None:
    features = np.ones((50, 4), dtype=np.float32)
    segments = segment_song(features, 187, MAX_FRAMES)
    assert segments.shape == (1, 187, 4)
    assert np.all(segments[0, :50] == 1) and np.all(segments[0, 50:] == 0)
    assert segment_song(np.zeros((0, 4), np.float32), 187).shape == (1, 187, 4)


def test_macro_scores_in_percent_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = (rng.random((60, 4)) > 0.6).astype(np.float32)
    y_prob = np.clip(y_true * 0.3 + rng.random((60, 4)) * 0.7, 0, 1)
    scores = macro_scores(y_true, y_prob, ["a", "b", "c", "d"])
    assert scores["roc_auc"] == pytest.approx(100 * roc_auc_score(y_true, y_prob, average="macro"))
    assert scores["pr_auc"] == pytest.approx(100 * average_precision_score(y_true, y_prob, average="macro"))
    assert scores["prevalence"] == pytest.approx(100 * y_true.mean())
    assert scores["n_labels"] == 4 and scores["excluded_labels"] == [] and scores["n_songs"] == 60
    assert set(scores["per_label"]) == {"a", "b", "c", "d"}
    perfect = macro_scores(y_true, y_true)
    assert perfect["roc_auc"] == 100.0 and perfect["pr_auc"] == 100.0


def test_labels_without_positives_or_negatives_are_excluded_and_listed() -> None:
    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=np.float32)
    y_prob = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.8, 0.2, 0.5], [0.1, 0.4, 0.5]])
    scores = macro_scores(y_true, y_prob, ["happy", "sad", "calm"])
    assert scores["excluded_labels"] == ["sad", "calm"]
    assert scores["n_labels"] == 1 and scores["roc_auc"] == 100.0 and scores["prevalence"] == 50.0
    nothing = macro_scores(np.zeros((3, 2)), np.full((3, 2), 0.5))
    assert math.isnan(nothing["roc_auc"]) and math.isnan(nothing["pr_auc"])
    assert nothing["excluded_labels"] == ["0", "1"]
    assert json_safe(nothing)["roc_auc"] is None  # NaN never reaches a JSON file


def test_non_finite_probabilities_give_nan_scores_not_a_crash() -> None:
    scores = macro_scores(np.array([[1.0], [0.0]]), np.array([[np.nan], [0.2]]))
    assert math.isnan(scores["pr_auc"]) and "diverged" in scores["warning"]


def test_song_probabilities_average_segment_sigmoids_and_batching_does_not_matter() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_filters=4, n_blocks=2, segment_frames=16, n_mels=8)
    model = MoodCNN(cfg, n_moods=3, n_meta=2)
    model.train()
    rng = np.random.default_rng(1)
    songs = [rng.random((n, 8), dtype=np.float32) for n in (5, 16, 40, 100, 33)]
    probs = song_probabilities(model, songs, 16, None, batch_size=256)
    assert model.training, "the caller's train/eval mode is restored"
    assert probs.shape == (5, 3) and np.all((probs > 0) & (probs < 1))
    model.eval()
    with torch.inference_mode():
        for song, row in zip(songs, probs):
            logits = model(torch.from_numpy(segment_song(song, 16)))[0]
            np.testing.assert_allclose(row, torch.sigmoid(logits).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    for batch_size in (1, 3, 7):
        np.testing.assert_allclose(song_probabilities(model, iter(songs), 16, None, batch_size=batch_size),
                                   probs, rtol=1e-5, atol=1e-6)
    assert song_probabilities(model, [], 16).shape == (0, 3)
