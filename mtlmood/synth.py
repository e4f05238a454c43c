"""Synthetic music whose moods, artists and years are audible: everything runs with no download.

    mtlmood synth runs/synthetic                       # the embedded default (240 songs)
    mtlmood synth runs/mtg --from-mtg-jamendo autotagging_moodtheme.tsv --limit 500

How a song is made. Every mood moves a few musical **cues** (see ``MOOD_PROFILES``):
mode (major/minor chords), tempo, brightness (low-pass cutoff), loudness, rhythm
density (percussion), register, noise, legato (note length, attack), chord width,
swell (a crescendo repeating every ~2 s), dissonance (detuning, clusters) and space
(reverb). A song's cue values are a blend of its moods' targets and random per-song
variation; ``difficulty`` sets the mix (0: the moods' targets alone, 1: mostly
random) and how often random distractor layers (a drone, a noise band, a second
drum loop) are added. Every cue is a property of loops that repeat all through the
song, so any 3 s training window carries it.

**Artists** have timbral signatures (harmonic profiles of lead, pad and bass
instruments, attack/decay, vibrato, a drum kit, leanings in register, brightness,
space and legato) and mood priors: each artist favours a few moods, so the artist
label carries information about moods (the premise of multi-task learning on
metadata). **Years** change production: bandwidth rises and tape hiss and reverb
fall from ``min_year`` to ``max_year``; each artist is active around an era.

Everything is seeded: per-song random streams derive from (seed, song id), so the
same config gives byte-identical files (on one platform and set of library
versions), and an interrupted run resumes by skipping the files already written
(every file is written atomically; the manifest comes last).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

import numpy as np
import soundfile as sf
from scipy import signal

from mtlmood.errors import ConfigError, DatasetError
from mtlmood.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text

# Bump when the rendering changes, so a resumed run never mixes two generators' files.
GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.csv"
CONFIG_NAME = "synth_config.json"
MANIFEST_COLUMNS = ("song_id", "path", "moods", "artist", "year")
# file extension -> (soundfile container, subtype)
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
MIN_SECONDS = 3.5  # a training window is 187 frames (~3 s); songs must hold one

CUES = ("mode", "tempo", "brightness", "loudness", "density", "register",
        "noise", "legato", "width", "swell", "dissonance", "space")

# Each mood's targets on the cues it moves, in [-1, 1] (cues not named stay random).
# Every core mood has at least one cue nobody else pushes the same way, so any pair
# of moods is separable, while shared cues (tempo, loudness) keep it from being trivial.
MOOD_PROFILES: dict[str, dict[str, float]] = {
    "happy": {"mode": 1.0, "tempo": 0.5, "brightness": 0.7, "register": 0.6, "dissonance": -1.0},
    "sad": {"mode": -1.0, "tempo": -1.0, "brightness": -0.8, "legato": 0.7, "loudness": -0.6, "width": -0.6},
    "energetic": {"loudness": 1.0, "density": 1.0, "tempo": 0.9, "legato": -0.8, "brightness": 0.3},
    "calm": {"loudness": -0.9, "density": -1.0, "legato": 1.0, "tempo": -0.5, "dissonance": -0.6},
    "dark": {"register": -1.0, "noise": 1.0, "dissonance": 0.9, "brightness": -0.8, "mode": -0.5},
    "epic": {"width": 1.0, "swell": 1.0, "space": 1.0, "loudness": 0.7, "register": -0.4, "tempo": -0.3,
             "density": 0.3},
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
DEFAULT_MOODS = ("happy", "sad", "energetic", "calm", "dark", "epic")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic dataset. The defaults are the embedded demo dataset.

    240 songs of 8-12 s from 12 artists render in ~10 s on one core and give the
    demo a study that finishes in minutes on two cores; songs are shorter than
    the paper's 29 s (enough for 2-4 non-overlapping 3 s segments each).
    """

    n_songs: int = 240
    n_artists: int = 12
    moods: tuple[str, ...] = DEFAULT_MOODS  # most popular first (tag counts fall like real ones)
    min_seconds: float = 8.0
    max_seconds: float = 12.0
    sample_rate: int = 16000
    seed: int = 0
    # A cue's value = w * (its moods' target) + (1 - w) * (random), w = 1 - 0.9 * difficulty;
    # distractor layers come with probability = difficulty. 0 = obvious, 1 = very weak cues.
    # 0.3: clear but not trivial (a logistic regression on 3 s log-mel summaries gets a
    # mean ROC-AUC ~0.87 over the 6 moods; ~0.95 at 0, ~0.82 at 0.5, ~0.55 at 0.95).
    difficulty: float = 0.3
    min_year: int = 1975  # 1975-2019 = 45 years = the paper's 9 buckets of 5 years
    max_year: int = 2019
    # P(a song has 1, 2, ... moods); multi-mood songs blend their moods' cues.
    mood_count_probs: tuple[float, ...] = (0.65, 0.35)
    # 0 = every artist picks moods like the population; 1 = each sticks to its favourites.
    artist_prior_strength: float = 0.7
    # Codecs, assigned to songs in turn; compressed ones exercise the decoders.
    formats: tuple[str, ...] = ("wav", "flac", "ogg")
    # Real metadata instead of a random plan: an MTG-Jamendo TSV (songs, artists and
    # tags are taken from it; n_songs, n_artists and moods are then ignored).
    source: str = ""
    source_format: str = "mtg-jamendo"
    limit: int = 0  # keep only the first N songs of the source (0 = all)

    def __post_init__(self) -> None:
        # YAML/JSON hand us lists; tuples keep the config hashable and comparable.
        object.__setattr__(self, "moods", tuple(self.moods))
        object.__setattr__(self, "mood_count_probs", tuple(float(p) for p in self.mood_count_probs))
        object.__setattr__(self, "formats", tuple(self.formats))

    def validate(self) -> "SynthConfig":
        """Raise ConfigError naming the first bad field; return self for chaining."""
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"synth config: {msg}")

        if not self.source:
            if self.n_artists < 1:
                raise bad(f"n_artists must be >= 1, got {self.n_artists}")
            if self.n_songs < self.n_artists:
                raise bad(f"n_songs ({self.n_songs}) must be >= n_artists ({self.n_artists})")
            if not self.moods:
                raise bad("moods must name at least one mood")
            if len(set(self.moods)) != len(self.moods):
                raise bad(f"moods contain duplicates: {list(self.moods)}")
            for mood in self.moods:
                _check_tag(mood)
            if not self.mood_count_probs or any(p < 0 for p in self.mood_count_probs) \
                    or sum(self.mood_count_probs) <= 0:
                raise bad(f"mood_count_probs must be non-negative with a positive sum, "
                          f"got {list(self.mood_count_probs)}")
            if len(self.mood_count_probs) > len(self.moods):
                raise bad(f"mood_count_probs allows {len(self.mood_count_probs)} moods per song "
                          f"but there are only {len(self.moods)} moods")
        elif self.source_format != "mtg-jamendo":
            raise bad(f"source_format {self.source_format!r} is not supported (only 'mtg-jamendo')")
        if self.limit < 0:
            raise bad(f"limit must be >= 0, got {self.limit}")
        if not MIN_SECONDS <= self.min_seconds <= self.max_seconds <= 600:
            raise bad(f"need {MIN_SECONDS} <= min_seconds <= max_seconds <= 600 "
                      f"(a training window is ~3 s), got {self.min_seconds}-{self.max_seconds}")
        if not 8000 <= self.sample_rate <= 48000:
            raise bad(f"sample_rate must be within 8000-48000 Hz, got {self.sample_rate}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise bad(f"difficulty must be within [0, 1], got {self.difficulty}")
        if not 0.0 <= self.artist_prior_strength <= 1.0:
            raise bad(f"artist_prior_strength must be within [0, 1], got {self.artist_prior_strength}")
        if self.min_year > self.max_year:
            raise bad(f"min_year ({self.min_year}) must be <= max_year ({self.max_year})")
        if not self.formats:
            raise bad("formats must name at least one codec")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise bad(f"unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
        if self.seed < 0:
            raise bad(f"seed must be >= 0, got {self.seed}")
        return self


class SynthRecord(NamedTuple):
    """One row of real metadata to synthesize a song for (year None = pick one in the artist's era)."""

    song_id: str
    moods: tuple[str, ...]
    artist: str
    year: Optional[int] = None


@dataclass(frozen=True)
class SongPlan:
    """Everything that decides one song's audio, and its manifest row."""

    song_id: str
    path: str  # relative to the output directory, e.g. "audio/synth_00001.flac"
    moods: tuple[str, ...]
    artist: str
    year: int
    seconds: float


# --------------------------------------------------------------------------- helpers

def _stable_int(*parts: object) -> int:
    """A 64-bit integer from a hash of ``parts`` (Python's hash() changes per process)."""
    blob = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


def _check_tag(name: str) -> None:
    if not name or name != name.strip() or any(c in name for c in ";,\n\r\t\""):
        raise ConfigError(f"synth config: mood {name!r} must be non-empty, without surrounding "
                          f"spaces and without any of ; , \" or control characters")


def mood_profile(name: str) -> dict[str, float]:
    """The cue targets of a mood: hand-designed for known moods, else derived from a
    hash of the name (3 cues pushed firmly one way), so any tag vocabulary is audible."""
    key = name.strip().lower()
    if key in MOOD_PROFILES:
        return dict(MOOD_PROFILES[key])
    rng = np.random.default_rng(_stable_int("mood-profile", key))
    chosen = sorted(rng.choice(len(CUES), size=3, replace=False))
    return {CUES[i]: float(rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0)) for i in chosen}


def _midi_hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _rms(x: np.ndarray) -> float:
    # einsum, not np.dot: dot goes to a multi-threaded BLAS whose spinning threads
    # would double the CPU time on shared machines for no speed-up.
    return float(np.sqrt(np.einsum("i,i->", x, x, dtype=np.float64) / len(x)) + 1e-12)


def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (float32), so layers are mixed by explicit weights (silence stays silent)."""
    return (x * np.float32(1.0 / _rms(x))).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- artists

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
    h = np.arange(1, n + 1, dtype=np.float64)
    amps = h ** -rng.uniform(*tilt)
    amps[1::2] *= rng.uniform(0.05, 1.0)  # even/odd balance: hollow (clarinet-like) vs full
    centre, width, gain = rng.uniform(1.5, 12.0), rng.uniform(0.2, 0.6), rng.uniform(0.0, 4.0)
    amps *= 1.0 + gain * np.exp(-0.5 * (np.log(h / centre) / width) ** 2)  # a formant bump
    amps *= rng.lognormal(0.0, 0.25, n)
    return amps / amps.max()


def artist_voice(name: str, seed: int, min_year: int, max_year: int) -> ArtistVoice:
    """The signature of artist ``name`` (same name and seed -> same voice, in any dataset)."""
    rng = np.random.default_rng(_stable_int("artist", seed, name))
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


def _wavetable(amps: np.ndarray, phases: np.ndarray, max_harmonic: int, size: int = 2048) -> np.ndarray:
    """One period of a band-limited waveform (harmonics above ``max_harmonic`` dropped: no aliasing)."""
    k = max(1, min(len(amps), max_harmonic))
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    spectrum[1:k + 1] = amps[:k] * np.exp(1j * phases[:k])
    table = np.fft.irfft(spectrum, n=size)
    return (table / np.abs(table).max()).astype(np.float32)


def _oscillate(freq: np.ndarray, table: np.ndarray, sr: int) -> np.ndarray:
    """Wavetable oscillator for per-sample frequencies (1-D or one row per voice)."""
    phase = np.cumsum(freq, axis=-1, dtype=np.float64)  # float64: exact enough over minutes
    phase *= len(table) / sr
    index = phase.astype(np.int64)
    index &= len(table) - 1
    return table[index]


def _envelope(dt: np.ndarray, length: np.ndarray | float, attack: float, decay: float,
              release: float = 0.04) -> np.ndarray:
    """Attack ramp, exponential decay, and a short release after the note's end."""
    env = np.minimum(dt / attack, 1.0) * np.exp(-dt / decay)
    return env * np.clip(1.0 - (dt - length) / release, 0.0, 1.0)


# --------------------------------------------------------------------------- planning

def _mood_strength(difficulty: float) -> float:
    """Weight of the moods' targets against random variation in a cue's value."""
    return 1.0 - 0.9 * difficulty


def plan_songs(cfg: SynthConfig) -> list[SongPlan]:
    """The random plan of a synthetic dataset: each song's artist, moods, year and length."""
    cfg.validate()
    rng = np.random.default_rng([cfg.seed, 1])
    n_moods = len(cfg.moods)
    # Moods differ in popularity like real tags (so "top-N moods" is a real choice).
    popularity = 1.0 / np.arange(1, n_moods + 1) ** 0.5
    width = max(2, len(str(cfg.n_artists - 1)))
    artists = [f"artist_{a:0{width}d}" for a in range(cfg.n_artists)]
    priors = []
    for _ in artists:
        favourite = rng.dirichlet(np.full(n_moods, 0.35))
        p = popularity * ((1.0 - cfg.artist_prior_strength) + cfg.artist_prior_strength * n_moods * favourite)
        p += 1e-6  # never exactly 0: a 2-mood draw without replacement needs 2 possible moods
        priors.append(p / p.sum())
    # Some artists are prolific and some are not (so "top-K artists" is a real choice too).
    weights = 1.0 / np.arange(1, cfg.n_artists + 1) ** 0.6
    counts = 1 + rng.multinomial(cfg.n_songs - cfg.n_artists, weights / weights.sum())
    song_artist = rng.permutation(np.repeat(np.arange(cfg.n_artists), counts))
    count_p = np.asarray(cfg.mood_count_probs) / sum(cfg.mood_count_probs)
    eras = [artist_voice(a, cfg.seed, cfg.min_year, cfg.max_year).era for a in artists]
    id_width = max(5, len(str(cfg.n_songs - 1)))
    plans = []
    for i, a in enumerate(song_artist):
        k = int(rng.choice(len(count_p), p=count_p)) + 1
        picked = rng.choice(n_moods, size=k, replace=False, p=priors[a])
        moods = tuple(cfg.moods[j] for j in sorted(picked))
        year = int(np.clip(round(eras[a] + rng.normal(0.0, 3.5)), cfg.min_year, cfg.max_year))
        seconds = round(float(rng.uniform(cfg.min_seconds, cfg.max_seconds)), 2)
        song_id = f"synth_{i:0{id_width}d}"
        fmt = cfg.formats[i % len(cfg.formats)]
        plans.append(SongPlan(song_id, f"audio/{song_id}.{fmt}", moods, artists[a], year, seconds))
    return plans


def plan_from_records(records: Iterable[Sequence], cfg: SynthConfig) -> list[SongPlan]:
    """Plans for real metadata rows ``(song_id, moods, artist, year or None)``.

    Unknown years are drawn around the artist's era; lengths and codecs follow ``cfg``.
    """
    cfg.validate()
    plans: list[SongPlan] = []
    seen_ids: set[str] = set()
    seen_files: set[str] = set()
    for n, row in enumerate(records):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) not in (3, 4):
            raise DatasetError(f"record {n}: expected (song_id, moods, artist[, year]), got {row!r}")
        song_id, moods, artist = str(row[0]), row[1], str(row[2])
        year = row[3] if len(row) == 4 else None
        if isinstance(moods, str):
            moods = tuple(m for m in moods.split(";") if m)
        moods = tuple(dict.fromkeys(str(m).strip() for m in moods))  # dedupe, keep order
        if not song_id:
            raise DatasetError(f"record {n}: empty song_id")
        if song_id in seen_ids:
            raise DatasetError(f"record {n}: duplicate song_id {song_id!r}")
        if not moods:
            raise DatasetError(f"record {n} ({song_id}): no moods")
        for mood in moods:
            try:
                _check_tag(mood)
            except ConfigError as exc:
                raise DatasetError(f"record {n} ({song_id}): {exc}") from None
        seen_ids.add(song_id)
        rng = np.random.default_rng([cfg.seed, 3, _stable_int(song_id)])
        if year is None or year == "":
            era = artist_voice(artist, cfg.seed, cfg.min_year, cfg.max_year).era
            year = int(np.clip(round(era + rng.normal(0.0, 3.5)), cfg.min_year, cfg.max_year))
        try:
            year = int(year)
        except (TypeError, ValueError):
            raise DatasetError(f"record {n} ({song_id}): year {year!r} is not an integer") from None
        seconds = round(float(rng.uniform(cfg.min_seconds, cfg.max_seconds)), 2)
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", song_id)
        if stem.lower() in seen_files:  # two ids that differ only in odd characters or case
            stem = f"{stem}_{_stable_int(song_id) % 10**8:08d}"
        seen_files.add(stem.lower())
        fmt = cfg.formats[n % len(cfg.formats)]
        plans.append(SongPlan(song_id, f"audio/{stem}.{fmt}", moods, artist, year, seconds))
    if not plans:
        raise DatasetError("no records to synthesize")
    return plans


