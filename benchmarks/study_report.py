"""The study benchmark's results: per cell and per arm, what each search found and what it cost
(from the trial tables and the trials' own times), the compute ASHA saved, and the Markdown page."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.common import fmt, machine_line, table

RANDOM_ARM = "random + FIFO (BasicVariantGenerator)"  # the reference arm: ratios and compute saved are against it


def launch_number(trial_id: str) -> int:
    """Tune's trial counter (``abc12_00007`` -> 7): the launch order."""
    tail = str(trial_id).rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _num(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def summarise_cell(trials: Any, cell: Any, seconds: dict[str, float]) -> dict[str, Any]:
    """One cell of one arm: its tuned alpha, what it cost to reach it, the cell's totals."""
    from study.results import tuned_alpha_factor

    rows = trials[trials["cell"] == cell.key].copy()
    rows["number"] = [launch_number(t) for t in rows["trial_id"]]
    rows["time_s"] = [seconds.get(str(t), math.nan) for t in rows["trial_id"]]
    rows = rows.sort_values("number").reset_index(drop=True)
    ok = rows[rows["status"] == "TERMINATED"]
    factor = tuned_alpha_factor(trials, cell.key)
    at = (
        int(np.flatnonzero(np.isclose(ok["alpha_factor"].astype(float), factor, rtol=1e-9))[0])
        if factor is not None
        else None
    )
    tuned = ok.iloc[at] if at is not None else None
    upto = rows[rows["number"] <= tuned["number"]] if tuned is not None else rows.iloc[0:0]
    stopped = ok[ok["asha_stopped"].astype(bool)]
    return {
        "label": cell.label,
        "heuristic_alpha": float(cell.heuristic_alpha),
        "trials": int(len(ok)),
        "errored": int(len(rows) - len(ok)),
        "tuned_alpha_factor": factor,
        "tuned_alpha": factor * cell.heuristic_alpha if factor is not None else None,
        "tuned_val_pr_auc": _num(tuned["val_pr_auc"]) if tuned is not None else math.nan,
        "tuned_test_pr_auc": _num(tuned["test_pr_auc"]) if tuned is not None else math.nan,
        "tuned_stopped_by_scheduler": bool(tuned["asha_stopped"]) if tuned is not None else False,
        "trials_to_tuned": int((ok["number"] <= tuned["number"]).sum()) if tuned is not None else 0,
        "compute_to_tuned_s": float(np.nansum(upto["time_s"])),
        "compute_s": float(np.nansum(rows["time_s"])),
        "epochs_total": int(np.nansum(ok["epochs"].astype(float))),
        "mean_epochs": float(np.nanmean(ok["epochs"].astype(float))) if len(ok) else math.nan,
        "stopped_by_scheduler": int(len(stopped)),
        "rows": [
            {
                "trial_number": int(r["number"]),
                "alpha_factor": _num(r["alpha_factor"]),
                "alpha": _num(r["alpha"]),
                "epochs": _num(r["epochs"]),
                "stopped_by_scheduler": bool(r["asha_stopped"]),
                "early_stopped": bool(r["early_stopped"]),
                "status": str(r["status"]),
                "val_pr_auc": _num(r["val_pr_auc"]),
                "test_pr_auc": _num(r["test_pr_auc"]),
                "time_s": _num(r["time_s"]),
                "error": str(r["error"]) if isinstance(r["error"], str) else "",
            }
            for _, r in rows.iterrows()
        ],
    }


def epoch_cost(reference: dict[str, Any]) -> tuple[float, float]:
    """(start-up s, s per epoch) of a trial in one cell: least squares of time_s = a + b * epochs
    over the reference arm's finished trials of that cell."""
    pairs = [
        (r["epochs"], r["time_s"])
        for r in reference["rows"]
        if r["status"] == "TERMINATED" and math.isfinite(r["epochs"]) and math.isfinite(r["time_s"])
    ]
    epochs = np.array([p[0] for p in pairs], dtype=float)
    seconds = np.array([p[1] for p in pairs], dtype=float)
    if len(set(epochs.tolist())) < 2:
        return 0.0, float(seconds.sum() / max(epochs.sum(), 1))
    b, a = np.polyfit(epochs, seconds, 1)
    return float(a), float(b)


def compute_saved(cell: dict[str, Any], reference: dict[str, Any]) -> float:
    """Estimated seconds the scheduler saved in one cell: each stopped trial's missing epochs, up to
    the mean epochs of the reference arm's trials of that cell (each run to its own early stop),
    at the reference's seconds per epoch in that cell."""
    per_epoch = epoch_cost(reference)[1]
    return float(
        sum(
            max(0.0, reference["mean_epochs"] - row["epochs"]) * per_epoch
            for row in cell["rows"]
            if row["stopped_by_scheduler"] and math.isfinite(row["epochs"])
        )
    )


def summarise_arm(trials: Any, cells: list[Any], seconds: dict[str, float], wall_s: float) -> dict[str, Any]:
    """Per cell, and totals of seconds and trials only (never a score across cells)."""
    per_cell = {cell.key: summarise_cell(trials, cell, seconds) for cell in cells}
    return {
        "trials": sum(c["trials"] for c in per_cell.values()),
        "errored": sum(c["errored"] for c in per_cell.values()),
        "compute_s": sum(c["compute_s"] for c in per_cell.values()),
        "wall_s": wall_s,
        "epochs_total": sum(c["epochs_total"] for c in per_cell.values()),
        "stopped_by_scheduler": sum(c["stopped_by_scheduler"] for c in per_cell.values()),
        "cells": per_cell,
    }


def alpha_text(c: dict[str, Any]) -> str:
    """A cell's tuned alpha, as a factor of the heuristic and as a value."""
    if c["tuned_alpha_factor"] is None:
        return "–"
    return f"×{c['tuned_alpha_factor']:.3g} (α={c['tuned_alpha']:.3g})"


def _ratio(x: float, y: float) -> str:
    return f"{x / y:.2f}×" if y and math.isfinite(x) and math.isfinite(y) else "–"


def add_compute_saved(arms: dict[str, dict[str, Any]]) -> None:
    """Each arm's and cell's estimated compute saved by its scheduler, against the random arm's trials."""
    ref = arms[RANDOM_ARM]
    for a in arms.values():
        for key, c in a["cells"].items():
            c["estimated_compute_saved_s"] = compute_saved(c, ref["cells"][key])
        a["estimated_compute_saved_s"] = sum(c["estimated_compute_saved_s"] for c in a["cells"].values())


def markdown(
    info: dict[str, Any], base: Any, searched: list[Any], arms: dict[str, dict[str, Any]], trials: int
) -> list[str]:
    """The results page: per cell (arms compared within a cell only), then totals per arm."""
    ref = arms[RANDOM_ARM]
    cell_rows = []
    for cell in searched:
        r = ref["cells"][cell.key]
        for label, a in arms.items():
            c = a["cells"][cell.key]
            cell_rows.append(
                [
                    f"{cell.label} (heuristic α={cell.heuristic_alpha:.3g})",
                    label,
                    c["trials"],
                    alpha_text(c),
                    fmt(c["tuned_val_pr_auc"], 2),
                    fmt(c["tuned_test_pr_auc"], 2),
                    c["trials_to_tuned"],
                    fmt(c["compute_to_tuned_s"], 0),
                    fmt(c["compute_s"], 0),
                    _ratio(c["compute_s"], r["compute_s"]),
                    c["epochs_total"],
                    f"{c['stopped_by_scheduler']} (≈{c['estimated_compute_saved_s']:.0f} s saved)",
                ]
            )
    total_rows = [
        [
            label,
            a["trials"],
            a["errored"],
            fmt(a["compute_s"], 0),
            _ratio(a["compute_s"], ref["compute_s"]),
            fmt(a["wall_s"], 0),
            a["epochs_total"],
            f"{a['stopped_by_scheduler']} (≈{a['estimated_compute_saved_s']:.0f} s saved)",
        ]
        for label, a in arms.items()
    ]
    train = base.run.train
    return [
        "# Study efficiency benchmark",
        "",
        machine_line(info),
        "",
        f"Synthetic default (embedded study config: {base.run.model.n_filters} filters, max {train.max_epochs} "
        f"epochs, patience {train.patience}, α factor log-uniform in [{base.search.alpha_factor_low:g}, "
        f"{base.search.alpha_factor_high:g}] × the heuristic); {len(searched)} cells × {trials} trials per "
        f"arm, the heuristic first in every cell; ASHA grace {base.scheduler.grace_period} epochs, reduction "
        f"{base.scheduler.reduction_factor}; Ray Train trials, {base.resources.cpus_per_worker:g} CPU each. "
        "Compute = sum of trial times (Ray Train start-up included).",
        "",
        "## Per cell (arms compared within a cell only; cells are never compared)",
        "",
        table(
            [
                "cell",
                "arm",
                "trials",
                "tuned α (× heuristic)",
                "its val PR-AUC %",
                "its test PR-AUC %",
                "trials to tuned",
                "compute to tuned s",
                "cell compute s",
                "vs random",
                "epochs",
                "stopped by scheduler (est. compute saved)",
            ],
            cell_rows,
        ),
        "",
        "## Totals per arm (seconds and trials only)",
        "",
        table(
            ["arm", "trials", "errored", "compute s", "vs random", "wall s", "epochs", "stopped (est. saved)"],
            total_rows,
        ),
        "",
        "The tuned α is the study's own choice (`study.results.tuned_alpha_factor`): the best validation "
        "PR-AUC within the deepest epoch at least two of the cell's trials reached; its test PR-AUC is blank "
        "when ASHA stopped that trial. Compute saved is estimated per stopped trial: its missing epochs up "
        "to the random arm's mean epochs in the same cell (each trial run to its own early stop) × that "
        "cell's seconds per epoch (fit of trial time = start-up + epochs × per-epoch over the random arm's "
        "trials of the cell).",
    ]
