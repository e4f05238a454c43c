"""The benchmarks' summary: one row per target (its measured value, ratio, target and whether it
is met) from each benchmark's result file, written to ``benchmarks/results/summary.{json,md}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchmarks.common import load_result, machine, table, write_results


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def inference_rows(inf: dict[str, Any]) -> list[list[str]]:
    """The inference benchmark's rows: the default and the fastest option vs the peer, vs the old path, the
    network alone, and the accuracy of every option against the fp32 reference."""
    rows: list[list[str]] = []
    f, n = inf["file_level"], inf["network_only"]
    peer = next((v for k, v in f.items() if k.startswith("peer")), None)
    date = inf["machine"]["date"][:16]
    default = f["fused fp32 + fast mel (default)"]
    best_name = max((k for k in f if not k.startswith("peer")), key=lambda k: f[k]["files_per_s"])
    best = f[best_name]
    if peer:
        rows.append(
            [
                "inference",
                "predict_file, default (fused fp32), files/s vs peer MTT_vgg",
                f"{default['files_per_s']:.1f} vs {peer['files_per_s']:.1f}",
                f"{default['vs_peer']:.2f}×",
                "≥ 1×",
                _yes(default["vs_peer"] >= 1),
                date,
            ]
        )
        rows.append(
            [
                "inference",
                f"fastest option ({best_name}), files/s vs peer",
                f"{best['files_per_s']:.1f} vs {peer['files_per_s']:.1f}",
                f"{best['vs_peer']:.2f}×",
                "≥ 1×",
                _yes(best["vs_peer"] >= 1),
                date,
            ]
        )
    old = f["reference: plain fp32 NCHW, librosa mel"]
    rows.append(
        [
            "inference",
            "default vs old plain fp32 path (files/s)",
            f"{default['files_per_s']:.1f} vs {old['files_per_s']:.1f}",
            f"{default['vs_reference']:.2f}×",
            "–",
            "–",
            date,
        ]
    )
    rows.append(
        [
            "inference",
            "network only: fused fp32 / fused bf16 vs plain fp32 (segments/s)",
            f"{n['fused fp32 (default)']['segments_per_s']:.0f} / {n['fused bf16']['segments_per_s']:.0f} vs "
            f"{n['reference: plain fp32 NCHW']['segments_per_s']:.0f}",
            f"{n['fused fp32 (default)']['vs_reference']:.2f}× / {n['fused bf16']['vs_reference']:.2f}×",
            "–",
            "–",
            date,
        ]
    )
    tol = inf["tolerances"]
    checked = {k: v["max_abs_dprob"] for k, v in f.items() if v.get("max_abs_dprob") is not None}
    worst32 = max(d for k, d in checked.items() if "bf16" not in k)
    worst16 = max(d for k, d in checked.items() if "bf16" in k)
    rows.append(
        [
            "inference",
            "max abs Δp vs fp32 reference: fp32 options / bf16 options",
            f"{worst32:.1e} / {worst16:.1e}",
            "–",
            f"≤ {tol['fp32']:g} / ≤ {tol['bf16']:g}",
            _yes(worst32 <= tol["fp32"] and worst16 <= tol["bf16"]),
            date,
        ]
    )
    return rows


def features_rows(feat: dict[str, Any]) -> list[list[str]]:
    """The features benchmark's rows: the pool's parallel efficiency, the fast mel vs librosa's."""
    rows: list[list[str]] = []
    r, w = feat["results"], feat["workers"]
    date = feat["machine"]["date"][:16]
    lim, unl = r[f"pool x{w}: mtlmood (1 BLAS thread)"], r[f"pool x{w}: mtlmood, BLAS unlimited"]
    rows.append(
        [
            "features",
            f"pool of {w}: parallel efficiency, BLAS 1 thread vs unlimited",
            f"{100 * lim['parallel_efficiency']:.0f} % vs {100 * unl['parallel_efficiency']:.0f} %",
            f"{lim['files_per_s'] / unl['files_per_s']:.2f}×",
            "–",
            "–",
            date,
        ]
    )
    fast, lib = r["mtlmood, fast mel"], r["mtlmood (librosa mel, 1 BLAS thread)"]
    s = feat["stage_ms_per_file"]
    rows.append(
        [
            "features",
            "fast mel vs librosa mel (ms/file, stage) / whole file (files/s)",
            f"{s['log-mel (fast)']:.1f} vs {s['log-mel (librosa)']:.1f} ms; {fast['files_per_s']:.1f} vs "
            f"{lib['files_per_s']:.1f} files/s",
            f"{s['log-mel (librosa)'] / s['log-mel (fast)']:.2f}× / {fast['files_per_s'] / lib['files_per_s']:.2f}×",
            "–",
            "–",
            date,
        ]
    )
    return rows


