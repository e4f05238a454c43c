"""Result tables, statistics and the written report of an alpha study.

Input: the study's trial table (one row per trial, see ``study.results.COLUMNS``).
Output, all pure functions of that table (plus the test predictions it points to):

* :func:`build_table1` -- the paper's Table 1 layout per (dataset, n_moods,
  metadata) cell: baseline / heuristic alpha / best alpha found, each as mean and
  95% t-interval over confirm-phase seeds, with the gain over the baseline.
* :func:`verdicts` -- per cell, does the heuristic alpha hold up? Paired
  bootstraps over test songs (heuristic vs baseline, best vs baseline,
  heuristic vs best), a Welch test across seeds, and a one-line verdict.
* :func:`search_summary` -- per cell, what the search phase did.
* :func:`write_report` -- all of the above as CSV/Parquet, Markdown, a
  self-contained HTML page and PNG plots, written atomically.

Conventions: ROC-AUC and PR-AUC are in percent (0-100) everywhere, gains and
differences in percentage points; column names say so (``_pct``, ``_pts``).
Only the confirm phase feeds Table 1 and the verdicts: search trials are
early-stopped, single-seed and (for the best alpha) selected on validation
scores, so their numbers are plotted but never used as evidence.
Nothing here prints or imports Ray.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from mtlmood.fileio import atomic_write_bytes, atomic_write_text
from mtlmood.significance import BootstrapResult, mean_ci, paired_bootstrap, welch_p_value

MIN_SEEDS = 3  # below this, a cell is flagged "fewer than 3 seeds" and its verdict is tentative
ALPHA_LEVEL = 0.05  # significance level of every test in the report
ARMS = ("baseline", "heuristic", "best")
ARM_LABELS = {
    "baseline": "baseline (α = 0)",
    "heuristic": "heuristic α = N_mood/N_meta",
    "best": "best α found (on val PR-AUC)",
}
METADATA_ORDER = {"none": 0, "artist": 1, "year": 2, "artist+year": 3}

REQUIRED_COLUMNS = ("trial_id", "phase", "status", "dataset", "n_moods", "metadata", "alpha", "role", "seed")
# Columns a partial table may lack; filled with these neutral values so a report never crashes on them.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "n_meta": 0, "heuristic_alpha": math.nan, "epochs": 0, "best_epoch": 0, "early_stopped": False,
    "val_roc_auc": math.nan, "val_pr_auc": math.nan, "test_roc_auc": math.nan, "test_pr_auc": math.nan,
    "time_s": math.nan, "checkpoint_path": "", "predictions_path": "",
}
METRIC_COLUMNS = ("val_roc_auc", "val_pr_auc", "test_roc_auc", "test_pr_auc", "time_s", "alpha", "heuristic_alpha")

TABLE1_COLUMNS = [
    "dataset", "n_moods", "metadata", "n_meta", "arm", "alpha", "n_seeds", "n_unusable",
    "test_roc_auc_pct_mean", "test_roc_auc_pct_ci_low", "test_roc_auc_pct_ci_high",
    "test_pr_auc_pct_mean", "test_pr_auc_pct_ci_low", "test_pr_auc_pct_ci_high",
    "roc_auc_gain_pts", "pr_auc_gain_pts", "note",
]
VERDICT_COLUMNS = [
    "dataset", "n_moods", "metadata", "n_meta", "metric", "heuristic_alpha", "best_alpha",
    "n_seeds_baseline", "n_seeds_heuristic", "n_seeds_best", "n_test_songs", "chance_pr_auc_pct",
    "baseline_pct", "heuristic_pct", "best_pct", "best_ci_low_pct", "best_ci_high_pct",
    "heuristic_within_best_ci",
    "heuristic_minus_best_pts", "heuristic_minus_best_ci_low", "heuristic_minus_best_ci_high", "heuristic_minus_best_p",
    "heuristic_gain_pts", "heuristic_gain_ci_low", "heuristic_gain_ci_high", "heuristic_gain_p",
    "heuristic_gain_significant", "heuristic_gain_seed_p",
    "best_gain_pts", "best_gain_ci_low", "best_gain_ci_high", "best_gain_p",
    "best_gain_significant", "best_gain_seed_p",
    "flags", "verdict",
]
SEARCH_COLUMNS = [
    "dataset", "n_moods", "metadata", "n_trials", "n_finished", "n_early_stopped", "n_errored",
    "best_val_pr_auc_pct", "alpha_of_best_val", "heuristic_alpha", "alpha_min", "alpha_max",
]

Cell = tuple[str, int, str]  # (dataset, n_moods, metadata)


# ----------------------------------------------------------------- trial table
def normalize_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """A copy of the trial table with every expected column present and typed.

    Raises ValueError naming the missing columns when a required one is absent.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"trial table lacks required column(s): {', '.join(missing)}")
    df = trials.copy()
    for column, default in OPTIONAL_DEFAULTS.items():
        if column not in df.columns:
            df[column] = default
    for column in METRIC_COLUMNS:
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    df["n_moods"] = pd.to_numeric(df["n_moods"], errors="coerce").fillna(0).astype(int)
    df["n_meta"] = pd.to_numeric(df["n_meta"], errors="coerce").fillna(0).astype(int)
    df["early_stopped"] = df["early_stopped"].map(_as_bool).astype(bool)
    for column in ("trial_id", "phase", "status", "dataset", "metadata", "role", "checkpoint_path", "predictions_path"):
        df[column] = df[column].fillna("").astype(str)
    return df


