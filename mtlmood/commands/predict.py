"""`mtlmood predict`: mood probabilities of audio files from a checkpoint.

    mtlmood predict runs/train song.mp3 other.ogg --top-k 3
    mtlmood predict runs/train *.flac --json

A file that cannot be decoded is reported and skipped; the exit code is then 2.
"""

from __future__ import annotations

import argparse
import json
import sys

# Ctrl-C (see mtlmood_cli.main): predict writes nothing, so there is nothing to resume.
INTERRUPTED = "interrupted; no files were written"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `predict` to the CLI."""
    parser = subparsers.add_parser(
        "predict",
        help="top moods of audio files, from a checkpoint",
        description="Decode each file, compute log-mel features of its first 29 s, and average the "
        "model's mood probabilities over its 3 s segments.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (weights.pt + model_card.json)")
    parser.add_argument("files", metavar="FILE", nargs="+", help="audio files (mp3, ogg, flac, wav, ...)")
    parser.add_argument("--top-k", "-k", type=int, default=3, help="moods to show per file (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON (all probabilities)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Predict each file; decoding errors are printed per file and make the exit code 2."""
    from mtlmood.errors import AudioDecodeError, ConfigError
    from mtlmood.inference import Predictor

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    results, failed = [], 0
    for path in args.files:
        try:
            prediction = predictor.predict_file(path, top_k=args.top_k)
        except (AudioDecodeError, FileNotFoundError) as exc:
            failed += 1
            print(f"mtlmood predict: error: {exc}", file=sys.stderr)
            results.append({"file": path, "error": str(exc)})
            continue
        if args.json:
            results.append({"file": path, **prediction.to_dict()})
        else:
            top = ", ".join(f"{mood} {p:.2f}" for mood, p in prediction.top)
            plural = "s" if prediction.n_segments != 1 else ""
            print(f"{path}: {top}  ({prediction.n_segments} segment{plural}, {prediction.duration_s:.1f}s)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 2 if failed else 0
