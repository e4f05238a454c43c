"""Segment scoring (segment_song, song_probabilities) and the Predictor: checkpoint -> song-level
mood probabilities, on real audio clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.errors import AudioDecodeError, CheckpointError
from mtlmood.inference import Predictor, segment_song, song_probabilities
from mtlmood.model import MoodCNN
from mtlmood.synth.checkpoints import untrained_checkpoint

MOODS = ["calm", "dark", "energetic", "happy", "sad"]
SEGMENT = ModelConfig().segment_frames  # the paper's ~3 s window
MAX_FRAMES = FeatureConfig().max_frames  # the first 29 s
AUDIO_SUFFIXES = {".ogg", ".mp3", ".flac", ".wav"}


def test_segment_song_keeps_non_overlapping_segments_of_the_first_29_s() -> None:
    features = np.arange(3000 * 4, dtype=np.float32).reshape(3000, 4)
    segments = segment_song(features, SEGMENT, MAX_FRAMES)
    assert MAX_FRAMES == int(29 * 62.5) and segments.shape == (MAX_FRAMES // SEGMENT, SEGMENT, 4)
    np.testing.assert_array_equal(segments.reshape(-1, 4), features[: len(segments) * SEGMENT])
    assert segment_song(features[: 2 * SEGMENT], SEGMENT).shape == (2, SEGMENT, 4)
    assert segment_song(features[: 2 * SEGMENT - 1], SEGMENT).shape == (1, SEGMENT, 4)  # the remainder is dropped


def test_short_song_is_one_zero_padded_segment() -> None:
    features = np.ones((50, 4), dtype=np.float32)
    segments = segment_song(features, SEGMENT, MAX_FRAMES)
    assert segments.shape == (1, SEGMENT, 4)
    assert np.all(segments[0, :50] == 1) and np.all(segments[0, 50:] == 0)
    assert segment_song(np.zeros((0, 4), np.float32), SEGMENT).shape == (1, SEGMENT, 4)


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
        np.testing.assert_allclose(
            song_probabilities(model, iter(songs), 16, None, batch_size=batch_size), probs, rtol=1e-5, atol=1e-6
        )
    assert song_probabilities(model, [], 16).shape == (0, 3)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """An (untrained) paper-input model, 8 filters wide, saved and loaded as a real checkpoint."""
    artists = [f"artist:{i}" for i in range(50)]
    directory = untrained_checkpoint(
        tmp_path_factory.mktemp("ckpt"), n_filters=8, moods=MOODS, meta_names=artists, alpha=0.1
    )
    return Predictor.from_checkpoint(directory)


def test_predicts_every_real_clip(predictor: Predictor, real_audio_dir: Path) -> None:
    files = sorted(p for p in real_audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    assert len(files) == 8
    seen = {}
    for path in files:
        prediction = predictor.predict_file(path, top_k=3)
        probs = np.array(list(prediction.probabilities.values()))
        assert list(prediction.probabilities) == MOODS
        assert np.all((probs > 0) & (probs < 1))
        assert len(prediction.top) == 3
        assert [p for _, p in prediction.top] == sorted(probs, reverse=True)[:3]
        seen[path.name] = prediction
    # 29 s cap: 1813 frames -> 9 segments of 187; 15.8 s -> 5; the 5.3 s trumpet loop -> 1.
    assert seen["Kevin_MacLeod_-_Vibe_Ace.ogg"].n_segments == 9
    assert seen["Kevin_MacLeod_-_Vibe_Ace.ogg"].duration_s == pytest.approx(29.0, abs=0.05)
    assert seen["gs-16b-2c-44100hz.wav"].n_segments == 5
    trumpet = seen["sorohanro_-_solo-trumpet-06.ogg"]
    assert trumpet.n_segments == 1 and trumpet.duration_s == pytest.approx(5.33, abs=0.05)
    # The same excerpt as FLAC and WAV decodes to identical samples, hence identical moods.
    assert seen["gs-16b-2c-44100hz.flac"].probabilities == seen["gs-16b-2c-44100hz.wav"].probabilities
    assert trumpet.to_dict()["top"][0]["mood"] == trumpet.top[0][0]


def test_bytes_features_and_segments_agree(predictor: Predictor, real_audio_dir: Path) -> None:
    from mtlmood.features import features_from_file

    path = real_audio_dir / "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg"
    from_file = predictor.predict_file(path)
    from_bytes = predictor.predict_bytes(path.read_bytes(), name=path.name)
    assert from_bytes.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    features = features_from_file(path, predictor.feature_config)
    segments = predictor.segments(features)
    assert segments.shape == (9, SEGMENT, predictor.feature_config.n_mels)
    np.testing.assert_array_equal(segments, segment_song(features, SEGMENT, MAX_FRAMES))
    per_segment = predictor.predict_segments(segments)
    assert per_segment.shape == (9, len(MOODS))
    np.testing.assert_allclose(predictor.predict_features(features), per_segment.mean(0), rtol=1e-6)
    np.testing.assert_allclose(list(from_file.probabilities.values()), per_segment.mean(0), rtol=1e-5)
    # Segments of several songs in one batch score the same as one song at a time (serving batches them).
    other = predictor.segments(features[:400])
    mixed = predictor.predict_segments(np.concatenate([segments, other]))
    np.testing.assert_allclose(mixed[:9], per_segment, rtol=1e-5, atol=1e-6)


def test_bad_input_errors(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError):
        predictor.predict_bytes(b"definitely not audio", name="junk.mp3")
    with pytest.raises(AudioDecodeError):
        predictor.predict_file(tmp_path / "missing.ogg")
    with pytest.raises(ValueError, match="segments of shape"):
        predictor.predict_segments(np.zeros((2, 100, 96), np.float32))
    with pytest.raises(ValueError, match="features of shape"):
        predictor.predict_features(np.zeros((500, 40), np.float32))
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(tmp_path)
