"""The log-mel of MODEL_CARD.md's preprocessing contract, written from the contract's text alone:
numpy and scipy, no mtlmood and no librosa (tests/mtlmood/test_export_contract.py checks that this
module imports neither, and that it reproduces an export's golden features).

Each step is the contract's row of the same name, computed in float64: a runtime that follows
the contract lands within float32 rounding of the reference.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import scipy.signal


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale: m(f) = 3f / 200 below 1000 Hz, 15 + 27·ln(f / 1000) / ln 6.4 above."""
    f = np.asarray(f, dtype=np.float64)
    linear = 3.0 * f / 200.0
    logarithmic = 15.0 + 27.0 * np.log(np.maximum(f, 1000.0) / 1000.0) / np.log(6.4)
    return np.where(f < 1000.0, linear, logarithmic)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """The inverse of ``hz_to_mel``."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1): n_mels + 2 edges equally spaced in mel from m(fmin) to m(fmax);
    band i is the triangle rising from edge i to i + 1 and falling to i + 2 over the bin
    frequencies k·sr / n_fft, times 2 / (f_(i+2) − f_i) (Slaney's area norm)."""
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(np.float64(fmin)), hz_to_mel(np.float64(fmax)), n_mels + 2))
    bank = np.zeros((n_mels, bins.size))
    for i in range(n_mels):
        rising = (bins - edges[i]) / (edges[i + 1] - edges[i])
        falling = (edges[i + 2] - bins) / (edges[i + 2] - edges[i + 1])
        bank[i] = np.maximum(0.0, np.minimum(rising, falling)) * 2.0 / (edges[i + 2] - edges[i])
    return bank


def log_mel(wave: np.ndarray, contract: Mapping[str, Any]) -> np.ndarray:
    """(frames, n_mels) float32 log-mel of a mono wave at ``contract["sample_rate"]`` (the keys of
    golden.json's ``contract``): centred frames, periodic Hann, |DFT|², mel, log10(1 + c·mel)."""
    n_fft, hop = int(contract["n_fft"]), int(contract["hop_length"])
    wave = np.asarray(wave, dtype=np.float64)
    # frames: n_fft // 2 zeros on both sides; frame i is padded samples [i·hop, i·hop + n_fft).
    padded = np.pad(wave, n_fft // 2, mode="constant")
    count = 1 + wave.size // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] for i in range(count)])
    # STFT: periodic Hann (fftbins=True), one-sided DFT, power |X|².
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    bank = mel_filterbank(
        int(contract["sample_rate"]), n_fft, int(contract["n_mels"]), float(contract["fmin"]), float(contract["fmax"])
    )
    mel = power @ bank.T
    return np.log10(1.0 + float(contract["log_multiplier"]) * mel).astype(np.float32)