def _as_bool(value: Any) -> bool:
    """A flag from a table that may have been through CSV ("False" is truthy as a plain str)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if pd.notna(value) else False


def usable_mask(df: pd.DataFrame) -> pd.Series:
    """Trials that count as evidence: finished without error and carrying a test PR-AUC."""
    return (df["status"] == "TERMINATED") & np.isfinite(df["test_pr_auc"].to_numpy(dtype=float))


def _cell_sort_key(cell: Cell) -> tuple[str, int, int, str]:
    return cell[0], cell[1], METADATA_ORDER.get(cell[2], 99), cell[2]


def report_cells(trials: pd.DataFrame) -> list[Cell]:
    """Every (dataset, n_moods, metadata != none) seen in any phase, so a cell the
    confirm phase never reached still shows up (empty, and flagged)."""
    df = trials[trials["metadata"] != "none"]
    cells = {(str(d), int(n), str(m)) for d, n, m in df[["dataset", "n_moods", "metadata"]].itertuples(index=False)}
    return sorted(cells, key=_cell_sort_key)


def _cell_rows(trials: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    dataset, n_moods, metadata = cell
    return trials[(trials["dataset"] == dataset) & (trials["n_moods"] == n_moods) & (trials["metadata"] == metadata)]


def _mode(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mode().iloc[0]) if len(values) else math.nan


def cell_heuristic_alpha(trials: pd.DataFrame, cell: Cell) -> float:
    """The cell's N_mood/N_meta as recorded by the study (the data may yield fewer labels than asked)."""
    rows = _cell_rows(trials, cell)
    value = _mode(rows["heuristic_alpha"])
    if math.isnan(value):
        value = _mode(rows.loc[rows["role"] == "heuristic", "alpha"])
    return value


def cell_n_meta(trials: pd.DataFrame, cell: Cell) -> int:
    rows = _cell_rows(trials, cell)
    value = _mode(rows["n_meta"].astype(float))
    return 0 if math.isnan(value) else int(value)


def arm_trials(trials: pd.DataFrame, cell: Cell, arm: str) -> pd.DataFrame:
    """Confirm-phase rows of one arm of a cell, any status. The baseline is shared
    by every cell with the same dataset and n_moods (it has no metadata)."""
    dataset, n_moods, metadata = cell
    confirm = trials[(trials["phase"] == "confirm") & (trials["dataset"] == dataset) & (trials["n_moods"] == n_moods)]
    if arm == "baseline":
        return confirm[(confirm["role"] == "baseline") & confirm["metadata"].isin(["none", metadata])]
    return confirm[(confirm["role"] == arm) & (confirm["metadata"] == metadata)]


@dataclass
class ArmSummary:
    """Confirm-phase evidence of one arm of one cell (metrics in percent)."""

    arm: str
    alpha: float
    rows: pd.DataFrame  # every confirm row of the arm, any status
    usable: pd.DataFrame  # usable rows, one per seed
    roc: tuple[float, float, float]  # test ROC-AUC (%) mean, CI low, CI high
    pr: tuple[float, float, float]  # test PR-AUC (%) mean, CI low, CI high
    notes: list[str] = field(default_factory=list)

    @property
    def n_seeds(self) -> int:
        return len(self.usable)

    @property
    def n_unusable(self) -> int:
        return len(self.rows) - int(usable_mask(self.rows).sum())


def summarize_arm(trials: pd.DataFrame, cell: Cell, arm: str, confidence: float = 0.95) -> ArmSummary:
    """Mean and t-interval over seeds of one arm, with honest notes on what is missing."""
    rows = arm_trials(trials, cell, arm)
    ok = rows[usable_mask(rows)]
    # A resumed study may have run a seed twice; the later row is the one the study kept.
    usable = ok.drop_duplicates("seed", keep="last")
    notes: list[str] = []
    if arm == "baseline":
        alpha = 0.0
    else:
        alpha = _mode(usable["alpha"]) if len(usable) else _mode(rows["alpha"])
        if arm == "heuristic" and math.isnan(alpha):
            alpha = cell_heuristic_alpha(trials, cell)
        if usable["alpha"].nunique() > 1:
            notes.append(f"several α values ({usable['alpha'].nunique()}); the most common is shown")
    if len(rows) == 0:
        notes.append("no runs")
    elif len(usable) == 0:
        notes.append("no usable runs")
    elif len(usable) < MIN_SEEDS:
        notes.append(f"fewer than {MIN_SEEDS} seeds (n={len(usable)})")
    n_error = int((rows["status"] == "ERROR").sum())
    n_other = len(rows) - len(ok) - n_error
    if n_error:
        notes.append(f"{n_error} errored")
    if n_other:
        notes.append(f"{n_other} stopped or without test score")
    if len(ok) > len(usable):
        notes.append(f"{len(ok) - len(usable)} duplicate seed(s) ignored")
    return ArmSummary(arm, alpha, rows, usable,
                      mean_ci(usable["test_roc_auc"], confidence), mean_ci(usable["test_pr_auc"], confidence), notes)


