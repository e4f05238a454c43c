"""`mtlmood export`: ONNX and TorchScript files of a trained checkpoint give PyTorch's mood
probabilities (|Δp| <= 1e-5) at any batch size, on random and real inputs; a failed
validation is one error line and leaves no file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mtlmood.export as export
import mtlmood_cli.commands.export as command
from helpers.audio import shared_clips
from mtlmood.checkpoint import load_checkpoint
from mtlmood.export import ExportError, ExportResult, export_checkpoint, pytorch_probabilities
from mtlmood.model_card import MODEL_CARD_FILE
from mtlmood_cli.main import main

FORMATS = ("onnx", "torchscript")


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint: Path) -> Path:
    """The session's small trained multi-task model (BatchNorm statistics are real, not 0/1)."""
    return trained_checkpoint


@pytest.fixture(scope="module")
def clips(request: pytest.FixtureRequest) -> list[Path]:
    """Two real CC music clips when the shared data is there, else none (the exports are still tested)."""
    return shared_clips(request)[:2]


@pytest.fixture(scope="module")
def exports(checkpoint: Path, clips: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    """Each format exported once (ONNX export takes seconds); validated on the real clips too."""
    out = tmp_path_factory.mktemp("exported")
    return {fmt: export_checkpoint(checkpoint, fmt, out / f"mood.{fmt}", audio_files=clips) for fmt in FORMATS}


def _runner(result: ExportResult):
    """An independent loader of the exported file: (B, T, F) float32 -> (B, N_mood)."""
    if result.format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"logmel": x})[0]
    loaded = torch.jit.load(str(result.path))
    return lambda x: loaded(torch.from_numpy(x)).detach().numpy()


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_gives_pytorch_probabilities_at_any_batch_size(
    fmt: str, exports: dict[str, ExportResult], checkpoint: Path
) -> None:
    result = exports[fmt]
    model, card = load_checkpoint(checkpoint)
    assert result.max_abs_diff <= 1e-5 and {"random", "test signal"} <= set(result.diffs)
    assert (result.segment_frames, result.n_mels) == (card.model.segment_frames, card.features.n_mels)
    run = _runner(result)
    rng = np.random.default_rng(7)
    for batch in (1, 3, 17):
        x = rng.uniform(0, 4, size=(batch, card.model.segment_frames, card.features.n_mels)).astype(np.float32)
        got = run(x)
        assert got.shape == (batch, card.n_moods) and np.all((got > 0) & (got < 1))
        assert np.abs(got - pytorch_probabilities(model, x)).max() <= 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_matches_on_real_music(fmt: str, exports: dict[str, ExportResult], clips: list[Path]) -> None:
    if not clips:
        pytest.skip("no real audio clips (set MTLMOOD_SHARED_DATA)")
    result = exports[fmt]
    assert {clip.name for clip in clips} <= set(result.diffs)
    assert all(result.windows[clip.name] > 1 and result.diffs[clip.name] <= 1e-5 for clip in clips)


def test_onnx_graph_is_the_eval_mood_path_with_a_dynamic_batch(exports: dict[str, ExportResult]) -> None:
    import onnx

    result = exports["onnx"]
    graph = onnx.load(str(result.path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"Conv", "Relu", "BatchNormalization", "MaxPool", "Gemm", "Sigmoid"} <= ops
    assert "Dropout" not in ops and result.operators == sorted(ops)
    assert [o.name for o in graph.output] == ["mood_probabilities"]  # no metadata output
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == "logmel" and dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [result.segment_frames, result.n_mels]
    assert not any("meta_head" in init.name for init in graph.initializer)
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props["mood_names"]) == result.mood_names and props["checkpoint_id"] == result.checkpoint_id


def test_torchscript_carries_no_metadata_head_and_says_what_it_is(exports: dict[str, ExportResult]) -> None:
    result = exports["torchscript"]
    extra = {export.METADATA_FILE: ""}
    loaded = torch.jit.load(str(result.path), _extra_files=extra)
    assert not any("meta_head" in name for name in loaded.state_dict())
    assert json.loads(json.loads(extra[export.METADATA_FILE])["mood_names"]) == result.mood_names


def test_failed_validation_is_an_error_and_leaves_no_file(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = export.pytorch_probabilities
    monkeypatch.setattr(export, "pytorch_probabilities", lambda model, x: honest(model, x) + 1e-3)
    assert main(["export", str(checkpoint), "--format", "torchscript", "--output", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "failed validation: max |Δp| = 1.00e-03 on " in err and "> tolerance 1e-05; nothing was written" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_cli_export_writes_the_file_and_its_card(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(checkpoint), "--format", "torchscript", "--output", f"{tmp_path / 'dist'}/"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "dist" / "model.torchscript.pt").is_file() and "max |Δp| = " in out
    card = (tmp_path / "dist" / MODEL_CARD_FILE).read_text()
    assert "## Exported model" in card and "`model.torchscript.pt` (torchscript; sha256" in card and "max |Δp|" in card
    # Without --output the file goes inside the checkpoint.
    assert export.default_output(checkpoint, "onnx") == checkpoint / "model.onnx"


@pytest.mark.parametrize("argv", [["export", "--format", "onnx"], ["model-card"]])
def test_a_missing_checkpoint_is_one_line_exit_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([argv[0], str(tmp_path / "nope"), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint directory not found" in err


def test_unknown_format_and_the_commands_constants(checkpoint: Path) -> None:
    with pytest.raises(ExportError, match="unknown export format"):
        export_checkpoint(checkpoint, "tflite")
    assert command.FORMATS == export.FORMATS and command.TOLERANCE == export.TOLERANCE
