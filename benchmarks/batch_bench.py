"""Batch inference: the Ray Data pipeline (catalog/) against ``Predictor.predict_files``, same files, same run.

    .venv/bin/python -m benchmarks.batch_bench [--copies 4] [--rounds 3] [--precision bf16]

The real clips (first 29 s), each linked ``--copies`` times so that a run has enough
files to amortise a pipeline's start; a paper-width model (128 filters, 5 blocks;
untrained weights, speed does not depend on them) saved as a real checkpoint. Each
round runs, in a rotating order:

* ``predict_files``: the library's batched path in this process (decode-ahead threads,
  segments of several files per forward, torch on every core), the model loaded once
  before timing: the baseline;
* ``mtlmood predict --output`` (local): the same plus part files and the final merge
  (``mtlmood.batch_predict.score_to_output`` + ``BatchOutput.finalize``);
* Ray Data: ``catalog.pipeline.predict_with_ray`` on a local Ray started once before
  timing (``ray.init(num_cpus=cores)``): decode tasks that open the files, a scoring actor
  pool that loads the model in each round (a job's fixed cost), Parquet parts and the merge.

benchmarks/batch_scale_bench.py measures the same paths on 504 files, and the resume and
merge of a million rows.

Reported: files/s (median over rounds) and the ratio to ``predict_files`` from the same
run; max |Δp| of the Ray rows against ``predict_files``; Ray's start-up, once. The
peer's figure (musicnn MTT_vgg, one file at a time) is quoted from
``results/inference.json``, measured there, not here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmarks.common import (
    RESULTS,
    fmt,
    interleaved,
    load_result,
    machine,
    machine_line,
    publish,
    require_audio_files,
    table,
)

PEER_ROW = "peer: musicnn MTT_vgg (TF, one session)"
RAY = "Ray Data pipeline (decode tasks, actor pool, Parquet)"
RAY_HALF = "Ray Data pipeline, half the files"


def peer_figure() -> Optional[dict[str, Any]]:
    """The peer's files/s and when it was measured, from the inference benchmark's results."""
    data = load_result("inference.json")
    if data is None:
        return None
    try:
        return {
            "files_per_s": data["file_level"][PEER_ROW]["files_per_s"],
            "date": data["machine"]["date"],
            "cpu": f"{data['machine']['cpu']}, {data['machine']['cores']} cores",
        }
    except (KeyError, TypeError):
        return None


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="links per clip (default 4: 32 files)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-filters", type=int, default=128)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: a GPU when there is one"
    )
    parser.add_argument("--name", default="batch", help="result file name (default: batch)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from catalog.pipeline import predict_with_ray
    from mtlmood.batch_predict import BatchOutput, score_to_output
    from mtlmood.checkpoint import read_card
    from mtlmood.inference import Predictor
    from mtlmood.synth.checkpoints import untrained_checkpoint

    info = machine()
    clips = require_audio_files()
    work = Path(tempfile.mkdtemp(prefix="mtlmood-batch-bench-"))
    try:
        folder = work / "audio"
        folder.mkdir()
        files = []
        for copy in range(args.copies):
            for clip in clips:
                link = folder / f"{copy}-{clip.name}"
                link.symlink_to(clip)
                files.append(str(link))
        # Untrained (speed does not depend on the weights), BatchNorm statistics away from (0, 1) so the
        # fused path's folding is exercised; 9 moods, 50 artists, alpha 9/50 as ever.
        checkpoint = untrained_checkpoint(
            work / "checkpoint", n_filters=args.n_filters, n_meta=50, realistic_batchnorm=True
        )
        card = read_card(checkpoint)
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=args.precision)
        print(f"batch: {len(files)} files ({len(clips)} clips x {args.copies}); starting Ray", flush=True)
        t0 = time.perf_counter()
        gpus = 1 if device == "cuda" else 0
        ray.init(num_cpus=info["cores"], num_gpus=gpus, include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - t0
        runs = iter(range(10**6))

        def fresh_output() -> BatchOutput:
            return BatchOutput(work / f"out-{next(runs)}.parquet", card.mood_names, card.checkpoint_id)

        last: dict[str, Any] = {}

        def run_predict_files() -> None:
            last["predict_files"] = list(predictor.predict_files(files, workers=2))

        def run_local_command() -> None:
            output = fresh_output()
            score_to_output(predictor, files, output, workers=2)
            output.finalize(files)

        def run_ray() -> None:
            output = fresh_output()
            last["ray"] = predict_with_ray(
                checkpoint, files, output, device=device, precision=args.precision, progress=False
            )

        half = files[: len(files) // 2]

        def run_ray_half() -> None:  # with the full run: the job's fixed cost and the marginal rate
            predict_with_ray(checkpoint, half, fresh_output(), device=device, precision=args.precision, progress=False)

        variants: dict[str, Callable[[], Any]] = {
            "predict_files (library, this process)": run_predict_files,
            "mtlmood predict --output (local: + parts, merge)": run_local_command,
            RAY: run_ray,
            RAY_HALF: run_ray_half,
        }
        timings = interleaved(variants, args.rounds, warmup=1, progress="batch")
        load_after = [round(x, 2) for x in os.getloadavg()]

        import pyarrow.parquet as pq

        ray_rows = pq.read_table(last["ray"].summary.output).to_pylist()
        expected = [np.array(list(p.probabilities.values())) for p in last["predict_files"]]
        got = [np.array(list(r["moods"].values())) for r in ray_rows]
        max_dp = float(max(np.abs(a - b).max() for a, b in zip(got, expected)))
        assert [r["path"] for r in ray_rows] == files and all(r["error"] is None for r in ray_rows)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = timings.median("predict_files (library, this process)")
    peer = peer_figure()
    rows, results = [], {}
    for name in variants:
        s = timings.median(name)
        n = len(half) if name == RAY_HALF else len(files)
        vs_base = (n / s) / (len(files) / base)  # files/s over predict_files' files/s
        results[name] = {"median_s": s, "iqr_s": timings.spread(name), "files_per_s": n / s, "vs_base": vs_base}
        rows.append([f"{name} ({n} files)", fmt(n / s), f"{vs_base:.2f}×"])
    # Two job sizes give the job's fixed cost (start the actors, load the model, merge) and the rate after it.
    full_s, half_s = timings.median(RAY), timings.median(RAY_HALF)
    marginal = (len(files) - len(half)) / (full_s - half_s) if full_s > half_s else float("nan")
    fixed_s = full_s - len(files) / marginal if np.isfinite(marginal) else float("nan")
    peer_line = (
        f"Peer, for context (not measured here): musicnn MTT_vgg did {peer['files_per_s']:.1f} files/s one file at a "
        f"time in the inference benchmark of {peer['date']} on {peer['cpu']} (benchmarks/results/inference.md): "
        f"same clips, another run, machine and load, so compare it with that run's own mtlmood rows."
        if peer
        else "Peer: no figure in benchmarks/results/inference.json."
    )
    payload = {
        "machine": info,
        "n_files": len(files),
        "clips": [c.name for c in clips],
        "copies": args.copies,
        "rounds": args.rounds,
        "precision": args.precision,
        "device": device,
        "n_filters": args.n_filters,
        "ray_start_s": ray_start_s,
        "loadavg_after": load_after,
        "variants": results,
        "ray_vs_predict_files": results[RAY]["vs_base"],
        "ray_fixed_cost_s": fixed_s,
        "ray_marginal_files_per_s": marginal,
        "ray_marginal_vs_predict_files": marginal / (len(files) / base),
        "max_abs_dprob_ray_vs_predict_files": max_dp,
        "peer": peer,
    }
    md = [
        "# Batch inference benchmark",
        "",
        machine_line(info),
        "",
        f"{len(files)} files ({len(clips)} real clips × {args.copies} links, first 29 s); untrained paper-width "
        f"model ({args.n_filters} filters), {args.precision} on {device}; median of {args.rounds} interleaved rounds "
        f"after a warm-up. Ray Data on a local Ray with {info['cores']} CPUs{' and the GPU' if gpus else ''} "
        f"(started once, {ray_start_s:.1f} s, not "
        "counted); each Ray round includes starting its actor pool and loading the model. Load average after the "
        f"rounds {load_after[0]:.1f} (the machine is shared: a ratio from a loaded run is not trustworthy).",
        "",
        table(["variant", "files/s", "vs predict_files"], rows),
        "",
        f"Ray Data per job: ~{fixed_s:.1f} s fixed (actor pool start, model load, merge; from the two job sizes), "
        f"then {fmt(marginal)} files/s ({marginal / (len(files) / base):.2f}× predict_files).",
        "",
        f"Ray Data rows vs predict_files: max |Δp| {max_dp:.1e}.",
        "",
        peer_line,
    ]
    return publish(args.name, payload, md, args.out)


if __name__ == "__main__":
    main()
    sys.exit(0)
