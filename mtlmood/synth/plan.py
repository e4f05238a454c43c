"""The plan of a synthetic dataset: its settings (``SynthConfig``) and, per song, the
artist, moods, year, length and file (``SongPlan``), drawn at random or taken from real
metadata (an MTG-Jamendo TSV, read through the dataset adapter).

**Artists** favour a few moods (``artist_prior_strength``), so the artist label carries
information about moods (the premise of multi-task learning on metadata), and are
active around an era, which sets their songs' **years**. Moods and artists differ in
popularity like real tags. Every draw comes from a stream seeded by ``seed`` (and, for
real metadata, by the song's id), so the same config always gives the same plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterable, Literal, NamedTuple, Optional, Sequence

import numpy as np
from pydantic import Field

from mtlmood.coerce import check_config
from mtlmood.config import Count, NonNegativeFloat, NonNegativeInt, PathText, Seed, UnitInterval
from mtlmood.datasets.mtg_jamendo import read_tracks
from mtlmood.errors import ConfigError, DatasetError
from mtlmood.synth.cues import artist_voice, stable_int
from mtlmood.synth.encode import FORMATS

MIN_SECONDS = 3.5  # a training window is 187 frames (~3 s); songs must hold one
MAX_SECONDS = 600.0
Seconds = Annotated[float, Field(ge=MIN_SECONDS, le=MAX_SECONDS)]
DEFAULT_MOODS = ("happy", "sad", "energetic", "calm", "dark", "epic")
# Known-answer worlds (mtlmood.synth.worlds): what the truth about metadata is.
WORLDS = ("default", "metadata-helps", "metadata-costs", "null")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic dataset. The defaults are the embedded demo dataset.

    240 songs of 8-12 s from 12 artists render in ~10 s on one core and give the
    demo a study that finishes in minutes on two cores; songs are shorter than
    the paper's 29 s (enough for 2-4 non-overlapping 3 s segments each).
    """

    n_songs: Count = 240
    n_artists: Count = 12
    moods: tuple[str, ...] = DEFAULT_MOODS  # most popular first (tag counts fall like real ones)
    min_seconds: Seconds = 8.0
    max_seconds: Seconds = 12.0
    sample_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
    seed: Seed = 0
    # A cue's value = w * (its moods' target) + (1 - w) * (random), w = 1 - 0.9 * difficulty;
    # distractor layers come with probability = difficulty. 0 = obvious, 1 = very weak cues.
    # 0.3: clear but not trivial (a logistic regression on 3 s log-mel summaries gets a
    # mean ROC-AUC ~0.87 over the 6 moods; ~0.95 at 0, ~0.82 at 0.5, ~0.55 at 0.95).
    difficulty: UnitInterval = 0.3
    min_year: int = 1975  # 1975-2019 = 45 years = the paper's 9 buckets of 5 years
    max_year: int = 2019
    # P(a song has 1, 2, ... moods); multi-mood songs blend their moods' cues.
    mood_count_probs: tuple[NonNegativeFloat, ...] = (0.65, 0.35)
    # 0 = every artist picks moods like the population; 1 = each sticks to its favourites.
    artist_prior_strength: UnitInterval = 0.7
    # Codecs, assigned to songs in turn; compressed ones exercise the decoders.
    formats: tuple[str, ...] = ("wav", "flac", "ogg")
    # Real metadata instead of a random plan: an MTG-Jamendo TSV or its folder (songs,
    # artists and tags are taken from it; n_songs, n_artists and moods are then ignored).
    source: PathText = ""
    source_format: str = "mtg-jamendo"
    limit: NonNegativeInt = 0  # keep only the first N songs of the source (0 = all)
    # Which known-answer world this is (see mtlmood.synth.worlds, whose world_config
    # gives each world's recommended settings): "null" and "metadata-costs" require
    # artist_prior_strength 0 (metadata independent of mood), "metadata-helps" a positive one.
    world: Literal["default", "metadata-helps", "metadata-costs", "null"] = "default"
    # Share of songs whose manifest mood labels are redrawn at random (their audio keeps
    # the true moods): noisy mood labels, while artist labels stay clean.
    label_noise: UnitInterval = 0.0
    # Level of each artist's signature riff (its own rhythm, step length and pitch, see
    # render._signature) against the mix: 0 = none, artists differ by timbre and leanings
    # only. Makes the artist task easy for a small CNN, which cannot see absolute pitch.
    artist_signature: UnitInterval = 0.0

    def __post_init__(self) -> None:
        # YAML/JSON hand us lists; tuples keep the config hashable and comparable.
        object.__setattr__(self, "moods", tuple(self.moods))
        object.__setattr__(self, "mood_count_probs", tuple(float(p) for p in self.mood_count_probs))
        object.__setattr__(self, "formats", tuple(self.formats))

    def validate(self) -> "SynthConfig":
        """Raise ConfigError (one line) naming the first bad field; return self for chaining.

        Each field's type and range first (pydantic, via ``check_config``), then the rules
        that tie fields together.
        """

        def bad(msg: str) -> ConfigError:
            return ConfigError(f"synth config: {msg}")

        try:
            check_config(self)
        except ConfigError as exc:
            raise bad(str(exc)) from None
        if not self.source:
            if self.n_songs < self.n_artists:
                raise bad(f"n_songs ({self.n_songs}) must be >= n_artists ({self.n_artists})")
            if not self.moods:
                raise bad("moods must name at least one mood")
            if len(set(self.moods)) != len(self.moods):
                raise bad(f"moods contain duplicates: {list(self.moods)}")
            for mood in self.moods:
                _check_tag(mood)
            if not self.mood_count_probs or sum(self.mood_count_probs) <= 0:
                raise bad(
                    f"mood_count_probs must be non-negative with a positive sum, got {list(self.mood_count_probs)}"
                )
            if len(self.mood_count_probs) > len(self.moods):
                raise bad(
                    f"mood_count_probs allows {len(self.mood_count_probs)} moods per song "
                    f"but there are only {len(self.moods)} moods"
                )
        elif self.source_format != "mtg-jamendo":
            raise bad(f"source_format {self.source_format!r} is not supported (only 'mtg-jamendo')")
        if not self.min_seconds <= self.max_seconds:
            raise bad(
                f"need {MIN_SECONDS} <= min_seconds <= max_seconds <= {MAX_SECONDS:g} "
                f"(a training window is ~3 s), got {self.min_seconds}-{self.max_seconds}"
            )
        if self.world in ("null", "metadata-costs") and self.artist_prior_strength != 0.0:
            raise bad(
                f"world {self.world!r} needs artist_prior_strength 0 (metadata independent of mood), "
                f"got {self.artist_prior_strength}; mtlmood.synth.worlds.world_config({self.world!r}) sets it"
            )
        if self.world == "metadata-helps" and self.artist_prior_strength <= 0.0:
            raise bad("world 'metadata-helps' needs artist_prior_strength > 0 (artists carry a mood prior)")
        if self.world != "default" and self.source:
            raise bad(f"world {self.world!r} plans random songs; it cannot be combined with a metadata source")
        if self.min_year > self.max_year:
            raise bad(f"min_year ({self.min_year}) must be <= max_year ({self.max_year})")
        if not self.formats:
            raise bad("formats must name at least one codec")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise bad(f"unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
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


def _check_tag(name: str) -> None:
    """Raise ConfigError unless ``name`` can be a mood in a manifest (";" separates moods there)."""
    if not name or name != name.strip() or any(c in name for c in ';,\n\r\t"'):
        raise ConfigError(
            f"synth config: mood {name!r} must be non-empty, without surrounding "
            f'spaces and without any of ; , " or control characters'
        )


def plan_dataset(cfg: SynthConfig) -> list[SongPlan]:
    """The plan ``cfg`` asks for: one song per tagged track of its ``source`` if it has
    one (the first ``limit``), else a random plan."""
    cfg.validate()
    if cfg.source:
        return plan_from_records(read_mtg_jamendo_records(cfg.source, cfg.limit), cfg)
    return plan_songs(cfg)


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
        rng = np.random.default_rng([cfg.seed, 3, stable_int(song_id)])
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
            stem = f"{stem}_{stable_int(song_id) % 10**8:08d}"
        seen_files.add(stem.lower())
        fmt = cfg.formats[n % len(cfg.formats)]
        plans.append(SongPlan(song_id, f"audio/{stem}.{fmt}", moods, artist, year, seconds))
    if not plans:
        raise DatasetError("no records to synthesize")
    return plans


def read_mtg_jamendo_records(path: str | Path, limit: int = 0) -> list[SynthRecord]:
    """Songs, artists and mood/theme tags of MTG-Jamendo metadata (a TSV, or the folder
    holding ``autotagging_moodtheme.tsv``), read by the dataset adapter; the public
    metadata has no years. Tracks without a mood/theme tag are skipped (nothing to sound
    like), and ``limit`` counts only the tracks kept.
    """
    records: list[SynthRecord] = []
    for track in read_tracks(path, tag_set="moods", setting="the synth source"):
        if not track.tags:
            continue
        # The adapter says None for a missing artist; the plan names artists by string.
        records.append(SynthRecord(track.song_id, track.tags, track.artist or "", None))
        if limit and len(records) >= limit:
            break
    if not records:
        raise DatasetError(f"{path}: no rows with mood/theme tags")
    return records
