"""Synthetic music whose moods, artists and years are audible: everything runs with no download.

    mtlmood synth runs/synthetic                       # the embedded default (240 songs)
    mtlmood synth runs/mtg --from-mtg-jamendo autotagging_moodtheme.tsv --limit 500

    from mtlmood.synth import SynthConfig, synthesize
    manifest = synthesize("runs/synthetic", SynthConfig(n_songs=400, difficulty=0.5))

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

The modules, in the order data flows through them:

- ``plan``: ``SynthConfig`` and the song plan (artist, moods, year, length, file per
  song), random or from MTG-Jamendo metadata (read by ``mtlmood.datasets.mtg_jamendo``);
- ``cues``: what moods and artists sound like (cue targets, artist voices);
- ``render``: the DSP that turns one planned song into samples;
- ``encode``: samples -> wav/flac/ogg/mp3 bytes, deterministically;
- ``write``: the dataset folder (audio, manifest, stamp; resume and overwrite);
- ``worlds``: known-answer worlds (``SynthConfig.world``): "default" (the demo),
  "metadata-helps" (artists are a clean proxy of noisy, faintly audible moods: the
  heuristic alpha should beat the baseline) and "null" (metadata independent of mood:
  alpha should not matter), with their recommended settings (``world_config``) and
  the manifest's possibly noisy mood labels (``label_noise``, ``label_moods``).
"""

# What other code uses; the modules hold the rest (e.g. plan_from_records, encode_audio).
from mtlmood.synth.cues import CUES, MOOD_PROFILES, mood_profile
from mtlmood.synth.plan import SongPlan, SynthConfig, SynthRecord, plan_songs, read_mtg_jamendo_records
from mtlmood.synth.render import render_song
from mtlmood.synth.worlds import WORLD_PRESETS, WORLDS, label_moods, world_config
from mtlmood.synth.write import (
    CONFIG_NAME,
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    read_manifest,
    synthesize,
    synthesize_from_records,
)

__all__ = [
    "CONFIG_NAME",
    "CUES",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "MOOD_PROFILES",
    "SongPlan",
    "SynthConfig",
    "SynthRecord",
    "mood_profile",
    "plan_songs",
    "read_manifest",
    "read_mtg_jamendo_records",
    "render_song",
    "synthesize",
    "synthesize_from_records",
    "WORLDS",
    "WORLD_PRESETS",
    "label_moods",
    "world_config",
]
