"""Known-answer worlds: synthetic datasets in which the truth about metadata is known.

A study of the metadata-loss weight alpha must be shown to *find* an effect where
there is one and to stay quiet where there is none. ``SynthConfig.world`` names the
world a dataset is drawn from, and ``world_config(name, **changes)`` gives its
recommended settings (``WORLD_PRESETS``):

- ``"default"``: the embedded demo world, as before worlds existed: artists favour
  a few moods (``artist_prior_strength`` 0.7) and mood cues are clear. No claim about
  alpha is made for it.
- ``"metadata-helps"``: the artist label is a strong, cleanly labelled proxy of mood
  while the mood labels are noisy and the mood cues in the audio faint. Every artist
  sticks to its favourite moods (``artist_prior_strength`` 1; the artist carries > 0.6
  bits of the true mood's ~1.5), the audio's mood cues are faint (``difficulty`` 0.9),
  ``label_noise`` 0.3 of the songs carry mood labels redrawn at random in the manifest
  (their audio keeps the true moods), and each artist plays its own riff
  (``artist_signature``), which a small CNN can hear (it cannot see absolute pitch, so
  timbre alone left both arms near chance). 12 artists with ~170 songs each make the
  artist task learnable and alpha = 3/12. Measured (benchmarks/results/known_answer.md,
  5 seeds, the demo's model): the heuristic alpha leads the baseline by +1.2 +- 0.5
  PR-AUC points at the demo's budget (16 epochs) and by -0.2 +- 0.4 at 40 epochs: here
  metadata speeds learning up, it does not raise the converged score.
- ``"metadata-costs"``: the demo's world. Moods are clearly audible (``difficulty``
  0.3, clean labels) and artists are audible too (their signature riff) but say
  nothing about mood (``artist_prior_strength`` 0). The metadata task competes with
  the mood task for a narrow trunk (the demo's 8 filters): the larger alpha, the more
  of the trunk the artist task takes, and mood PR-AUC falls. Measured outside the
  study (benchmarks/results/known_answer.md): alpha = 3 cost 12 points at 30 epochs,
  and the heuristic alpha = 3/2 of a 2-artist-class cell costs mood at the demo's
  budget and at convergence. The known answer: where N_meta is small the heuristic
  alpha is large and loses against alpha = 0 (and against the best alpha).
- ``"null"``: the same world with the link cut: moods are drawn independently of the
  artist (``artist_prior_strength`` must be 0), so artist and year, which follows the
  artist's era, carry no information about mood. Alpha should make no difference
  beyond seed noise.

``label_noise`` works in any world. It never touches the plan (``plan_songs``): the
plan is what the audio sounds like; ``label_moods`` is what the manifest says, a
deterministic function of (seed, song id), so the same config writes the same files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mtlmood.synth.cues import stable_int
from mtlmood.synth.plan import WORLDS, SongPlan, SynthConfig

# The recommended settings of each world (the fields not named keep SynthConfig's
# defaults). The two known-answer worlds differ only in artist_prior_strength, so any
# difference between them is the artist -> mood link. Small and short like the demo's
# data (study/demo.py): 2,000 songs of 3.5-4 s render and prepare in ~2 minutes.
_KNOWN_ANSWER: dict[str, Any] = dict(
    n_songs=2000,
    n_artists=12,
    moods=("happy", "sad", "calm"),
    mood_count_probs=(1.0,),
    min_seconds=3.5,
    max_seconds=4.0,
    difficulty=0.9,
    label_noise=0.3,
    artist_signature=1.0,
)
WORLD_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "metadata-helps": {**_KNOWN_ANSWER, "world": "metadata-helps", "artist_prior_strength": 1.0},
    "metadata-costs": {
        **_KNOWN_ANSWER,
        "world": "metadata-costs",
        "artist_prior_strength": 0.0,
        "difficulty": 0.3,
        "label_noise": 0.0,
    },
    "null": {**_KNOWN_ANSWER, "world": "null", "artist_prior_strength": 0.0},
}
assert set(WORLD_PRESETS) == set(WORLDS)


def world_config(world: str = "default", **changes: Any) -> SynthConfig:
    """The recommended ``SynthConfig`` of ``world``, with ``changes`` applied (validated)."""
    if world not in WORLD_PRESETS:
        raise ValueError(f"unknown world {world!r}; known: {', '.join(WORLDS)}")
    return dataclasses.replace(SynthConfig(), **{**WORLD_PRESETS[world], **changes}).validate()


def label_moods(plan: SongPlan, cfg: SynthConfig) -> tuple[str, ...]:
    """The moods the manifest gives ``plan``'s song: its true moods, or, for a share
    ``cfg.label_noise`` of the songs, as many moods drawn at random (uniformly, whatever
    the artist) from ``cfg.moods``. A redraw may hit the true moods again; the share of
    songs whose labels actually change is about label_noise * (1 - 1/len(moods))."""
    if cfg.label_noise <= 0.0 or cfg.source:
        return plan.moods
    rng = np.random.default_rng([cfg.seed, 4, stable_int(plan.song_id)])
    if rng.random() >= cfg.label_noise:
        return plan.moods
    picked = rng.choice(len(cfg.moods), size=len(plan.moods), replace=False)
    return tuple(cfg.moods[j] for j in sorted(picked))


__all__ = ["WORLDS", "WORLD_PRESETS", "label_moods", "world_config"]
