"""The dataset folder: ``synthesize`` renders every planned song into ``audio/`` and
writes ``manifest.csv`` and ``synth_config.json``; ``read_manifest`` reads the rows back.

Resuming: every file is written atomically and the manifest comes last, so its presence
means the dataset is complete. ``synth_config.json`` (the stamp: generator version,
config and a hash of the plan) is written first; a later run with the same stamp keeps
the audio files already there, and one with another stamp refuses unless ``overwrite``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from mtlmood.datasets.synthetic import MANIFEST as MANIFEST_NAME  # the name the reader looks for
from mtlmood.errors import DatasetError
from mtlmood.fileio import atomic_write_json, atomic_write_text
from mtlmood.synth.cues import ArtistVoice, artist_voice, stable_int
from mtlmood.synth.encode import FORMATS, write_audio
from mtlmood.synth.plan import SongPlan, SynthConfig, plan_dataset, plan_from_records
from mtlmood.synth.render import render_song
from mtlmood.synth.worlds import label_moods

# Bump when the rendering changes, so a resumed run never mixes two generators' files.
GENERATOR_VERSION = 1
CONFIG_NAME = "synth_config.json"
MANIFEST_COLUMNS = ("song_id", "path", "moods", "artist", "year")


# Fields added after datasets were first stamped: left out of the stamp while at their
# default, so a dataset written before they existed still resumes (and keeps its stamp).
_LATER_FIELDS = {"world": "default", "label_noise": 0.0, "artist_signature": 0.0}


def config_stamp(cfg: SynthConfig) -> dict:
    """The config as the stamp records it (JSON types; later fields only when set)."""
    fields = asdict(cfg)
    for name, default in _LATER_FIELDS.items():
        if fields.get(name) == default:
            del fields[name]
    return json.loads(json.dumps(fields))


def _stamp(cfg: SynthConfig, plans: list[SongPlan]) -> dict:
    """What identifies a dataset: a folder with an equal stamp may keep its audio files."""
    digest = hashlib.sha256(json.dumps([asdict(p) for p in plans]).encode()).hexdigest()
    stamp = {
        "generator_version": GENERATOR_VERSION,
        "config": config_stamp(cfg),
        "n_songs": len(plans),
        "plan_sha256": digest,
    }
    return json.loads(json.dumps(stamp))  # tuples -> lists: compares equal to the stamp read back


def _render_and_write(out: Path, cfg: SynthConfig, plans: list[SongPlan], progress: bool = False) -> None:
    """Render each planned song and write its audio file (atomically)."""
    voices: dict[str, ArtistVoice] = {}
    iterator: Iterable[SongPlan] = plans
    if progress:
        from tqdm import tqdm

        iterator = tqdm(plans, desc="synth", unit="song")
    for plan in iterator:
        if plan.artist not in voices:
            voices[plan.artist] = artist_voice(plan.artist, cfg.seed, cfg.min_year, cfg.max_year)
        write_audio(
            out / plan.path,
            render_song(plan, cfg, voices[plan.artist]),
            cfg.sample_rate,
            serial=stable_int("ogg", plan.song_id) & 0x7FFFFFFF,
        )


def _write_dataset(
    out_dir: str | Path,
    cfg: SynthConfig,
    plans: list[SongPlan],
    progress: bool,
    overwrite: bool,
    workers: int = 1,
) -> Path:
    """Render and write ``plans`` under ``out_dir`` (resuming or refusing as the stamp says)."""
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
            raise DatasetError(
                f"{out} already holds a synthetic dataset made with other settings "
                f"(see {stamp_path}); choose another directory or overwrite it "
                f"(--overwrite)"
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(
            f"{out} is not empty and holds no {CONFIG_NAME}; choose an empty directory or overwrite it (--overwrite)"
        )
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

    todo = [plan for plan in plans if not (out / plan.path).exists()]  # kept: written by an earlier run
    if workers > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor

        # Songs are independent (each one's randomness comes from its own id), so processes
        # render them in any order and the files are the same as with one process.
        chunks = [todo[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_render_and_write, [out] * workers, [cfg] * workers, chunks))
    else:
        _render_and_write(out, cfg, todo, progress)

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for plan in plans:
        # The manifest's moods are the labels (noisy when cfg.label_noise > 0); the audio has the plan's.
        writer.writerow([plan.song_id, plan.path, ";".join(label_moods(plan, cfg)), plan.artist, plan.year])
    manifest = out / MANIFEST_NAME
    if not manifest.exists() or manifest.read_text(encoding="utf-8") != rows.getvalue():
        atomic_write_text(manifest, rows.getvalue())  # last: its presence means the dataset is complete
    return manifest


def synthesize(
    out_dir: str | Path,
    cfg: SynthConfig | None = None,
    *,
    progress: bool = False,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Write a synthetic dataset under ``out_dir`` and return the manifest's path.

    Writes ``audio/<song_id>.<fmt>``, ``manifest.csv`` (song_id,path,moods,artist,year;
    moods ";"-separated; paths relative to ``out_dir``) and ``synth_config.json``.
    Re-running with the same config keeps the files already written (resume); a
    directory holding another dataset is an error unless ``overwrite``. ``workers`` > 1
    renders songs in that many processes (the same files as one process).
    """
    cfg = cfg if cfg is not None else SynthConfig()
    return _write_dataset(out_dir, cfg, plan_dataset(cfg), progress, overwrite, workers)


def synthesize_from_records(
    out_dir: str | Path,
    records: Iterable[Sequence],
    cfg: SynthConfig | None = None,
    *,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Like ``synthesize``, with one song per real metadata row ``(song_id, moods, artist, year)``:
    the song sounds like its tags (known moods by design, others by a hash of the tag)
    and its artist. ``year`` None picks a year in the artist's era."""
    cfg = cfg if cfg is not None else SynthConfig()
    cfg.validate()
    records = list(records)
    if cfg.limit:
        records = records[: cfg.limit]
    return _write_dataset(out_dir, cfg, plan_from_records(records, cfg), progress, overwrite)


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """The rows of a synthetic manifest (for summaries and tests)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
