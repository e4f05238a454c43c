"""Batch inference at catalogue scale: a million-row resume and merge in bounded memory, and the
Ray Data pipeline against ``Predictor.predict_files`` on hundreds of files.

    .venv/bin/python -m benchmarks.batch_scale_bench                  # 1,000,000 rows, 504 files (~6 min, 2 cores)
    .venv/bin/python -m benchmarks.batch_scale_bench --rows 20000 --before-rows 2000 --files 0 --out /tmp/x

1. **Resume and merge** (no audio): ``--rows`` finished rows as synthetic part files of
   ``--part-rows`` (mtlmood.records' schema, ``--moods`` moods; benchmarks/batch_scale_data.py),
   plus ``--new`` tracks not scored yet. A fresh process builds the track list, resumes
   (``BatchOutput.todo``: the key column) and merges (``BatchOutput.finalize``); reported:
   wall time and peak RSS (VmHWM) after each phase, and the merge against a plain copy of
   the same bytes (each file fsync-ed, as the merge's output is) measured just before it.
   The code before this change (git ``BEFORE``: every row as Python dicts, 64-row parts)
   runs the same on ``--before-rows`` rows.
2. **Files/s**: ``--files`` links to the real clips (first 29 s), a paper-width untrained
   model: ``predict_files`` in this process (the baseline), the local ``mtlmood predict
   --output`` path (``score_to_output`` + ``finalize``) and the Ray Data path
   (``predict_with_ray``, on a local Ray with this machine's cores, started before timing),
   one after the other, once each after a warm-up; max |Δp| of the Ray rows. And the share
   of a 2-minute file's bytes that a decode reads (the first 29 s only).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from benchmarks.batch_scale_data import BEFORE, copy_files, make_parts, measure_in_subprocess
from benchmarks.common import RESULTS, fmt, machine, machine_line, publish, require_audio_files, table

GIB = 1024.0


LAYOUTS = {"local": 0, "ray": 16}  # parts in input order / 16-row runs shuffled (batch_scale_data.make_parts)


def scale_part(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Resume + merge of ``args.rows`` rows in both layouts (and the code before, on ``args.before_rows``)."""
    result: dict[str, Any] = {}
    for layout, run_rows in LAYOUTS.items():
        out = work / layout / "moods.parquet"
        parts = Path(str(out) + ".parts")
        print(f"batch_scale: {layout}: writing {args.rows:,} rows as parts of {args.part_rows:,}", flush=True)
        made = make_parts(parts, args.rows, args.part_rows, args.moods, run_rows=run_rows)
        copy_s = copy_files(parts, work / "copy")
        shutil.rmtree(work / "copy")
        print(f"batch_scale: {layout}: resume + merge in a fresh process", flush=True)
        after = measure_in_subprocess("measure", out, args.rows, args.new, args.moods)
        result[layout] = {"parts": made, "copy_s": copy_s, "after": after, "merge_vs_copy": after["merge_s"] / copy_s}
        shutil.rmtree(work / layout)
    if args.before_rows:
        before_out = work / "before" / "moods.parquet"
        print(f"batch_scale: the code before ({BEFORE}) on {args.before_rows:,} rows, 64-row parts", flush=True)
        result["before_parts"] = make_parts(
            Path(str(before_out) + ".parts"), args.before_rows, 64, args.moods, run_rows=0
        )
        result["before"] = measure_in_subprocess("measure-before", before_out, args.before_rows, 0, args.moods)
    return result


def bytes_read_share(work: Path) -> dict[str, float]:
    """Share of a 2-minute file's bytes a decode reads (mtlmood.batch_audio.read_track)."""
    import soundfile as sf

    import mtlmood.batch_audio as batch_audio
    from mtlmood.config import FeatureConfig

    class Furthest(io.BufferedReader):
        furthest = 0

        def readinto(self, buffer: Any) -> int:
            n = super().readinto(buffer)
            Furthest.furthest = max(Furthest.furthest, self.tell())
            return n

    wave = (np.random.default_rng(0).standard_normal(44_100 * 120) * 0.1).astype(np.float32)
    shares = {}
    # The module's own name ``open`` shadows the builtin for read_track only (undone below).
    vars(batch_audio)["open"] = lambda file, mode: Furthest(io.FileIO(file, mode))
    try:
        for suffix in (".wav", ".flac"):
            path = work / f"long{suffix}"
            sf.write(path, wave, 44_100)
            Furthest.furthest = 0
            batch_audio.read_track(str(path), FeatureConfig())
            shares[suffix[1:]] = Furthest.furthest / path.stat().st_size
    finally:
        del vars(batch_audio)["open"]
    return shares