def build_table1(trials: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The paper's Table 1 per (dataset, n_moods, metadata): baseline / heuristic α / best α found.

    One row per cell and arm (``arm`` is baseline, heuristic or best), columns
    ``TABLE1_COLUMNS``: test ROC-AUC and PR-AUC in percent as mean and
    t-interval over confirm-phase seeds (NaN bounds with one seed), and the gain
    of the arm's mean over the baseline's mean in percentage points (NaN on the
    baseline row). ``note`` flags missing seeds, errors and duplicates.
    """
    df = normalize_trials(trials)
    records = []
    for cell in report_cells(df):
        summaries = {arm: summarize_arm(df, cell, arm, confidence) for arm in ARMS}
        base = summaries["baseline"]
        for arm in ARMS:
            s = summaries[arm]
            records.append({
                "dataset": cell[0], "n_moods": cell[1], "metadata": cell[2],
                "n_meta": 0 if arm == "baseline" else cell_n_meta(df, cell),
                "arm": arm, "alpha": s.alpha, "n_seeds": s.n_seeds, "n_unusable": s.n_unusable,
                "test_roc_auc_pct_mean": s.roc[0], "test_roc_auc_pct_ci_low": s.roc[1], "test_roc_auc_pct_ci_high": s.roc[2],
                "test_pr_auc_pct_mean": s.pr[0], "test_pr_auc_pct_ci_low": s.pr[1], "test_pr_auc_pct_ci_high": s.pr[2],
                "roc_auc_gain_pts": math.nan if arm == "baseline" else s.roc[0] - base.roc[0],
                "pr_auc_gain_pts": math.nan if arm == "baseline" else s.pr[0] - base.pr[0],
                "note": "; ".join(s.notes),
            })
    return pd.DataFrame.from_records(records, columns=TABLE1_COLUMNS)


def search_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per cell seen in the search phase (baseline cells included): trial counts and the best validation PR-AUC."""
    df = normalize_trials(trials)
    search = df[df["phase"] == "search"]
    records = []
    keys = sorted({(d, int(n), m) for d, n, m in search[["dataset", "n_moods", "metadata"]].itertuples(index=False)},
                  key=_cell_sort_key)
    for cell in keys:
        rows = _cell_rows(search, cell)
        finished = rows[(rows["status"] == "TERMINATED") & ~rows["early_stopped"]]
        scored = rows[np.isfinite(rows["val_pr_auc"].to_numpy())]
        best = scored.loc[scored["val_pr_auc"].idxmax()] if len(scored) else None
        records.append({
            "dataset": cell[0], "n_moods": cell[1], "metadata": cell[2], "n_trials": len(rows),
            "n_finished": len(finished), "n_early_stopped": int(rows["early_stopped"].sum()),
            "n_errored": int((rows["status"] == "ERROR").sum()),
            "best_val_pr_auc_pct": float(best["val_pr_auc"]) if best is not None else math.nan,
            "alpha_of_best_val": float(best["alpha"]) if best is not None else math.nan,
            "heuristic_alpha": cell_heuristic_alpha(df, cell) if cell[2] != "none" else math.nan,
            "alpha_min": float(rows["alpha"].min()) if len(rows) else math.nan,
            "alpha_max": float(rows["alpha"].max()) if len(rows) else math.nan,
        })
    return pd.DataFrame.from_records(records, columns=SEARCH_COLUMNS)


# ---------------------------------------------------------------- predictions
Run = tuple[np.ndarray, np.ndarray, np.ndarray]  # song_ids (n,), y_true (n, L), y_prob (n, L)


def load_predictions(path: str, base_dir: Optional[Path] = None) -> Optional[Run]:
    """A trial's test predictions (.npz with song_ids, y_true, y_prob), or None when absent or malformed."""
    if not path or path.lower() == "nan":
        return None
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    try:
        with np.load(p, allow_pickle=False) as z:
            ids, y_true, y_prob = np.asarray(z["song_ids"]), np.asarray(z["y_true"]), np.asarray(z["y_prob"], float)
    except (OSError, KeyError, ValueError):
        return None
    if y_true.ndim != 2 or y_true.shape != y_prob.shape or ids.shape != (len(y_true),) or len(np.unique(ids)) != len(ids):
        return None
    if not np.all(np.isfinite(y_prob)):
        return None
    return ids, (y_true > 0.5).astype(np.int8), y_prob


@dataclass
class _Aligned:
    y_true: Optional[np.ndarray]
    probs: dict[str, list[np.ndarray]]
    n_runs_missing: int
    flags: list[str]


def _align(runs: dict[str, list[Optional[Run]]]) -> _Aligned:
    """Rows of every run reordered to the test songs common to all runs, labels checked to agree."""
    flags: list[str] = []
    missing = sum(r is None for arm_runs in runs.values() for r in arm_runs)
    present = {arm: [r for r in arm_runs if r is not None] for arm, arm_runs in runs.items()}
    every = [r for arm_runs in present.values() for r in arm_runs]
    if missing:
        flags.append(f"test predictions missing or unreadable for {missing} usable run(s)")
    if not every:
        return _Aligned(None, {arm: [] for arm in runs}, missing, flags)
    if len({r[1].shape[1] for r in every}) > 1:
        flags.append("runs disagree on the number of mood labels: no bootstrap")
        return _Aligned(None, {arm: [] for arm in runs}, missing, flags)
    common = reduce(np.intersect1d, [r[0] for r in every])
    if any(len(r[0]) != len(common) for r in every):
        flags.append(f"runs scored different test songs: compared on the {len(common)} common ones")
    if len(common) == 0:
        return _Aligned(None, {arm: [] for arm in runs}, missing, flags)

    def rows_of(ids: np.ndarray) -> np.ndarray:
        order = np.argsort(ids, kind="stable")
        return order[np.searchsorted(ids[order], common)]

    y_ref: Optional[np.ndarray] = None
    probs: dict[str, list[np.ndarray]] = {arm: [] for arm in runs}
    for arm, arm_runs in present.items():
        for ids, y_true, y_prob in arm_runs:
            idx = rows_of(ids)
            if y_ref is None:
                y_ref = y_true[idx]
            elif not np.array_equal(y_ref, y_true[idx]):
                flags.append("runs disagree on the test labels of the same songs: no bootstrap")
                return _Aligned(None, {a: [] for a in runs}, missing, flags)
            probs[arm].append(y_prob[idx])
    return _Aligned(y_ref, probs, missing, flags)


def chance_pr_auc(y_true: np.ndarray) -> float:
    """PR-AUC (%) of a random ranking: the mean prevalence of the scorable labels (both classes present)."""
    y = np.asarray(y_true, float)
    prevalence = y.mean(axis=0)
    scorable = (prevalence > 0) & (prevalence < 1)
    return float(100.0 * prevalence[scorable].mean()) if scorable.any() else math.nan


# -------------------------------------------------------------------- verdicts
def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "p n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _gain_phrase(name: str, alpha: float, gain: float, b: Optional[BootstrapResult], seed_p: float, metric_label: str) -> str:
    if not np.isfinite(gain):
        return f"{name} has no usable runs"
    text = f"{name}={alpha:.3g}: {gain:+.2f} {metric_label} points vs baseline"
    if b is None or not np.isfinite(b.p_value):
        return text + " (no test predictions: significance unknown)"
    sig = b.p_value < ALPHA_LEVEL
    text += f" (95% CI {b.ci_low:+.2f} to {b.ci_high:+.2f}, {_fmt_p(b.p_value)}: {'significant' if sig else 'not significant'}"
    if sig and np.isfinite(seed_p) and seed_p >= ALPHA_LEVEL:
        text += f" on test songs, but not across seeds, Welch {_fmt_p(seed_p)}"
    return text + ")"


def _verdict_text(row: dict[str, Any], hb: Optional[BootstrapResult], bb: Optional[BootstrapResult],
                  hvb: Optional[BootstrapResult], metric_label: str) -> str:
    """One plain-English line: the headline, then the numbers behind it."""
    if row["n_seeds_baseline"] == 0:
        return "No verdict: no usable baseline runs to compare with."
    if row["n_seeds_heuristic"] == 0 and row["n_seeds_best"] == 0:
        return "No verdict: no usable multi-task runs."
    h_sig = row["heuristic_gain_significant"]
    b_sig = row["best_gain_significant"]
    h_gain, b_gain = row["heuristic_gain_pts"], row["best_gain_pts"]
    within = row["heuristic_within_best_ci"]
    hvb_sig = hvb is not None and np.isfinite(hvb.p_value) and hvb.p_value < ALPHA_LEVEL
    if h_sig is pd.NA and b_sig is pd.NA:
        head = "Undecided (no test predictions for a bootstrap)"
    elif h_sig is True and h_gain < 0:
        head = "The heuristic α hurts"
    elif h_sig is True and (hvb_sig and row["heuristic_minus_best_pts"] < 0):
        head = "The heuristic α helps, but the tuned α helps significantly more"
    elif h_sig is True and np.isfinite(row["heuristic_gain_seed_p"]) and row["heuristic_gain_seed_p"] >= ALPHA_LEVEL:
        head = "The heuristic α helps on these test songs, but not consistently across seeds"
    elif h_sig is True:
        head = "The heuristic α works"
    elif b_sig is True and b_gain > 0:
        head = "Only the tuned α gives a significant gain"
    elif b_sig is True and b_gain < 0:
        head = "No α helps: even the tuned α is significantly worse than the baseline"
    else:
        head = "No significant gain from metadata at this test-set size"
    if min(row["n_seeds_baseline"], row["n_seeds_heuristic"], row["n_seeds_best"]) < MIN_SEEDS:
        head = f"Tentative (fewer than {MIN_SEEDS} seeds): " + head[0].lower() + head[1:]
    parts = [
        _gain_phrase("heuristic α", row["heuristic_alpha"], h_gain, hb, row["heuristic_gain_seed_p"], metric_label),
        _gain_phrase("tuned α", row["best_alpha"], b_gain, bb, row["best_gain_seed_p"], metric_label),
    ]
    if within is not pd.NA:
        where = "within" if within else ("below" if row["heuristic_pct"] < row["best_ci_low_pct"] else "above")
        parts.append(f"heuristic's mean is {where} the tuned α's 95% CI over seeds")
    if hvb is not None and np.isfinite(hvb.p_value):
        parts.append(f"heuristic − tuned {row['heuristic_minus_best_pts']:+.2f} points ({_fmt_p(hvb.p_value)})")
    return head + ". " + "; ".join(parts) + "."


def verdicts(
    trials: pd.DataFrame,
    n_boot: int = 2000,
    *,
    metric: str = "pr_auc",
    confidence: float = 0.95,
    seed: int = 0,
    base_dir: Optional[Path] = None,
) -> pd.DataFrame:
    """Per cell: does the heuristic α hold up against the baseline and the best α found?

    Columns ``VERDICT_COLUMNS`` (levels in percent ``_pct``, differences in
    points ``_pts``; ``metric`` says which test metric, PR-AUC by default):

    * ``*_pct``: mean test metric over confirm seeds; ``best_ci_*``: its t-interval.
    * ``heuristic_within_best_ci``: heuristic mean inside the best α's interval
      over seeds (NA with < 2 best seeds).
    * ``*_gain_pts``: arm mean minus baseline mean (as Table 1); ``*_ci_*`` and
      ``*_p``: paired bootstrap over test songs (``n_boot`` resamples, the same
      resamples for every comparison of a cell; arm value = mean over its seeds);
      ``*_significant``: p < 0.05; ``*_seed_p``: Welch t-test across seeds.
    * ``heuristic_minus_best_*``: same bootstrap, heuristic minus best.
    * ``chance_pr_auc_pct``: PR-AUC of a random ranking (mean label prevalence).

    ``n_boot=0`` skips the bootstraps (CIs and p-values NaN). Relative
    ``predictions_path`` values are resolved against ``base_dir``.
    """
    df = normalize_trials(trials)
    metric_col = f"test_{metric}"
    metric_label = {"pr_auc": "PR-AUC", "roc_auc": "ROC-AUC"}[metric]
    cache: dict[str, Optional[Run]] = {}

    def load(path: str) -> Optional[Run]:
        if path not in cache:
            cache[path] = load_predictions(path, base_dir)
        return cache[path]

    records = []
    for cell in report_cells(df):
        s = {arm: summarize_arm(df, cell, arm, confidence) for arm in ARMS}
        level = {arm: mean_ci(s[arm].usable[metric_col], confidence) for arm in ARMS}
        aligned = _align({arm: [load(p) for p in s[arm].usable["predictions_path"]] for arm in ARMS})
        flags = [f"{ARM_LABELS[arm]}: {', '.join(s[arm].notes)}" for arm in ARMS if s[arm].notes]
        flags += aligned.flags

        def boot(a: str, b: str) -> Optional[BootstrapResult]:
            if n_boot <= 0 or aligned.y_true is None or not aligned.probs[a] or not aligned.probs[b]:
                return None
            return paired_bootstrap(aligned.y_true, aligned.probs[a], aligned.probs[b], metric=metric,
                                    n_boot=n_boot, seed=seed, confidence=confidence)

        hb, bb, hvb = boot("heuristic", "baseline"), boot("best", "baseline"), boot("heuristic", "best")

        def b_fields(prefix: str, res: Optional[BootstrapResult]) -> dict[str, Any]:
            return {f"{prefix}_ci_low": res.ci_low if res else math.nan,
                    f"{prefix}_ci_high": res.ci_high if res else math.nan,
                    f"{prefix}_p": res.p_value if res else math.nan}

        def significant(res: Optional[BootstrapResult]) -> Any:
            return bool(res.p_value < ALPHA_LEVEL) if res is not None and np.isfinite(res.p_value) else pd.NA

        best_lo, best_hi = level["best"][1], level["best"][2]
        h_mean = level["heuristic"][0]
        within = (bool(best_lo <= h_mean <= best_hi)
                  if np.isfinite(best_lo) and np.isfinite(best_hi) and np.isfinite(h_mean) else pd.NA)
        row: dict[str, Any] = {
            "dataset": cell[0], "n_moods": cell[1], "metadata": cell[2], "n_meta": cell_n_meta(df, cell),
            "metric": metric, "heuristic_alpha": s["heuristic"].alpha, "best_alpha": s["best"].alpha,
            "n_seeds_baseline": s["baseline"].n_seeds, "n_seeds_heuristic": s["heuristic"].n_seeds,
            "n_seeds_best": s["best"].n_seeds,
            "n_test_songs": 0 if aligned.y_true is None else int(aligned.y_true.shape[0]),
            "chance_pr_auc_pct": math.nan if aligned.y_true is None else chance_pr_auc(aligned.y_true),
            "baseline_pct": level["baseline"][0], "heuristic_pct": h_mean, "best_pct": level["best"][0],
            "best_ci_low_pct": best_lo, "best_ci_high_pct": best_hi, "heuristic_within_best_ci": within,
            "heuristic_minus_best_pts": h_mean - level["best"][0], **b_fields("heuristic_minus_best", hvb),
            "heuristic_gain_pts": h_mean - level["baseline"][0], **b_fields("heuristic_gain", hb),
            "heuristic_gain_significant": significant(hb),
            "heuristic_gain_seed_p": welch_p_value(s["heuristic"].usable[metric_col], s["baseline"].usable[metric_col]),
            "best_gain_pts": level["best"][0] - level["baseline"][0], **b_fields("best_gain", bb),
            "best_gain_significant": significant(bb),
            "best_gain_seed_p": welch_p_value(s["best"].usable[metric_col], s["baseline"].usable[metric_col]),
            "flags": "; ".join(flags),
        }
        row["verdict"] = _verdict_text(row, hb, bb, hvb, metric_label)
        records.append(row)
    out = pd.DataFrame.from_records(records, columns=VERDICT_COLUMNS)
    for column in ("heuristic_within_best_ci", "heuristic_gain_significant", "best_gain_significant"):
        out[column] = out[column].astype("boolean")  # NA where the test could not run
    return out


# -------------------------------------------------------------------- writing
@dataclass(frozen=True)
class ReportFiles:
    """Paths of everything :func:`write_report` wrote."""

    out_dir: Path
    trials_csv: Path
    trials_parquet: Path
    table1_csv: Path
    verdicts_csv: Path
    search_csv: Path
    report_md: Path
    report_html: Path
    plots: tuple[Path, ...]


def _csv_bytes(df: pd.DataFrame, float_format: Optional[str] = "%.6g") -> bytes:
    """CSV text; summaries are rounded to 6 significant digits for reading, raw data is not."""
    return df.to_csv(index=False, float_format=float_format).encode("utf-8")


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    out = df.copy()
    for column in out.columns:
        # Mixed object columns (str + NaN + numbers) would make pyarrow refuse the whole table.
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    return buf.getvalue()


def _num(x: Any, digits: int = 2, signed: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    if not np.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _mean_pm(mean: float, low: float, high: float) -> str:
    """'74.69 ± 0.85' for a t-interval (symmetric), the bare mean when there is no interval."""
    if not np.isfinite(mean):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.2f} (no CI)"
    return f"{mean:.2f} ± {(high - low) / 2:.2f}"


def _ci_text(est: float, low: float, high: float, p: float) -> str:
    if not np.isfinite(est):
        return "–"
    if not np.isfinite(p):
        return f"{est:+.2f}"
    return f"{est:+.2f} [{low:+.2f}, {high:+.2f}], {_fmt_p(p)}"


def _alpha_text(alpha: float) -> str:
    return "–" if not np.isfinite(alpha) else ("0" if alpha == 0 else f"{alpha:.3g}")


def table1_display(table1: pd.DataFrame) -> pd.DataFrame:
    """Table 1 formatted for reading: units in every header, ± half-width of the 95% CI."""
    rows = []
    for r in table1.itertuples(index=False):
        rows.append({
            "dataset": r.dataset, "moods": r.n_moods, "metadata": r.metadata,
            "N_meta": "–" if r.arm == "baseline" else r.n_meta, "config": ARM_LABELS[r.arm],
            "α": _alpha_text(r.alpha), "seeds": r.n_seeds,
            "test ROC-AUC (%) mean ± 95% CI": _mean_pm(r.test_roc_auc_pct_mean, r.test_roc_auc_pct_ci_low, r.test_roc_auc_pct_ci_high),
            "Δ ROC-AUC vs baseline (points)": _num(r.roc_auc_gain_pts, signed=True),
            "test PR-AUC (%) mean ± 95% CI": _mean_pm(r.test_pr_auc_pct_mean, r.test_pr_auc_pct_ci_low, r.test_pr_auc_pct_ci_high),
            "Δ PR-AUC vs baseline (points)": _num(r.pr_auc_gain_pts, signed=True),
            "note": r.note,
        })
    return pd.DataFrame(rows)


def verdicts_display(v: pd.DataFrame) -> pd.DataFrame:
    """Verdict numbers formatted for reading (PR-AUC by default; the metric is in the headers)."""
    rows = []
    for r in v.itertuples(index=False):
        label = {"pr_auc": "PR-AUC", "roc_auc": "ROC-AUC"}.get(r.metric, r.metric)
        within = r.heuristic_within_best_ci
        rows.append({
            "cell": f"{r.dataset} · {r.n_moods} moods · {r.metadata}",
            "heuristic α": _alpha_text(r.heuristic_alpha), "best α": _alpha_text(r.best_alpha),
            "seeds (base/heur/best)": f"{r.n_seeds_baseline}/{r.n_seeds_heuristic}/{r.n_seeds_best}",
            "chance PR-AUC (%)": _num(r.chance_pr_auc_pct),
            f"heuristic gain ({label} points) [95% CI], p": _ci_text(r.heuristic_gain_pts, r.heuristic_gain_ci_low, r.heuristic_gain_ci_high, r.heuristic_gain_p),
            f"best gain ({label} points) [95% CI], p": _ci_text(r.best_gain_pts, r.best_gain_ci_low, r.best_gain_ci_high, r.best_gain_p),
            f"heuristic − best ({label} points) [95% CI], p": _ci_text(r.heuristic_minus_best_pts, r.heuristic_minus_best_ci_low, r.heuristic_minus_best_ci_high, r.heuristic_minus_best_p),
            "heuristic within best's seed CI": "–" if within is pd.NA else ("yes" if within else "no"),
        })
    return pd.DataFrame(rows)


def search_display(s: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "cell": f"{r.dataset} · {r.n_moods} moods · {r.metadata}", "trials": r.n_trials, "finished": r.n_finished,
        "early-stopped": r.n_early_stopped, "errored": r.n_errored,
        "best val PR-AUC (%)": _num(r.best_val_pr_auc_pct), "α of best val": _alpha_text(r.alpha_of_best_val),
        "heuristic α": _alpha_text(r.heuristic_alpha),
        "α range searched": f"{_alpha_text(r.alpha_min)} – {_alpha_text(r.alpha_max)}",
    } for r in s.itertuples(index=False)])


