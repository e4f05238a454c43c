"""Synthetic part files of a large batch output, and the measured process of the scale benchmark.

    make_parts(folder, rows=1_000_000, part_rows=10_000)     # no audio: rows built in Arrow
    python -m benchmarks.batch_scale_data measure OUTPUT ROWS NEW   # resume + merge, JSON on stdout

Rows follow mtlmood.records' batch schema (``moods`` a struct of float64, one per mood;
``top`` the three best; 1 % failures); keys look like a catalogue's paths. Parts are laid
out as the local path leaves them (tracks in input order) or as a Ray Data job does
(``make_parts``: its blocks finish out of order).

``measure`` runs in a fresh process, so its peak RSS (``ru_maxrss``) is the run's alone: it
builds the track list (ROWS done + NEW not yet), resumes (``BatchOutput.todo``) and
merges (``BatchOutput.finalize``), and reports the peak after each phase. ``measure-before``
does the same with the code before this change (``BatchOutput.existing`` loaded every row
as Python dicts), read from git.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

CHECKPOINT_ID = "bench-0123456789ab"
BEFORE = "03257c8"  # the last commit before the bounded-memory batch code


def mood_names(n: int) -> list[str]:
    return [f"mood{i:02d}" for i in range(n)]


def track_key(i: int) -> str:
    """A catalogue-like absolute path (~50 characters)."""
    return f"/mnt/shared/catalog/audio/{i % 997:03d}/track-{i:08d}.mp3"


def _table(first: int, order: np.ndarray, names: list[str], rng: np.random.Generator) -> Any:
    """Batch rows of tracks ``first + order`` (Arrow columns, no Python dict per row)."""
    import pyarrow as pa

    from mtlmood.records import arrow_schema

    n, m = len(order), len(names)
    probs = rng.random((n, m))
    failed = (first + order) % 100 == 99
    probs[failed] = np.nan
    moods = pa.StructArray.from_arrays(
        [pa.array(probs[:, j], mask=failed) for j in range(m)], fields=list(arrow_schema(names).field("moods").type)
    )
    best = np.argsort(-np.nan_to_num(probs), axis=1)[:, :3]
    offsets = np.where(failed, 0, 3).cumsum()
    offsets = np.concatenate([[0], offsets]).astype(np.int32)
    kept = best[~failed].ravel()
    scores = pa.StructArray.from_arrays(
        [
            pa.array(np.asarray(names, dtype=object)[kept], pa.string()),
            pa.array(probs[~failed][np.arange(len(kept)) // 3, kept]),
        ],
        names=["mood", "probability"],
    )
    top = pa.ListArray.from_arrays(pa.array(offsets), scores, mask=pa.array(failed))
    columns = {
        "path": pa.array([track_key(first + int(i)) for i in order], pa.string()),
        "moods": moods,
        "top": top,
        "n_segments": pa.array(np.where(failed, 0, 9), pa.int32(), mask=failed),
        "duration_s": pa.array(np.full(n, 29.0), mask=failed),
        "checkpoint_id": pa.array([CHECKPOINT_ID] * n, pa.string()),
        "error": pa.array(
            ["cannot decode: libsndfile: Format not recognised" if f else None for f in failed], pa.string()
        ),
    }
    return pa.table(columns, schema=arrow_schema(names))


def make_parts(
    folder: Path, rows: int, part_rows: int, n_moods: int = 50, run_rows: int = 16, span: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Write ``rows`` rows as parts of ``part_rows`` under ``folder``. ``run_rows`` > 0: what a
    Ray job leaves, runs of that many consecutive tracks (its scoring batches) shuffled
    within groups of ``span`` parts, the parts written in shuffled order; 0: the local
    path's parts, in input order."""
    from mtlmood.batch_parts import write_parquet

    rng = np.random.default_rng(seed)
    names = mood_names(n_moods)
    parts: list[tuple[int, np.ndarray]] = []
    group = part_rows * span if run_rows else part_rows
    for start in range(0, rows, group):
        order = np.arange(min(group, rows - start))
        if run_rows:
            runs = np.array_split(order, max(1, len(order) // run_rows))
            order = np.concatenate([runs[i] for i in rng.permutation(len(runs))])
        parts += [(start, order[i : i + part_rows]) for i in range(0, len(order), part_rows)]
    folder.mkdir(parents=True, exist_ok=True)
    written = rng.permutation(len(parts)) if run_rows else np.arange(len(parts))
    for number, k in enumerate(written):
        first, order = parts[k]
        write_parquet(_table(first, order, names, rng), str(folder / f"part-bench-{number:06d}.parquet"))
    files = list(folder.glob("*.parquet"))
    return {"parts": len(files), "bytes": sum(f.stat().st_size for f in files)}


def copy_files(source: Path, target: Path) -> float:
    """Seconds to copy every file of ``source`` into ``target``, each fsync-ed (as a merge's output is)."""
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for path in sorted(source.iterdir()):
        with open(path, "rb") as src, open(target / path.name, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    return time.perf_counter() - started


# ------------------------------------------------------------------ the measured process


def peak_mib() -> float:
    """This process's peak RSS so far, MiB: /proc's VmHWM (its own memory map's high-water
    mark). ``ru_maxrss`` is the fallback: on Linux it also counts the parent's RSS at fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _run(output: str, rows: int, new: int, n_moods: int, output_class: Callable[..., Any]) -> dict[str, Any]:
    import pyarrow.dataset  # noqa: F401  (both versions load them: not part of what a row costs)
    import pyarrow.parquet  # noqa: F401

    result: dict[str, Any] = {"rss_start_mib": peak_mib()}
    tracks = [track_key(i) for i in range(rows + new)]
    result["rss_tracks_mib"] = peak_mib()
    out = output_class(output, mood_names(n_moods), CHECKPOINT_ID)
    started = time.perf_counter()
    todo = out.todo(tracks)
    result.update(resume_s=time.perf_counter() - started, todo=len(todo), rss_resume_mib=peak_mib())
    started = time.perf_counter()
    summary = out.finalize(tracks)
    result.update(merge_s=time.perf_counter() - started, rows_out=summary.rows, rss_merge_mib=peak_mib())
    result["failures"] = len(summary.failures)
    result["output_bytes"] = os.path.getsize(output)
    return result


def _before_class() -> Any:
    """BatchOutput as it was before this change, loaded from git into this process."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:mtlmood/batch_predict.py"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"batch_predict_before_{os.getpid()}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("batch_predict_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    path.unlink()
    return module.BatchOutput


def measure_in_subprocess(kind: str, output: Path, rows: int, new: int, n_moods: int) -> dict[str, Any]:
    """Run ``measure`` (or ``measure-before``) in a fresh Python; its JSON result."""
    repo = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "benchmarks.batch_scale_data", kind, str(output), str(rows), str(new), str(n_moods)]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


if __name__ == "__main__":
    kind, target, n_rows, n_new, moods = sys.argv[1:6]
    if kind == "measure":
        from mtlmood.batch_predict import BatchOutput

        cls: Callable[..., Any] = BatchOutput
    else:
        cls = _before_class()
    print(json.dumps(_run(target, int(n_rows), int(n_new), int(moods), cls)))
