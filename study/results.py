"""The trial table: one row per run (a trial of the search, or one seed of a curve trial).

Search rows come from Tune's results (a trial ASHA stopped has validation scores but no
test scores: it never finished). Curve rows come from each run's ``result.json``, found
at a path that depends only on (cell, arm, seed): a trial that trained several seeds
gives several rows, and a row is never a copy of another arm's. Paths in the table are
relative to the study's run directory, so a study copied elsewhere (or synced from an
object store to a disk) still reads.
"""

from __future__ import annotations

import fnmatch
import json
import math
from fractions import Fraction
from typing import Any, Iterable

import pandas as pd

from mtlmood import storage
from study.cells import Cell
from study.trial import FATAL, LEARNED, RESULT_FILE

COLUMNS = [
    "phase",
    "trial_id",
    "cell",
    "dataset",
    "n_moods",
    "metadata",
    "n_mood_labels",
    "n_meta",
    "arm",
    "alpha",
    "alpha_factor",
    "alpha_mode",
    "heuristic_alpha",
    "seed",
    "curve_round",  # 0: the curve's grid; k: the k-th extension round (curve.max_extensions); NaN: search
    "status",
    "asha_stopped",
    "early_stopped",
    "epochs",
    "best_epoch",
    "val_roc_auc",
    "val_pr_auc",
    "test_roc_auc",
    "test_pr_auc",
    "test_prevalence",
    "train_seconds",
    "checkpoint_path",
    "predictions_path",
    "error",
    "val_curve",
]


def unfinished_row(cell: Cell, **fields: Any) -> dict[str, Any]:
    """A row for a run with no result.json (stopped by ASHA, or failed): the cell's columns,
    the given fields, NaN for every score."""
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update(
        {
            "cell": cell.key,
            "dataset": cell.dataset,
            "n_moods": cell.n_moods,
            "metadata": cell.metadata,
            "n_mood_labels": cell.n_mood_labels,
            "n_meta": cell.n_meta,
            "heuristic_alpha": cell.heuristic_alpha,
            "asha_stopped": False,
            "early_stopped": False,
            "checkpoint_path": "",
            "predictions_path": "",
            **fields,
        }
    )
    return row


def row_from_result(record: dict[str, Any], out_dir: str, run_dir: str, cell: Cell) -> dict[str, Any]:
    """A table row from one finished run's result.json (its paths relative to ``run_dir``)."""
    row = {c: record.get(c, math.nan) for c in COLUMNS}
    row.update(
        {
            "dataset": cell.dataset,
            "heuristic_alpha": cell.heuristic_alpha,
            "status": "TERMINATED",
            "asha_stopped": False,
            "early_stopped": bool(record.get("stopped_early", False)),
            "error": "",
            "n_mood_labels": record.get("n_mood_labels", cell.n_mood_labels),
            "checkpoint_path": storage.relative_to(storage.join(out_dir, record["checkpoint"]), run_dir),
            "predictions_path": storage.relative_to(storage.join(out_dir, record["predictions"]), run_dir)
            if record.get("predictions")
            else "",
        }
    )
    return row


def _search_result(run_dir: str, cell: Cell, trial_id: str) -> str | None:
    """The result.json of a search trial's run (``runs/search/<cell>/<trial>/seed-*/``), if any."""
    trial_dir = storage.join(run_dir, "runs", "search", cell.slug, trial_id)
    found = [
        f for f in storage.list_files(trial_dir) if fnmatch.fnmatch(f, f"seed-*/{RESULT_FILE}") and f.count("/") == 1
    ]
    return storage.join(trial_dir, found[0]) if found else None


