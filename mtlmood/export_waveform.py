"""A waveform-in ONNX model: 16 kHz mono samples -> a song's mood probabilities, log-mel inside.

    result = export_waveform("runs/train")            # -> runs/train/model_waveform.onnx
    result.max_abs_diff                               # max |Δp| against the library's own path

The graph takes what a decoder gives (after the decode, mono mixing, cut and resampling of
mtlmood.audio, see MODEL_CARD.md) and does everything else, so another runtime only has to
decode and resample:

    input  "waveform"            float32 (batch, samples): mono at the card's sample rate, any length
    output "mood_probabilities"  float32 (batch, N_mood): the song's probabilities
    output "logmel"              float32 (batch, frames, n_mels): its log-mel features (first max_frames)

Inside, with the checkpoint's feature settings:

1. frames as librosa centres them (n_fft // 2 zeros on both sides, hop apart), times a float64
   matrix of the periodic-Hann-windowed one-sided DFT, power = re² + im² (why float64 and not
   the STFT operator: mtlmood.export_waveform_graph, which builds the graph);
2. mel power = power @ librosa's Slaney filterbank (a constant), log10(1 + log_multiplier · mel);
3. the first ``max_frames`` frames, cut into non-overlapping windows of ``segment_frames``,
   the remainder dropped, one zero-padded window when the song is shorter
   (``mtlmood.inference.segment_song``);
4. the exported log-mel model (mtlmood.export, the very same graph) on every window, and
   the mean of the windows' sigmoids per song (``Predictor.predict_files``).

The rows of a batch are songs of the same length (a longer one padded would count its
padding); score songs of different lengths one call each. The file is validated before it
is kept, as mtlmood.export's are: loaded in onnxruntime and compared with the library's
reference (librosa log-mel, segment_song, the PyTorch model, the mean) on a synthesized
signal at several lengths (shorter than a window, not a whole number of windows, longer
than ``max_seconds``), at batch 1 and 2, and on any audio files given.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from mtlmood.checkpoint import ModelCard, load_checkpoint
from mtlmood.config import FeatureConfig
from mtlmood.export import (
    DEFAULT_NAMES,
    ONNX_OPSET,
    OUTPUT_NAME,
    ExportError,
    MoodProbabilities,
    PathLike,
    _first_line,
    music_like_signal,
    onnx_proto,
    pytorch_probabilities,
)
from mtlmood.export_waveform_graph import FEATURES_OUTPUT, WAVEFORM_INPUT, waveform_metadata, waveform_model
from mtlmood.fileio import publish
from mtlmood.model import MoodCNN

if TYPE_CHECKING:
    import onnx

DEFAULT_NAME = "model_waveform.onnx"  # beside DEFAULT_NAMES["onnx"], the log-mel model
INPUTS = ("waveform", "logmel", "both")  # which models `mtlmood export --format onnx` writes
# The export's gates against the library's path (measured: |Δp| ~1e-7, log-mel < 1e-6 log10 units).
TOLERANCE = 1e-5  # max |Δp|, as for the log-mel model
FEATURE_TOLERANCE = 1e-5  # max |Δ| of log10(1 + c·mel) against librosa's log-mel


@dataclass
class WaveformExportResult:
    """An exported, validated waveform model and what the validation measured."""

    path: Path
    checkpoint_id: str
    mood_names: list[str]
    sample_rate: int
    max_abs_diff: float  # max |Δp| over every input
    diffs: dict[str, float]  # input -> max |Δp| of the song's probabilities
    feature_diffs: dict[str, float]  # input -> max |Δ| of the log-mel output
    samples: dict[str, int]  # input -> its length in samples
    tolerance: float = TOLERANCE
    feature_tolerance: float = FEATURE_TOLERANCE
    sha256: str = ""
    operators: list[str] = field(default_factory=list)
    opset: int = ONNX_OPSET

    @property
    def max_feature_diff(self) -> float:
        return max(self.feature_diffs.values())

    def summary(self) -> str:
        """One line: what was written and how well it agrees with the library."""
        return (
            f"wrote {self.path} (onnx, opset {self.opset}): {WAVEFORM_INPUT} float32 (batch, samples) at "
            f"{self.sample_rate} Hz -> {OUTPUT_NAME} (batch, {len(self.mood_names)}); validated against "
            f"the library on {len(self.diffs)} inputs: max |Δp| = {self.max_abs_diff:.1e} (tolerance "
            f"{self.tolerance:.0e}), log-mel max |Δ| = {self.max_feature_diff:.1e} (tolerance "
            f"{self.feature_tolerance:.0e})"
        )


def output_paths(checkpoint: PathLike, output: Optional[PathLike], inputs: str) -> dict[str, Path]:
    """Where an ONNX export of ``inputs`` ("logmel", "waveform" or "both") writes: input -> file.

    ``output`` is a file, or a directory (existing or ending in "/") for the default names
    ``model.onnx`` / ``DEFAULT_NAME``; default: inside the checkpoint. With "both", a file
    ``dist/mood.onnx`` is the log-mel model and ``dist/mood_waveform.onnx`` the waveform one.
    """
    if inputs not in INPUTS:
        raise ExportError(f"unknown --input {inputs!r}; choose one of {', '.join(INPUTS)}")
    default = DEFAULT_NAME if inputs == "waveform" else DEFAULT_NAMES["onnx"]
    path = Path(output) if output else Path(checkpoint) / default
    if path.is_dir() or str(output or "").endswith(("/", os.sep)):  # a directory: the default name in it
        path = path / default
    if inputs == "waveform":
        return {"waveform": path}
    paths = {"logmel": path}
    if inputs == "both":
        paths["waveform"] = path.with_name(f"{path.stem}_waveform{path.suffix or '.onnx'}")
    return paths


# ------------------------------------------------------------------ validation
def reference(model: MoodCNN, card: ModelCard, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The library's answer for one 16 kHz wave: (log-mel of the first max_frames frames, the
    song's (N_mood,) probabilities) -- librosa's log-mel, segment_song, PyTorch, the mean."""
    from mtlmood.features import log_mel
    from mtlmood.inference import segment_song

    cfg = card.features
    features = log_mel(wave, cfg)[: cfg.max_frames]
    windows = segment_song(features, card.model.segment_frames, cfg.max_frames)
    return features, pytorch_probabilities(model, windows).mean(axis=0)


