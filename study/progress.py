"""A compact live progress table of a study, printed as trials report and finish."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray.tune import Callback


def _job_of(config: dict[str, Any]) -> dict[str, Any]:
    """What a trial trains, as one job: a search trial's config, or a curve trial's jobs (one
    cell; several arms are named together, e.g. "x1/3+heuristic")."""
    jobs = config.get("jobs") or [config]
    job = {**jobs[0], **{k: v for k, v in config.items() if k != "jobs"}}
    if len(jobs) > 1:
        job["arm"] = "+".join(str(j.get("arm", "?")) for j in jobs)
        job.pop("alpha", None)  # several: the last run's alpha comes with its result
    return job


class ProgressTable(Callback):
    """Prints one line per finished trial, and a status summary at most every ``every_s``
    seconds when it changed (or every ``heartbeat_s`` seconds when nothing did)."""

    def __init__(self, phase: str, total: int, every_s: float = 15.0, heartbeat_s: float = 60.0) -> None:
        self.phase = phase
        self.total = total
        self.every_s = every_s
        self.heartbeat_s = heartbeat_s
        self.started = time.monotonic()
        self.last_print = 0.0
        self.last_summary = ""
        self.latest: dict[str, dict[str, Any]] = {}
        self.finished = 0
        self.best: dict[str, float] = {}  # per cell: PR-AUC of different cells is not comparable
        self.header_printed = False

    def _print(self, text: str) -> None:
        # sys.stdout is looked up at print time: Tune pickles callbacks with the Tuner,
        # and a captured stream (pytest, Jupyter) is not picklable.
        print(text, file=sys.stdout, flush=True)

    def _row(self, trial: Any, result: dict[str, Any], status: str) -> str:
        job = _job_of(trial.config or {})
        alpha = result.get("alpha", job.get("alpha", float("nan")))
        alpha_text = f"{float(alpha):.3g}" if isinstance(alpha, (int, float)) else str(alpha)
        seeds = job.get("seeds") or [result.get("seed", "?")]
        test = result.get("test_pr_auc")
        # The last run's scores (a curve trial may train several seeds); cells are never ranked.
        return (
            f"  {trial.trial_id:<16} {self.phase:<7} cell={job.get('cell', '?'):<18} "
            f"arm={job.get('arm', 'search'):<10} alpha={alpha_text:<8} seeds={','.join(map(str, seeds)):<8} "
            f"epoch={result.get('epoch', result.get('epochs', 0)):<3} "
            f"val PR-AUC%={result.get('val_pr_auc', float('nan')):6.2f} "
            f"test PR-AUC%={test if test is not None else float('nan'):6.2f}  {status}"
        )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.latest[trial.trial_id] = result
        value = result.get("val_pr_auc")
        cell = str(_job_of(trial.config or {}).get("cell", "?"))
        if value is not None and not (value <= self.best.get(cell, float("nan"))):  # NaN: the first value
            self.best[cell] = float(value)
        now = time.monotonic()
        if now - self.last_print < self.every_s:
            return
        states: dict[str, int] = {}
        for t in trials:
            states[t.status] = states.get(t.status, 0) + 1
        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items()))
        bests = ", ".join(f"{cell} {value:.2f}" for cell, value in sorted(self.best.items()))
        summary = (
            f"[{self.phase}] {self.finished}/{self.total} trials finished ({counts}); "
            f"best val PR-AUC % per cell: {bests}"
        )
        # A repeat of the last line says nothing new: print it only as a heartbeat.
        if summary == self.last_summary and now - self.last_print < self.heartbeat_s:
            return
        self.last_print, self.last_summary = now, summary
        minutes, seconds = divmod(int(now - self.started), 60)
        self._print(f"{summary}; {minutes} min {seconds:02d} s elapsed")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        result = self.latest.get(trial.trial_id, trial.last_result or {})
        status = "done" if result.get("final") else "stopped early"
        self._print(self._row(trial, result, status))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        self._print(self._row(trial, self.latest.get(trial.trial_id, {}), "ERROR (see its log)"))
