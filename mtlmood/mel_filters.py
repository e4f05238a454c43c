"""librosa's periodic Hann window and Slaney mel filterbank, rebuilt in NumPy.

The fast log-mel path (mtlmood.features, ``method="fast"``) needs only these two arrays from
librosa. Importing librosa's filters pulls in scipy.signal and numba, ~0.9 CPU-s in every
process that computes features: each Serve ingress replica as it starts (autoscaling's cold
start), each batch-inference and catalog worker (2026-12-07, 2 cores). These functions repeat
librosa 0.11's arithmetic step by step (scipy's ``general_cosine`` for the window,
``librosa.filters.mel`` with ``htk=False, norm="slaney"``), so the arrays are bit-for-bit
librosa's; tests/mtlmood/test_features.py holds them to that for the paper's and the demo's
settings and others. The ``librosa`` method still calls librosa itself.
"""

from __future__ import annotations

import numpy as np

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hann_window(n_fft: int) -> np.ndarray:
    """The periodic ("fftbins") Hann window of ``n_fft`` points, float64, as scipy builds it."""
    if n_fft <= 1:
        return np.ones(n_fft)
    fac = np.linspace(-np.pi, np.pi, n_fft + 1, dtype=np.float64)  # one point more, dropped below
    window = np.zeros(n_fft + 1, dtype=np.float64)
    for k, a in enumerate((0.5, 0.5)):
        window += a * np.cos(k * fac)
    return window[:-1]


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    mels = frequencies / _F_SP
    log_part = frequencies >= _MIN_LOG_HZ
    mels[log_part] = _MIN_LOG_MEL + np.log(frequencies[log_part] / _MIN_LOG_HZ) / _LOGSTEP
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = _F_SP * mels
    log_part = mels >= _MIN_LOG_MEL
    freqs[log_part] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_part] - _MIN_LOG_MEL))
    return freqs


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) float32 weights from 0 Hz to the Nyquist frequency, Slaney-normalised."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    edges = _hz_to_mel(np.array([0.0, float(sample_rate) / 2]))
    mel_f = _mel_to_hz(np.linspace(edges[0], edges[1], n_mels + 2))  # band edges and centres
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]  # constant energy per band
    return weights