def search_rows(grid: Any, cells: dict[str, Cell], run_dir: str) -> list[dict[str, Any]]:
    """One row per search trial; stopped trials keep the best validation score they reached."""
    rows = []
    for result in grid:
        config = result.config or {}
        metrics = dict(result.metrics or {})
        key = str(config.get("cell", ""))
        cell = cells.get(key)
        if cell is None:
            continue
        trial_id = str(metrics.get("trial_id") or storage.name(result.path or ""))
        finished = bool(metrics.get("final")) and FATAL not in metrics
        curve = validation_curve(result.metrics_dataframe)
        best_val = max(curve) if curve else math.nan
        out = _search_result(run_dir, cell, trial_id) if finished else None
        row: dict[str, Any]
        if out is not None:
            row = row_from_result(json.loads(storage.read_text(out)), storage.parent(out), run_dir, cell)
        else:
            factor = float(config.get("alpha_factor", math.nan))
            row = unfinished_row(
                cell,
                phase="search",
                trial_id=trial_id,
                arm="search",
                alpha=factor * cell.heuristic_alpha,
                alpha_factor=factor,
                alpha_mode="fixed",
                seed=metrics.get("seed", math.nan),
                epochs=metrics.get("epoch", math.nan),
                val_pr_auc=best_val,
                status="ERROR" if result.error or FATAL in metrics else "TERMINATED",
                # A trial that never sent its final (tested) report was stopped by ASHA.
                asha_stopped=result.error is None and FATAL not in metrics,
                error=str(metrics.get(FATAL) or (str(result.error).splitlines()[0][:300] if result.error else "")),
            )
        row["trial_id"] = trial_id
        row["val_curve"] = json.dumps([round(v, 4) for v in curve])
        rows.append(row)
    return rows