def trial_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Per phase: trials by status, early-stopped, and without a test score -- failures shown, not hidden."""
    df = normalize_trials(trials)
    rows = []
    for phase, g in df.groupby("phase", sort=False):
        row: dict[str, Any] = {"phase": phase, "trials": len(g)}
        for status, n in g["status"].value_counts().items():
            row[f"status {status}"] = int(n)
        row["early-stopped by scheduler"] = int(g["early_stopped"].sum())
        row["without test score"] = int((~np.isfinite(g["test_pr_auc"].to_numpy())).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    numeric = [c for c in table.columns if c != "phase"]
    table[numeric] = table[numeric].fillna(0).astype(int)  # a status absent from a phase is 0 trials
    return table


class _Doc:
    """A tiny document model rendered to both Markdown and HTML, so the two never drift apart."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[tuple[str, Any]] = []

    def add(self, kind: str, content: Any) -> None:
        self.blocks.append((kind, content))

    @staticmethod
    def _md_cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, c in self.blocks:
            if kind == "h2":
                out += [f"## {c}", ""]
            elif kind == "p":
                out += [c, ""]
            elif kind == "ul":
                out += [f"- {item}" for item in c] + [""]
            elif kind == "pre":
                out += ["```", c, "```", ""]
            elif kind == "table":
                if c.empty:
                    out += ["*(empty)*", ""]
                    continue
                out.append("| " + " | ".join(self._md_cell(h) for h in c.columns) + " |")
                out.append("|" + "|".join("---" for _ in c.columns) + "|")
                out += ["| " + " | ".join(self._md_cell(v) for v in row) + " |" for row in c.itertuples(index=False)]
                out.append("")
            elif kind == "img":
                rel, alt, _ = c
                out += [f"![{alt}]({rel})", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for kind, c in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{e(c)}</h2>")
            elif kind == "p":
                body.append(f"<p>{_inline_md(c)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline_md(i)}</li>" for i in c) + "</ul>")
            elif kind == "pre":
                body.append(f"<pre>{e(c)}</pre>")
            elif kind == "table":
                if c.empty:
                    body.append("<p><em>(empty)</em></p>")
                    continue
                head = "".join(f"<th>{e(str(h))}</th>" for h in c.columns)
                rows = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                               for row in c.itertuples(index=False))
                body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
            elif kind == "img":
                rel, alt, png = c
                # Embedded, so the page stays readable when mailed or moved without its plots/ folder.
                src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                body.append(f'<figure><img src="{src}" alt="{e(alt)}"><figcaption>{e(alt)} '
                            f'(<a href="{e(rel)}">{e(rel)}</a>)</figcaption></figure>')
        return _HTML_TEMPLATE.format(title=e(self.title), body="\n".join(body))


