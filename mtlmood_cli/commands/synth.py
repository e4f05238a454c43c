"""`mtlmood synth`: write a synthetic dataset (audio + manifest) that needs no download.

mtlmood synth                                   # the embedded default -> runs/synthetic
mtlmood synth runs/hard --difficulty 0.9 --songs 600 --artists 30
mtlmood synth runs/mtg --from-mtg-jamendo ../shared/data/mtg-jamendo/autotagging_moodtheme.tsv --limit 500
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from mtlmood.errors import ConfigError

if TYPE_CHECKING:
    from mtlmood.synth import SynthConfig

DEFAULT_OUT = "runs/synthetic"  # = DatasetConfig.root's default, so `mtlmood synth` feeds the defaults
# Ctrl-C (see mtlmood_cli.main): every finished song is on disk, and the same command resumes.
INTERRUPTED = "interrupted; finished songs are kept, re-run the same command to continue"


def _range(text: str, kind: type, what: str) -> tuple:
    """'8-12' -> (8, 12); '10' -> (10, 10)."""
    parts = text.split("-", 1) if "-" in text else [text, text]
    try:
        low, high = (kind(p.strip()) for p in parts)
    except ValueError:
        raise ConfigError(f"--{what} must look like N or MIN-MAX, got {text!r}") from None
    return low, high


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic dataset with audible moods, artists and years",
        description="Render songs whose moods, artists and years are audible in a log-mel "
        "spectrogram, and write OUT_DIR/audio/*, OUT_DIR/manifest.csv "
        "(song_id,path,moods,artist,year) and OUT_DIR/synth_config.json. Same "
        "settings -> byte-identical files; re-running resumes an interrupted run.",
    )
    p.add_argument(
        "out_dir", nargs="?", default=DEFAULT_OUT, metavar="OUT_DIR", help=f"output directory (default {DEFAULT_OUT})"
    )
    p.add_argument("--config", "-c", metavar="FILE", help="YAML file of SynthConfig fields (flags win)")
    p.add_argument("--songs", type=int, metavar="N", help="number of songs (default 240)")
    p.add_argument("--artists", type=int, metavar="K", help="number of artists (default 12)")
    p.add_argument(
        "--moods",
        type=_list,
        metavar="LIST",
        help="comma-separated mood names (default happy,sad,energetic,calm,dark,epic; unknown names get hashed cues)",
    )
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    p.add_argument(
        "--difficulty",
        type=float,
        metavar="D",
        help="0 = obvious mood cues ... 1 = cues drowned in per-song variation (default 0.3)",
    )
    p.add_argument("--duration", metavar="SECONDS", help="song length, N or MIN-MAX (default 8-12)")
    p.add_argument("--sample-rate", type=int, metavar="HZ", help="Hz (default 16000)")
    p.add_argument("--years", metavar="MIN-MAX", help="year range (default 1975-2019)")
    p.add_argument(
        "--moods-per-song",
        type=_list,
        metavar="P1,P2,...",
        help="probabilities of 1, 2, ... moods per song (default 0.65,0.35)",
    )
    p.add_argument(
        "--artist-prior-strength",
        type=float,
        metavar="P",
        help="0 = artists pick moods like everyone ... 1 = each sticks to its favourites (default 0.7)",
    )
    p.add_argument(
        "--world",
        choices=("default", "metadata-helps", "metadata-costs", "null"),
        help="a known-answer world and its recommended settings (other flags still win): "
        "metadata-helps = artists are a clean proxy of noisy, faintly audible moods; "
        "metadata-costs = clearly audible moods and artists that say nothing about them (a large alpha "
        "spends a narrow model on the artists; the demo's world); "
        "null = the metadata-helps world with metadata independent of mood (mtlmood.synth.worlds)",
    )
    p.add_argument(
        "--label-noise",
        type=float,
        metavar="P",
        help="share of songs whose manifest mood labels are redrawn at random (default 0)",
    )
    p.add_argument(
        "--formats", type=_list, metavar="LIST", help="codecs used in turn: wav,flac,ogg,mp3 (default wav,flac,ogg)"
    )
    p.add_argument(
        "--from-mtg-jamendo",
        metavar="TSV",
        help="one song per row of an MTG-Jamendo TSV, or of the "
        "autotagging_moodtheme.tsv in a folder (its tracks, artists and mood/theme tags)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="with --from-mtg-jamendo: only the first N tagged rows")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset made with other settings in OUT_DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> "SynthConfig":
    """SynthConfig defaults <- --config YAML <- flags."""
    from mtlmood.config_io import load_config
    from mtlmood.synth import SynthConfig

    cfg = load_config(SynthConfig, args.config) if args.config else SynthConfig()
    changes: dict = {}
    if args.world is not None:  # the world's recommended settings, under the flags
        from mtlmood.synth.worlds import WORLD_PRESETS

        changes.update(WORLD_PRESETS[args.world])
        changes["world"] = args.world
    simple = {
        "songs": "n_songs",
        "artists": "n_artists",
        "moods": "moods",
        "seed": "seed",
        "difficulty": "difficulty",
        "sample_rate": "sample_rate",
        "formats": "formats",
        "artist_prior_strength": "artist_prior_strength",
        "limit": "limit",
        "label_noise": "label_noise",
    }
    for flag, name in simple.items():
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    if args.duration is not None:
        changes["min_seconds"], changes["max_seconds"] = _range(args.duration, float, "duration")
    if args.years is not None:
        changes["min_year"], changes["max_year"] = _range(args.years, int, "years")
    if args.moods_per_song is not None:
        try:
            changes["mood_count_probs"] = tuple(float(x) for x in args.moods_per_song)
        except ValueError:
            raise ConfigError(f"--moods-per-song must be numbers, got {','.join(args.moods_per_song)}") from None
    if args.from_mtg_jamendo:
        clash = [f"--{f}" for f in ("songs", "artists", "moods") if getattr(args, f) is not None]
        if clash:
            raise ConfigError(
                f"{', '.join(clash)} cannot be combined with --from-mtg-jamendo "
                f"(songs, artists and moods come from the TSV; use --limit)"
            )
        changes["source"] = str(Path(args.from_mtg_jamendo).resolve())
        changes["source_format"] = "mtg-jamendo"
    elif args.limit is not None and not cfg.source:
        raise ConfigError("--limit only applies with --from-mtg-jamendo (use --songs)")
    return dataclasses.replace(cfg, **changes).validate()


def run(args: argparse.Namespace) -> int:
    """Write the dataset and print what was written (songs, artists, years, moods)."""
    from mtlmood.synth import CONFIG_NAME, read_manifest, synthesize
    from mtlmood.synth.write import config_stamp

    cfg = config_from_args(args)
    out = Path(args.out_dir)
    # Files of an earlier run with the same settings are kept (resume); count them for the summary.
    existed: set[str] = set()
    try:
        same = json.loads((out / CONFIG_NAME).read_text()).get("config") == config_stamp(cfg)
    except (OSError, ValueError, AttributeError):
        same = False
    if same and (out / "audio").is_dir():
        existed = {f.name for f in (out / "audio").iterdir()}
    start = time.perf_counter()
    manifest = synthesize(out, cfg, progress=not args.quiet, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    rows = read_manifest(manifest)

    kept = sum(Path(r["path"]).name in existed for r in rows)
    written = len(rows) - kept
    artists = {r["artist"] for r in rows}
    years = [int(r["year"]) for r in rows]
    moods = Counter(m for r in rows for m in r["moods"].split(";"))
    multi = sum(";" in r["moods"] for r in rows)
    speed = f", {written / elapsed:.1f} songs/s" if written and not kept else ""
    print(
        f"synthesized {len(rows)} songs from {len(artists)} artists, years {min(years)}-{max(years)}, "
        f"{cfg.min_seconds:g}-{cfg.max_seconds:g} s at {cfg.sample_rate} Hz, difficulty {cfg.difficulty:g} "
        f"({written} written, {kept} kept from an earlier run; {elapsed:.1f} s{speed})"
    )
    shown = ", ".join(f"{m} {n}" for m, n in moods.most_common(12))
    more = f", ... {len(moods) - 12} more" if len(moods) > 12 else ""
    print(f"moods: {shown}{more}; songs with several moods: {multi}")
    print(f"manifest: {manifest}")
    return 0