def read_mtg_jamendo_records(path: str | Path, limit: int = 0) -> list[SynthRecord]:
    """Songs, artists and mood/theme tags of an MTG-Jamendo TSV (years are not in it).

    Columns: TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, then one or more tag
    columns like ``mood/theme---happy``. Rows without a mood/theme tag are skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()  # the official files use CRLF
    except FileNotFoundError:
        raise DatasetError(f"MTG-Jamendo metadata not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read MTG-Jamendo metadata {path}: {exc}") from None
    header = [c.strip() for c in lines[0].split("\t")] if lines else []
    if header[:2] != ["TRACK_ID", "ARTIST_ID"]:
        raise DatasetError(f"{path}: not an MTG-Jamendo TSV (header should start with "
                           f"TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, TAGS; got {header[:6]})")
    records: list[SynthRecord] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) < 6:
            raise DatasetError(f"{path}:{lineno}: expected at least 6 tab-separated columns, got {len(cols)}")
        tags = tuple(dict.fromkeys(c.split("---", 1)[1] for c in cols[5:]
                                   if c.startswith("mood/theme---") and c.split("---", 1)[1]))
        if tags:
            records.append(SynthRecord(cols[0], tags, cols[1], None))
        if limit and len(records) >= limit:
            break
    if not records:
        raise DatasetError(f"{path}: no rows with mood/theme tags")
    return records


# --------------------------------------------------------------------------- rendering

_KICK_W = np.array([1, 0, .15, 0, .45, 0, .15, .1, .8, 0, .15, 0, .45, 0, .2, .1])
_SNARE_W = np.array([0, 0, 0, 0, 1, 0, 0, .1, 0, 0, 0, 0, 1, 0, .1, .2])
_HAT_W = np.tile([1.0, .35, .7, .35], 4)


def song_cues(moods: Sequence[str], voice: ArtistVoice, difficulty: float,
              rng: np.random.Generator) -> dict[str, float]:
    """A song's cue values in [-1, 1]: its moods' targets blended with per-song
    variation (which leans the artist's way); ``difficulty`` sets the blend.

    Where a song's moods disagree on a cue the most extreme target wins (not the
    mean): each mood keeps its most distinctive cues instead of two moods cancelling."""
    targets: dict[str, list[float]] = {}
    for mood in moods:
        for cue, value in mood_profile(mood).items():
            targets.setdefault(cue, []).append(value)
    strength = _mood_strength(difficulty)
    free = rng.normal(0.0, 0.5, len(CUES))  # drawn for every cue: the stream never depends on moods
    cues = {}
    for i, cue in enumerate(CUES):
        value = voice.bias.get(cue, 0.0) + free[i]
        if cue in targets:
            target = max(targets[cue], key=abs)
            value = strength * target + (1.0 - strength) * value
        cues[cue] = float(np.clip(value, -1.0, 1.0))
    return cues


def _drum_sounds(voice: ArtistVoice, sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(int(0.35 * sr)) / sr
    kick_f = voice.kick_hz * (1.0 + 3.0 * np.exp(-t / 0.02))  # pitch drop: the "thump"
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / sr) * np.exp(-t / 0.14)
    ts = t[: int(0.2 * sr)]
    snare_noise = signal.sosfilt(signal.butter(2, [1000, min(5000, 0.45 * sr)], "bandpass", fs=sr,
                                               output="sos"), rng.standard_normal(len(ts)))
    snare = (1.5 * snare_noise * np.exp(-ts / 0.07) + 0.6 * np.sin(2 * np.pi * 190 * ts) * np.exp(-ts / 0.05))
    th = t[: int(0.08 * sr)]
    hat_noise = signal.sosfilt(signal.butter(2, min(voice.hat_hz, 0.42 * sr), "highpass", fs=sr,
                                             output="sos"), rng.standard_normal(len(th)))
    hat = hat_noise * np.exp(-th / 0.022)
    return {"kick": kick.astype(np.float32), "snare": snare.astype(np.float32), "hat": hat.astype(np.float32)}


def _drum_loop(n: int, sr: int, step: float, density: float, sounds: dict[str, np.ndarray],
               rng: np.random.Generator) -> np.ndarray:
    """A one-bar pattern (16 steps) whose hit probabilities grow with ``density``, looped."""
    out = np.zeros(n + int(0.4 * sr), dtype=np.float32)
    for name, weights in (("kick", _KICK_W), ("snare", _SNARE_W), ("hat", _HAT_W)):
        hits = rng.random(16) < np.clip(1.7 * density * weights, 0.0, 1.0)
        velocity = 0.6 + 0.4 * rng.random(16)
        sound = sounds[name]
        n_steps = int(n / sr / step) + 1
        for s in range(n_steps):
            if hits[s % 16]:
                start = int(round(s * step * sr))
                out[start:start + len(sound)] += velocity[s % 16] * sound
    return out[:n]


def _reverb(x: np.ndarray, sr: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolution with decaying noise: a cheap room whose size and level are cues."""
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt(np.sum(ir ** 2))
    tail = signal.oaconvolve(x, ir.astype(np.float32))[: len(x)]  # float32 FFTs: twice as fast
    return (1.0 - wet) * x + wet * tail