def _inline_md(text: str) -> str:
    """HTML-escape, then render the two inline Markdown forms the report uses: **bold** and `code`."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1250px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }}
h1 {{ font-size: 1.6em; }} h2 {{ margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: .88em; margin: .5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: .3em .55em; vertical-align: top; }}
th {{ background: #f0f3f7; text-align: left; }}
td {{ font-variant-numeric: tabular-nums; }}
tbody tr:nth-child(even) {{ background: #fafafa; }}
figure {{ margin: 1em 0 2em; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-size: .85em; color: #555; }}
pre {{ background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }}
code {{ background: #f6f8fa; padding: 0 .2em; }}
</style></head>
<body>
{body}
</body></html>
"""

_NOTES = [
    "All ROC-AUC and PR-AUC values are **percent** (0–100), macro-averaged over the mood labels of the test songs; "
    "differences and gains are in **percentage points**.",
    "PR-AUC has no fixed chance level: a random ranking scores the label's **prevalence** (fraction of positive songs). "
    "The verdict table gives that chance level per cell (mean prevalence of the test labels); ROC-AUC's chance level is 50%.",
    "Table 1 uses only confirm-phase runs: mean over seeds ± half-width of the 95% Student-t interval over seeds "
    "(training randomness). One seed gives no interval; cells with fewer than 3 seeds are flagged.",
    "Gains are tested with a **paired bootstrap over test songs**: the same resampled songs score both arms, an arm's "
    "value is the mean over its seeds of the macro metric; two-sided p, significant when p < 0.05. "
    "The Welch p across seeds is a second, independent check of the same gain.",
    "The best α is chosen on **validation** PR-AUC in the search phase and re-run with fresh seeds, so its test "
    "score is not selected on the test set.",
]