def files_part(work: Path, n_files: int, n_filters: int, cores: int) -> dict[str, Any]:
    """Ray Data vs predict_files vs the local command on ``n_files`` files."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import pyarrow.parquet as pq
    import ray

    from catalog.pipeline import predict_with_ray
    from mtlmood.batch_predict import BatchOutput, score_to_output
    from mtlmood.checkpoint import read_card
    from mtlmood.inference import Predictor
    from mtlmood.synth.checkpoints import untrained_checkpoint

    clips = require_audio_files()
    folder = work / "audio"
    folder.mkdir()
    files: list[str] = []
    for copy in range(math.ceil(n_files / len(clips))):
        for clip in clips:
            if len(files) < n_files:
                (folder / f"{copy:03d}-{clip.name}").symlink_to(clip)
                files.append(str(folder / f"{copy:03d}-{clip.name}"))
    checkpoint = untrained_checkpoint(work / "checkpoint", n_filters=n_filters, n_meta=50, realistic_batchnorm=True)
    card = read_card(checkpoint)
    predictor = Predictor.from_checkpoint(checkpoint)
    list(predictor.predict_files(files[: len(clips)], workers=2))  # warm-up: threads, caches, the first forward
    seconds: dict[str, float] = {}
    print(f"batch_scale: {len(files)} files: predict_files", flush=True)
    started = time.perf_counter()
    expected = list(predictor.predict_files(files, workers=2))
    seconds["predict_files"] = time.perf_counter() - started
    print("batch_scale: the local command path", flush=True)
    started = time.perf_counter()
    local = BatchOutput(work / "local.parquet", card.mood_names, card.checkpoint_id)
    score_to_output(predictor, files, local, workers=2)
    local.finalize(files)
    seconds["local"] = time.perf_counter() - started
    print("batch_scale: Ray Data", flush=True)
    started = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    started = time.perf_counter()
    run = predict_with_ray(checkpoint, files, BatchOutput(work / "ray.parquet", card.mood_names, card.checkpoint_id))
    seconds["ray"] = time.perf_counter() - started
    ray.shutdown()
    rows = pq.read_table(run.summary.output).to_pylist()
    assert [r["path"] for r in rows] == files and all(r["error"] is None for r in rows)
    got = np.array([list(r["moods"].values()) for r in rows])
    want = np.array([list(p.probabilities.values()) for p in expected])
    return {
        "files": len(files),
        "seconds": seconds,
        "files_per_s": {k: len(files) / s for k, s in seconds.items()},
        "ray_start_s": ray_start,
        "max_abs_dprob_ray": float(np.abs(got - want).max()),
        "bytes_read_share": bytes_read_share(work),
    }


def markdown(
    info: dict[str, Any], args: argparse.Namespace, scale: dict[str, Any], files: Optional[dict[str, Any]]
) -> list[str]:
    local, ray = scale["local"], scale["ray"]
    mib = {k: scale[k]["parts"]["bytes"] / 2**20 for k in LAYOUTS}

    def both(make: Any) -> list[str]:
        return [make(scale[k], mib[k]) for k in LAYOUTS]

    rows = [
        ["parts (files)", *both(lambda r, m: f"{r['parts']['parts']:,} of {args.part_rows:,} rows, {m:,.0f} MiB")],
        ["peak RSS: imports + the track list", *both(lambda r, m: f"{r['after']['rss_tracks_mib']:,.0f} MiB")],
        [
            "resume (`todo`: the key column)",
            *both(lambda r, m: f"{r['after']['resume_s']:.1f} s, peak {r['after']['rss_resume_mib']:,.0f} MiB"),
        ],
        [
            "merge (`finalize`: streamed)",
            *both(
                lambda r, m: (
                    f"{r['after']['merge_s']:.1f} s ({m / r['after']['merge_s']:,.0f} MiB/s), "
                    f"peak {r['after']['rss_merge_mib']:,.0f} MiB"
                )
            ),
        ],
        [
            "plain copy of the same bytes (fsync)",
            *both(lambda r, m: f"{r['copy_s']:.2f} s ({m / r['copy_s']:,.0f} MiB/s)"),
        ],
        ["merge ÷ copy (time)", *both(lambda r, m: f"{r['merge_vs_copy']:.1f}×")],
    ]
    peak = max(local["after"]["rss_merge_mib"], ray["after"]["rss_merge_mib"])
    md = [
        "# Batch inference at scale",
        "",
        machine_line(info),
        "",
        f"## Resume and merge: {args.rows:,} rows, {args.moods} moods (no audio)",
        "",
        f"Synthetic parts (benchmarks/batch_scale_data.py: mtlmood.records' schema, float64 moods, 1 % failures) "
        f"plus {args.new:,} tracks not scored yet, laid out as the local path leaves them (tracks in input order) "
        "and as a Ray Data job does (16-row scoring batches finished out of order). One fresh process builds the "
        "track list, resumes and merges; peak RSS is its VmHWM after each phase (cumulative). Goal: ≤ 1 GiB.",
        "",
        table(["", "local path's parts", "Ray Data's parts"], rows),
        "",
        f"Peak driver RSS of a run: **{peak / GIB:.2f} GiB** ({'met' if peak <= GIB else 'NOT met'}: ≤ 1 GiB), "
        f"the track list of {args.rows + args.new:,} paths included. Output "
        f"{local['after']['output_bytes'] / 2**20:,.0f} MiB, {local['after']['rows_out']:,} rows, "
        f"{local['after']['failures']:,} failures. The copy reads from the page cache, as the merge does: "
        "the merge decodes and re-encodes Parquet, the copy moves bytes.",
    ]
    if "before" in scale:
        before, n = scale["before"], args.before_rows
        per_million = 1e6 / n
        md += [
            "",
            f"The code before ({BEFORE}: `BatchOutput.existing` read every row into Python dicts, three "
            f"times a run; 64-row parts) on {n:,} rows, {scale['before_parts']['parts']:,} parts: resume "
            f"{before['resume_s']:.1f} s, merge {before['merge_s']:.1f} s, peak RSS {before['rss_merge_mib']:,.0f} MiB "
            f"(imports + track list {before['rss_tracks_mib']:,.0f} MiB) — ×{per_million:.0f} for a million rows: "
            f"~{(before['rss_merge_mib'] - before['rss_tracks_mib']) * per_million / GIB:.1f} GiB and "
            f"~{(before['resume_s'] + before['merge_s']) * per_million / 60:.0f} min.",
        ]
    if files:
        fps, base = files["files_per_s"], files["files_per_s"]["predict_files"]
        rows2 = [
            ["`Predictor.predict_files` (this process)", fmt(fps["predict_files"]), "1.00×"],
            ["`mtlmood predict --output` (local: + parts, merge)", fmt(fps["local"]), f"{fps['local'] / base:.2f}×"],
            [
                "Ray Data (paths → decode tasks → actor pool → parts, merge)",
                fmt(fps["ray"]),
                f"{fps['ray'] / base:.2f}×",
            ],
        ]
        share = files["bytes_read_share"]
        md += [
            "",
            f"## Files/s: {files['files']} files, paper-width model, {info['cores']} cores",
            "",
            f"Links to the real clips (first 29 s), an untrained 128-filter model, fp32 on CPU; one run each "
            f"after a warm-up (a shared machine: load average {info['loadavg'][0]:.1f} at the start). Ray Data on a "
            f"local Ray with {info['cores']} CPUs (started before timing, {files['ray_start_s']:.1f} s); its time "
            "includes starting the actor pool and the merge.",
            "",
            table(["path", "files/s", "vs predict_files"], rows2),
            "",
            f"Ray rows vs predict_files: max |Δp| {files['max_abs_dprob_ray']:.1e}. A decode reads "
            f"{share['wav']:.0%} of a 2-minute WAV and {share['flac']:.0%} of a 2-minute FLAC (the first 29 s); "
            "Ray's `read_binary_files`, used before, read every byte and moved it through the object store.",
        ]
    return md


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished rows (default 1,000,000)")
    parser.add_argument("--part-rows", type=int, default=10_000, help="rows per part (default 10,000)")
    parser.add_argument("--moods", type=int, default=50, help="moods per row (default 50)")
    parser.add_argument("--new", type=int, default=1_000, help="tracks not scored yet (default 1,000)")
    parser.add_argument("--before-rows", type=int, default=100_000, help="rows for the code before (0: skip)")
    parser.add_argument("--files", type=int, default=504, help="files for the files/s part (0: skip)")
    parser.add_argument("--n-filters", type=int, default=128)
    parser.add_argument("--name", default="batch_scale", help="result file name (default: batch_scale)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="mtlmood-batch-scale-"))
    try:
        scale = scale_part(work, args)
        files = files_part(work, args.files, args.n_filters, info["cores"]) if args.files else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "machine": info,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "scale": scale,
        "files": files,
    }
    return publish(args.name, payload, markdown(info, args, scale, files), args.out)


if __name__ == "__main__":
    main()
    sys.exit(0)
