"""The preprocessing contract of MODEL_CARD.md is enough to re-implement the features: a log-mel
written from its text alone (tests/helpers/contract_logmel.py: numpy and scipy, no mtlmood)
reproduces the golden features an export ships, and its decoding rows (libsndfile, the mp3
priming, the cut at the native rate, mono, soxr HQ) are what mtlmood.audio does."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import contract_logmel
from mtlmood.audio import load_audio
from mtlmood.checkpoint import read_card
from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.export_golden import write_golden
from mtlmood.model_card import render_model_card
from mtlmood.synth.checkpoints import untrained_checkpoint

FEATURE_TOLERANCE = 1e-4  # max |Δ| in log10 units between the contract's log-mel and the golden features


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """The golden files of an untrained paper-size model, with a real mp3 clip when the shared data is there."""
    root = tmp_path_factory.mktemp("golden")
    checkpoint = untrained_checkpoint(root / "ckpt", n_filters=4)
    try:
        audio = [request.getfixturevalue("real_audio_dir") / "gs-16b-2c-44100hz.mp3"]
    except pytest.skip.Exception:
        audio = []
    return write_golden(checkpoint, root / "golden", audio).directory


def test_the_contract_log_mel_imports_no_mtlmood_and_no_librosa() -> None:
    tree = ast.parse(Path(contract_logmel.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "typing", "numpy", "scipy"}, imported


def test_the_contract_log_mel_reproduces_the_golden_features(golden: Path) -> None:
    index = json.loads((golden / "golden.json").read_text())
    errors = {}
    for triple in index["triples"]:
        with np.load(golden / triple["file"]) as arrays:
            ours = contract_logmel.log_mel(arrays["waveform"], index["contract"])
            assert ours.shape == arrays["logmel"].shape == (triple["frames"], index["contract"]["n_mels"])
            errors[triple["name"]] = float(np.abs(ours - arrays["logmel"]).max())
    assert max(errors.values()) <= FEATURE_TOLERANCE <= index["tolerances"]["logmel"], errors


@pytest.mark.parametrize("settings", [{}, {"sample_rate": 22050, "n_fft": 1024, "hop_length": 512, "n_mels": 40}])
def test_the_contract_log_mel_follows_the_settings(settings: dict[str, int], tmp_path: Path) -> None:
    """Other feature settings (a card's own, as the card prints them) give the library's log-mel too."""
    from mtlmood.features import log_mel

    cfg = FeatureConfig(**settings)
    contract = {**vars(cfg), "fmin": 0.0, "fmax": cfg.sample_rate / 2}
    wave = np.random.default_rng(1).standard_normal(3 * cfg.sample_rate).astype(np.float32) * 0.2
    assert np.abs(contract_logmel.log_mel(wave, contract) - log_mel(wave, cfg)).max() <= FEATURE_TOLERANCE


def test_the_card_states_what_the_contract_log_mel_needed(golden: Path) -> None:
    card = read_card(untrained_checkpoint(golden.parent / "other", model=ModelConfig(n_filters=4)))
    text = render_model_card(card, "ckpt")
    contract = json.loads((golden / "golden.json").read_text())["contract"]
    for expected in (
        f"libsndfile {sf.__libsndfile_version__}",  # the decoder, its version, and the mp3 priming
        "libmpg123",
        "gapless",
        "529-sample decoder delay are removed",
        "before resampling: the first int(29 × native rate) frames",  # the cut at the native rate
        "the mean of the channels",
        'res_type="soxr_hq"',
        "quality HQ",
        "periodic Hann window w[n] = 0.5 − 0.5·cos(2πn / 512)",
        f"n_fft {contract['n_fft']}, hop {contract['hop_length']}",
        "256 zeros on both sides of the wave (constant padding, not reflection)",
        "power |X|²",
        f"{contract['n_mels']} bands",
        "0 Hz to 8000 Hz",
        "m(f) = 3f / 200 below 1000 Hz, 15 + 27·ln(f / 1000) / ln 6.4 above",
        "times 2 / (f_(i+2) − f_i)",
        "log10(1 + 10000 · mel)",
    ):
        assert expected in text, expected


def _lag(reference: np.ndarray, other: np.ndarray, lags: tuple[int, ...]) -> int:
    """Which of ``lags`` aligns ``other`` best with ``reference`` (correlation over 10 s)."""
    a = reference[20000:460000]
    return max(lags, key=lambda lag: float(np.corrcoef(a, other[20000 + lag : 460000 + lag])[0, 1]))


def test_the_mp3_priming_is_removed_as_the_contract_says(real_audio_dir: Path) -> None:
    """The test mp3 has a LAME/Xing Info header: decoded, it starts sample-aligned with the wav it was
    made from. Without that header (its first frame cut out) the 576 + 529 samples of delay stay."""
    wav, _ = sf.read(real_audio_dir / "gs-16b-2c-44100hz.wav", dtype="float32")
    data = (real_audio_dir / "gs-16b-2c-44100hz.mp3").read_bytes()
    mp3, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert _lag(wav[:, 0], mp3[:, 0], (0, 1105)) == 0
    start = 10 + int.from_bytes(bytes(b & 0x7F for b in data[6:10]), "big")  # after the ID3v2 tag
    assert b"Info" in data[start : start + 200]
    kbps = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[data[start + 2] >> 4]  # MPEG-1 L3
    frame = 144 * kbps * 1000 // 44100 + ((data[start + 2] >> 1) & 1)  # + the padding bit
    assert data[start + frame : start + frame + 2] == b"\xff\xfb"  # the next frame's sync word
    untagged, _ = sf.read(io.BytesIO(data[:start] + data[start + frame :]), dtype="float32")
    assert _lag(wav[:, 0], untagged[:, 0], (0, 1105)) == 1105


@pytest.mark.parametrize("name", ["gs-16b-2c-44100hz.mp3", "gs-16b-2c-44100hz.flac", "Kevin_MacLeod_-_Vibe_Ace.ogg"])
def test_decode_cut_mono_resample_as_the_contract_says(name: str, real_audio_dir: Path) -> None:
    """soundfile reads the first int(29 s × native rate) frames, the channels are averaged, and
    soxr HQ resamples to ceil(n × 16000 / native) samples: mtlmood.audio's wave, bit for bit."""
    import soxr

    cfg = FeatureConfig()
    with sf.SoundFile(real_audio_dir / name) as handle:
        rate = handle.samplerate
        wave = handle.read(frames=int(cfg.max_seconds * rate), dtype="float32", always_2d=True)
    mono = wave.mean(axis=1, dtype=np.float32)
    resampled = soxr.resample(mono, rate, cfg.sample_rate, quality="soxr_hq")
    n = int(np.ceil(mono.size * cfg.sample_rate / rate))
    resampled = np.pad(resampled, (0, max(0, n - resampled.size)))[:n]
    assert np.array_equal(resampled, load_audio(real_audio_dir / name, cfg))
