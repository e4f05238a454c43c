"""Portable models: a checkpoint's mood path as ONNX or TorchScript, checked against PyTorch.

    result = export_checkpoint("runs/train", "onnx")   # -> runs/train/model.onnx
    result.max_abs_diff                                # max |Δp| against PyTorch (<= 1e-5, else ExportError)

The exported graph holds what deployment needs and nothing more:

    input  "logmel"              float32 (batch, segment_frames, n_mels), e.g. (batch, 187, 96)
    output "mood_probabilities"  float32 (batch, N_mood), the sigmoid of the mood head

one row per log-mel window (~3 s), in the library's own layout (frames, then mel bands:
what ``mtlmood.inference.segment_song`` returns), with a dynamic batch axis. The
metadata head is left out, weights included: metadata is only a training signal (the
paper's inference ignores it). A song's probabilities are the mean over the rows of its
non-overlapping windows, which the caller cuts and averages as ``Predictor`` does; the
checkpoint's MODEL_CARD.md (mtlmood.model_card) states the whole preprocessing contract,
and the exported file carries its label names and preprocessing settings as metadata.

Every export is validated before it is kept: the written file is loaded back (ONNX in
onnxruntime, TorchScript with ``torch.jit.load``) and compared with the eval-mode
PyTorch model on random windows, on the log-mel of a synthesized test signal through
the checkpoint's own preprocessing, and on any audio files given, at batch size 1 and
at full batch. It is written under a temporary name and moved into place only once
max |Δp| <= ``TOLERANCE``, so a failed export leaves no file behind.

ONNX goes through torch's torch.export-based exporter (torch's default since 2.9; it
needs onnxscript) at opset ``ONNX_OPSET``, widely supported by runtimes. TorchScript is
``torch.jit.trace`` of the eval-mode graph, which has no data-dependent control flow.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import mtlmood
from mtlmood.checkpoint import ModelCard, load_checkpoint
from mtlmood.config import FeatureConfig
from mtlmood.errors import MtlmoodError
from mtlmood.fileio import publish
from mtlmood.model import MoodCNN

if TYPE_CHECKING:
    import onnx

FORMATS = ("onnx", "torchscript")
DEFAULT_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
TOLERANCE = 1e-5  # max |Δp| allowed between the exported model and PyTorch
ONNX_OPSET = 18
INPUT_NAME = "logmel"
OUTPUT_NAME = "mood_probabilities"
METADATA_FILE = "mtlmood.json"  # TorchScript extra file holding export_metadata()
_RANDOM_WINDOWS = 16

PathLike = Union[str, "os.PathLike[str]"]


class ExportError(MtlmoodError):
    """An export failed, could not run, or disagrees with the PyTorch model."""


class MoodProbabilities(nn.Module):
    """The deployable graph: (B, T, F) log-mel windows -> (B, N_mood) mood probabilities.

    A copy of an eval-mode MoodCNN without its metadata head, so neither the graph nor
    the weights of an export carry it.
    """

    def __init__(self, model: MoodCNN) -> None:
        super().__init__()
        net = copy.deepcopy(model).float().cpu()
        net.meta_head = None
        net.use_channels_last(False)
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x, with_meta=False)[0])


@dataclass
class ExportResult:
    """An exported, validated file and what the validation measured."""

    path: Path
    format: str
    checkpoint_id: str
    mood_names: list[str]
    segment_frames: int
    n_mels: int
    max_abs_diff: float  # over every input set and batch size
    diffs: dict[str, float]  # input set -> max |Δp|
    windows: dict[str, int]  # input set -> number of windows compared
    tolerance: float = TOLERANCE
    sha256: str = ""
    operators: list[str] = field(default_factory=list)  # ONNX op types of the graph
    opset: Optional[int] = None

    @property
    def input_shape(self) -> str:
        return f"(batch, {self.segment_frames}, {self.n_mels})"

    def summary(self) -> str:
        """One line: what was written and how well it agrees with PyTorch."""
        sets = ", ".join(f"{name} {self.windows[name]}" for name in self.diffs)
        opset = f", opset {self.opset}" if self.opset else ""
        return (
            f"wrote {self.path} ({self.format}{opset}): {INPUT_NAME} float32 {self.input_shape} -> "
            f"{OUTPUT_NAME} (batch, {len(self.mood_names)}); validated against PyTorch on "
            f"{sum(self.windows.values())} windows ({sets}): max |Δp| = {self.max_abs_diff:.1e} "
            f"(tolerance {self.tolerance:.0e})"
        )


def default_output(checkpoint: PathLike, fmt: str) -> Path:
    """Where ``export_checkpoint`` writes when no output is given: inside the checkpoint."""
    return Path(checkpoint) / DEFAULT_NAMES[fmt]


def identity_metadata(card: ModelCard) -> dict[str, str]:
    """What every exported model says of where it comes from: producer, checkpoint, moods."""
    return {
        "producer": f"mtlmood {mtlmood.__version__}",
        "checkpoint_id": card.checkpoint_id,
        "mood_names": json.dumps(card.mood_names),
    }


def export_metadata(card: ModelCard) -> dict[str, str]:
    """What an exported file says about itself (ONNX metadata_props, TorchScript extra file)."""
    f = card.features
    return {
        **identity_metadata(card),
        "input": f"{INPUT_NAME}: float32 (batch, {card.model.segment_frames} frames, {f.n_mels} mels), "
        f"log10(1 + {f.log_multiplier:g}·mel) windows",
        "output": f"{OUTPUT_NAME}: float32 (batch, {card.n_moods}), sigmoid per mood; "
        f"a song = mean over its non-overlapping windows of the first {f.max_seconds:g} s",
        "features": json.dumps({**vars(f), "segment_frames": card.model.segment_frames}),
        "metadata_head": "not exported (training only)",
    }


# ------------------------------------------------------------------ validation inputs
def music_like_signal(cfg: FeatureConfig, seconds: Optional[float] = None) -> np.ndarray:
    """A deterministic music-like mono wave (gliding tones, a chord, pulsed noise) at ``cfg.sample_rate``.

    Its log-mel has the value range and structure of real music, unlike random windows.
    """
    sr = cfg.sample_rate
    t = np.arange(int((seconds or cfg.max_seconds) * sr)) / sr
    rng = np.random.default_rng(0)
    glide = np.sin(2 * np.pi * 55.0 * (np.exp(t / 6.0) - 1) * 6.0)  # exponential sweep up from 55 Hz
    chord = sum(np.sin(2 * np.pi * f0 * t) / (k + 1) for k, f0 in enumerate((220.0, 277.2, 329.6, 440.0)))
    pulse = (np.sin(2 * np.pi * 2.0 * t) > 0.6).astype(np.float64)  # a beat, twice a second
    wave = 0.3 * glide + 0.2 * chord + 0.3 * pulse * rng.standard_normal(t.size) + 0.01 * rng.standard_normal(t.size)
    return (wave / np.max(np.abs(wave))).astype(np.float32)


def validation_inputs(card: ModelCard, audio_files: Sequence[PathLike] = ()) -> dict[str, np.ndarray]:
    """Named stacks of (n, T, F) windows to compare an export on: random log-mel-range
    values, the synthesized test signal, and each audio file, all through the checkpoint's
    own preprocessing (first ``max_seconds``, non-overlapping windows)."""
    from mtlmood.features import features_from_file, log_mel
    from mtlmood.inference import segment_song

    frames, cfg = card.model.segment_frames, card.features
    rng = np.random.default_rng(0)
    inputs = {"random": rng.uniform(0.0, 4.0, size=(_RANDOM_WINDOWS, frames, cfg.n_mels)).astype(np.float32)}
    # The fast log-mel (|Δ| < 1e-5 from librosa's, see mtlmood.features): these are test inputs.
    inputs["test signal"] = segment_song(log_mel(music_like_signal(cfg), cfg, "fast"), frames, cfg.max_frames)
    for path in audio_files:
        inputs[Path(path).name] = segment_song(features_from_file(path, cfg, "fast"), frames, cfg.max_frames)
    return inputs


def pytorch_probabilities(model: MoodCNN, windows: np.ndarray) -> np.ndarray:
    """The reference: the eval-mode checkpoint model's mood sigmoids, fp32 on CPU."""
    model = model.float().cpu().eval()
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(windows), with_meta=False)[0]).numpy()