def train_rows(tr: dict[str, Any]) -> list[list[str]]:
    """The training benchmark's rows: Ray overhead and start-up, sampler vs step rate, bf16 and
    channels-last per width, their accuracy, and the accelerator's steps when one ran."""
    rows: list[list[str]] = []
    date = tr["machine"]["date"][:16]
    o = tr.get("ray_overhead")
    if o:
        rows.append(
            [
                "training",
                "Ray Train trial vs plain fit, steady-state segments/s",
                f"{o['ray_steady_segments_per_s']:.0f} vs {o['plain_steady_segments_per_s']:.0f}",
                f"overhead {100 * o['ray_overhead_fraction']:.1f} %",
                "≤ 10 %",
                _yes(o["ray_overhead_fraction"] <= 0.10),
                date,
            ]
        )
        rows.append(
            [
                "training",
                "Ray trial start-up (wall − epochs) vs plain",
                f"{o['startup_s']['ray']:.1f} s vs {o['startup_s']['plain']:.1f} s",
                f"+{o['ray_extra_startup_s']:.1f} s",
                "–",
                "–",
                date,
            ]
        )
    steps = tr["steps"]["steps"]
    worst = min(v["sampler_over_step"] for v in steps.values())
    fastest = max(v["steps_per_s"] for v in steps.values())
    rows.append(
        [
            "training",
            "sampler batches/s ÷ fastest optimizer steps/s",
            f"{tr['steps']['sampler_batches_per_s']:,.0f} vs {fastest:.1f}",
            f"{worst:.0f}×",
            "≥ 20×",
            _yes(worst >= 20),
            date,
        ]
    )
    for width in (16, 128):
        v = steps[f"step width {width}: bf16 autocast + channels-last"]
        c = steps[f"step width {width}: fp32 channels-last"]
        rows.append(
            [
                "training",
                f"width {width}: bf16+channels-last / fp32 channels-last vs fp32 NCHW step",
                f"{v['segments_per_s']:.1f} seg/s",
                f"{v['vs_fp32_nchw']:.2f}× / {c['vs_fp32_nchw']:.2f}×",
                "–",
                "–",
                date,
            ]
        )
    acc = tr["accuracy"]
    a, b = acc["fp32"], acc["bf16 + channels-last"]
    rows.append(
        [
            "training",
            "bf16+CL vs fp32 fit, best val PR-AUC % (synthetic)",
            f"{b['best_val_pr_auc']:.2f} vs {a['best_val_pr_auc']:.2f}",
            f"{b['best_val_pr_auc'] - a['best_val_pr_auc']:+.2f} pts",
            "–",
            "–",
            date,
        ]
    )
    accel = tr.get("accelerator")
    if accel:
        name = accel.get("device_name", accel["device"])
        for kind, v in accel["steps"].items():
            if kind.startswith("host"):
                continue
            rows.append(
                [
                    "training",
                    f"{name}, paper width: {kind} vs host sampler + copy fp32",
                    f"{v['segments_per_s']:.0f} seg/s",
                    f"{v['vs_baseline']:.2f}×",
                    "–",
                    "–",
                    date,
                ]
            )
    return rows


def serve_rows(sv: dict[str, Any]) -> list[list[str]]:
    """The serve benchmark's rows: Serve vs direct at saturation, batching on vs off, the CPU per
    request, and where a request's time goes at concurrency 1."""
    rows: list[list[str]] = []
    date = sv["meta"]["date"][:16]
    sat = sv["meta"]["saturation"]
    by = {(r["mode"], r["concurrency"]): r for r in sv["results"]}
    ratio = sv["ratio_at_saturation"]
    # The target is for what `mtlmood serve` runs here (combined on a CPU node); split is context.
    for mode, label, target in (
        ("serve_combined", "Serve (combined, default on CPU)", 0.8),
        ("serve_split", "Serve (split: ingress -> model replica)", None),
    ):
        if (mode, sat) in by and ("direct", sat) in by:
            value = ratio.get(f"{mode}/direct", float("nan"))
            rows.append(
                [
                    "serving",
                    f"{label} vs direct at c={sat} (req/s)",
                    f"{by[(mode, sat)]['rps']:.1f} vs {by[('direct', sat)]['rps']:.1f}",
                    f"{value:.2f}×",
                    f"≥ {target:g}×" if target else "–",
                    _yes(value >= target) if target else "–",
                    date,
                ]
            )
    on, off = ("serve_combined", sat), ("serve_combined_unbatched", sat)
    if on in by and off in by:
        rows.append(
            [
                "serving",
                f"batching on vs off at c={sat} (req/s; p99 ms)",
                f"{by[on]['rps']:.1f} vs {by[off]['rps']:.1f}; {by[on]['p99_ms']:.0f} vs {by[off]['p99_ms']:.0f}",
                f"{by[on]['rps'] / by[off]['rps']:.2f}×",
                "–",
                "–",
                date,
            ]
        )
    cpu = sv["meta"].get("cpu_ms_per_request") or {}
    if "direct" in cpu and "serve_combined" in cpu:
        d, c = cpu["direct"], cpu["serve_combined"]
        rest = c["total"] - c.get("Serve replica(s)", 0.0)
        rows.append(
            [
                "serving",
                f"CPU per request at c={sat}: direct vs Serve combined (ms; Serve's = replica + "
                "proxy, controller, Ray daemons, clients)",
                f"{d['total']:.0f} vs {c['total']:.0f} ({c.get('Serve replica(s)', 0.0):.0f} + {rest:.0f})",
                f"{c['total'] / d['total']:.2f}×",
                "–",
                "–",
                date,
            ]
        )
    parts = sv["meta"].get("breakdown_ms")
    if parts and ("serve_combined", 1) in by:
        work = sum(parts.values())
        lat = by[("serve_combined", 1)]["mean_ms"]
        rows.append(
            [
                "serving",
                "c=1 request: decode / log-mel / forward / Serve overhead (ms)",
                " / ".join(f"{v:.0f}" for v in parts.values()) + f" / {lat - work:.0f}",
                f"overhead {100 * (lat - work) / lat:.0f} % of latency",
                "–",
                "–",
                date,
            ]
        )
    return rows


