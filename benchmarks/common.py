"""Shared helpers of the benchmarks: machine facts, inputs, interleaved timing, result files.

Timing rule (the machine is small and shared, so absolute numbers drift by 2x
within minutes): every benchmark measures its baseline and its candidates in the
same process, interleaved round by round in a rotating order, and reports medians
and ratios to the baseline. A ratio from one run is meaningful; an absolute number
is only a snapshot of the load at the time (recorded as the load average).
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CACHE = REPO / "benchmarks" / ".cache"  # git-ignored: synthetic data and feature banks for the benchmarks
PEER_VENV = REPO / "benchmarks" / ".peer-venv"
AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav")

if str(REPO) not in sys.path:  # `python benchmarks/x.py` as well as `python -m benchmarks.x`
    sys.path.insert(0, str(REPO))


def shared_data() -> Path:
    """The shared data folder: $MTLMOOD_SHARED_DATA, default ../shared/data next to the repository."""
    return Path(os.environ.get("MTLMOOD_SHARED_DATA", REPO.parent / "shared" / "data"))


def audio_files(limit: int = 0) -> list[Path]:
    """The real CC clips ($MTLMOOD_SHARED_DATA/audio), sorted; [] when absent."""
    directory = shared_data() / "audio"
    if not directory.is_dir():
        return []
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    return files[:limit] if limit else files


def require_audio_files(limit: int = 0) -> list[Path]:
    """:func:`audio_files`, or exit with what to set when there are none."""
    files = audio_files(limit)
    if not files:
        raise SystemExit("no clips found: set MTLMOOD_SHARED_DATA to the shared data folder")
    return files


def free_port() -> int:
    """A free TCP port on loopback (for a Serve endpoint started by a benchmark)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_model() -> str:
    """The CPU's model name (lscpu), else what platform knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if match:
            return match.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo); empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        return set(match.group(1).split()) if match else set()
    except OSError:
        return set()


def machine() -> dict[str, Any]:
    """What a result depends on: CPU, cores, library versions, load, date."""
    import torch

    flags = cpu_flags()
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "bf16_hw": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    for name in ("librosa", "scipy", "ray", "optuna"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # not installed or broken: just not recorded
            pass
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One line of :func:`machine`'s facts for a results page."""
    return (
        f"{info['date']}; {info['cpu']}, {info['cores']} cores"
        f"{' (' + ', '.join(info['bf16_hw']) + ')' if info['bf16_hw'] else ''}; torch {info['torch']}; "
        f"load average at start {info['loadavg'][0]:.1f}"
    )


@dataclass
class Timings:
    """Seconds per round for each variant (same rounds, interleaved)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return float(np.median(self.seconds[name]))

    def spread(self, name: str) -> tuple[float, float]:
        values = np.asarray(self.seconds[name])
        return float(np.percentile(values, 25)), float(np.percentile(values, 75))


def interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1, progress: Optional[str] = None
) -> Timings:
    """Time every variant once per round, in a rotating order, after ``warmup`` untimed rounds."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    timings = Timings({name: [] for name in names})
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            variants[name]()
            timings.seconds[name].append(time.perf_counter() - t0)
        if progress:
            print(f"  [{progress}] round {r + 1}/{rounds}", flush=True)
    return timings


def write_results(name: str, payload: dict[str, Any], markdown: str, out_dir: Path = RESULTS) -> Path:
    """benchmarks/results/<name>.json and <name>.md, each written atomically."""
    from mtlmood.fileio import atomic_write_text

    atomic_write_text(out_dir / f"{name}.json", json.dumps(payload, indent=2, default=_jsonable) + "\n")
    atomic_write_text(out_dir / f"{name}.md", markdown.rstrip() + "\n")
    return out_dir / f"{name}.md"


def load_result(name: str, results: Path = RESULTS) -> Optional[dict[str, Any]]:
    """An earlier benchmark's result file (``results/<name>``, JSON), or None when absent or unreadable."""
    try:
        return json.loads((results / name).read_text())
    except (OSError, ValueError):
        return None


def publish(name: str, payload: dict[str, Any], markdown: list[str], out_dir: Path = RESULTS) -> dict[str, Any]:
    """Write a benchmark's results (JSON + Markdown), show the table, say where it went; returns ``payload``."""
    text = "\n".join(markdown)
    path = write_results(name, payload, text, out_dir)
    print(text, flush=True)
    print(f"-> {path}", flush=True)
    return payload


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float, digits: int = 1) -> str:
    """A number for a table; an en dash for None or not finite."""
    return "–" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def untrained_predictor_parts(
    n_filters: int = 128, n_moods: int = 9, n_meta: int = 50, seed: int = 0
) -> tuple[Any, Any]:
    """(model, card) of an untrained paper-shape model: speed does not depend on the weights.

    Built by the library's one builder (``mtlmood.synth.checkpoints.untrained_checkpoint``);
    then BatchNorm gets non-trivial running statistics and gammas of both signs, so the
    fused path's folding is exercised as it would be on a trained model.
    """
    import dataclasses
    import tempfile

    import torch
    from torch import nn

    from mtlmood.checkpoint import load_checkpoint
    from mtlmood.synth.checkpoints import untrained_checkpoint

    moods = [f"mood_{i}" for i in range(n_moods)]
    with tempfile.TemporaryDirectory(prefix="untrained-") as tmp:
        directory = untrained_checkpoint(Path(tmp), n_filters=n_filters, moods=moods, n_meta=n_meta, seed=seed)
        # The builder seeds the generator and draws the initial weights; the BatchNorm draws below
        # continue from there (loading a model draws again), so the weights are the same as ever.
        after_init = torch.get_rng_state()
        model, card = load_checkpoint(directory)
    torch.set_rng_state(after_init)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
            bn.running_mean.uniform_(0.0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    # The saved checkpoint's id and date describe the weights before the BatchNorm draws: not these.
    return model, dataclasses.replace(card, checkpoint_id="", created_at="")
