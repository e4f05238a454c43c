"""DSP: the audio of one planned song, from its cue values and its artist's voice.

``render_song`` builds a 4-chord loop (pads, melody, bass) with an optional swell,
adds a drum loop, filters the mix by the brightness cue, adds a noise bed and random
distractor layers, then a room, the era's bandwidth and hiss, and mastering. Every
cue lives in loops that repeat all through the song, so any 3 s training window
carries it. The only randomness is the song's own stream, seeded by (seed, song id).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import signal

from mtlmood.synth.cues import ArtistVoice, artist_voice, song_cues, stable_int
from mtlmood.synth.plan import SongPlan, SynthConfig

_KICK_W = np.array([1, 0, 0.15, 0, 0.45, 0, 0.15, 0.1, 0.8, 0, 0.15, 0, 0.45, 0, 0.2, 0.1])
_SNARE_W = np.array([0, 0, 0, 0, 1, 0, 0, 0.1, 0, 0, 0, 0, 1, 0, 0.1, 0.2])
_HAT_W = np.tile([1.0, 0.35, 0.7, 0.35], 4)


def _midi_hz(midi: np.ndarray | float) -> np.ndarray:
    """MIDI note number(s) -> Hz (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _rms(x: np.ndarray) -> float:
    # einsum, not np.dot: dot goes to a multi-threaded BLAS whose spinning threads
    # would double the CPU time on shared machines for no speed-up.
    return float(np.sqrt(np.einsum("i,i->", x, x, dtype=np.float64) / len(x)) + 1e-12)


def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (float32), so layers are mixed by explicit weights (silence stays silent)."""
    return (x * np.float32(1.0 / _rms(x))).astype(np.float32, copy=False)


def _wavetable(amps: np.ndarray, phases: np.ndarray, max_harmonic: int, size: int = 2048) -> np.ndarray:
    """One period of a band-limited waveform (harmonics above ``max_harmonic`` dropped: no aliasing)."""
    k = max(1, min(len(amps), max_harmonic))
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    spectrum[1 : k + 1] = amps[:k] * np.exp(1j * phases[:k])
    table = np.fft.irfft(spectrum, n=size)
    return (table / np.abs(table).max()).astype(np.float32)


def _oscillate(freq: np.ndarray, table: np.ndarray, sr: int) -> np.ndarray:
    """Wavetable oscillator for per-sample frequencies (1-D or one row per voice)."""
    phase = np.cumsum(freq, axis=-1, dtype=np.float64)  # float64: exact enough over minutes
    phase *= len(table) / sr
    index = phase.astype(np.int64)
    index &= len(table) - 1
    return table[index]


def _envelope(
    dt: np.ndarray, length: np.ndarray | float, attack: float, decay: float, release: float = 0.04
) -> np.ndarray:
    """Attack ramp, exponential decay, and a short release after the note's end."""
    env = np.minimum(dt / attack, 1.0) * np.exp(-dt / decay)
    return env * np.clip(1.0 - (dt - length) / release, 0.0, 1.0)


def _drum_sounds(voice: ArtistVoice, sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kick, snare and hi-hat one-shots; the artist's kit sets the kick's pitch and the hat's colour."""
    t = np.arange(int(0.35 * sr)) / sr
    kick_f = voice.kick_hz * (1.0 + 3.0 * np.exp(-t / 0.02))  # pitch drop: the "thump"
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / sr) * np.exp(-t / 0.14)
    ts = t[: int(0.2 * sr)]
    snare_noise = signal.sosfilt(
        signal.butter(2, [1000, min(5000, 0.45 * sr)], "bandpass", fs=sr, output="sos"), rng.standard_normal(len(ts))
    )
    snare = 1.5 * snare_noise * np.exp(-ts / 0.07) + 0.6 * np.sin(2 * np.pi * 190 * ts) * np.exp(-ts / 0.05)
    th = t[: int(0.08 * sr)]
    hat_noise = signal.sosfilt(
        signal.butter(2, min(voice.hat_hz, 0.42 * sr), "highpass", fs=sr, output="sos"), rng.standard_normal(len(th))
    )
    hat = hat_noise * np.exp(-th / 0.022)
    return {"kick": kick.astype(np.float32), "snare": snare.astype(np.float32), "hat": hat.astype(np.float32)}


def _drum_loop(
    n: int, sr: int, step: float, density: float, sounds: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
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
                out[start : start + len(sound)] += velocity[s % 16] * sound
    return out[:n]


def _reverb(x: np.ndarray, sr: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Convolution with decaying noise: a cheap room whose size and level are cues."""
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir /= np.sqrt(np.sum(ir**2))
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
    return pads * _envelope(
        song.t % period,
        period * (0.25 + 0.75 * c["legato"]),
        voice.attack + 0.35 * c["legato"] ** 2,
        voice.decay * (1.0 + 3.0 * c["legato"]),
    )


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


def _signature(song: _Song, seed: int) -> np.ndarray:
    """The artist's riff: a 16-step pattern of short tonal blips that only this artist
    plays (its own step length, pattern, pitch and decay, from a stream of (seed, artist)
    alone, so every song of the artist has it and the song's own stream is untouched)."""
    rng = np.random.default_rng(stable_int("signature", seed, song.voice.name))
    step = float(rng.uniform(0.07, 0.16))
    pattern = rng.random(16) < 0.5
    pattern[0] = True
    freq = float(_midi_hz(rng.uniform(55.0, 90.0)))
    decay = float(rng.uniform(0.02, 0.07))
    t = np.arange(int(0.25 * song.sr), dtype=np.float32) / song.sr
    table = _wavetable(song.voice.lead, song.voice.phases, int(song.nyquist_safe / freq))
    blip = _oscillate(np.full(len(t), freq, np.float32), table, song.sr) * np.exp(-t / decay)
    out = np.zeros(song.n + len(t), dtype=np.float32)
    for s in range(int(song.n / song.sr / step) + 1):
        if pattern[s % 16]:
            start = int(round(s * step * song.sr))
            out[start : start + len(t)] += blip
    return out[: song.n]


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
    mix[n - fade :] *= ramp[::-1]
    return mix.astype(np.float32)


def render_song(plan: SongPlan, cfg: SynthConfig, voice: Optional[ArtistVoice] = None) -> np.ndarray:
    """The audio of one planned song: mono float32 in [-1, 1] at ``cfg.sample_rate``."""
    voice = voice or artist_voice(plan.artist, cfg.seed, cfg.min_year, cfg.max_year)
    rng = np.random.default_rng([cfg.seed, 2, stable_int(plan.song_id)])
    cues = song_cues(plan.moods, voice, cfg.difficulty, rng)
    c = {k: (v + 1.0) / 2.0 for k, v in cues.items()}
    sr = cfg.sample_rate
    song = _Song(
        sr=sr,
        t=(np.arange(int(round(plan.seconds * sr))) / sr).astype(np.float32),
        c=c,
        cues=cues,
        voice=voice,
        rng=rng,
    )
    song.beat = 60.0 / (60.0 * (170.0 / 60.0) ** c["tempo"])  # 60..170 BPM, even steps in log tempo
    song.bar = 4 * song.beat

    bar_root, bar_third, bar_major, bar_idx = _harmony(song)
    tonal = (
        0.8 * _unit(_pads(song, bar_root, bar_third, bar_idx))
        + _unit(_melody(song, bar_root, bar_major))
        + 0.7 * _unit(_bass(song, bar_root, bar_idx))
    )
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
    if cfg.artist_signature > 0.0:
        mix += np.float32(cfg.artist_signature) * _unit(_signature(song, cfg.seed))
    year_fraction = (plan.year - cfg.min_year) / max(1, cfg.max_year - cfg.min_year)
    return _produce(song, mix, float(np.clip(year_fraction, 0.0, 1.0)))