def study_rows(st: dict[str, Any]) -> list[list[str]]:
    """The study benchmark's rows: TPE+ASHA vs random+FIFO compute, per cell the tuned PR-AUC and
    what reaching it cost, and the trials ASHA stopped."""
    rows: list[list[str]] = []
    date = st["machine"]["date"][:16]
    arms = st["arms"]
    tpe = arms.get("TPE + ASHA (run_search as shipped)")
    rnd = arms.get("random + FIFO (BasicVariantGenerator)")
    if tpe and rnd:
        rows.append(
            [
                "study",
                f"TPE+ASHA vs random+FIFO, {st['trials_per_arm']} trials: compute (s)",
                f"{tpe['compute_s']:.0f} vs {rnd['compute_s']:.0f}",
                f"{tpe['compute_s'] / rnd['compute_s']:.2f}×",
                "–",
                "–",
                date,
            ]
        )
        for key, cell in tpe.get("cells", {}).items():
            other = rnd.get("cells", {}).get(key)
            if not other:
                continue
            # Per cell only: PR-AUC of different cells is on different scales.
            rows.append(
                [
                    "study",
                    f"{cell['label']}: tuned val PR-AUC %, trials / compute (s) to reach it",
                    f"{cell['tuned_val_pr_auc']:.2f} in {cell['trials_to_tuned']} / "
                    f"{cell['compute_to_tuned_s']:.0f} s vs {other['tuned_val_pr_auc']:.2f} in "
                    f"{other['trials_to_tuned']} / {other['compute_to_tuned_s']:.0f} s",
                    f"{cell['compute_to_tuned_s'] / other['compute_to_tuned_s']:.2f}×",
                    "–",
                    "–",
                    date,
                ]
            )
        rows.append(
            [
                "study",
                "trials stopped by ASHA (estimated compute saved)",
                f"{tpe['stopped_by_scheduler']} of {tpe['trials']}",
                f"≈{tpe.get('estimated_compute_saved_s', float('nan')):.0f} s",
                "–",
                "–",
                date,
            ]
        )
    return rows


# result file -> its rows, in the summary's order
SUMMARISERS: tuple[tuple[str, Callable[[dict[str, Any]], list[list[str]]]], ...] = (
    ("inference.json", inference_rows),
    ("features.json", features_rows),
    ("train.json", train_rows),
    ("serve_bench.json", serve_rows),
    ("study.json", study_rows),
)


def summary_rows() -> list[list[str]]:
    """One row per target: (area, what, measured, ratio, target, met?, result date), from the result files
    that exist (a benchmark not run has no rows)."""
    rows: list[list[str]] = []
    for name, summarise in SUMMARISERS:
        result = load_result(name)
        if result:
            rows += summarise(result)
    return rows


def write_summary() -> Path:
    """results/summary.{json,md}: the machine, and every row from the result files there are."""
    info = machine()
    rows = summary_rows()
    md = [
        "# Benchmark summary",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores"
        f"{' (' + ', '.join(info['bf16_hw']) + ')' if info['bf16_hw'] else ''}; torch {info['torch']}. "
        "Each row comes from the result file of its benchmark (date in the last column); ratios are "
        "within one run, baseline and candidates interleaved.",
        "",
        table(["area", "what", "measured", "ratio", "target", "met", "run"], rows),
    ]
    return write_results("summary", {"machine": info, "rows": rows}, "\n".join(md))
