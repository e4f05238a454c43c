"""GPU utilisation and memory sampled once a second while a benchmark runs: NVML (pynvml, from
nvidia-ml-py) when importable, else `nvidia-smi`, else nothing (a CPU dry run)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class GpuSamples:
    """(seconds since start, utilisation %, memory used MiB) of GPU 0, one per interval."""

    source: str
    rows: list[tuple[float, float, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Mean utilisation and peak memory over the samples (None without a GPU)."""
        if not self.rows:
            return {"samples": 0, "gpu_util_mean": None, "gpu_util_peak": None, "memory_peak_mib": None}
        util = [u for _, u, _ in self.rows]
        return {
            "samples": len(self.rows),
            "gpu_util_mean": sum(util) / len(util),
            "gpu_util_peak": max(util),
            "memory_peak_mib": max(m for _, _, m in self.rows),
        }


def _nvml_reader() -> Optional[Callable[[], tuple[float, float]]]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # not installed, no driver, no GPU
        return None

    def read() -> tuple[float, float]:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        return float(util), pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

    return read


def _smi_reader() -> Optional[Callable[[], tuple[float, float]]]:
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def read() -> tuple[float, float]:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
        util, mem = out.strip().splitlines()[0].split(",")
        return float(util), float(mem)

    try:
        read()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return read


class GpuSampler:
    """``with GpuSampler() as samples: ...``: samples GPU 0 every ``interval_s`` on a thread."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        nvml = _nvml_reader()
        self.read = nvml or _smi_reader()
        self.samples = GpuSamples("pynvml" if nvml else ("nvidia-smi" if self.read else "none (no GPU)"))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> GpuSamples:
        if self.read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self.samples

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        assert self.read is not None
        start = time.monotonic()
        while not self._stop.is_set():
            try:
                util, mem = self.read()
                self.samples.rows.append((time.monotonic() - start, util, mem))
            except Exception:  # one failed read (a busy driver) loses one sample, not the run
                pass
            self._stop.wait(self.interval_s)


def gpu_facts() -> dict[str, Any]:
    """Name and memory (GiB) of GPU 0 from nvidia-smi: no CUDA context in this process, whose
    memory would count in every sample; a machine without one says so."""
    if shutil.which("nvidia-smi") is None:
        return {"card": "none (CPU dry run)", "memory_gib": None}
    query = ["nvidia-smi", "--id=0", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    try:
        name, memory = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout.split(",")
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"card": "unknown (nvidia-smi failed)", "memory_gib": None}
    return {"card": name.strip(), "memory_gib": float(memory) / 1024}