# ------------------------------------------------------------------ formats
Runner = Callable[[np.ndarray], np.ndarray]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress logs and deprecation warnings (the CLI prints one line)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_proto(module: nn.Module, example: torch.Tensor, metadata: dict[str, str], doc: str) -> "onnx.ModelProto":
    """``module`` (input ``INPUT_NAME`` with a dynamic batch axis -> ``OUTPUT_NAME``) as a checked
    ONNX model at ``ONNX_OPSET`` carrying ``metadata``; ExportError when it cannot be exported."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it; fail here with a clear message)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime (pip install them): {exc}") from None
    try:
        with _quiet():
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=ONNX_OPSET,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                external_data=False,
                verbose=False,
            )
        if program is None:
            raise ExportError("ONNX export returned no model")
        proto = program.model_proto
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = doc
        onnx.checker.check_model(proto)
        return proto
    except ExportError:
        raise
    except Exception as exc:  # torch.export, onnxscript and the checker raise many kinds
        raise ExportError(f"ONNX export failed: {_first_line(exc)}") from None


def _write_onnx(module: MoodProbabilities, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    import onnx

    doc = "mtlmood mood classifier: log-mel windows -> mood probabilities (see MODEL_CARD.md)"
    proto = onnx_proto(module, example, metadata, doc)
    try:
        onnx.save_model(proto, str(path))
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {_first_line(exc)}") from None


def _run_onnx(path: Path) -> Runner:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"validating an ONNX export needs onnxruntime (pip install onnxruntime): {exc}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


def _onnx_operators(path: Path) -> list[str]:
    import onnx

    return sorted({node.op_type for node in onnx.load(str(path)).graph.node})


def _write_torchscript(module: MoodProbabilities, example: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(module, example)
            torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata, indent=2)})
    except Exception as exc:
        raise ExportError(f"TorchScript export failed: {_first_line(exc)}") from None


def _run_torchscript(path: Path) -> Runner:
    with _quiet():
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return loaded(torch.from_numpy(x)).numpy()

    return run


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript}
_RUNNERS = {"onnx": _run_onnx, "torchscript": _run_torchscript}


def compare(run: Runner, model: MoodCNN, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |Δp| per input set between ``run`` and the PyTorch model, at full batch and at
    batch size 1 (the first window), so the dynamic batch axis is exercised too."""
    diffs = {}
    for name, windows in inputs.items():
        reference = pytorch_probabilities(model, windows)
        full = np.abs(run(windows) - reference).max()
        single = np.abs(run(windows[:1]) - reference[:1]).max()
        diffs[name] = float(max(full, single))
    return diffs


