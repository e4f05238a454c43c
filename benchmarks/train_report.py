"""The training benchmark's results page (train.md): the Ray overhead, the sampler vs step rates,
bf16 / channels-last, the accuracy check and the accelerator's steps, as Markdown tables."""

from __future__ import annotations

from typing import Any, Optional

from benchmarks.common import fmt, machine_line, table


def markdown(
    info: dict[str, Any],
    overhead: Optional[dict[str, Any]],
    step: dict[str, Any],
    accuracy: dict[str, Any],
    accel: Optional[dict[str, Any]],
    accuracy_epochs: int,
) -> list[str]:
    """The page's lines; a section whose measurement was skipped (Ray, accelerator) says so or is left out."""
    md = ["# Training benchmark", "", machine_line(info), ""]
    if overhead:
        c = overhead["config"]
        md += [
            f"## Ray Train trial vs plain fit (synthetic default, {c['n_filters']} filters, {c['epochs']} epochs x "
            f"{c['batches_per_epoch']} batches of {c['batch_size']}, {c['torch_threads']} torch thread)",
            "",
            table(
                ["path", "steady segments/s (median of epochs 2..)", "vs plain", "start-up s (wall − epochs)"],
                [
                    [
                        "bare hand-written PyTorch loop",
                        fmt(overhead["bare_segments_per_s"]),
                        f"{overhead['bare_segments_per_s'] / overhead['plain_steady_segments_per_s']:.2f}×",
                        "–",
                    ],
                    [
                        "mtlmood fit (plain)",
                        fmt(overhead["plain_steady_segments_per_s"]),
                        "1.00×",
                        fmt(overhead["startup_s"]["plain"]),
                    ],
                    [
                        "Ray Train trial (TorchTrainer, 1 worker)",
                        fmt(overhead["ray_steady_segments_per_s"]),
                        f"{overhead['ray_steady_segments_per_s'] / overhead['plain_steady_segments_per_s']:.2f}×",
                        fmt(overhead["startup_s"]["ray"]),
                    ],
                ],
            ),
            "",
            f"Ray steady-state overhead: {100 * overhead['ray_overhead_fraction']:.1f} % (target ≤ 10 %); "
            f"extra start-up per trial {overhead['ray_extra_startup_s']:.1f} s; "
            f"ray.init {overhead['ray_init_s']:.1f} s.",
            "",
        ]
    rows = []
    for name, s in step["steps"].items():
        rows.append(
            [
                name,
                str(s["torch_threads"]),
                fmt(s["segments_per_s"]),
                f"{s['vs_fp32_nchw']:.2f}×",
                f"{s['sampler_over_step']:.0f}×",
            ]
        )
    md += [
        f"## Sampler vs model step; bf16 / channels-last (batch 32, {step['n_mels']} mel bands x "
        f"{step['segment_frames']} frames)",
        "",
        f"WindowSampler: {step['sampler_batches_per_s']:,.0f} batches/s (one thread).",
        "",
        table(["optimizer step", "threads", "segments/s", "vs fp32 NCHW", "sampler / step rate"], rows),
        "",
        f"## Accuracy quick check ({accuracy_epochs} epochs, same seed, study width)",
        "",
        table(
            ["precision", "best val PR-AUC %", "best val ROC-AUC %", "test PR-AUC %", "segments/s"],
            [
                [
                    k,
                    fmt(v["best_val_pr_auc"], 2),
                    fmt(v["best_val_roc_auc"], 2),
                    fmt(v["test_pr_auc"], 2),
                    fmt(v["steady_segments_per_s"]),
                ]
                for k, v in accuracy.items()
            ],
        ),
    ]
    if accel:
        md += [
            "",
            f"## Accelerator: paper-width training steps on {accel.get('device_name', accel['device'])} "
            f"(batch 32, {accel['n_steps']} steps per round, batch fetch included)",
            "",
            table(
                ["data path / precision", "segments/s", "vs baseline"],
                [[k, fmt(v["segments_per_s"]), f"{v['vs_baseline']:.2f}×"] for k, v in accel["steps"].items()],
            ),
        ]
    else:
        md += ["", "Accelerator section skipped: no CUDA device (run with --accelerator cuda on a GPU machine)."]
    return md
