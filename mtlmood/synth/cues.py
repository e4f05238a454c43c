"""What makes moods and artists audible: the cues, each mood's targets on them, each
artist's voice (timbre, leanings, era), and the blend that gives one song its cue values.

Everything here is a pure function of names and the seed (through ``stable_int``), so
the same mood or artist sounds the same in every dataset made with that seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

CUES = (
    "mode",
    "tempo",
    "brightness",
    "loudness",
    "density",
    "register",
    "noise",
    "legato",
    "width",
    "swell",
    "dissonance",
    "space",
)

# Each mood's targets on the cues it moves, in [-1, 1] (cues not named stay random).
# Every core mood has at least one cue nobody else pushes the same way, so any pair
# of moods is separable, while shared cues (tempo, loudness) keep it from being trivial.
MOOD_PROFILES: dict[str, dict[str, float]] = {
    "happy": {"mode": 1.0, "tempo": 0.5, "brightness": 0.7, "register": 0.6, "dissonance": -1.0},
    "sad": {"mode": -1.0, "tempo": -1.0, "brightness": -0.8, "legato": 0.7, "loudness": -0.6, "width": -0.6},
    "energetic": {"loudness": 1.0, "density": 1.0, "tempo": 0.9, "legato": -0.8, "brightness": 0.3},
    "calm": {"loudness": -0.9, "density": -1.0, "legato": 1.0, "tempo": -0.5, "dissonance": -0.6},
    "dark": {"register": -1.0, "noise": 1.0, "dissonance": 0.9, "brightness": -0.8, "mode": -0.5},
    "epic": {
        "width": 1.0,
        "swell": 1.0,
        "space": 1.0,
        "loudness": 0.7,
        "register": -0.4,
        "tempo": -0.3,
        "density": 0.3,
    },
    # A few frequent MTG-Jamendo mood/theme tags, so real metadata sounds sensible;
    # any other tag gets a profile derived from a hash of its name (mood_profile).
    "relaxing": {"loudness": -0.7, "density": -0.8, "legato": 0.8, "space": 0.4, "tempo": -0.4},
    "melancholic": {"mode": -0.9, "tempo": -0.6, "legato": 0.5, "brightness": -0.3, "space": 0.3},
    "uplifting": {"mode": 0.9, "swell": 0.6, "tempo": 0.4, "brightness": 0.5, "width": 0.4},
    "emotional": {"legato": 0.7, "swell": 0.5, "mode": -0.4, "space": 0.5},
    "romantic": {"legato": 0.6, "mode": 0.5, "loudness": -0.4, "dissonance": -0.8, "tempo": -0.3},
    "inspiring": {"swell": 0.7, "mode": 0.7, "width": 0.6, "brightness": 0.3},
    "dramatic": {"swell": 0.8, "dissonance": 0.6, "loudness": 0.5, "width": 0.7, "mode": -0.6},
}


def stable_int(*parts: object) -> int:
    """A 64-bit integer from a hash of ``parts``: the seed of every per-name random stream
    (Python's hash() changes per process, so it cannot make files reproducible)."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


def mood_profile(name: str) -> dict[str, float]:
    """The cue targets of a mood: hand-designed for known moods, else derived from a
    hash of the name (3 cues pushed firmly one way), so any tag vocabulary is audible."""
    key = name.strip().lower()
    if key in MOOD_PROFILES:
        return dict(MOOD_PROFILES[key])
    rng = np.random.default_rng(stable_int("mood-profile", key))
    chosen = sorted(rng.choice(len(CUES), size=3, replace=False))
    return {CUES[i]: float(rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0)) for i in chosen}


@dataclass(frozen=True, eq=False)
class ArtistVoice:
    """An artist's timbral signature and leanings; derived from (seed, name) alone."""

    name: str
    lead: np.ndarray  # harmonic amplitudes of the lead instrument (harmonics 1..N)
    pad: np.ndarray
    bass: np.ndarray
    phases: np.ndarray  # fixed harmonic phases: part of the waveform's character
    attack: float  # seconds
    decay: float  # seconds (exponential)
    vibrato_hz: float
    vibrato_cents: float
    kick_hz: float
    hat_hz: float
    era: float  # the year the artist's songs centre on
    bias: dict[str, float] = field(default_factory=dict)  # leanings on cues, in [-1, 1]


def _harmonic_profile(rng: np.random.Generator, n: int, tilt: tuple[float, float]) -> np.ndarray:
    """Amplitudes of harmonics 1..n (peak 1): a random spectral tilt, even/odd balance and formant."""
    h = np.arange(1, n + 1, dtype=np.float64)
    amps = h ** -rng.uniform(*tilt)
    amps[1::2] *= rng.uniform(0.05, 1.0)  # even/odd balance: hollow (clarinet-like) vs full
    centre, width, gain = rng.uniform(1.5, 12.0), rng.uniform(0.2, 0.6), rng.uniform(0.0, 4.0)
    amps *= 1.0 + gain * np.exp(-0.5 * (np.log(h / centre) / width) ** 2)  # a formant bump
    amps *= rng.lognormal(0.0, 0.25, n)
    return amps / amps.max()


def artist_voice(name: str, seed: int, min_year: int, max_year: int) -> ArtistVoice:
    """The signature of artist ``name`` (same name and seed -> same voice, in any dataset)."""
    rng = np.random.default_rng(stable_int("artist", seed, name))
    return ArtistVoice(
        name=name,
        lead=_harmonic_profile(rng, 24, (0.5, 2.0)),
        pad=_harmonic_profile(rng, 24, (0.8, 2.4)),
        bass=_harmonic_profile(rng, 8, (1.2, 3.0)),
        phases=rng.uniform(0.0, 2.0 * np.pi, 24),
        attack=float(rng.uniform(0.002, 0.06)),
        decay=float(rng.uniform(0.15, 1.2)),
        vibrato_hz=float(rng.uniform(3.5, 7.0)),
        vibrato_cents=float(rng.uniform(0.0, 30.0)),
        kick_hz=float(rng.uniform(45.0, 75.0)),
        hat_hz=float(rng.uniform(4000.0, 6500.0)),
        era=float(rng.uniform(min_year, max_year)),
        bias={cue: float(rng.uniform(-0.5, 0.5)) for cue in ("register", "brightness", "space", "legato")},
    )


def song_cues(
    moods: Sequence[str], voice: ArtistVoice, difficulty: float, rng: np.random.Generator
) -> dict[str, float]:
    """A song's cue values in [-1, 1]: its moods' targets blended with per-song
    variation (which leans the artist's way); ``difficulty`` sets the blend.

    Where a song's moods disagree on a cue the most extreme target wins (not the
    mean): each mood keeps its most distinctive cues instead of two moods cancelling."""
    targets: dict[str, list[float]] = {}
    for mood in moods:
        for cue, value in mood_profile(mood).items():
            targets.setdefault(cue, []).append(value)
    strength = 1.0 - 0.9 * difficulty  # weight of the moods' targets against random variation
    free = rng.normal(0.0, 0.5, len(CUES))  # drawn for every cue: the stream never depends on moods
    cues = {}
    for i, cue in enumerate(CUES):
        value = voice.bias.get(cue, 0.0) + free[i]
        if cue in targets:
            target = max(targets[cue], key=abs)
            value = strength * target + (1.0 - strength) * value
        cues[cue] = float(np.clip(value, -1.0, 1.0))
    return cues
