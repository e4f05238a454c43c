"""Fast inference and feature paths agree with the fp32 / librosa reference within the stated tolerances.

Tolerances (probabilities are in [0, 1]; log-mel is in log10 units):
- FusedCNN / Predictor fp32: |Δp| <= 1e-5 (measured ~1e-7).
- bf16 (fused or autocast): |Δp| <= 2e-2 (measured ~1e-3).
- log_mel(method="fast") vs librosa: |Δ| <= 1e-4 (measured ~2e-6).
The fp32 reference path is ``Predictor(..., fused=False, mel_method="librosa")``: the plain
model, NCHW, librosa features.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mtlmood.checkpoint import ModelCard
from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.features import features_from_file, log_mel
from mtlmood.fused import FusedCNN
from mtlmood.inference import Predictor
from mtlmood.model import MoodCNN

FP32_TOL = 1e-5
BF16_TOL = 2e-2
MEL_TOL = 1e-4
AUDIO_SUFFIXES = {".ogg", ".mp3", ".flac", ".wav"}


def trained_like(cfg: ModelConfig, n_moods: int = 5, n_meta: int = 3, seed: int = 0) -> MoodCNN:
    """An eval-mode model whose BatchNorms look trained: running stats, gammas of both signs, one zero."""
    torch.manual_seed(seed)
    model = MoodCNN(cfg, n_moods, n_meta)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(0.0, 0.5)
            bn.running_var.uniform_(0.3, 2.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.weight[0] = 0.0  # a dead channel: its output is the shift alone
            bn.bias.uniform_(-0.2, 0.2)
        for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
            conv.bias.uniform_(-0.1, 0.1)
    return model.eval()


def reference_probs(model: MoodCNN, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.sigmoid(model(x, with_meta=False)[0])


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(n_filters=8),  # the paper's input and depth, narrow
        ModelConfig(n_filters=6, n_blocks=3, kernel_size=5, segment_frames=61, n_mels=40),  # odd sizes
        ModelConfig(n_filters=4, n_blocks=2, kernel_size=4, pool_size=3, segment_frames=50, n_mels=31),  # even kernel
    ],
    ids=["paper-input", "odd-sizes", "even-kernel-pool3"],
)
def test_fused_fp32_matches_the_model(cfg: ModelConfig) -> None:
    model = trained_like(cfg)
    x = torch.rand(11, cfg.segment_frames, cfg.n_mels) * 4  # log-mel range; 11 crosses chunk boundaries
    expected = reference_probs(model, x)
    for chunk in (1, 4, 16):
        fused = FusedCNN(model, "fp32", chunk=chunk)
        with torch.inference_mode():
            logits, meta = fused(x, with_meta=False)
        assert meta is None and logits.dtype == torch.float32 and logits.shape == expected.shape
        torch.testing.assert_close(torch.sigmoid(logits), expected, rtol=0, atol=FP32_TOL)
    assert not any(p.requires_grad for p in fused.parameters())


def test_fused_bf16_within_tolerance() -> None:
    cfg = ModelConfig(n_filters=16)
    model = trained_like(cfg)
    x = torch.rand(6, cfg.segment_frames, cfg.n_mels) * 4
    with torch.inference_mode():
        got = torch.sigmoid(FusedCNN(model, "bf16")(x)[0])
    torch.testing.assert_close(got, reference_probs(model, x), rtol=0, atol=BF16_TOL)


def test_fused_is_a_snapshot_and_rejects_other_networks() -> None:
    cfg = ModelConfig(n_filters=4)
    model = trained_like(cfg)
    fused = FusedCNN(model)
    x = torch.rand(2, cfg.segment_frames, cfg.n_mels)
    before = fused(x)[0].detach().clone()
    with torch.no_grad():
        model.mood_head.bias += 1.0  # training on: the snapshot does not move
    assert torch.equal(fused(x)[0], before)
    with pytest.raises(ValueError, match="precision"):
        FusedCNN(model, "fp16")  # type: ignore[arg-type]
    model.trunk = nn.Sequential(*list(model.trunk)[:-1])
    with pytest.raises(ValueError, match="blocks"):
        FusedCNN(model)


@pytest.fixture(scope="module")
def model_and_card() -> tuple[MoodCNN, ModelCard]:
    cfg = ModelConfig(n_filters=16)
    card = ModelCard(
        mood_names=[f"mood{i}" for i in range(5)],
        meta_names=["a", "b", "c"],
        model=cfg,
        features=FeatureConfig(),
        alpha=0.5,
    )
    return trained_like(cfg), card


def test_predictor_speed_options_on_real_clips(model_and_card: tuple[MoodCNN, ModelCard], real_audio_dir: Path) -> None:
    model, card = model_and_card
    default = Predictor(copy.deepcopy(model), card)
    reference = Predictor(copy.deepcopy(model), card, fused=False, mel_method="librosa")
    # Fused fp32 with the fast mel is the CPU default.
    assert default.fused and default.precision == "fp32" and default.mel_method == "fast"
    options = {  # option -> tolerance against the reference path
        "default": (default, FP32_TOL),
        "channels_last": (Predictor(copy.deepcopy(model), card, fused=False, channels_last=True), FP32_TOL),
        "librosa_mel": (Predictor(copy.deepcopy(model), card, mel_method="librosa"), FP32_TOL),
        "bf16_fused": (Predictor(copy.deepcopy(model), card, precision="bf16"), BF16_TOL),
        "bf16_autocast": (Predictor(copy.deepcopy(model), card, precision="bf16", fused=False), BF16_TOL),
    }
    files = sorted(p for p in real_audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    expected = {f.name: reference.predict_file(f) for f in files}
    for name, (predictor, tol) in options.items():
        for f in files:
            got = predictor.predict_file(f)
            assert got.n_segments == expected[f.name].n_segments, name
            np.testing.assert_allclose(
                list(got.probabilities.values()),
                list(expected[f.name].probabilities.values()),
                rtol=0,
                atol=tol,
                err_msg=f"{name} on {f.name}",
            )
    # Many files at once (decode-ahead threads, segments of several files per forward) = one at a time.
    batched = list(default.predict_files(files, workers=2, min_batch=8))
    assert [p.n_segments for p in batched] == [expected[f.name].n_segments for f in files]
    for f, got in zip(files, batched):
        np.testing.assert_allclose(
            list(got.probabilities.values()), list(expected[f.name].probabilities.values()), rtol=0, atol=FP32_TOL
        )
        assert got.duration_s == expected[f.name].duration_s
    assert list(default.predict_files([])) == []
    with pytest.raises(ValueError, match="precision"):
        Predictor(copy.deepcopy(model), card, precision="int8")  # type: ignore[arg-type]


def test_fast_mel_matches_librosa(real_audio_dir: Path) -> None:
    cfg = FeatureConfig()
    for path in sorted(p for p in real_audio_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        reference = features_from_file(path, cfg)
        fast = features_from_file(path, cfg, method="fast")
        assert fast.shape == reference.shape and fast.dtype == np.float32 and fast.flags.c_contiguous
        assert np.abs(fast - reference).max() <= MEL_TOL, path.name


@pytest.mark.filterwarnings("ignore:n_fft=")  # librosa warns about waves shorter than a frame
@pytest.mark.parametrize("n", [1, 255, 256, 511, 512, 513, 16000, 16001])
def test_fast_mel_frame_count_and_values_on_any_length(n: int) -> None:
    cfg = FeatureConfig()
    wave = (0.3 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    reference, fast = log_mel(wave, cfg), log_mel(wave, cfg, method="fast")
    assert fast.shape == reference.shape == (1 + n // cfg.hop_length, cfg.n_mels)
    assert np.abs(fast - reference).max() <= MEL_TOL
    other = FeatureConfig(n_fft=1024, hop_length=512, n_mels=64, sample_rate=22050)
    assert np.abs(log_mel(wave, other, method="fast") - log_mel(wave, other)).max() <= MEL_TOL
    with pytest.raises(ValueError, match="method"):
        log_mel(wave, cfg, method="torch")  # type: ignore[arg-type]


def test_mel_runs_on_one_blas_thread_and_restores_the_setting() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from mtlmood.features import one_blas_thread

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    if not before:  # every check below would pass on an empty list
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # a known starting point, even on 1 core
        start = blas_threads()
        with one_blas_thread:
            assert all(n == 1 for n in blas_threads())
            with one_blas_thread:  # re-entrant: the inner exit does not lift the outer limit
                pass
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == start
        # Overlapping users from several threads: the last one out restores the setting.
        import threading

        inside = threading.Barrier(3)

        def user() -> None:
            with one_blas_thread:
                inside.wait(timeout=10)
                log_mel(np.zeros(4000, np.float32), FeatureConfig())

        workers = [threading.Thread(target=user) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert blas_threads() == start
    assert blas_threads() == before
