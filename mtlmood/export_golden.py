"""Golden files of an export: a few (waveform, log-mel, probabilities) triples that another runtime
reproduces to show it implements the preprocessing contract and the model.

    golden = write_golden("runs/train", "dist/golden", audio_files=["song.mp3"])

``<directory>/golden.json`` says what is there; each triple is ``<name>.npz`` with

    waveform              float32 (samples,)          mono at the card's sample rate: the model's input
    logmel                float32 (frames, n_mels)    its log-mel (mtlmood.features.log_mel, librosa: the reference)
    window_probabilities  float32 (windows, N_mood)   the PyTorch model on its non-overlapping windows
    probabilities         float32 (N_mood,)           the song's: the mean over its windows

The triples: ``tones`` (the synthesized test signal of mtlmood.export, gliding tones, a chord
and pulsed noise from a fixed seed, ``TONES_SECONDS`` long: several windows), ``short`` (its
first ``SHORT_SECONDS``: shorter than one window, so the zero padding is exercised) and, for
each audio file given, ``clip-<name>``: the first ``CLIP_SECONDS`` of the file after the
library's decode, cut, mono mixing and resampling (mtlmood.audio), so a runtime that decodes
itself can check its decoder and resampler against ``waveform`` as well. Everything is
deterministic: the same checkpoint and files give the same arrays.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import mtlmood
from mtlmood.checkpoint import ModelCard, load_checkpoint
from mtlmood.export import PathLike, music_like_signal, pytorch_probabilities
from mtlmood.fileio import publish
from mtlmood.model import MoodCNN

GOLDEN_DIR = "golden"
INDEX_FILE = "golden.json"
TONES_SECONDS = 8.0
SHORT_SECONDS = 0.5
CLIP_SECONDS = 10.0
# What a runtime that follows the contract in float32 should reach (max |Δ|): a float32 DFT
# alone costs up to ~1e-4 log10 units on signals with a DC offset (mtlmood.export_waveform_graph).
LOGMEL_TOLERANCE = 1e-4
PROBABILITY_TOLERANCE = 1e-4


@dataclass
class GoldenTriple:
    """One golden file: what it holds and where its waveform came from."""

    name: str
    file: str  # relative to the golden directory
    source: str
    samples: int
    frames: int
    windows: int


@dataclass
class GoldenSet:
    """The golden directory written beside an export."""

    directory: Path
    triples: list[GoldenTriple]

    @property
    def index(self) -> Path:
        return self.directory / INDEX_FILE


def contract(card: ModelCard) -> dict[str, Any]:
    """The preprocessing settings a runtime needs, as plain values (golden.json's ``contract``)."""
    f = card.features
    return {
        "sample_rate": f.sample_rate,
        "n_fft": f.n_fft,
        "hop_length": f.hop_length,
        "window": "hann, periodic (w[n] = 0.5 - 0.5 cos(2 pi n / n_fft), n = 0..n_fft-1)",
        "center": "frames centred: n_fft // 2 zeros on both sides; frame i starts at sample i * hop_length",
        "power": 2.0,
        "n_mels": f.n_mels,
        "fmin": 0.0,
        "fmax": f.sample_rate / 2,
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "log_multiplier": f.log_multiplier,
        "compression": f"log10(1 + {f.log_multiplier:g} * mel)",
        "max_seconds": f.max_seconds,
        "max_frames": f.max_frames,
        "segment_frames": card.model.segment_frames,
    }


def _slug(path: PathLike) -> str:
    return "clip-" + (re.sub(r"[^A-Za-z0-9]+", "-", Path(path).stem).strip("-")[:48] or "audio")


def golden_waves(card: ModelCard, audio_files: Sequence[PathLike] = ()) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (where it came from, the mono wave at the card's rate) of every triple."""
    from mtlmood.audio import load_audio

    cfg, rate = card.features, card.features.sample_rate
    tones = music_like_signal(cfg, TONES_SECONDS)
    waves = {
        "tones": (f"mtlmood.export.music_like_signal, {TONES_SECONDS:g} s (fixed seed 0)", tones),
        "short": (f"the first {SHORT_SECONDS:g} s of tones", tones[: int(SHORT_SECONDS * rate)]),
    }
    for path in audio_files:
        name = _slug(path)
        while name in waves:  # two files of the same name in different folders
            name += "-"
        wave = load_audio(path, cfg)[: int(CLIP_SECONDS * rate)]
        waves[name] = (f"the first {CLIP_SECONDS:g} s of {Path(path).name}, decoded by mtlmood.audio", wave)
    return waves


def triple(model: MoodCNN, card: ModelCard, wave: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one golden file for ``wave`` (see the module docstring)."""
    from mtlmood.features import log_mel
    from mtlmood.inference import segment_song

    wave = np.ascontiguousarray(wave, dtype=np.float32)
    features = log_mel(wave, card.features)  # the reference: librosa
    windows = segment_song(features, card.model.segment_frames, card.features.max_frames)
    per_window = pytorch_probabilities(model, windows)
    return {
        "waveform": wave,
        "logmel": features,
        "window_probabilities": per_window,
        "probabilities": per_window.mean(axis=0).astype(np.float32),
    }


def write_golden(checkpoint: PathLike, directory: PathLike, audio_files: Sequence[PathLike] = ()) -> GoldenSet:
    """Write the golden triples of ``checkpoint`` into ``directory`` (replaced as a whole: written
    beside it under a temporary name first, so a failure leaves the old one); AudioDecodeError
    for bad audio, CheckpointError for a bad checkpoint."""
    model, card = load_checkpoint(checkpoint, device="cpu")
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    waves = golden_waves(card, audio_files)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        triples = []
        for name, (source, wave) in waves.items():
            arrays = triple(model, card, wave)
            np.savez_compressed(
                staging / f"{name}.npz",
                waveform=arrays["waveform"],
                logmel=arrays["logmel"],
                window_probabilities=arrays["window_probabilities"],
                probabilities=arrays["probabilities"],
            )
            triples.append(
                GoldenTriple(
                    name=name,
                    file=f"{name}.npz",
                    source=source,
                    samples=int(wave.size),
                    frames=len(arrays["logmel"]),
                    windows=len(arrays["window_probabilities"]),
                )
            )
        index = {
            "producer": f"mtlmood {mtlmood.__version__}",
            "checkpoint_id": card.checkpoint_id,
            "mood_names": list(card.mood_names),
            "arrays": {
                "waveform": "float32 (samples,): mono at contract.sample_rate, the waveform model's input",
                "logmel": "float32 (frames, n_mels): its log-mel, frames = 1 + samples // hop_length",
                "window_probabilities": "float32 (windows, N_mood): the model's sigmoid per window",
                "probabilities": "float32 (N_mood,): the song's, the mean over its windows",
            },
            "contract": contract(card),
            "tolerances": {"logmel": LOGMEL_TOLERANCE, "probabilities": PROBABILITY_TOLERANCE},
            "triples": [vars(t) for t in triples],
        }
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        publish(staging, target, mode=0o777)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return GoldenSet(directory=target, triples=triples)
