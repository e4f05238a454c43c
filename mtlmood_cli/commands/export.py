"""`mtlmood export` and `mtlmood model-card`: a checkpoint as a portable file, and its card.

    mtlmood export runs/train --format onnx                    # runs/train/model.onnx + MODEL_CARD.md
    mtlmood export runs/train --format torchscript --output dist/ --audio song.mp3
    mtlmood model-card runs/train                              # runs/train/MODEL_CARD.md

Export validates the written file against PyTorch (see mtlmood/export.py) and prints the
max |Δp|; a failed validation is an error (exit 2) and leaves no file.
"""

from __future__ import annotations

import argparse

# Ctrl-C (see mtlmood_cli.main): both commands write through temporary files moved into place.
INTERRUPTED = "interrupted; no partial file was written"
# mtlmood.export's FORMATS and TOLERANCE, written here so that `mtlmood --help` imports no torch
# (tests/mtlmood/test_export.py checks that they agree).
FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-5


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` and `model-card` to the CLI."""
    parser = subparsers.add_parser(
        "export",
        help="a checkpoint's mood model as ONNX or TorchScript, validated against PyTorch",
        description="Export the mood path of a checkpoint (log-mel windows (batch, frames, mels) -> mood "
        "probabilities; no metadata head; dynamic batch), load the file back, and compare it with the "
        f"PyTorch model on random windows, a synthesized test signal and any --audio files: max |Δp| must "
        f"be <= {TOLERANCE:.0e}. Writes MODEL_CARD.md next to the exported file.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (weights.pt + model_card.json)")
    parser.add_argument("--format", "-f", required=True, choices=FORMATS, help="export format")
    parser.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="file to write, or an existing directory (default: model.onnx / model.torchscript.pt in CKPT)",
    )
    parser.add_argument(
        "--audio",
        metavar="FILE",
        nargs="+",
        default=[],
        help="audio files whose windows are also compared (real inputs)",
    )
    parser.set_defaults(func=run_export)

    card = subparsers.add_parser(
        "model-card",
        help="write MODEL_CARD.md for a checkpoint",
        description="Render a checkpoint's model_card.json as MODEL_CARD.md: intended use, training data and "
        "labels, alpha and metadata, test scores (with the study's intervals when a study chose it), "
        "limitations, the preprocessing contract and how to cite the paper.",
    )
    card.add_argument("checkpoint", metavar="CKPT", help="checkpoint directory (weights.pt + model_card.json)")
    card.add_argument("--output", "-o", metavar="PATH", help="file to write (default: CKPT/MODEL_CARD.md)")
    card.set_defaults(func=run_model_card)


def run_export(args: argparse.Namespace) -> int:
    """Export, validate, write the card beside the file; one line each."""
    from mtlmood.export import export_checkpoint
    from mtlmood.model_card import MODEL_CARD_FILE, write_model_card
    from study.report.model_cards import find_study_record

    result = export_checkpoint(args.checkpoint, args.format, args.output, args.audio)
    print(result.summary())
    study = find_study_record(args.checkpoint)  # the evidence of the study that chose it, if one did
    card = write_model_card(args.checkpoint, result.path.parent / MODEL_CARD_FILE, export=result, study=study)
    print(f"wrote {card}")
    return 0


def run_model_card(args: argparse.Namespace) -> int:
    from mtlmood.model_card import write_model_card
    from study.report.model_cards import find_study_record

    study = find_study_record(args.checkpoint)  # the evidence of the study that chose it, if one did
    print(f"wrote {write_model_card(args.checkpoint, args.output, study=study)}")
    return 0
