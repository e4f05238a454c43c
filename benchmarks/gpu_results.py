"""gpu_check.json: the GPU check's training throughputs in the form the cost forecast of
`mtlmood study plan` reads (study/forecast.py), one entry per measured size.

    python -m benchmarks.gpu_results WORK_DIR OUT_DIR      (benchmarks/gpu_check.sh runs it)

Reads WORK_DIR/train.json (the training benchmark's accelerator section: 128 filters on its
synthetic set's windows) and WORK_DIR/gpu_graphs.json (eager and CUDA-graphed steps at the
paper's 187 x 96 window and at 64 x 32), writes OUT_DIR/gpu_check.json. A file that is missing
(a step that failed or did not run) leaves its entries out; nothing measured, nothing written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def entries(work: Path) -> tuple[list[dict[str, Any]], str]:
    """(one entry per measured window size, the card's name)."""
    out: list[dict[str, Any]] = []
    card = ""
    train = _load(work / "train.json")
    accel = (train or {}).get("accelerator") or {}
    if accel.get("steps") and str(accel.get("device", "")).startswith("cuda"):
        card = accel.get("device_name", card)
        out.append(
            {
                "what": "training benchmark, accelerator section (batches gathered from its synthetic set)",
                "n_filters": 128,
                "n_mels": int(accel.get("n_mels", 32)),
                "segment_frames": int(accel.get("segment_frames", 64)),
                "batch_size": 32,
                "segments_per_s": {name: v["segments_per_s"] for name, v in accel["steps"].items()},
            }
        )
    graphs = _load(work / "gpu_graphs.json")
    if graphs and graphs.get("agreement") is not None:  # run on CUDA
        card = card or graphs["card"]
        for size, rates in graphs["segments_per_s"].items():
            frames, mels = (int(v) for v in size.split(" (")[0].split(" x "))
            out.append(
                {
                    "what": f"gpu_graphs_bench, {size} (batches already on the device)",
                    "n_filters": int(graphs["n_filters"]),
                    "n_mels": mels,
                    "segment_frames": frames,
                    "batch_size": int(graphs["batch_size"]),
                    "segments_per_s": rates,
                }
            )
    return out, card


def main(argv: list[str]) -> int:
    """Write OUT_DIR/gpu_check.json from WORK_DIR's benchmark files; 0 even when there is nothing."""
    work, out_dir = Path(argv[0]), Path(argv[1])
    measured, card = entries(work)
    if not measured:
        print("gpu_results: no CUDA training measurement to record", flush=True)
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    payload = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "card": card,
        "commit": commit or "unknown",
        "source": "benchmarks/gpu_check.sh (benchmarks/gpu_results.py)",
        "train": measured,
    }
    (out_dir / "gpu_check.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"gpu_results: {len(measured)} measurement(s) -> {out_dir / 'gpu_check.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