def curve_rows(
    jobs: Iterable[dict[str, Any]], runs_of: Any, cells: dict[str, Cell], run_dir: str, errors: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per (job, seed): from its result.json, or an ERROR row naming why it is missing.
    ``curve_round`` says which round of the curve the job belongs to (its ``round``, 0 = the grid)."""
    rows = []
    for job in jobs:
        cell = cells[job["cell"]]
        for run in runs_of(job):
            out_dir = str(run["out_dir"])
            result_file = storage.join(out_dir, RESULT_FILE)
            if storage.exists(result_file):
                row = row_from_result(json.loads(storage.read_text(result_file)), out_dir, run_dir, cell)
                rows.append({**row, "curve_round": int(job.get("round", 0))})
                continue
            learned = job["arm"] == LEARNED
            row = unfinished_row(
                cell,
                phase="curve",
                trial_id="",
                arm=job["arm"],
                alpha=math.nan if learned else job["alpha"],
                alpha_factor=job.get("alpha_factor", math.nan),
                alpha_mode="learned" if learned else "fixed",
                seed=run["seed"],
                status="ERROR",
                error=errors.get(job_name(job), "the run did not finish"),
                curve_round=int(job.get("round", 0)),
            )
            rows.append(row)
    return rows


def arm_name(factor: float) -> str:
    """The curve arm of a multiple of the heuristic: "heuristic" for x1, else "x3", "x1/9"..."""
    if math.isclose(factor, 1.0):
        return "heuristic"
    fraction = Fraction(factor).limit_denominator(100)
    if math.isclose(float(fraction), factor, rel_tol=1e-6):
        return (
            f"x{fraction.numerator}" if fraction.denominator == 1 else f"x{fraction.numerator}/{fraction.denominator}"
        )
    return f"x{factor:.3g}"


def job_name(job: dict[str, Any]) -> str:
    """A readable id of a curve job (cell, arm, seeds)."""
    return f"{job['cell']}:{job['arm']}:{','.join(str(s) for s in job['seeds'])}"


def trial_table(rows: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """The table (rows, or a frame of them), every column of COLUMNS in order (a missing one
    NaN), in a stable order: phase, cell, alpha, seed."""
    table = rows.reindex(columns=COLUMNS) if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=COLUMNS)
    for column in ("n_moods", "n_mood_labels", "n_meta", "curve_round"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table.sort_values(["phase", "n_moods", "metadata", "arm", "alpha", "seed"], kind="stable").reset_index(
        drop=True
    )


def validation_curve(history: pd.DataFrame | None) -> list[float]:
    """A search trial's validation PR-AUC per epoch, in order (its final, tested report excluded)."""
    if history is None or "val_pr_auc" not in history or "epoch" not in history:
        return []
    rows = history[history["final"].astype(str) != "True"] if "final" in history else history
    values = pd.to_numeric(rows["val_pr_auc"], errors="coerce")
    return [float(v) for v in values if math.isfinite(float(v))]


def tuned_alpha_factor(search: pd.DataFrame, key: str) -> float | None:
    """The tuned alpha of one cell, as a multiple of its heuristic, chosen among ALL of the
    cell's search trials at a fair budget, on *validation* only (never test scores).

    A trial's budget is what it was allowed to train: a trial that *finished* (TERMINATED
    with its final report: stopped by its own early stopping, or at max_epochs) had all the
    epochs it wanted, so its curve is held flat at its best beyond its end (early stopping
    said more epochs would not help); a trial ASHA *stopped* (or the time budget) had only
    the epochs it reached. Every pair of trials is compared at the budget both had, the
    smaller of the two (two finished trials: their best scores; a stopped trial against any
    other: the best each reached within the stopped trial's epochs). The tuned alpha is the
    trial that wins the most of these comparisons (Copeland); ties go to the higher best
    score within the budget every tied trial had, then to the earlier row.

    So a trial that converged early counts at its best, not dropped for stopping before a
    longer one's depth; and a trial ASHA stopped at epoch 3 is never ranked on a longer
    trial's later epochs (which would favour the first trial of every rung: ASHA never
    stops it, so with a small budget the seeded heuristic would always win). A cell with
    one usable trial takes it; failed trials (ERROR) and trials with no validation score
    take no part.
    """
    rows = search[(search["cell"] == key) & (search["status"] == "TERMINATED")]
    if rows.empty:
        return None
    stopped = rows["asha_stopped"] if "asha_stopped" in rows else pd.Series(False, index=rows.index)
    trials: dict[int, tuple[list[float], float]] = {}  # row -> (validation curve, budget in epochs)
    bests = rows["val_pr_auc"] if "val_pr_auc" in rows else pd.Series(math.nan, index=rows.index)
    for index, text, was_stopped, best in zip(rows.index, rows["val_curve"].fillna("[]"), stopped.fillna(False), bests):
        curve = [float(v) for v in json.loads(text or "[]") if math.isfinite(float(v))]
        if not curve and not bool(was_stopped) and math.isfinite(float(best)):
            curve = [float(best)]  # finished, its per-epoch history lost: its best still counts
        if curve:
            trials[int(index)] = (curve, float(len(curve)) if bool(was_stopped) else math.inf)
    if not trials:
        return None
    factors = dict(zip(rows.index, rows["alpha_factor"].astype(float)))
    return factors[fair_budget_winner(trials)]


def _score_at(curve: list[float], depth: float) -> float:
    """The best validation score within ``depth`` epochs (all of them when depth is inf)."""
    return max(curve) if math.isinf(depth) else max(curve[: int(depth)])


def fair_budget_winner(trials: dict[int, tuple[list[float], float]]) -> int:
    """The id of the trial that wins the most pairwise comparisons at the budget both trials
    had (see :func:`tuned_alpha_factor`); ``trials``: id -> (validation curve, budget)."""
    wins = dict.fromkeys(trials, 0)
    ids = list(trials)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            depth = min(trials[a][1], trials[b][1])
            score_a, score_b = _score_at(trials[a][0], depth), _score_at(trials[b][0], depth)
            if score_a != score_b:
                wins[a if score_a > score_b else b] += 1
    most = max(wins.values())
    tied = [i for i in ids if wins[i] == most]
    depth = min(trials[i][1] for i in tied)
    return max(tied, key=lambda i: (_score_at(trials[i][0], depth), -ids.index(i)))
