"""Test audio: WAV bytes of any samples, a seeded chord with noise, and the shared real clips."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    """``samples`` (mono (n,) or (n, channels)) as the bytes of a WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def tone(seconds: float, rate: int = 22050, stereo: bool = True, seed: int = 0) -> bytes:
    """A chord plus a little noise, stereo at 22.05 kHz (exercises downmix and resampling)."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 330 * t) + 0.02 * rng.standard_normal(t.size)
    right = 0.3 * np.sin(2 * np.pi * 277 * t) + 0.02 * rng.standard_normal(t.size)
    samples = np.stack([left, right], axis=1) if stereo else left
    return wav_bytes(samples.astype(np.float32), rate)


CLIP_SUFFIXES = {".ogg", ".mp3", ".flac", ".wav"}


def shared_clips(request: pytest.FixtureRequest) -> list[Path]:
    """The real CC clips of the shared data (ogg, mp3, flac, wav), sorted, or none when it is
    absent (through the ``real_audio_dir`` fixture, which skips then)."""
    try:
        folder = request.getfixturevalue("real_audio_dir")
    except pytest.skip.Exception:
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in CLIP_SUFFIXES)