@dataclass
class _Song:
    """What every rendering stage shares: the time axis, the cues and the random stream."""

    sr: int
    t: np.ndarray  # seconds, float32 is precise enough for songs of minutes
    c: dict[str, float]  # cues in [0, 1]
    cues: dict[str, float]  # cues in [-1, 1]
    voice: ArtistVoice
    rng: np.random.Generator
    beat: float = 0.0
    bar: float = 0.0

    @property
    def n(self) -> int:
        return len(self.t)

    @property
    def nyquist_safe(self) -> float:
        return 0.45 * self.sr


def _harmony(song: _Song) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 4-chord loop; each chord is major with a probability set by "mode".
    Returns per-bar chord roots (MIDI), per-bar thirds (3 or 4 semitones), the
    per-bar major flags and each sample's bar index."""
    c, rng = song.c, song.rng
    bar_idx = (song.t // song.bar).astype(np.int64)
    n_bars = int(bar_idx[-1]) + 1
    root = 38.0 + 34.0 * c["register"] + rng.integers(-2, 3)  # MIDI D2..C5, +- a random key
    chord_roots = np.concatenate([[0], rng.choice([2, 3, 5, 7, 8, 9, 10], size=3)])
    p_major = float(np.clip(0.5 + 0.7 * song.cues["mode"], 0.0, 1.0))
    major = rng.random(4) < p_major
    loop = np.arange(n_bars) % 4
    return root + chord_roots[loop], np.where(major[loop], 4.0, 3.0), major[loop], bar_idx


def _pads(song: _Song, bar_root: np.ndarray, bar_third: np.ndarray, bar_idx: np.ndarray) -> np.ndarray:
    """2..6 chord voices stacked over 1..3 octaves ("width"); detuned pairs and a
    cluster tone when dissonant; short stabs on every beat (staccato) up to one long chord
    per bar (legato)."""
    c, voice = song.c, song.voice
    n_bars = len(bar_root)
    n_voices = 2 + int(round(4 * c["width"]))
    octaves = 1 + int(round(2 * c["width"]))
    detune = c["dissonance"] * 0.35 * np.where(np.arange(n_voices) % 2 == 0, 1.0, -1.0)  # semitones
    pad_midi = []
    for k in range(n_voices):
        octave = 12.0 * math.floor(k * octaves / n_voices) - (12.0 if c["width"] > 0.7 else 0.0)
        interval = (np.zeros(n_bars), bar_third, np.full(n_bars, 7.0))[k % 3]  # root, third, fifth
        pad_midi.append(bar_root + interval + octave + detune[k])
    if c["dissonance"] > 0.6:  # a minor second or tritone above the root: tension
        pad_midi.append(bar_root + song.rng.choice([1.0, 6.0]) + 12.0)
    pad_f = _midi_hz(np.maximum(np.array(pad_midi), 28.0)).astype(np.float32)  # (voices, n_bars)
    table = _wavetable(voice.pad, voice.phases, int(song.nyquist_safe / pad_f.max()))
    pads = _oscillate(pad_f[:, bar_idx], table, song.sr).sum(axis=0)
    period = song.bar if c["legato"] > 0.6 else (2 * song.beat if c["legato"] > 0.3 else song.beat)
    return pads * _envelope(song.t % period, period * (0.25 + 0.75 * c["legato"]),
                            voice.attack + 0.35 * c["legato"] ** 2, voice.decay * (1.0 + 3.0 * c["legato"]))


def _melody(song: _Song, bar_root: np.ndarray, bar_major: np.ndarray) -> np.ndarray:
    """A random walk on the current chord's scale, one note per (half) beat, with rests."""
    c, voice, rng, t = song.c, song.voice, song.rng, song.t
    slot = song.beat if c["legato"] > 0.5 else song.beat / 2
    slot_idx = (t // slot).astype(np.int64)
    n_slots = int(slot_idx[-1]) + 1
    steps = np.cumsum(rng.choice([-2, -1, 0, 1, 2], size=n_slots))
    degree = np.abs((steps + 7) % 18 - 9)  # reflect into 0..9 instead of clipping
    slot_bar = np.minimum((np.arange(n_slots) * slot // song.bar).astype(np.int64), len(bar_root) - 1)
    major_scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    minor_scale = np.array([0, 2, 3, 5, 7, 8, 10, 12, 14, 15])
    scale = np.where(bar_major[slot_bar, None], major_scale, minor_scale)
    mel_hz = _midi_hz(bar_root[slot_bar] + 12.0 + scale[np.arange(n_slots), degree]).astype(np.float32)
    mel_amp = (rng.random(n_slots) > 0.15).astype(np.float32)  # rests
    # 2**(cents/1200) ~ 1 + 0.000578*cents for a few cents: no per-sample power needed.
    depth = np.float32(0.000578 * voice.vibrato_cents)
    vibrato = 1.0 + depth * np.sin(np.float32(2 * np.pi * voice.vibrato_hz) * t)
    freq = mel_hz[slot_idx] * vibrato
    table = _wavetable(voice.lead, voice.phases, int(song.nyquist_safe / (float(freq.max()) + 1.0)))
    melody = _oscillate(freq, table, song.sr) * mel_amp[slot_idx]
    attack, decay = voice.attack * (1.0 + 4.0 * c["legato"]), voice.decay * (0.5 + 2.0 * c["legato"])
    return melody * _envelope(t % slot, slot * (0.15 + 0.85 * c["legato"]), attack, decay)


def _bass(song: _Song, bar_root: np.ndarray, bar_idx: np.ndarray) -> np.ndarray:
    """The chord root one or two octaves down, on every beat."""
    midi = np.maximum(bar_root - 12.0 * (1 + (bar_root > 50)), 28.0)
    table = _wavetable(song.voice.bass, song.voice.phases, 8)
    bass = _oscillate(_midi_hz(midi).astype(np.float32)[bar_idx], table, song.sr)
    return bass * _envelope(song.t % song.beat, song.beat * (0.3 + 0.7 * song.c["legato"]), 0.01, 0.4)


def _noise_bed(song: _Song) -> np.ndarray:
    """Rumble (leaky-integrated noise, low end) plus hiss: the "noise" cue."""
    white = song.rng.standard_normal(song.n).astype(np.float32)
    rumble = signal.lfilter([1.0], [1.0, -0.995], white)
    rumble = signal.sosfilt(signal.butter(1, 25.0, "highpass", fs=song.sr, output="sos"), rumble)
    return _unit(_unit(rumble) + 0.3 * white)


def _distractors(song: _Song, difficulty: float, sounds: dict[str, np.ndarray]) -> np.ndarray:
    """Layers unrelated to mood (a drone, a noise band, a second drum loop), more
    likely and louder as difficulty rises: they blur register, noise and density."""
    rng, n, sr = song.rng, song.n, song.sr
    out = np.zeros(n, dtype=np.float32)
    draws = rng.random(3)
    levels = difficulty * rng.uniform(0.2, 0.9, 3)
    if draws[0] < difficulty:
        drone_f = np.full(n, float(_midi_hz(rng.uniform(30, 80))), dtype=np.float32)
        out += levels[0] * _unit(_oscillate(drone_f, _wavetable(song.voice.pad, song.voice.phases, 6), sr))
    if draws[1] < difficulty:
        lo = rng.uniform(150.0, 4000.0)
        sos = signal.butter(2, [lo, min(2.0 * lo, song.nyquist_safe)], "bandpass", fs=sr, output="sos")
        out += levels[1] * _unit(signal.sosfilt(sos, rng.standard_normal(n).astype(np.float32)))
    if draws[2] < difficulty:
        step = 60.0 / rng.uniform(60.0, 170.0) / 4
        out += levels[2] * _unit(_drum_loop(n, sr, step, rng.uniform(0.3, 1.0), sounds, rng))
    return out


def _produce(song: _Song, mix: np.ndarray, year_fraction: float) -> np.ndarray:
    """Room, era and mastering: older = narrower band, more hiss, more reverb;
    loudness -28..-10 dBFS RMS with tanh taming peaks (and audibly squashing loud songs)."""
    c, sr, n, y = song.c, song.sr, song.n, year_fraction
    wet = float(np.clip(0.03 + 0.45 * c["space"] + 0.15 * (1.0 - y), 0.0, 0.75))
    mix = _reverb(mix, sr, 0.3 + 2.2 * c["space"], wet, song.rng)
    bandwidth = 3000.0 * (7600.0 / 3000.0) ** y
    mix = signal.sosfilt(signal.butter(4, min(bandwidth, song.nyquist_safe), fs=sr, output="sos"), mix)
    hiss = song.rng.standard_normal(n).astype(np.float32)
    mix = _unit(mix) + np.float32(10.0 ** ((-38.0 - 32.0 * y) / 20.0)) * hiss
    mix = np.float32(10.0 ** ((-28.0 + 18.0 * c["loudness"]) / 20.0)) * _unit(mix)
    mix = 0.97 * np.tanh(mix / 0.97)
    fade = min(n // 2, int(0.01 * sr))
    ramp = np.linspace(0.0, 1.0, fade)
    mix[:fade] *= ramp
    mix[n - fade:] *= ramp[::-1]
    return mix.astype(np.float32)


def render_song(plan: SongPlan, cfg: SynthConfig, voice: Optional[ArtistVoice] = None) -> np.ndarray:
    """The audio of one planned song: mono float32 in [-1, 1] at ``cfg.sample_rate``."""
    voice = voice or artist_voice(plan.artist, cfg.seed, cfg.min_year, cfg.max_year)
    rng = np.random.default_rng([cfg.seed, 2, _stable_int(plan.song_id)])
    cues = song_cues(plan.moods, voice, cfg.difficulty, rng)
    c = {k: (v + 1.0) / 2.0 for k, v in cues.items()}
    sr = cfg.sample_rate
    song = _Song(sr=sr, t=(np.arange(int(round(plan.seconds * sr))) / sr).astype(np.float32),
                 c=c, cues=cues, voice=voice, rng=rng)
    song.beat = 60.0 / (60.0 * (170.0 / 60.0) ** c["tempo"])  # 60..170 BPM, even steps in log tempo
    song.bar = 4 * song.beat

    bar_root, bar_third, bar_major, bar_idx = _harmony(song)
    tonal = (0.8 * _unit(_pads(song, bar_root, bar_third, bar_idx))
             + _unit(_melody(song, bar_root, bar_major))
             + 0.7 * _unit(_bass(song, bar_root, bar_idx)))
    # Swell: a crescendo that restarts every ~2.2 s, so a 3 s window always holds one.
    depth = 0.9 * max(0.0, 2.0 * c["swell"] - 1.0)
    if depth > 0.0:
        period = song.beat * max(1, round(2.2 / song.beat))
        ramp = (song.t % period) / period
        tonal *= (1.0 - depth) + depth * ramp * np.sqrt(ramp)
    mix = _unit(tonal)
    sounds = _drum_sounds(voice, sr, rng)
    if c["density"] > 0.15:
        drums = _drum_loop(song.n, sr, song.beat / 4, c["density"], sounds, rng)
        mix += np.float32(0.3 + 1.2 * c["density"]) * _unit(drums)
    # Brightness filters the band (drums too: a dark mix is a muffled one); noise has its own cue.
    cutoff = 350.0 * (7200.0 / 350.0) ** c["brightness"]
    mix = _unit(signal.sosfilt(signal.butter(2, min(cutoff, song.nyquist_safe), fs=sr, output="sos"), mix))
    if c["noise"] > 0.05:
        mix += np.float32(1.2 * c["noise"] ** 1.5) * _noise_bed(song)
    mix += _distractors(song, cfg.difficulty, sounds)
    year_fraction = (plan.year - cfg.min_year) / max(1, cfg.max_year - cfg.min_year)
    return _produce(song, mix, float(np.clip(year_fraction, 0.0, 1.0)))


# --------------------------------------------------------------------------- encoding

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (polynomial 0x04C11DB7, not reflected, init 0) through zlib's
    reflected one: reverse each byte's bits in, reverse the 32-bit result out."""
    raw = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """libsndfile picks a random Ogg stream serial number; set a fixed one (and fix
    every page's CRC) so that the same song encodes to the same bytes."""
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos:pos + 4] != b"OggS":
            raise RuntimeError("unexpected Ogg page layout from libsndfile")  # a bug, not user input
        n_segments = out[pos + 26]
        size = 27 + n_segments + sum(out[pos + 27:pos + 27 + n_segments])
        out[pos + 14:pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22:pos + 26] = b"\0\0\0\0"
        out[pos + 22:pos + 26] = _ogg_crc(bytes(out[pos:pos + size])).to_bytes(4, "little")
        pos += size
    return bytes(out)


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str, serial: int = 1) -> bytes:
    """Encode mono float audio as ``fmt`` (wav/flac: 16-bit PCM; ogg: Vorbis; mp3), deterministically."""
    container, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format=container, subtype=subtype)
    data = buffer.getvalue()
    return _fix_ogg_serial(data, serial) if fmt == "ogg" else data


# --------------------------------------------------------------------------- writing

def _stamp(cfg: SynthConfig, plans: list[SongPlan]) -> dict:
    digest = hashlib.sha256(json.dumps([asdict(p) for p in plans]).encode()).hexdigest()
    stamp = {"generator_version": GENERATOR_VERSION, "config": asdict(cfg), "n_songs": len(plans),
             "plan_sha256": digest}
    return json.loads(json.dumps(stamp))  # tuples -> lists: compares equal to the stamp read back


def _write_dataset(out_dir: str | Path, cfg: SynthConfig, plans: list[SongPlan],
                   progress: bool, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output directory {out} is a file")
    stamp = _stamp(cfg, plans)
    stamp_path = out / CONFIG_NAME
    audio_dir = out / "audio"
    same = False  # True: resuming the same dataset, so the audio files there are kept
    if stamp_path.exists():
        try:
            old = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            old = None
        same = isinstance(old, dict) and all(old.get(k) == v for k, v in stamp.items())
        if not same and not overwrite:
            raise DatasetError(f"{out} already holds a synthetic dataset made with other settings "
                               f"(see {stamp_path}); choose another directory or overwrite it "
                               f"(--overwrite)")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out} is not empty and holds no {CONFIG_NAME}; choose an empty "
                           f"directory or overwrite it (--overwrite)")
    if not same:
        # Overwriting: the old dataset's audio goes before the new stamp is written, so a
        # resumed run can never take an old file (same name, other content) for a new one.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        if audio_dir.is_dir():
            for old_file in audio_dir.iterdir():
                if old_file.suffix.lstrip(".") in FORMATS:
                    old_file.unlink()
        # The stamp goes first: a later run then knows which files it may keep.
        atomic_write_json(stamp_path, stamp)
    audio_dir.mkdir(parents=True, exist_ok=True)
    for stale in audio_dir.glob(".*.tmp"):  # left by a hard kill during an atomic write
        stale.unlink()

    voices: dict[str, ArtistVoice] = {}
    iterator: Iterable[SongPlan] = plans
    if progress:
        from tqdm import tqdm

        iterator = tqdm(plans, desc="synth", unit="song")
    for plan in iterator:
        target = out / plan.path
        if target.exists():
            continue  # written by an earlier (interrupted) run of the same config
        if plan.artist not in voices:
            voices[plan.artist] = artist_voice(plan.artist, cfg.seed, cfg.min_year, cfg.max_year)
        wave = render_song(plan, cfg, voices[plan.artist])
        fmt = target.suffix.lstrip(".")
        atomic_write_bytes(target, encode_audio(wave, cfg.sample_rate, fmt,
                                                serial=_stable_int("ogg", plan.song_id) & 0x7FFFFFFF))

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for plan in plans:
        writer.writerow([plan.song_id, plan.path, ";".join(plan.moods), plan.artist, plan.year])
    manifest = out / MANIFEST_NAME
    if not manifest.exists() or manifest.read_text(encoding="utf-8") != rows.getvalue():
        atomic_write_text(manifest, rows.getvalue())  # last: its presence means the dataset is complete
    return manifest


def synthesize(out_dir: str | Path, cfg: SynthConfig = SynthConfig(), *, progress: bool = False,
               overwrite: bool = False) -> Path:
    """Write a synthetic dataset under ``out_dir`` and return the manifest's path.

    Writes ``audio/<song_id>.<fmt>``, ``manifest.csv`` (song_id,path,moods,artist,year;
    moods ";"-separated; paths relative to ``out_dir``) and ``synth_config.json``.
    Re-running with the same config keeps the files already written (resume); a
    directory holding another dataset is an error unless ``overwrite``.
    """
    cfg.validate()
    if cfg.source:
        plans = plan_from_records(read_mtg_jamendo_records(cfg.source, cfg.limit), cfg)
    else:
        plans = plan_songs(cfg)
    return _write_dataset(out_dir, cfg, plans, progress, overwrite)


def synthesize_from_records(out_dir: str | Path, records: Iterable[Sequence],
                            cfg: SynthConfig = SynthConfig(), *, progress: bool = False,
                            overwrite: bool = False) -> Path:
    """Like ``synthesize``, with one song per real metadata row ``(song_id, moods, artist, year)``:
    the song sounds like its tags (known moods by design, others by a hash of the tag)
    and its artist. ``year`` None picks a year in the artist's era."""
    cfg.validate()
    records = list(records)
    if cfg.limit:
        records = records[: cfg.limit]
    return _write_dataset(out_dir, cfg, plan_from_records(records, cfg), progress, overwrite)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """The rows of a synthetic manifest (for summaries and tests)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
