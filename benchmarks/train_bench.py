"""Training: Ray Train overhead, sampler vs model step rate, bf16 / channels-last on CPU.

    .venv/bin/python -m benchmarks.train_bench [--epochs 4] [--rounds 3] [--out DIR]

All on the synthetic default (benchmarks/.cache/synthetic, made on first use) with the
embedded study's base run (study/configs/synthetic.yaml: its width, mel bands, window,
batches per epoch and torch threads), 6 moods, artist metadata, alpha = the heuristic.

1. **Ray overhead.** The same RunConfig trained by ``mtlmood.train.fit`` in this
   process ("plain") and as a Ray Train trial (a ``TorchTrainer`` running
   ``study.trial.train_worker_loop`` on a one-run job -- ``{"runs": [run], "log_file"}``,
   the run shaped as ``study.trial.job_runs`` shapes a study's -- 1 worker x 1 CPU,
   reporting metrics and a checkpoint every epoch and writing the run's model, test
   predictions and result.json at the end, as a study does), alternating, ``--rounds``
   times each. Steady-state throughput = median ``EpochResult.segments_per_second`` of
   epochs 2.. (for Ray, read back from the training state in the trial's last epoch
   checkpoint); start-up = wall time minus the epochs' own time. A bare hand-written
   PyTorch loop over the same batches is the floor.
2. **Sampler vs model.** Batches/s of ``WindowSampler`` alone vs optimizer steps/s of
   the model (forward + backward + Adam) at width 16 (1 thread) and at paper width 128
   (all cores), on the run's window (its mel bands x segment frames, batch 32).
3. **bf16 / channels-last.** Step time of fp32 NCHW, fp32 channels-last and bf16
   autocast + channels-last (TrainConfig.bf16 / channels_last) at both widths, and a
   quick accuracy check: the same seeded fit in fp32 and in bf16 + channels-last.
4. **Accelerator** (only when CUDA is available, or ``--accelerator cpu`` to check the
   code path): whole training steps at paper width — batch fetch included — with the
   host sampler + copy (the baseline) vs the device-resident sampler, then bf16 autocast,
   channels-last and ``torch.compile`` on top, as ratios to the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional

from benchmarks.common import RESULTS, machine, publish
from benchmarks.synthdata import ensure_synthetic
from benchmarks.train_fits import accuracy_check, ray_overhead
from benchmarks.train_report import markdown
from benchmarks.train_steps import accelerator_steps, steps


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run every section on the synthetic default, write train.{json,md}; returns what was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (no early stopping)")
    parser.add_argument("--rounds", type=int, default=3, help="plain/Ray alternations")
    parser.add_argument("--step-rounds", type=int, default=3)
    parser.add_argument("--accuracy-epochs", type=int, default=6)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument(
        "--accelerator",
        default="auto",
        help="device of the accelerator section: auto (cuda when available, else skipped), "
        "cuda[:N], cpu (checks the code path), none",
    )
    parser.add_argument("--accelerator-steps", type=int, default=50, help="training steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variant")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where train.json / train.md go")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    info = machine()
    study, prep_s = ensure_synthetic()
    print(f"train: synthetic data ready ({prep_s:.0f} s)", flush=True)
    overhead = None if args.skip_ray else ray_overhead(study, args.epochs, args.rounds)
    step = steps(study, args.step_rounds)
    accuracy = accuracy_check(study, args.accuracy_epochs)
    import torch

    accel_device = args.accelerator
    if accel_device == "auto":
        accel_device = "cuda" if torch.cuda.is_available() else "none"
    accel = (
        None
        if accel_device == "none"
        else accelerator_steps(
            study, accel_device, args.accelerator_steps, args.step_rounds, compile_model=not args.no_compile
        )
    )

    md = markdown(info, overhead, step, accuracy, accel, args.accuracy_epochs)
    payload = {
        "machine": info,
        "prepare_s": prep_s,
        "ray_overhead": overhead,
        "steps": step,
        "accuracy": accuracy,
        "accelerator": accel,
    }
    return publish("train", payload, md, out_dir=args.out)


if __name__ == "__main__":
    main()
    sys.exit(0)
