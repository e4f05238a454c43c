"""Log-mel features: the musicnn/librosa reference, frame counts, codec agreement, scale, and the
fast path's window and filterbank equal to librosa's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest

from mtlmood.audio import load_audio
from mtlmood.config import FeatureConfig
from mtlmood.features import features_from_bytes, features_from_file, log_mel, n_frames

CFG = FeatureConfig()
TRUMPET = "sorohanro_-_solo-trumpet-06.ogg"  # 5.33 s


def test_equals_a_direct_librosa_computation(real_audio_dir: Path) -> None:
    path = real_audio_dir / "Kevin_MacLeod_-_Vibe_Ace.ogg"
    y, _ = librosa.load(path, sr=16000, duration=29.0)
    mel = librosa.feature.melspectrogram(y=y, sr=16000, hop_length=256, n_fft=512, n_mels=96).T
    expected = np.log10(10000 * mel + 1)  # musicnn's extractor, without its float16 cast
    feats = features_from_file(path, CFG)
    assert feats.dtype == np.float32 and feats.flags.c_contiguous
    np.testing.assert_array_equal(feats, expected)
    # musicnn's float16 cast only quantises: the documented bound holds.
    quantised = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
    assert np.abs(feats - quantised).max() < 3e-4


def test_29_seconds_give_1813_frames_and_the_trumpet_334(real_audio_dir: Path) -> None:
    long = features_from_file(real_audio_dir / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg", CFG)
    assert long.shape == (1813, 96) == (n_frames(29 * 16000, CFG), CFG.n_mels)
    trumpet = features_from_file(real_audio_dir / TRUMPET, CFG)
    # 5.33 s * 62.5 frames/s = 333.3; centred framing gives 1 + 85335 // 256 = 334.
    assert trumpet.shape == (334, 96)
    assert trumpet.shape[0] == n_frames(load_audio(real_audio_dir / TRUMPET, CFG).shape[0], CFG)


def test_flac_and_wav_identical_mp3_close(real_audio_dir: Path) -> None:
    flac = features_from_file(real_audio_dir / "gs-16b-2c-44100hz.flac", CFG)
    wav = features_from_file(real_audio_dir / "gs-16b-2c-44100hz.wav", CFG)
    mp3 = features_from_file(real_audio_dir / "gs-16b-2c-44100hz.mp3", CFG)
    np.testing.assert_array_equal(flac, wav)
    # The MP3 is lossy and 1117 samples longer (encoder padding, at the end): 2 extra
    # frames, then frame-aligned features that differ a little. Measured: mean |diff|
    # 0.043, 99th percentile 0.26, correlation 0.998, on a 0..6 scale.
    assert flac.shape == (990, 96) and mp3.shape == (992, 96)
    diff = np.abs(mp3[: len(flac)] - flac)
    assert diff.mean() < 0.08
    assert np.percentile(diff, 99) < 0.5
    assert np.corrcoef(mp3[: len(flac)].ravel(), flac.ravel())[0, 1] > 0.99


def test_scale_silence_and_a_tone_land_where_expected() -> None:
    assert np.array_equal(log_mel(np.zeros(16000, dtype=np.float32), CFG), np.zeros((63, 96), np.float32))
    t = np.arange(3 * 16000) / 16000
    feats = log_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), CFG)
    assert feats.min() >= 0 and 3 < feats.max() < 8  # log10(1 + 1e4 * power) of a loud tone
    centres = librosa.mel_frequencies(n_mels=CFG.n_mels + 2, fmax=CFG.sample_rate / 2)[1:-1]
    assert abs(centres[feats[10:-10].mean(axis=0).argmax()] - 1000) < 60  # band nearest 1 kHz


def test_bytes_give_the_same_features_as_the_file(real_audio_dir: Path) -> None:
    path = real_audio_dir / "gs-16b-2c-44100hz.mp3"
    np.testing.assert_array_equal(features_from_bytes(path.read_bytes(), CFG, path.name), features_from_file(path, CFG))


def test_log_mel_rejects_non_mono_or_empty_waves() -> None:
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 1000), dtype=np.float32), CFG)
    with pytest.raises(ValueError, match="non-empty"):
        log_mel(np.zeros(0, dtype=np.float32), CFG)


def test_other_feature_settings_are_honoured(real_audio_dir: Path) -> None:
    cfg = FeatureConfig(n_mels=64, hop_length=512, max_seconds=2.0)
    feats = features_from_file(real_audio_dir / TRUMPET, cfg)
    assert feats.shape == (1 + 32000 // 512, 64)


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels"), [(16000, 512, 96), (16000, 512, 32), (22050, 2048, 128), (8000, 256, 40)]
)
def test_the_fast_paths_window_and_filterbank_are_librosas_bit_for_bit(
    sample_rate: int, n_fft: int, n_mels: int
) -> None:
    """mtlmood.mel_filters rebuilds them without importing librosa (a replica's cold start)."""
    from mtlmood.mel_filters import hann_window, slaney_mel_filterbank

    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)
    got = slaney_mel_filterbank(sample_rate, n_fft, n_mels)
    assert got.dtype == expected.dtype == np.float32 and np.array_equal(got, expected)
    assert np.array_equal(hann_window(n_fft), librosa.filters.get_window("hann", n_fft, fftbins=True))


def test_the_fast_path_imports_no_librosa(real_audio_dir: Path) -> None:
    """What a Serve replica does per request: decode (a 44.1 kHz stereo file: resampled) and the
    fast log-mel, without librosa, numba or scipy.signal (~0.9 CPU-s of every replica's start)."""
    clip = real_audio_dir / "gs-16b-2c-44100hz.flac"
    code = (
        "import sys; from mtlmood.features import features_from_bytes; from mtlmood.config import FeatureConfig;"
        f"features_from_bytes(open({str(clip)!r}, 'rb').read(), FeatureConfig(), method='fast');"
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
