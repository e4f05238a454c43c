"""`mtlmood export` and `mtlmood model-card`: a checkpoint as a portable file, and its card.

    mtlmood export runs/train --format onnx        # runs/train/model.onnx, model_waveform.onnx, golden/, MODEL_CARD.md
    mtlmood export runs/studies/s --cell '3|artist' --format onnx --input waveform --output dist/
    mtlmood export s3://bucket/studies/s --format onnx --output dist/   # a URI needs --output
    mtlmood export runs/train --format torchscript --output dist/ --audio song.mp3
    mtlmood model-card runs/train                              # runs/train/MODEL_CARD.md

CKPT is resolved as `mtlmood predict` resolves it (mtlmood.checkpoint_pointer.local_checkpoint):
a checkpoint, or a study run folder whose best_checkpoint.json names one, local or a URI.
ONNX writes the log-mel model (mtlmood/export.py) and the waveform model
(mtlmood/export_waveform.py), or one of them with --input; every export also writes golden
triples (mtlmood/export_golden.py) and MODEL_CARD.md beside the files. Each file is validated
(against PyTorch, the waveform model against the library's own log-mel and PyTorch) and the
max |Δp| printed; a failed validation is an error (exit 2) and leaves that file unwritten.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from mtlmood.export import ExportResult
    from mtlmood.export_waveform import WaveformExportResult
    from mtlmood.study_evidence import StudyRecord

# Ctrl-C (see mtlmood_cli.main): both commands write through temporary files moved into place.
INTERRUPTED = "interrupted; no partial file was written"
# mtlmood.export's FORMATS and TOLERANCE, written here so that `mtlmood --help` imports no torch
# (tests/mtlmood/test_export.py checks that they agree).
FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-5
# mtlmood.export_waveform's INPUTS, for the same reason.
INPUTS = ("waveform", "logmel", "both")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `export` and `model-card` to the CLI."""
    parser = subparsers.add_parser(
        "export",
        help="a checkpoint's mood model as ONNX (log-mel and waveform in) or TorchScript, validated",
        description="Export the mood path of a checkpoint (no metadata head; dynamic batch): ONNX writes the "
        "log-mel model (windows (batch, frames, mels) -> mood probabilities) and the waveform model (mono "
        "float32 (batch, samples) at the card's sample rate -> the song's mood probabilities, log-mel, "
        "windows and mean inside), or one of them (--input); TorchScript the log-mel model. Each file is "
        "loaded back and compared on random windows, a synthesized test signal and any --audio files: max "
        f"|Δp| <= {TOLERANCE:.0e} against PyTorch (the waveform model: against the library's log-mel and "
        "PyTorch). Writes golden/ (waveform, log-mel, probabilities triples) and MODEL_CARD.md beside it.",
    )
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="checkpoint directory (weights.pt + model_card.json) or study run directory, local or a URI",
    )
    parser.add_argument("--cell", default="", help="with a study run directory: the cell whose best model to export")
    parser.add_argument("--format", "-f", required=True, choices=FORMATS, help="export format")
    parser.add_argument(
        "--input",
        choices=INPUTS,
        help="ONNX: the model(s) to write, by input (default both); TorchScript: logmel only",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="PATH",
        help="file to write, or a directory (default: model.onnx, model_waveform.onnx / model.torchscript.pt "
        "in the checkpoint; required for a URI); with --input both, FILE and FILE's stem + _waveform",
    )
    parser.add_argument(
        "--audio",
        metavar="FILE",
        nargs="+",
        default=[],
        help="audio files also compared on (real inputs); their first seconds become golden triples too",
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


def _inputs(args: argparse.Namespace) -> str:
    from mtlmood.errors import ConfigError

    if args.format != "onnx":
        if args.input not in (None, "logmel"):
            raise ConfigError(f"--input {args.input} needs --format onnx (TorchScript exports the log-mel model)")
        return "logmel"
    return args.input or "both"


def run_export(args: argparse.Namespace) -> int:
    """Resolve CKPT, export and validate each model, write golden/ and the card beside; one line each."""
    from mtlmood.checkpoint_pointer import local_checkpoint
    from mtlmood.errors import ConfigError
    from mtlmood.export import export_checkpoint
    from mtlmood.export_golden import GOLDEN_DIR, write_golden
    from mtlmood.export_waveform import export_waveform, output_paths
    from mtlmood.model_card import MODEL_CARD_FILE, write_model_card
    from mtlmood.storage import is_uri

    inputs = _inputs(args)
    if is_uri(args.checkpoint) and not args.output:  # the default, inside the checkpoint, is a cache
        raise ConfigError(f"{args.checkpoint} is remote: give --output (a file or a directory) for the export")
    checkpoint = local_checkpoint(args.checkpoint, args.cell)  # as `mtlmood predict` resolves it
    # TorchScript: export_checkpoint's own default (inside the checkpoint) when no --output.
    paths = output_paths(checkpoint, args.output, inputs) if args.format == "onnx" else {"logmel": args.output}
    logmel: Optional[ExportResult] = None
    waveform: Optional[WaveformExportResult] = None
    if "logmel" in paths:
        logmel = export_checkpoint(checkpoint, args.format, paths["logmel"], args.audio)
        print(logmel.summary())
    if "waveform" in paths:
        import onnx

        # The log-mel model just written and validated is the waveform model's CNN: not exported twice.
        cnn = onnx.load(str(logmel.path)) if logmel is not None else None
        waveform = export_waveform(checkpoint, paths["waveform"], args.audio, cnn=cnn)
        print(waveform.summary())
    folder = next(result.path for result in (logmel, waveform) if result is not None).parent
    golden = write_golden(checkpoint, folder / GOLDEN_DIR, args.audio)
    print(f"wrote {golden.directory}: {len(golden.triples)} golden triples ({golden.index.name} says what they are)")
    study = _study_record(args.checkpoint, args.cell, checkpoint)  # the evidence of the study that chose it
    card = write_model_card(
        checkpoint, folder / MODEL_CARD_FILE, export=logmel, study=study, waveform=waveform, golden=golden
    )
    print(f"wrote {card}")
    return 0


def _study_record(location: str, cell: str, checkpoint: "os.PathLike[str]") -> "Optional[StudyRecord]":
    """The record of the study that chose the checkpoint: the study folder given, else one found by
    walking up from the checkpoint; None when no study chose it."""
    from mtlmood.checkpoint_pointer import cell_entry, has_pointer, read_pointer
    from mtlmood.errors import MtlmoodError
    from mtlmood.storage import is_uri
    from study.report.model_cards import find_study_record, study_record

    if not is_uri(location) and has_pointer(location):
        try:
            return study_record(location, str(cell_entry(read_pointer(location), cell)["cell"]))
        except (MtlmoodError, OSError, ValueError):
            pass  # a pointer written before studies had cells: look for it as below
    return find_study_record(checkpoint)


def run_model_card(args: argparse.Namespace) -> int:
    from mtlmood.model_card import write_model_card
    from study.report.model_cards import find_study_record

    study = find_study_record(args.checkpoint)  # the evidence of the study that chose it, if one did
    print(f"wrote {write_model_card(args.checkpoint, args.output, study=study)}")
    return 0