def validation_waves(cfg: FeatureConfig, audio_files: Sequence[PathLike] = ()) -> dict[str, np.ndarray]:
    """Named waves to compare on: the synthesized test signal whole (a little longer than
    ``max_seconds``, so the graph's cut is tested), shorter than one window, and of an odd
    length; each audio file after the library's decode and resampling (mtlmood.audio)."""
    from mtlmood.audio import load_audio

    signal = music_like_signal(cfg, cfg.max_seconds + 1.0)
    rate = cfg.sample_rate
    waves = {
        "test signal": signal,
        "test signal, 0.5 s": signal[: rate // 2],
        "test signal, odd length": signal[: int(7.3 * rate) + 17],
    }
    for path in audio_files:
        waves[Path(path).name] = load_audio(path, cfg)
    return waves


def compare_waveform(
    run: "OnnxRunner", model: MoodCNN, card: ModelCard, waves: dict[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, float]]:
    """(max |Δp| per wave, max |Δ log-mel| per wave) between ``run`` and ``reference``; the first
    wave is also run as a batch of two (itself and itself reversed) for the batch axis."""
    diffs, feature_diffs = {}, {}
    for i, (label, wave) in enumerate(waves.items()):
        features, probabilities = reference(model, card, wave)
        batch = wave[None] if i else np.stack([wave, wave[::-1]])
        got, got_features = run(np.ascontiguousarray(batch, dtype=np.float32))
        diffs[label] = float(np.abs(got[0] - probabilities).max())
        feature_diffs[label] = float(np.abs(got_features[0] - features).max())
        if i == 0:
            other_features, other = reference(model, card, np.ascontiguousarray(wave[::-1]))
            diffs[label] = max(diffs[label], float(np.abs(got[1] - other).max()))
            feature_diffs[label] = max(feature_diffs[label], float(np.abs(got_features[1] - other_features).max()))
    return diffs, feature_diffs


class OnnxRunner:
    """A waveform model in onnxruntime: (B, n) float32 -> (probabilities, log-mel)."""

    def __init__(self, path: PathLike) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise ExportError(f"validating an ONNX export needs onnxruntime (pip install onnxruntime): {exc}") from None
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, features = self.session.run([OUTPUT_NAME, FEATURES_OUTPUT], {WAVEFORM_INPUT: waves})
        return np.asarray(probabilities), np.asarray(features)


def export_waveform(
    checkpoint: PathLike,
    output: Optional[PathLike] = None,
    audio_files: Sequence[PathLike] = (),
    tolerance: float = TOLERANCE,
    feature_tolerance: float = FEATURE_TOLERANCE,
    cnn: Optional["onnx.ModelProto"] = None,
) -> WaveformExportResult:
    """Export a checkpoint's waveform model (see the module docstring) to ``output`` (a file or a
    directory, default inside the checkpoint: ``output_paths``), load it back in onnxruntime and
    compare it with the library's path. It is written under a temporary name and moved into place
    only when max |Δp| <= ``tolerance`` and the log-mel's max |Δ| <= ``feature_tolerance``, else
    ExportError and no file. ``cnn``: the checkpoint's log-mel ONNX model when the caller has just
    exported it (``onnx.load`` of export_checkpoint's file), so that it is not exported a second
    time; its graph is taken as it is."""
    import onnx

    model, card = load_checkpoint(checkpoint, device="cpu")
    path = output_paths(checkpoint, output, "waveform")["waveform"]
    waves = validation_waves(card.features, audio_files)  # bad audio fails before anything is written
    example = torch.zeros(2, card.model.segment_frames, card.features.n_mels)
    if cnn is None:
        cnn = onnx_proto(MoodProbabilities(model), example, {}, "")
    try:
        proto = waveform_model(cnn, card, waveform_metadata(card))
    except ExportError:
        raise
    except Exception as exc:  # onnx.checker and shape inference raise many kinds
        raise ExportError(f"waveform export failed: {_first_line(exc)}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        onnx.save_model(proto, str(tmp))
        try:
            diffs, feature_diffs = compare_waveform(OnnxRunner(tmp), model, card, waves)
        except ExportError:
            raise
        except Exception as exc:  # the runtime cannot load or run the file it was given
            raise ExportError(f"the exported waveform model does not run: {_first_line(exc)}") from None
        worst, worst_features = max(diffs.values()), max(feature_diffs.values())
        if not (worst <= tolerance and worst_features <= feature_tolerance):  # NaN fails too
            where = max(diffs, key=lambda k: diffs[k])
            raise ExportError(
                f"waveform export of {checkpoint} failed validation: max |Δp| = {worst:.2e} (on {where}; "
                f"tolerance {tolerance:.0e}), log-mel max |Δ| = {worst_features:.2e} (tolerance "
                f"{feature_tolerance:.0e}); nothing was written"
            )
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return WaveformExportResult(
        path=path,
        checkpoint_id=card.checkpoint_id,
        mood_names=list(card.mood_names),
        sample_rate=card.features.sample_rate,
        max_abs_diff=worst,
        diffs=diffs,
        feature_diffs=feature_diffs,
        samples={label: int(wave.size) for label, wave in waves.items()},
        tolerance=tolerance,
        feature_tolerance=feature_tolerance,
        sha256=digest,
        operators=sorted({node.op_type for node in proto.graph.node}),
    )
