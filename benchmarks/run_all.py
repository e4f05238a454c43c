"""Run the benchmarks (on demand, not in CI) and write a summary table.

    make bench                                        # all of them (~20-25 min on 2 cores)
    .venv/bin/python -m benchmarks.run_all --only inference,features
    .venv/bin/python -m benchmarks.run_all --summary-only   # rebuild the summary from results/

Each benchmark runs in its own process (clean thread pools, no Ray state left over)
and writes ``benchmarks/results/<name>.{json,md}``; this script then writes
``benchmarks/results/summary.{json,md}``: one row per target with its ratio, from
whatever result files exist. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # `python benchmarks/run_all.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, machine, machine_line  # noqa: E402
from benchmarks.summary import write_summary  # noqa: E402

# name -> (module, arguments of the default run, result file)
BENCHMARKS: dict[str, tuple[str, list[str], str]] = {
    "inference": ("benchmarks.inference_bench", ["--rounds", "7"], "inference.json"),
    "features": ("benchmarks.features_bench", ["--rounds", "5"], "features.json"),
    "train": ("benchmarks.train_bench", [], "train.json"),
    # After inference: its summary quotes the peer's files/s from inference.json.
    "serve": ("benchmarks.serve_bench", ["--duration", "10", "--warmup", "2"], "serve_bench.json"),
    "study": ("benchmarks.study_bench", ["--trials", "8"], "study.json"),
}


def parse_args(argv: Optional[list[str]]) -> tuple[argparse.Namespace, list[str], list[str]]:
    """(options, the benchmarks to run, extra arguments passed on when only one runs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild results/summary.md")
    args, extra = parser.parse_known_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    return args, names, extra


def run_benchmark(name: str, extra: list[str]) -> bool:
    """Run one benchmark in its own process (clean thread pools, no Ray state left over); True when it passed."""
    module, default_args, _ = BENCHMARKS[name]
    started = time.perf_counter()
    print(f"\n=== {name} ({module}) ===", flush=True)
    done = subprocess.run([sys.executable, "-m", module, *default_args, *extra], cwd=REPO)
    print(f"=== {name}: exit {done.returncode}, {time.perf_counter() - started:.0f} s ===", flush=True)
    return done.returncode == 0


def main(argv: Optional[list[str]] = None) -> int:
    """Run the chosen benchmarks (unless --summary-only), then write the summary; 1 when one failed."""
    args, names, extra = parse_args(argv)
    failed = []
    if not args.summary_only:
        print(f"benchmarks: {', '.join(names)} on {machine_line(machine())}", flush=True)
        for name in names:
            # Extra arguments are one benchmark's own options: passed on only when it runs alone.
            if not run_benchmark(name, extra if len(names) == 1 else []):
                failed.append(name)
    path = write_summary()
    print(f"\n{path.read_text()}\n-> {path}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
