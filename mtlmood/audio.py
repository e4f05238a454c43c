"""Decode any common audio file (mp3, ogg, flac, wav) to the mono 16 kHz wave features use.

The result equals ``librosa.load(path, sr=cfg.sample_rate, mono=True,
duration=cfg.max_seconds)`` (librosa is the reference): libsndfile decodes, only
the first ``int(max_seconds * native_rate)`` frames are read, channels are
averaged, and soxr ("soxr_hq", librosa's default) resamples. Reading stops after
those frames, so a 10-minute file costs about as much as a 29 s one.

libsndfile (>= 1.1) decodes all four codecs. When it cannot open a *file*, we try
librosa's audioread fallback, which helps only where an extra backend such as
ffmpeg is installed (e.g. for m4a). Anything that still yields no usable samples
raises :class:`~mtlmood.errors.AudioDecodeError` naming the source and the reason.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf

from mtlmood.config import FeatureConfig
from mtlmood.errors import AudioDecodeError

PathLike = Union[str, "os.PathLike[str]"]


def frames_to_read(cfg: FeatureConfig, native_rate: int) -> int:
    """Frames to read at the native rate; -1 = all. Same arithmetic as librosa.load(duration=...)."""
    return int(cfg.max_seconds * native_rate) if cfg.max_seconds > 0 else -1


def _read_soundfile(source: Union[str, io.BytesIO], cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """(samples (n,) or (n, channels) float32, native rate) via libsndfile; raises sf.SoundFileError."""
    with sf.SoundFile(source) as handle:
        native_rate = handle.samplerate
        wave = handle.read(frames=frames_to_read(cfg, native_rate), dtype="float32", always_2d=False)
    return wave, native_rate


def read_audioread(path: str, cfg: FeatureConfig) -> tuple[np.ndarray, int]:
    """Fallback through librosa's (deprecated) audioread path; returns (channels, n) or (n,)."""
    import librosa

    with warnings.catch_warnings():
        # librosa warns that soundfile failed and that audioread is deprecated: we know.
        warnings.simplefilter("ignore")
        wave, native_rate = librosa.load(
            path, sr=None, mono=False, duration=cfg.max_seconds if cfg.max_seconds > 0 else None
        )
    # librosa returns (channels, n); bring it to soundfile's (n, channels) layout.
    return (wave.T if wave.ndim == 2 else wave), int(native_rate)


def finish_wave(wave: np.ndarray, native_rate: int, cfg: FeatureConfig, source: str) -> np.ndarray:
    """Validate, downmix and resample decoded samples to the float32 mono wave features use."""
    if wave.size == 0:
        raise AudioDecodeError(source, "the audio has zero length (no samples)")
    if not np.isfinite(wave).all():
        raise AudioDecodeError(source, "the audio contains NaN or infinite samples")
    if wave.ndim == 2:
        # Same operation as librosa.to_mono on the (channels, n) layout, for bit-equal results.
        wave = np.mean(wave.T, axis=0)
    if native_rate != cfg.sample_rate:
        wave = resample(wave, native_rate, cfg.sample_rate)
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, native_rate: int, target_rate: int) -> np.ndarray:
    """``librosa.resample(wave, orig_sr=native_rate, target_sr=target_rate, res_type="soxr_hq")``,
    bit for bit, without importing librosa (scipy.signal and numba with it: ~0.9 CPU-s in every
    Serve replica and worker that decodes audio): soxr, the resampler librosa calls, then
    librosa's length fix (ceil(n * ratio) samples, zero-padded or cut). tests/mtlmood/test_audio.py
    compares the two."""
    import soxr

    n_samples = int(np.ceil(wave.shape[-1] * (float(target_rate) / native_rate)))
    out = soxr.resample(wave, native_rate, target_rate, quality="soxr_hq")
    if out.shape[0] > n_samples:
        return out[:n_samples]
    return np.pad(out, (0, n_samples - out.shape[0])) if out.shape[0] < n_samples else out


def load_audio(path: PathLike, cfg: FeatureConfig) -> np.ndarray:
    """Decode an audio file to a float32 mono wave at ``cfg.sample_rate``, first ``cfg.max_seconds``.

    ``cfg.max_seconds <= 0`` keeps the whole file. Raises AudioDecodeError when the
    file is missing, empty, undecodable, has no samples, or has non-finite samples.
    """
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioDecodeError(source, "file not found") from None
    except OSError as exc:
        raise AudioDecodeError(source, f"cannot read the file: {exc.strerror or exc}") from None
    if not path.is_file():
        raise AudioDecodeError(source, "not a regular file")
    if size == 0:
        raise AudioDecodeError(source, "the file is empty (0 bytes)")
    try:
        wave, native_rate = _read_soundfile(source, cfg)
    except sf.SoundFileError as sf_exc:
        try:
            wave, native_rate = read_audioread(source, cfg)
        except Exception as ar_exc:  # audioread raises assorted types (NoBackendError, EOFError, ...)
            raise _undecodable(source, sf_exc, ar_exc) from None
    return finish_wave(wave, native_rate, cfg, source)


def load_audio_bytes(data: bytes, cfg: FeatureConfig, name: str = "<bytes>") -> np.ndarray:
    """Decode an in-memory audio payload (e.g. an HTTP upload); ``name`` labels errors.

    Same result and errors as :func:`load_audio`. libsndfile reads from memory; only
    when it fails is the payload spilled to a temporary file for the audioread fallback.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioDecodeError(name, f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioDecodeError(name, "the payload is empty (0 bytes)")
    try:
        wave, native_rate = _read_soundfile(io.BytesIO(bytes(data)), cfg)
    except sf.SoundFileError as sf_exc:
        suffix = Path(name).suffix if Path(name).suffix.isascii() else ""
        with tempfile.TemporaryDirectory(prefix="mtlmood-audio-") as tmp:
            spilled = Path(tmp) / f"upload{suffix}"
            spilled.write_bytes(bytes(data))
            try:
                wave, native_rate = read_audioread(str(spilled), cfg)
            except Exception as ar_exc:
                raise _undecodable(name, sf_exc, ar_exc) from None
    return finish_wave(wave, native_rate, cfg, name)


def _undecodable(source: str, sf_exc: Exception, ar_exc: Exception) -> AudioDecodeError:
    """One error that gives both decoders' reasons, without repeating the path."""
    message = str(sf_exc)
    # libsndfile says "Error opening '<path>': <reason>"; the path is already in our message.
    if message.startswith("Error opening") and ": " in message:
        message = message.split(": ", 1)[1]
    message = message.strip().rstrip(".")
    fallback = f"{type(ar_exc).__name__}: {ar_exc}" if str(ar_exc) else type(ar_exc).__name__
    return AudioDecodeError(source, f"unsupported or corrupt audio (libsndfile: {message}; audioread: {fallback})")
