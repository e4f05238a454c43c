"""`mtlmood predict`: mood probabilities of audio files from a checkpoint.

    mtlmood predict runs/train song.mp3 other.ogg --top-k 3          # a line per file on stdout
    mtlmood predict runs/train *.flac --json                          # JSON on stdout
    mtlmood predict runs/study music/ list.csv --output moods.parquet  # a file, resumable
    mtlmood predict runs/study s3://bucket/audio/ --output s3://bucket/moods.parquet   # object storage
    mtlmood predict runs/study music/ --output moods.parquet --address auto   # Ray Data on a cluster

CKPT is a checkpoint directory or a study run directory (its best_checkpoint.json; --cell
picks the cell). INPUTs are files, folders (their audio files, recursively), globs, or CSV
manifests with a ``path`` column, local or URIs (s3://...). Files are scored in batches
(mtlmood.batch_predict.iter_predictions: decode-ahead threads, shared forward passes).

Without --output a file that cannot be decoded is reported and skipped; the exit code is
then 2. With --output (.parquet, .csv or .jsonl) every track becomes a row of the HTTP
answer's schema (mtlmood.records): a failure is a row with its reason in ``error``, also
listed in ``<output>.failures.csv``, and never stops the run (exit 0). Finished tracks
are kept in ``<output>.parts/`` as the run goes (a part every --part-rows tracks);
re-running the same command after a kill skips them, and the parts are merged into the
output at the end, streamed (see mtlmood.batch_predict). One run writes an output at a
time: a second is refused, naming the first (mtlmood.runlock). --ray (a local Ray) or
--address (a cluster) runs the same job as a Ray Data pipeline (catalog.pipeline), with
the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # imported for real inside the run functions: `mtlmood --help` stays fast
    from mtlmood.batch_predict import BatchOutput

PART_ROWS = 10_000  # mtlmood.batch_parts.PART_ROWS (not imported here: `mtlmood --help` stays fast)

# Ctrl-C (see mtlmood_cli.main) without --output: nothing is written, so there is nothing to resume.
# With --output, run_predict sets the message that says where the finished tracks are.
INTERRUPTED = "interrupted; no files were written"
MAX_LISTED_FAILURES = 10  # on stderr; the failures file has them all


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `predict` to the CLI."""
    parser = subparsers.add_parser(
        "predict",
        help="mood probabilities of audio files, from a checkpoint (stdout, or a resumable file)",
        description="Decode each file, compute log-mel features of its first 29 s, and average the "
        "model's mood probabilities over its 3 s segments. With --output: one row per track in a "
        "Parquet/CSV/JSONL file (the HTTP answer's fields), resumable, failures listed.",
    )
    parser.add_argument(
        "checkpoint", metavar="CKPT", help="checkpoint directory (weights.pt + model_card.json) or study run directory"
    )
    parser.add_argument(
        "files",
        metavar="INPUT",
        nargs="+",
        help="audio files, folders (recursive), globs or CSV manifests (`path`); local or URIs (s3://bucket/audio/)",
    )
    parser.add_argument("--cell", default="", help="with a study run directory: the cell whose best model to use")
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write rows to FILE (.parquet, .csv or .jsonl; a path or s3://...)"
    )
    parser.add_argument("--top-k", "-k", type=int, default=3, help="top moods per file (default 3)")
    parser.add_argument("--json", action="store_true", help="without --output: print JSON (all probabilities)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="model precision (default fp32)")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads of the local path (default 2)")
    parser.add_argument(
        "--part-rows",
        "--chunk-size",  # its old name
        dest="part_rows",
        type=int,
        default=PART_ROWS,
        help=f"with --output: tracks per part file, what a kill can lose (default {PART_ROWS:,}; "
        "a part is also written every 10 min)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="with --output: score earlier failures again")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    ray = parser.add_argument_group("Ray Data (needs --output)")
    ray.add_argument("--ray", action="store_true", help="run as a Ray Data pipeline on a local Ray")
    ray.add_argument("--address", metavar="ADDR", help="run as a Ray Data pipeline on this cluster (e.g. auto)")
    ray.add_argument(
        "--actors",
        type=int,
        default=0,
        help="scoring actors at most (default: on a cluster with GPU actors, as many as its GPUs allow, "
        "autoscaled ones included; else the GPUs, or CPUs/2)",
    )
    ray.add_argument(
        "--min-actors", type=int, default=1, help="scoring actors started at once and always kept (default 1)"
    )
    ray.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.set_defaults(func=run_predict)


def _check_arguments(args: argparse.Namespace) -> None:
    from mtlmood.batch_predict import output_format
    from mtlmood.errors import ConfigError

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    if args.workers < 1 or args.part_rows < 1 or args.actors < 0 or args.min_actors < 1:
        raise ConfigError("--workers, --part-rows and --min-actors must be >= 1, --actors >= 0")
    if args.actors and args.min_actors > args.actors:
        raise ConfigError(f"--min-actors ({args.min_actors}) must not exceed --actors ({args.actors})")
    if args.device not in ("auto", "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {args.device!r}")
    if args.output:
        output_format(args.output)
    elif args.ray or args.address:
        raise ConfigError("--ray/--address write a file: give --output FILE (.parquet, .csv or .jsonl)")
    if args.json and args.output:
        raise ConfigError("--json prints to stdout; with --output the format follows the file's suffix")


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_predict(args: argparse.Namespace) -> int:
    """Predict every track; to stdout (exit 2 when one failed) or to --output (exit 0, failures listed)."""
    from mtlmood.batch_predict import resolve_inputs
    from mtlmood.checkpoint_pointer import local_checkpoint

    _check_arguments(args)
    # A checkpoint or study folder, local or in object storage (downloaded once, cached).
    checkpoint = local_checkpoint(args.checkpoint, args.cell)
    tracks = resolve_inputs(args.files)
    if args.output:
        return _to_output(args, checkpoint, tracks)
    return _to_stdout(args, checkpoint, tracks)


def _to_stdout(args: argparse.Namespace, checkpoint: Path, tracks: list[str]) -> int:
    from mtlmood.batch_predict import iter_predictions
    from mtlmood.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, device=_device(args.device), precision=args.precision)
    # A file named on the command line is shown as it was typed.
    shown = {os.path.abspath(os.path.expanduser(f)): f for f in args.files if os.path.isfile(f)}
    results, failed = [], 0
    for path, prediction, error in iter_predictions(predictor, tracks, args.top_k, args.workers):
        name = shown.get(path, path)
        if prediction is None:
            failed += 1
            message = f"{name}: {error or 'unknown error'}"  # e.g. "a.mp3: cannot decode: libsndfile: ..."
            print(f"mtlmood predict: error: {message}", file=sys.stderr)
            results.append({"file": name, "error": message})
        elif args.json:
            results.append({"file": name, **prediction.to_dict()})
        else:
            top = ", ".join(f"{mood} {p:.2f}" for mood, p in prediction.top)
            plural = "s" if prediction.n_segments != 1 else ""
            print(f"{name}: {top}  ({prediction.n_segments} segment{plural}, {prediction.duration_s:.1f}s)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 2 if failed else 0


def _to_output(args: argparse.Namespace, checkpoint: Path, tracks: list[str]) -> int:
    from mtlmood.batch_predict import BatchOutput
    from mtlmood.checkpoint import read_card

    card = read_card(checkpoint)
    output = BatchOutput(args.output, card.mood_names, card.checkpoint_id, part_rows=args.part_rows)
    # One run per output: a second is refused here, naming the first (its parts would be merged,
    # and removed, under the first one's feet).
    with output.lock(command="mtlmood predict"):
        todo = output.todo(tracks, retry_failed=args.retry_failed)
        done = len(tracks) - len(todo)
        _say(f"{len(tracks)} tracks: {done} already in {_name(output.path)}, scoring {len(todo)}")
        # From here on, Ctrl-C leaves finished tracks behind (see mtlmood_cli.main).
        args.interrupted = (
            f"interrupted; finished tracks are kept in {output.parts_dir}, re-run the same command to resume"
        )
        if args.ray or args.address:
            from catalog.pipeline import predict_with_ray, start_ray
            from mtlmood.checkpoint_pointer import checkpoint_location

            start_ray(args.address, args.num_cpus)
            run = predict_with_ray(
                # Where the checkpoint is, not this machine's copy: each scoring actor fetches its own.
                checkpoint_location(args.checkpoint, args.cell),
                tracks,
                output,
                todo=todo,
                device=args.device,
                precision=args.precision,
                top_k=args.top_k,
                actors=args.actors,
                min_actors=args.min_actors,
                cluster=bool(args.address),
                progress=not args.quiet,
            )
            summary, scored, failed = run.summary, run.scored, run.failed
        else:
            scored, failed = _score_locally(args, checkpoint, todo, output)
            summary = output.finalize(tracks)
    reasons = dict(summary.failures)
    # This run's failures, in input order (a loop over todo, no set of it: todo may be millions).
    new = [path for path in todo if path in reasons] if reasons else []
    for path in new[:MAX_LISTED_FAILURES]:
        _say(f"failed: {path}: {reasons[path]}")
    if failed > MAX_LISTED_FAILURES:
        _say(f"... and {failed - MAX_LISTED_FAILURES} more")
    where = f"; every failure in {summary.failures_file}" if summary.failures_file else ""
    _say(f"wrote {summary.output}: {summary.rows} rows ({scored} scored now, {failed} failed now){where}")
    return 0


def _name(location: str) -> str:
    """The file name of a path or URI (for messages)."""
    return location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _score_locally(
    args: argparse.Namespace, checkpoint: Path, todo: list[str], output: "BatchOutput"
) -> tuple[int, int]:
    """Score ``todo`` in this process into ``output``'s parts, with a progress bar; (scored, failed)."""
    from tqdm import tqdm

    from mtlmood.batch_predict import score_to_output
    from mtlmood.inference import Predictor

    if not todo:
        return 0, 0
    predictor = Predictor.from_checkpoint(checkpoint, device=_device(args.device), precision=args.precision)
    with tqdm(total=len(todo), unit="track", file=sys.stderr, disable=args.quiet, dynamic_ncols=True) as bar:
        failures = 0

        def advance(path: str, error: Optional[str]) -> None:
            nonlocal failures
            failures += error is not None
            if failures:
                bar.set_postfix(failed=failures, refresh=False)
            bar.update(1)

        return score_to_output(predictor, todo, output, args.top_k, args.workers, on_track=advance)


def _say(message: str) -> None:
    print(f"mtlmood predict: {message}", file=sys.stderr, flush=True)
