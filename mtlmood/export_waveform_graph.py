"""The ONNX graph of the waveform model (mtlmood.export_waveform): a log-mel front and a mean-per-song
tail around the log-mel model's own graph, built with onnx.helper.

    model = waveform_model(cnn_proto, card, metadata)   # cnn_proto: mtlmood.export.onnx_proto(...)

Why frames × a float64 DFT matrix: a float32 DFT of 512 terms loses up to ~1e-4 log10
units where a loud low tone or a DC offset cancels in the quiet bins (a Conv with the DFT rows:
1.03e-4 on a 0.5 DC offset with 1e-3 noise, 6.5e-5 on a full-scale 50 Hz sine; onnxruntime
1.32's float32 STFT operator was no better on the synthesized test signal, 2.2e-5 against the
Conv's 3.5e-5). In float64 the graph's log-mel is within float32 rounding (< 1e-6) of
librosa's on every signal tried. Cast, Pad, Gather, MatMul in float64 are plain ONNX ops at
mtlmood.export.ONNX_OPSET (no STFT/DFT operator, no custom domain); the mel power is cast to
float32 before the compression, as the reference computes it.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from mtlmood.checkpoint import ModelCard
from mtlmood.config import FeatureConfig
from mtlmood.export import INPUT_NAME, OUTPUT_NAME, ExportError, identity_metadata

if TYPE_CHECKING:
    import onnx

WAVEFORM_INPUT = "waveform"
FEATURES_OUTPUT = "logmel"
_PREFIX = "waveform/"  # of every name the front and the tail add, so none clashes with the CNN graph's


def dft_matrix(cfg: FeatureConfig) -> np.ndarray:
    """(n_fft, 2K) float64, K = n_fft // 2 + 1: column k < K is w[n]·cos(2πkn/N), column K + k is
    -w[n]·sin(2πkn/N), w the periodic Hann window (librosa's): frames @ it = the windowed one-sided
    DFT, real parts then imaginary parts."""
    n = np.arange(cfg.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.n_fft)  # periodic ("fftbins") Hann
    k = np.arange(cfg.n_fft // 2 + 1)[:, None]
    angle = 2 * np.pi * ((k * n) % cfg.n_fft) / cfg.n_fft  # the phase reduced exactly, in integers
    return np.ascontiguousarray((np.concatenate([np.cos(angle), -np.sin(angle)]) * window).T)


def mel_basis(cfg: FeatureConfig) -> np.ndarray:
    """(2K, n_mels) float64: librosa's Slaney filterbank (mtlmood.features' float32 values, exactly),
    transposed and stacked twice, so that re² and im² both feed the bands and their sum is the power."""
    import librosa

    basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)  # float32 (n_mels, K)
    return np.ascontiguousarray(np.concatenate([basis, basis], axis=1).T, dtype=np.float64)


class _Builder:
    """Nodes and constants of the front (waveform -> windows) and the tail (mean per song), every
    name prefixed so none clashes with the CNN graph's."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.constants.append(numpy_helper.from_array(np.asarray(array), _PREFIX + name))
        return _PREFIX + name

    def ints(self, name: str, *values: int) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    def add(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        """Append a node; ``output`` is prefixed unless it is one of the graph's own outputs."""
        from onnx import helper

        out = output if output in (OUTPUT_NAME, FEATURES_OUTPUT) else _PREFIX + output
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{_PREFIX}{op}_{len(self.nodes)}", **attributes))
        return out


def _front(b: _Builder, cfg: FeatureConfig, segment_frames: int) -> str:
    """Waveform (B, n) -> log-mel output (B, t, F) and the windows (B·n_windows, T, F); returns the windows."""
    from onnx import TensorProto

    pad = cfg.n_fft // 2
    # The spectrum in float64: a float32 DFT of 512 terms loses up to 1e-4 log10 units where a loud
    # low tone or a DC offset cancels in the quiet bins (an FFT's fewer roundings do not).
    wave = b.add("Cast", [WAVEFORM_INPUT], "wave64", to=TensorProto.DOUBLE)
    # librosa's centring: n_fft // 2 zeros on both sides; frame i = padded[i·hop : i·hop + n_fft].
    padded = b.add("Pad", [wave, b.ints("centre", 0, pad, 0, pad)], "padded_wave")
    length = b.add("Shape", [padded], "padded_length", start=1, end=2)
    spare = b.add("Sub", [length, b.ints("n_fft", cfg.n_fft)], "spare")
    count = b.add("Add", [b.add("Div", [spare, b.ints("hop", cfg.hop_length)], "hops"), b.ints("one_i", 1)], "count")
    index = b.add("Range", [b.ints("zero_s", 0), b.add("Squeeze", [count], "count_s"), b.ints("one_s", 1)], "index")
    starts = b.add(
        "Unsqueeze", [b.add("Mul", [index, b.ints("hop_s", cfg.hop_length)], "starts"), b.ints("ax", 1)], "starts_c"
    )
    offsets = b.const("offsets", np.arange(cfg.n_fft, dtype=np.int64)[None, :])
    taps = b.add("Add", [starts, offsets], "taps")  # (t, n_fft) sample indices
    frames = b.add("Gather", [padded, taps], "frames", axis=1)  # (B, t, n_fft)
    spectrum = b.add("MatMul", [frames, b.const("dft", dft_matrix(cfg))], "spectrum")  # (B, t, 2K)
    squared = b.add("Mul", [spectrum, spectrum], "squared")
    mel64 = b.add("MatMul", [squared, b.const("mel_basis", mel_basis(cfg))], "mel64")  # (B, t, F)
    mel = b.add("Cast", [mel64], "mel", to=TensorProto.FLOAT)  # the reference compresses float32 mel
    # log10(log_multiplier * mel + 1), the expression and order of mtlmood.features.
    scaled = b.add("Mul", [mel, b.const("log_multiplier", np.float32(cfg.log_multiplier))], "scaled")
    shifted = b.add("Add", [scaled, b.const("one", np.float32(1.0))], "shifted")
    natural = b.add("Log", [shifted], "ln")
    full = b.add("Mul", [natural, b.const("log10_e", np.float32(1.0 / math.log(10.0)))], "logmel_all")
    zero, axis = b.ints("zero", 0), b.ints("axis_frames", 1)
    logmel = b.add("Slice", [full, zero, b.ints("max_frames", cfg.max_frames), axis], FEATURES_OUTPUT)
    # segment_song: a song shorter than one window is zero-padded to one (log-mel 0 = silence) ...
    have = b.add("Shape", [logmel], "frame_count", start=1, end=2)
    window = b.ints("segment_frames", segment_frames)
    missing = b.add("Max", [b.add("Sub", [window, have], "short_by"), zero], "missing")
    pads = b.add("Concat", [b.ints("pads_head", 0, 0, 0, 0), missing, zero], "pads", axis=0)
    padded = b.add("Pad", [logmel, pads], "padded")
    # ... and a longer one cut into whole windows, the remainder dropped (int64 Div floors: both > 0).
    total = b.add("Shape", [padded], "padded_frames", start=1, end=2)
    used = b.add("Mul", [b.add("Div", [total, window], "windows_per_song"), window], "used_frames")
    cut = b.add("Slice", [padded, zero, used, axis], "cut")
    return b.add("Reshape", [cut, b.ints("window_shape", -1, segment_frames, cfg.n_mels)], "windows")


def _tail(b: _Builder, window_probabilities: str, n_moods: int) -> None:
    """(B·n_windows, N_mood) -> (B, N_mood): each song's windows are consecutive rows; their mean."""
    batch = b.add("Shape", [WAVEFORM_INPUT], "batch", start=0, end=1)
    song_shape = b.add("Concat", [batch, b.ints("song_tail", -1, n_moods)], "song_shape", axis=0)
    per_song = b.add("Reshape", [window_probabilities, song_shape], "per_song")
    b.add("ReduceMean", [per_song, b.ints("axis_windows", 1)], OUTPUT_NAME, keepdims=0)


def waveform_model(cnn: "onnx.ModelProto", card: ModelCard, metadata: dict[str, str]) -> "onnx.ModelProto":
    """The waveform model around ``cnn`` (mtlmood.export's log-mel graph: ``INPUT_NAME`` windows ->
    ``OUTPUT_NAME``), whose nodes and weights it takes unchanged; checked by onnx.checker."""
    import onnx
    from onnx import TensorProto, helper

    b = _Builder()
    windows = _front(b, card.features, card.model.segment_frames)
    front = list(b.nodes)
    window_probabilities = _PREFIX + "window_probabilities"
    body = []
    for original in cnn.graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        node.input[:] = [windows if x == INPUT_NAME else x for x in node.input]
        node.output[:] = [window_probabilities if x == OUTPUT_NAME else x for x in node.output]
        body.append(node)
    b.nodes.clear()
    _tail(b, window_probabilities, card.n_moods)
    theirs = [x for n in body for x in n.output] + [t.name for t in cnn.graph.initializer]
    ours = [x for n in front + b.nodes for x in n.output] + [t.name for t in b.constants]
    clash = sorted({x for x in theirs + ours if (theirs + ours).count(x) > 1})
    if clash:  # the CNN graph used a name of ours: the graph would be wrong, not just ugly
        raise ExportError(f"waveform export: names used twice in the graph: {', '.join(clash)}")
    graph = helper.make_graph(
        front + body + b.nodes,
        "mtlmood_waveform",
        [helper.make_tensor_value_info(WAVEFORM_INPUT, TensorProto.FLOAT, ["batch", "samples"])],
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", card.n_moods]),
            helper.make_tensor_value_info(
                FEATURES_OUTPUT, TensorProto.FLOAT, ["batch", "frames", card.features.n_mels]
            ),
        ],
        initializer=[*cnn.graph.initializer, *b.constants],
    )
    model = helper.make_model(graph, opset_imports=list(cnn.opset_import), producer_name="mtlmood")
    model.ir_version = cnn.ir_version
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = (
        "mtlmood mood classifier: mono waveform -> mood probabilities, log-mel inside (see MODEL_CARD.md)"
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def waveform_metadata(card: ModelCard) -> dict[str, str]:
    """What the waveform model says about itself (ONNX metadata_props)."""
    f = card.features
    return {
        **identity_metadata(card),
        "input": f"{WAVEFORM_INPUT}: float32 (batch, samples), mono at {f.sample_rate} Hz: the first "
        f"{f.max_seconds:g} s of the decoded file, cut at its native rate, channels averaged, resampled "
        "(see MODEL_CARD.md); the rows of a batch are songs of equal length",
        "output": f"{OUTPUT_NAME}: float32 (batch, {card.n_moods}), the mean over the song's non-overlapping "
        f"{card.model.segment_frames}-frame windows of the per-window sigmoid; {FEATURES_OUTPUT}: float32 "
        f"(batch, frames, {f.n_mels}), log10(1 + {f.log_multiplier:g}·mel) of the first {f.max_frames} frames",
        "features": json.dumps({**vars(f), "segment_frames": card.model.segment_frames}),
        "metadata_head": "not exported (training only)",
    }
