"""GPU sizing and cost of trials and studies, computed from the model instead of by hand.

    python -m study.sizing            # the tables in docs/RUNBOOK.md

The model's work per 187 x 96 segment is counted exactly (conv and dense MACs at each
block's resolution; ``tests/study/test_sizing.py`` checks the count against PyTorch's own
FLOP counter). Time on a GPU is then an *estimate* from stated assumptions:

* compute: FLOPs / (peak x utilization) for the convolutions and heads;
* memory: the element-wise layers between the convolutions (ReLU, BatchNorm, max-pool
  with its int64 indices, dropout, forward and backward) stream every activation
  through GPU memory several times: about ``TRAIN_BYTES_PER_ACTIVATION`` bytes per
  conv-output element per training step in bf16 (counted layer by layer in
  ``_bytes_per_activation``). Eager PyTorch runs these kernels one after another, so
  the two times add. At batch 32 on an A10G the memory part is as large as the
  compute part: a FLOPs-only estimate is about twice too optimistic.

Nothing here is measured on a GPU; the assumptions are arguments with defaults, and
``docs/RUNBOOK.md`` states them next to the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mtlmood.config import FeatureConfig, ModelConfig
from mtlmood.shapes import pooled_size

# Bytes moved per conv-output element per step, bf16 activations (2 B), max-pool indices
# int64 (8 B per pooled element = 2 B per input element), dropout mask 1 B per pooled element.
_FORWARD_PASSES = {
    "conv write": 2,
    "relu read+write": 4,
    "batchnorm stats+normalize+write": 6,
    "maxpool read+write+indices": 2 + 0.5 + 2,
    "dropout read+write+mask": 0.5 + 0.5 + 0.25,
}
_BACKWARD_PASSES = {
    "dropout": 1.25,
    "maxpool (indices, zero-filled full-size grad)": 6.5,
    "batchnorm": 8,
    "relu": 6,
    "conv grad reads": 4,
}


def _bytes_per_activation(passes: dict[str, float]) -> float:
    return float(sum(passes.values()))


FORWARD_BYTES_PER_ACTIVATION = _bytes_per_activation(_FORWARD_PASSES)  # 17.75 (bf16)
TRAIN_BYTES_PER_ACTIVATION = FORWARD_BYTES_PER_ACTIVATION + _bytes_per_activation(_BACKWARD_PASSES)  # 43.5


PAPER = ModelConfig()  # the paper's width: 5 blocks of 128 filters on 187 x 96 segments
FEATURES = FeatureConfig()


@dataclass(frozen=True)
class Gpu:
    """A GPU instance and how much of it a batch-32 conv net gets (assumptions, not measurements)."""

    name: str
    peak_tflops: float  # dense peak in the precision trained in
    utilization: float  # fraction of that peak the convolutions reach
    bandwidth_gbs: float  # memory bandwidth
    bandwidth_utilization: float  # fraction of it the element-wise kernels reach
    usd_per_hour: float  # on-demand price of the instance
    bytes_scale: float = 1.0  # 2.0 for fp32 activations (bf16 = 1.0)


# NVIDIA's A10 sheet: 31.2 TFLOP/s fp32, 125 bf16 tensor (dense), 600 GB/s. AWS's A10G
# (g5) is a variant reported with more fp32 (~35) and about half the tensor throughput
# (~70 bf16 dense): take the lower tensor figure. g5.2xlarge on-demand, us-west-2: ~1.212 USD/h.
A10G_BF16 = Gpu("A10G, bf16 autocast (g5.2xlarge)", 70.0, 0.35, 600.0, 0.75, 1.212)
A10G_FP32 = Gpu("A10G, fp32 (g5.2xlarge)", 31.2, 0.35, 600.0, 0.75, 1.212, bytes_scale=2.0)


@dataclass(frozen=True)
class ConvBlock:
    c_in: int
    c_out: int
    height: int  # the block's input (= conv output, "same" padding) resolution
    width: int
    kernel: int

    @property
    def macs(self) -> int:
        return self.kernel * self.kernel * self.c_in * self.c_out * self.height * self.width

    @property
    def activations(self) -> int:
        """Elements of the conv output: what the element-wise layers after it stream."""
        return self.c_out * self.height * self.width


def conv_blocks(cfg: ModelConfig) -> list[ConvBlock]:
    """The conv of every block with the resolution it runs at (187 x 96, 93 x 48, ...)."""
    blocks, c_in = [], 1
    for i in range(cfg.n_blocks):
        h = pooled_size(cfg.segment_frames, i, cfg.pool_size)
        w = pooled_size(cfg.n_mels, i, cfg.pool_size)
        blocks.append(ConvBlock(c_in, cfg.n_filters, h, w, cfg.kernel_size))
        c_in = cfg.n_filters
    return blocks


def flatten_size(cfg: ModelConfig) -> int:
    return (
        cfg.n_filters
        * pooled_size(cfg.segment_frames, cfg.n_blocks, cfg.pool_size)
        * pooled_size(cfg.n_mels, cfg.n_blocks, cfg.pool_size)
    )


def model_flops(cfg: ModelConfig = PAPER, n_moods: int = 50, n_meta: int = 0) -> int:
    """Forward FLOPs for one segment (2 per multiply-accumulate): convs + mood (+ metadata) head."""
    macs = sum(b.macs for b in conv_blocks(cfg)) + flatten_size(cfg) * (n_moods + n_meta)
    return 2 * macs


def train_flops(cfg: ModelConfig = PAPER, n_moods: int = 50, n_meta: int = 0) -> int:
    """Forward + backward FLOPs for one training segment: every layer's forward, its weight
    gradient (same MACs) and its input gradient (same MACs), except the first conv, whose
    input (the spectrogram) needs no gradient. About 3x forward."""
    first = conv_blocks(cfg)[0].macs
    return 3 * model_flops(cfg, n_moods, n_meta) - 2 * first


def activations(cfg: ModelConfig = PAPER) -> int:
    """Conv-output elements per segment (memory traffic scales with them; block 1 is 75%)."""
    return sum(b.activations for b in conv_blocks(cfg))


def segments_per_second(
    gpu: Gpu, cfg: ModelConfig = PAPER, n_moods: int = 50, n_meta: int = 0, train: bool = True
) -> float:
    """Estimated training (or inference) throughput of one GPU: compute time + memory time."""
    flops = train_flops(cfg, n_moods, n_meta) if train else model_flops(cfg, n_moods, n_meta)
    bytes_ = (
        activations(cfg) * gpu.bytes_scale * (TRAIN_BYTES_PER_ACTIVATION if train else FORWARD_BYTES_PER_ACTIVATION)
    )
    seconds = flops / (gpu.peak_tflops * 1e12 * gpu.utilization) + bytes_ / (
        gpu.bandwidth_gbs * 1e9 * gpu.bandwidth_utilization
    )
    return 1.0 / seconds


def compute_bound_segments_per_second(gpu: Gpu, cfg: ModelConfig = PAPER, n_moods: int = 50, n_meta: int = 0) -> float:
    """The FLOPs-only training throughput (ignores memory traffic: an upper bound)."""
    return gpu.peak_tflops * 1e12 * gpu.utilization / train_flops(cfg, n_moods, n_meta)


@dataclass(frozen=True)
class TrialEstimate:
    n_songs: int
    n_train: int
    n_val: int
    n_test: int
    batches_per_epoch: int
    epochs: int
    train_seg_per_s: float
    epoch_s: float  # training + validation of one epoch
    trial_s: float  # all epochs + test + fixed overhead
    usd: float

    @property
    def gpu_hours(self) -> float:
        return self.trial_s / 3600


def trial_estimate(
    n_songs: int,
    epochs: int,
    gpu: Gpu = A10G_BF16,
    cfg: ModelConfig = PAPER,
    n_moods: int = 50,
    n_meta: int = 50,
    batch_size: int = 32,
    epoch_factor: float = 1.25,
    train_fraction: float = 0.8,
    val_fraction: float = 0.1,
    overhead_s: float = 120.0,
    features: FeatureConfig = FEATURES,
) -> TrialEstimate:
    """One trial on one GPU: ``epochs`` paper epochs (1.25 x n_train batches of 32), validation
    after each (every non-overlapping segment of the first 29 s of each song), test at the end.

    ``overhead_s``: worker start-up, reading the feature cache into memory, checkpoints
    (an assumption). ``n_meta=0`` for a baseline (no metadata head).
    """
    n_train = round(n_songs * train_fraction)
    n_val = round(n_songs * val_fraction)
    n_test = n_songs - n_train - n_val
    batches = math.ceil(epoch_factor * n_train)
    segments_per_song = int(features.max_seconds * features.frames_per_second) // cfg.segment_frames
    train_rate = segments_per_second(gpu, cfg, n_moods, n_meta)
    infer_rate = segments_per_second(gpu, cfg, n_moods, 0, train=False)
    epoch_s = batches * batch_size / train_rate + n_val * segments_per_song / infer_rate
    trial_s = epochs * epoch_s + n_test * segments_per_song / infer_rate + overhead_s
    return TrialEstimate(
        n_songs,
        n_train,
        n_val,
        n_test,
        batches,
        epochs,
        train_rate,
        epoch_s,
        trial_s,
        trial_s / 3600 * gpu.usd_per_hour,
    )


@dataclass(frozen=True)
class StudyPlan:
    """The trials of a study, by cell size. Defaults: study/configs/mtg-jamendo.yaml."""

    songs_per_n_moods: dict[int, int] = field(default_factory=lambda: {3: 4346, 9: 10041, 50: 17946})
    search_trials: int = 48  # search.trials_per_cell = 16 in each of the 3 cells
    # Mean epochs per search trial with ASHA per cell (grace 3, factor 3): about a third of a
    # cell's trials pass the first rung, the best run to early stopping (~12): ~6 on average.
    search_epochs: float = 6.0
    # The curve per mood count: the baseline + (5 grid multiples, tuned, learned) of the
    # artist cell = 8 arms x 5 fresh seeds.
    confirm_trials_per_cell: int = 40
    confirm_epochs: int = 12  # early stopping (patience 3) typically ends a run at 10-15
    gpus: int = 8  # gpu_worker max_workers: trials at once
    head_usd_per_hour: float = 0.384  # m6i.2xlarge on-demand, running for the whole study


@dataclass(frozen=True)
class StudyEstimate:
    gpu_hours: float
    wall_hours: float
    usd: float
    trials: int


def study_estimate(plan: StudyPlan = StudyPlan(), gpu: Gpu = A10G_BF16, **trial_kwargs: object) -> StudyEstimate:
    """GPU hours, wall-clock hours (trials spread over ``plan.gpus``) and dollars of a whole study."""
    gpu_hours, trials = 0.0, 0
    per_cell_search = plan.search_trials / len(plan.songs_per_n_moods)
    for n_moods, n_songs in plan.songs_per_n_moods.items():
        search = trial_estimate(n_songs, 1, gpu, n_moods=n_moods, **trial_kwargs)  # type: ignore[arg-type]
        confirm = trial_estimate(n_songs, plan.confirm_epochs, gpu, n_moods=n_moods, **trial_kwargs)  # type: ignore[arg-type]
        overhead_h = (search.trial_s - search.epoch_s) / 3600  # test + overhead, paid once per trial
        gpu_hours += per_cell_search * (plan.search_epochs * search.epoch_s / 3600 + overhead_h)
        gpu_hours += plan.confirm_trials_per_cell * confirm.gpu_hours
        trials += round(per_cell_search) + plan.confirm_trials_per_cell
    wall = gpu_hours / plan.gpus
    usd = gpu_hours * gpu.usd_per_hour + wall * plan.head_usd_per_hour
    return StudyEstimate(gpu_hours, wall, usd, trials)


def report(gpu: Gpu = A10G_BF16) -> str:
    """The sizing tables of docs/RUNBOOK.md, as Markdown."""
    cfg = ModelConfig()
    lines = ["| block | conv (Cin -> Cout) | resolution | MMACs |", "|---|---|---|---|"]
    for i, b in enumerate(conv_blocks(cfg), 1):
        lines.append(f"| {i} | {b.c_in} -> {b.c_out} | {b.height} x {b.width} | {b.macs / 1e6:,.1f} |")
    fwd, tr = model_flops(cfg, 50, 50), train_flops(cfg, 50, 50)
    lines += [
        "",
        (
            f"forward: {fwd / 1e9:.3f} GFLOP per segment (50 moods + 50 artists heads); "
            f"training step: {tr / 1e9:.3f} GFLOP per segment ({tr / fwd:.2f}x forward); "
            f"{activations(cfg) / 1e6:.2f} M conv-output elements per segment"
        ),
        "",
    ]
    lines += ["| GPU assumption | segments/s (FLOPs only) | segments/s (FLOPs + memory) |", "|---|---|---|"]
    for g in (gpu, A10G_FP32) if gpu is not A10G_FP32 else (gpu,):
        lines.append(
            f"| {g.name}: {g.peak_tflops:g} TFLOP/s x {g.utilization:.0%}, {g.bandwidth_gbs:g} GB/s x "
            f"{g.bandwidth_utilization:.0%} | {compute_bound_segments_per_second(g, cfg, 50, 50):,.0f} | "
            f"{segments_per_second(g, cfg, 50, 50):,.0f} |"
        )
    lines += [
        "",
        "| songs (moods) | train songs | batches/epoch | epoch | 12 epochs | 30 epochs | USD (12 / 30) |",
        "|---|---|---|---|---|---|---|",
    ]
    for n_moods, n_songs in StudyPlan().songs_per_n_moods.items():
        t12, t30 = (trial_estimate(n_songs, e, gpu, n_moods=n_moods) for e in (12, 30))
        lines.append(
            f"| {n_songs:,} ({n_moods}) | {t12.n_train:,} | {t12.batches_per_epoch:,} | "
            f"{t12.epoch_s / 60:.1f} min | {t12.trial_s / 3600:.2f} h | {t30.trial_s / 3600:.2f} h | "
            f"{t12.usd:.2f} / {t30.usd:.2f} |"
        )
    study = study_estimate(StudyPlan(), gpu)
    lines += [
        "",
        (
            f"study (study/configs/mtg-jamendo.yaml, ~{study.trials} trials): {study.gpu_hours:.1f} "
            f"GPU-hours, {study.wall_hours:.1f} h on {StudyPlan().gpus} GPUs, about {study.usd:.0f} USD"
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