def export_checkpoint(
    checkpoint: PathLike,
    fmt: str,
    output: Optional[PathLike] = None,
    audio_files: Sequence[PathLike] = (),
    tolerance: float = TOLERANCE,
) -> ExportResult:
    """Export a checkpoint's mood path as ``fmt`` ("onnx" or "torchscript") to ``output``
    (a file, or a directory -- existing or ending in "/" -- for the default name; default:
    inside the checkpoint), load it
    back and compare it with PyTorch (see the module docstring). ExportError when any
    |Δp| exceeds ``tolerance``; CheckpointError / AudioDecodeError for bad input."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model, card = load_checkpoint(checkpoint, device="cpu")
    path = Path(output) if output else default_output(checkpoint, fmt)
    if path.is_dir() or str(output or "").endswith(("/", os.sep)):  # a directory: the default name in it
        path = path / DEFAULT_NAMES[fmt]
    inputs = validation_inputs(card, audio_files)  # bad audio fails before anything is written
    module = MoodProbabilities(model)
    example = torch.from_numpy(inputs["random"][:2])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        _WRITERS[fmt](module, example, tmp, export_metadata(card))
        try:
            diffs = compare(_RUNNERS[fmt](tmp), model, inputs)
        except ExportError:
            raise
        except Exception as exc:  # the runtime cannot load or run the file it was given
            raise ExportError(f"the exported {fmt} file does not run: {_first_line(exc)}") from None
        worst = max(diffs.values())
        if not worst <= tolerance:  # NaN fails too
            where = max(diffs, key=lambda k: diffs[k])
            raise ExportError(
                f"{fmt} export of {checkpoint} failed validation: max |Δp| = {worst:.2e} on {where} windows "
                f"> tolerance {tolerance:.0e}; nothing was written"
            )
        operators = _onnx_operators(tmp) if fmt == "onnx" else []
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(
        path=path,
        format=fmt,
        checkpoint_id=card.checkpoint_id,
        mood_names=list(card.mood_names),
        segment_frames=card.model.segment_frames,
        n_mels=card.features.n_mels,
        max_abs_diff=worst,
        diffs=diffs,
        windows={name: len(windows) for name, windows in inputs.items()},
        tolerance=tolerance,
        sha256=digest,
        operators=operators,
        opset=ONNX_OPSET if fmt == "onnx" else None,
    )
