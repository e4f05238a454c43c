"""Audio decoding: every codec, librosa parity, reading only what is needed, clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from mtlmood.audio import load_audio, load_audio_bytes
from mtlmood.config import FeatureConfig
from mtlmood.errors import AudioDecodeError, MtlmoodError

CFG = FeatureConfig()

# (file, native rate, native frames) from ../shared/data/audio/SOURCE.md
REAL_CLIPS = {
    "Kevin_MacLeod_-_Vibe_Ace.ogg": (22050, 1355168),
    "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg": (22050, 2643264),
    "Karissa_Hobbs_-_Lets_Go_Fishin.ogg": (22050, 2932408),
    "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg": (22050, 1010880),
    "sorohanro_-_solo-trumpet-06.ogg": (22050, 117601),
    "gs-16b-2c-44100hz.mp3": (44100, 699311),
    "gs-16b-2c-44100hz.flac": (44100, 698194),
    "gs-16b-2c-44100hz.wav": (44100, 698194),
}


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_every_codec_decodes_to_mono_16k_first_29s(real_audio_dir: Path, name: str) -> None:
    rate, frames = REAL_CLIPS[name]
    wave = load_audio(real_audio_dir / name, CFG)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert np.isfinite(wave).all() and np.abs(wave).max() > 0.01
    kept = min(frames, int(CFG.max_seconds * rate))  # only the first 29 s are read
    assert wave.shape[0] == math.ceil(kept * CFG.sample_rate / rate)


@pytest.mark.parametrize("name", ["Kevin_MacLeod_-_Vibe_Ace.ogg", "gs-16b-2c-44100hz.mp3", "gs-16b-2c-44100hz.wav"])
def test_equals_librosa_load_the_reference(real_audio_dir: Path, name: str) -> None:
    reference, sr = librosa.load(real_audio_dir / name, sr=16000, mono=True, duration=29.0)
    assert sr == 16000
    np.testing.assert_array_equal(load_audio(real_audio_dir / name, CFG), reference)


def test_bytes_decode_like_the_file(real_audio_dir: Path) -> None:
    for name in ("gs-16b-2c-44100hz.mp3", "sorohanro_-_solo-trumpet-06.ogg"):
        path = real_audio_dir / name
        np.testing.assert_array_equal(load_audio_bytes(path.read_bytes(), CFG, name), load_audio(path, CFG))


def test_flac_and_wav_of_one_excerpt_give_identical_waves(real_audio_dir: Path) -> None:
    flac = load_audio(real_audio_dir / "gs-16b-2c-44100hz.flac", CFG)
    wav = load_audio(real_audio_dir / "gs-16b-2c-44100hz.wav", CFG)
    np.testing.assert_array_equal(flac, wav)


def test_only_the_needed_part_is_read(real_audio_dir: Path, tmp_path: Path) -> None:
    # A FLAC cut at 40 % of its bytes has a broken tail ("lost sync"). Asking for the
    # first 3 s must succeed, which proves the tail is never decoded.
    data = (real_audio_dir / "gs-16b-2c-44100hz.flac").read_bytes()
    broken = tmp_path / "cut.flac"
    broken.write_bytes(data[: int(len(data) * 0.4)])
    short = FeatureConfig(max_seconds=3.0)
    np.testing.assert_array_equal(
        load_audio(broken, short), load_audio(real_audio_dir / "gs-16b-2c-44100hz.flac", short)
    )
    with pytest.raises(AudioDecodeError, match="cut.flac"):
        load_audio(broken, CFG)  # 29 s reaches the broken tail


def test_max_seconds_zero_keeps_the_whole_file(real_audio_dir: Path) -> None:
    wave = load_audio(real_audio_dir / "Karissa_Hobbs_-_Lets_Go_Fishin.ogg", FeatureConfig(max_seconds=0))
    assert wave.shape[0] == math.ceil(2932408 * 16000 / 22050)  # 133 s, not 29


def test_stereo_is_averaged_and_native_rate_is_not_resampled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(16000, 2)).astype(np.float32)
    sf.write(tmp_path / "st.wav", stereo, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "st.wav", CFG), stereo.mean(axis=1))


def test_resampling_keeps_the_pitch(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), 44100)
    wave = load_audio(tmp_path / "tone.wav", CFG)
    assert wave.shape[0] == 16000
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(wave.shape[0], 1 / 16000)[spectrum.argmax()] == pytest.approx(1000, abs=2)


# --- bad input: every case raises AudioDecodeError (a user error) naming the file ---


def _bad_files(real_audio_dir: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(1)
    wav = (real_audio_dir / "gs-16b-2c-44100hz.wav").read_bytes()
    flac = (real_audio_dir / "gs-16b-2c-44100hz.flac").read_bytes()
    files = {
        "random.mp3": (rng.bytes(20000), "unsupported or corrupt"),
        "random.wav": (rng.bytes(20000), "unsupported or corrupt"),
        "header_only.wav": (wav[:30], "unsupported or corrupt"),
        "header_only.flac": (flac[:30], "unsupported or corrupt"),
        "half.flac": (flac[: len(flac) // 2], "unsupported or corrupt"),
        "empty.ogg": (b"", "empty"),
        "notes.txt": (b"this is a text file, not audio\n" * 50, "unsupported or corrupt"),
    }
    out = {}
    for name, (data, reason) in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, reason)
    sf.write(tmp_path / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    out["zero.wav"] = (tmp_path / "zero.wav", "zero length")
    bad = np.full(1000, 0.1, dtype=np.float32)
    bad[500] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    out["nan.wav"] = (tmp_path / "nan.wav", "NaN or infinite")
    return out


def test_bad_files_raise_audio_decode_error_naming_the_file(real_audio_dir: Path, tmp_path: Path) -> None:
    for name, (path, reason) in _bad_files(real_audio_dir, tmp_path).items():
        with pytest.raises(AudioDecodeError) as info:
            load_audio(path, CFG)
        assert isinstance(info.value, MtlmoodError)
        assert name in str(info.value) and reason in str(info.value), str(info.value)


def test_bad_payloads_raise_audio_decode_error_naming_the_upload(real_audio_dir: Path, tmp_path: Path) -> None:
    for name, (path, reason) in _bad_files(real_audio_dir, tmp_path).items():
        with pytest.raises(AudioDecodeError, match=reason) as info:
            load_audio_bytes(path.read_bytes(), CFG, name=f"upload-{name}")
        assert f"upload-{name}" in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="nope.mp3.*file not found"):
        load_audio(tmp_path / "nope.mp3", CFG)
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        load_audio(tmp_path, CFG)


@pytest.mark.parametrize("native_rate", [44100, 48000, 22050, 8000, 11025])
@pytest.mark.parametrize("n", [1, 999, 44101])
def test_resample_is_librosas_soxr_hq_bit_for_bit(native_rate: int, n: int) -> None:
    """mtlmood.audio.resample skips librosa's import, not its result: length fix included."""
    from mtlmood.audio import resample

    wave = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    expected = librosa.resample(wave, orig_sr=native_rate, target_sr=16000, res_type="soxr_hq")
    got = resample(wave, native_rate, 16000)
    assert got.dtype == expected.dtype and got.shape == expected.shape and np.array_equal(got, expected)