def _figure_caption(name: str) -> str:
    if name == "search_progress.png":
        return "Search progress: best-so-far validation PR-AUC (%) per cell vs trial number"
    if name == "gains.png":
        return "Test PR-AUC gain over baseline (points) with paired-bootstrap 95% CIs"
    return "Test and validation PR-AUC (%) vs α: " + name.removeprefix("cell_").removesuffix(".png").replace("_", " ")


def write_report(
    trials: pd.DataFrame,
    out_dir: str | Path,
    title: str = "α study report",
    study_config: Optional[dict[str, Any]] = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    base_dir: Optional[Path] = None,
) -> ReportFiles:
    """Write the full report of a study into ``out_dir`` (atomically, file by file) and return the paths.

    Files: trials.csv / trials.parquet (the trial table as given), table1.csv,
    verdicts.csv, search.csv, report.md, report.html (self-contained: plots
    embedded, also linked), plots/*.png. Prints nothing.
    """
    from study import plots  # matplotlib is only needed when writing

    out = Path(out_dir)
    df = normalize_trials(trials)
    table1 = build_table1(df, confidence)
    verdict = verdicts(df, n_boot, confidence=confidence, seed=seed, base_dir=base_dir)
    search = search_summary(df)
    files = ReportFiles(out, out / "trials.csv", out / "trials.parquet", out / "table1.csv", out / "verdicts.csv",
                        out / "search.csv", out / "report.md", out / "report.html", ())
    atomic_write_bytes(files.trials_csv, _csv_bytes(trials, float_format=None))  # full precision: it is the data
    atomic_write_bytes(files.trials_parquet, _parquet_bytes(trials))
    atomic_write_bytes(files.table1_csv, _csv_bytes(table1))
    atomic_write_bytes(files.verdicts_csv, _csv_bytes(verdict))
    atomic_write_bytes(files.search_csv, _csv_bytes(search))

    figures = plots.render_all(df, verdict)  # [(file name, png bytes)]
    plot_paths = []
    for name, png in figures:
        path = out / "plots" / name
        atomic_write_bytes(path, png)
        plot_paths.append(path)

    doc = _Doc(title)
    counts = trial_counts(df)
    n_err = int((df["status"] == "ERROR").sum())
    n_stop = int(df["early_stopped"].sum())
    doc.add("p", f"{len(df)} trials: {n_err} errored, {n_stop} stopped early by the scheduler, "
                 f"{int((~usable_mask(df)).sum())} without a usable test score. "
                 f"{len(table1) // len(ARMS) if len(table1) else 0} cell(s) (dataset × moods × metadata).")
    doc.add("h2", "How to read this")
    doc.add("ul", _NOTES)
    doc.add("h2", "Verdicts on the heuristic α = N_mood / N_meta")
    if len(verdict):
        doc.add("ul", [f"**{r.dataset} · {r.n_moods} moods · {r.metadata}**: {r.verdict}" for r in verdict.itertuples(index=False)])
        doc.add("table", verdicts_display(verdict))
        flagged = [f"{r.dataset} · {r.n_moods} moods · {r.metadata}: {r.flags}" for r in verdict.itertuples(index=False) if r.flags]
        if flagged:
            doc.add("p", "**Flags** (missing or failed runs):")
            doc.add("ul", flagged)
    else:
        doc.add("p", "No multi-task cell in the trial table yet.")
    doc.add("h2", "Table 1 (test set, confirm phase)")
    doc.add("table", table1_display(table1))
    for name, png in figures:
        if name == "gains.png":
            doc.add("img", (f"plots/{name}", _figure_caption(name), png))
    doc.add("h2", "Metric vs α per cell")
    for name, png in figures:
        if name.startswith("cell_"):
            doc.add("img", (f"plots/{name}", _figure_caption(name), png))
    doc.add("h2", "Search phase")
    doc.add("table", search_display(search))
    for name, png in figures:
        if name == "search_progress.png":
            doc.add("img", (f"plots/{name}", _figure_caption(name), png))
    doc.add("h2", "Trial counts")
    doc.add("table", counts)
    doc.add("p", "Files: `trials.csv` / `trials.parquet` (one row per trial), `table1.csv`, `verdicts.csv`, `search.csv`.")
    if study_config is not None:
        doc.add("h2", "Study configuration")
        doc.add("pre", json.dumps(study_config, indent=2, default=str, sort_keys=False))
    atomic_write_text(files.report_md, doc.markdown() + "\n")
    atomic_write_text(files.report_html, doc.html())
    return ReportFiles(**{**files.__dict__, "plots": tuple(plot_paths)})
