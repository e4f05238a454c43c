"""Log-mel features: the musicnn/Essentia reference preprocessing, computed with librosa.

    mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=512, hop_length=256, n_mels=96)
    features = log10(10000 * mel.T + 1)            # (t, 96) float32

librosa's defaults apply: power 2, Hann window, centred frames with zero padding,
Slaney mel scale and normalisation, fmin 0, fmax sr/2. Centring gives
``1 + n_samples // hop_length`` frames, 62.5 frames/s: the first 29 s (464,000
samples) give 1813 frames, a 5.33 s clip 334.

One deliberate difference from musicnn's extractor: it casts the mel power to
float16 before ``log10(10000 * x + 1)``. That quantises (at most 2.1e-4 log10 units
on our test clips), and under NumPy >= 2 the float16 product even overflows to inf
wherever the mel power exceeds 6.55 (0.01-1 % of bins on those clips). We compute in
float32.

``method="fast"`` computes the same thing without librosa's per-call overhead:
zero-padded frames (a strided view), the periodic Hann window, ``scipy.fft.rfft``
(float32 in, complex64 out), |.|^2, and librosa's own Slaney mel filterbank (built
once per setting and cached) applied as a sparse matrix (each FFT bin feeds at most
two bands). It is about twice as fast as the librosa path, agrees with it to 1e-5
log10 units (tested bound 1e-4), and calls no BLAS at all. The librosa path stays
the default of these functions: it is the reference every cached feature bank uses.

BLAS threads: librosa's mel matmul (~1 ms) runs on one BLAS thread. More threads
buy nothing at that size, and OpenBLAS's idle threads keep spinning after the call,
stealing the cores from whatever runs next (another process of a pool, or torch:
pool efficiency 38 % -> 78 % on 2 cores, see benchmarks/README.md). The limit is
scoped to the call and safe across threads. Restoring it wakes OpenBLAS's threads,
though, which in a *threaded* server still costs the next forward pass; there the
fast path (no BLAS), or a process-wide ``threadpoolctl.threadpool_limits(1, "blas")``,
is the cure. ``Predictor`` uses the fast path.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any, Literal, Optional, Union

import numpy as np

from mtlmood.audio import load_audio, load_audio_bytes
from mtlmood.config import FeatureConfig


def n_frames(n_samples: int, cfg: FeatureConfig) -> int:
    """Frames log_mel returns for a wave of ``n_samples`` samples (centred framing)."""
    return 1 + n_samples // cfg.hop_length


class _OneBlasThread:
    """Context manager: BLAS libraries limited to one thread while any thread is inside.

    Reference-counted, so concurrent callers (a server's decode threads) never leave
    the process limited: the last one out restores the original thread counts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter: Optional[Any] = None
        self._controller: Optional[Any] = None
        self._unavailable = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0 and not self._unavailable:
                try:
                    if self._controller is None:
                        from threadpoolctl import ThreadpoolController  # scikit-learn's dependency

                        self._controller = ThreadpoolController()
                    self._limiter = self._controller.limit(limits=1, user_api="blas")
                except Exception:  # no threadpoolctl, or an unsupported BLAS: run unlimited
                    self._unavailable = True
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None


one_blas_thread = _OneBlasThread()

MelMethod = Literal["librosa", "fast"]
MEL_METHODS = ("librosa", "fast")


def log_mel(wave: np.ndarray, cfg: FeatureConfig, method: MelMethod = "librosa") -> np.ndarray:
    """(t, n_mels) float32 log-compressed mel spectrogram of a mono wave at ``cfg.sample_rate``.

    ``method="fast"``: the same computation without librosa's overhead (see the module docstring).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"log_mel expects a non-empty mono wave of shape (n,), got {wave.shape}")
    if method not in MEL_METHODS:
        raise ValueError(f"method must be one of {MEL_METHODS}, got {method!r}")
    if method == "fast":
        mel = _mel_power_fast(wave, cfg)  # (n_mels, t), a fresh array: compress it in place
        mel *= cfg.log_multiplier
        mel += 1
        return np.ascontiguousarray(np.log10(mel, out=mel).T)
    import librosa  # imported here: librosa's import is slow and only feature code needs it

    with one_blas_thread:
        mel = librosa.feature.melspectrogram(
            y=wave, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
        ).T
    # Same expression and order as musicnn's extractor (log10(10000 * x + 1)).
    return np.ascontiguousarray(np.log10(cfg.log_multiplier * mel + 1), dtype=np.float32)


@lru_cache(maxsize=16)
def _mel_setup(sample_rate: int, n_fft: int, n_mels: int) -> tuple[np.ndarray, Any]:
    """(periodic Hann window (n_fft,), Slaney mel filterbank as a CSR matrix (n_mels, n_fft // 2 + 1)),
    exactly as librosa builds them (mtlmood.mel_filters: without importing librosa)."""
    import scipy.sparse

    from mtlmood.mel_filters import hann_window, slaney_mel_filterbank

    window = hann_window(n_fft).astype(np.float32)
    window.setflags(write=False)  # shared by every caller: never to be modified
    return window, scipy.sparse.csr_array(slaney_mel_filterbank(sample_rate, n_fft, n_mels))


def _mel_power_fast(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(n_mels, t) float32 mel power, as librosa.feature.melspectrogram(...) (centred, zero padding)."""
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    window, basis = _mel_setup(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    # librosa's centring: n_fft // 2 zeros on both sides, hence 1 + n // hop frames (>= 1).
    padded = np.pad(wave, cfg.n_fft // 2)
    frames = sliding_window_view(padded, cfg.n_fft)[:: cfg.hop_length]  # (t, n_fft), no copy
    # Transforming along axis 0 of the (n_fft, t) view gives (n_freq, t) spectra, the layout
    # the sparse product wants (measured: the fastest of the layouts tried).
    spectrum = scipy.fft.rfft((frames * window).T, axis=0)  # complex64
    power = np.square(spectrum.real) + np.square(spectrum.imag)  # (n_freq, t)
    return np.asarray(basis @ power, dtype=np.float32)  # sparse x dense: no BLAS


def features_from_file(
    path: Union[str, "os.PathLike[str]"], cfg: FeatureConfig, method: MelMethod = "librosa"
) -> np.ndarray:
    """Decode an audio file and return its (t, n_mels) log-mel features; AudioDecodeError on bad audio."""
    return log_mel(load_audio(path, cfg), cfg, method)


def features_from_bytes(
    data: bytes, cfg: FeatureConfig, name: str = "<bytes>", method: MelMethod = "librosa"
) -> np.ndarray:
    """Decode an in-memory audio payload and return its (t, n_mels) log-mel features."""
    return log_mel(load_audio_bytes(data, cfg, name), cfg, method)
