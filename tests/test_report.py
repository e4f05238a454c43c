"""Study report: Table 1, verdicts, written files and plots, on a simulated two-phase study.

``make_study`` simulates what the study writes: a trial table plus one test
predictions .npz per finished trial, where prediction quality depends on α
through a known curve, so a "true" optimum exists (and the heuristic is right in
one cell, wrong in another). It also renders the demo report:
    .venv/bin/python tests/test_report.py /tmp/report_demo
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

if __package__ in (None, ""):  # run as a script for the demo report
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlmood.significance import macro_average_precision, macro_roc_auc  # noqa: E402
from study.report_legacy import (  # noqa: E402
    TABLE1_COLUMNS,
    VERDICT_COLUMNS,
    build_table1,
    search_summary,
    verdicts,
    write_report,
)

COLUMNS = ["trial_id", "phase", "status", "dataset", "n_moods", "metadata", "n_meta", "alpha", "role",
           "heuristic_alpha", "seed", "epochs", "best_epoch", "early_stopped", "val_roc_auc", "val_pr_auc",
           "test_roc_auc", "test_pr_auc", "time_s", "checkpoint_path", "predictions_path", "error"]

# (n_moods, metadata, n_meta, true optimum α*, peak gain in signal strength): the heuristic
# 3/50 = 0.06 is 8x too small in the first cell; right in the second (3/59); right in the third
# (9/50), whose best arm keeps only 1 seed; and metadata does nothing in the fourth.
CELLS = [(3, "artist", 50, 0.5, 0.3), (3, "artist+year", 59, 3 / 59, 0.3), (9, "artist", 50, 0.18, 0.25),
         (9, "year", 9, 1.0, 0.0)]
DATASET = "synthetic"
BASE_SIGNAL = 0.6  # prediction strength at α = 0


def _signal(alpha: float, optimum: float, gain: float) -> float:
    """Prediction strength: BASE_SIGNAL at α=0, + gain at the optimum, back to the base far from it (log scale)."""
    if alpha <= 0:
        return BASE_SIGNAL
    return BASE_SIGNAL + gain * math.exp(-math.log(alpha / optimum) ** 2 / 2.0)


class _Group:
    """Fixed test / validation songs of one (dataset, n_moods): labels and per-song difficulty shared by all runs."""

    def __init__(self, n_moods: int, n_test: int, n_val: int, rng: np.random.Generator) -> None:
        prevalence = rng.uniform(0.15, 0.45, n_moods)
        self.ids = np.array([f"song{i:05d}" for i in range(n_test)])
        self.y = (rng.random((n_test, n_moods)) < prevalence).astype(np.int8)
        self.z = rng.normal(size=(n_test, n_moods))
        self.y_val = (rng.random((n_val, n_moods)) < prevalence).astype(np.int8)
        self.z_val = rng.normal(size=(n_val, n_moods))

    def predict(self, strength: float, rng: np.random.Generator, val: bool = False) -> np.ndarray:
        y, z = (self.y_val, self.z_val) if val else (self.y, self.z)
        logit = strength * (2.0 * y - 1.0) + 0.7 * z + 0.8 * rng.normal(size=y.shape)
        return 1.0 / (1.0 + np.exp(-logit))


def make_study(root: Path, n_test: int = 300, n_val: int = 200, seed: int = 0) -> pd.DataFrame:
    """A two-phase trial table with realistic gaps (early stops, errors, a 1-seed arm) and its .npz predictions."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    groups = {n: _Group(n, n_test, n_val, rng) for n in sorted({c[0] for c in CELLS})}
    rows: list[dict] = []

    def run(phase: str, n_moods: int, metadata: str, n_meta: int, alpha: float, role: str, heuristic: float,
            run_seed: int, optimum: float, gain: float, status: str = "TERMINATED", stopped: bool = False) -> dict:
        g = groups[n_moods]
        trial_id = f"{phase}_{len(rows):04d}"
        row = {"trial_id": trial_id, "phase": phase, "status": status, "dataset": DATASET, "n_moods": n_moods,
               "metadata": metadata, "n_meta": n_meta, "alpha": alpha, "role": role, "heuristic_alpha": heuristic,
               "seed": run_seed, "epochs": 0, "best_epoch": 0, "early_stopped": stopped,
               "val_roc_auc": math.nan, "val_pr_auc": math.nan, "test_roc_auc": math.nan, "test_pr_auc": math.nan,
               "time_s": float(rng.uniform(30, 90)), "checkpoint_path": "", "predictions_path": "",
               "error": "RuntimeError: CUDA out of memory" if status == "ERROR" else ""}
        if status == "ERROR":
            rows.append(row)
            return row
        strength = _signal(alpha, optimum, gain) * (0.7 if stopped else 1.0)  # stopped early = undertrained
        val = g.predict(strength, rng, val=True)
        row.update(val_roc_auc=macro_roc_auc(g.y_val, val), val_pr_auc=macro_average_precision(g.y_val, val),
                   epochs=4 if stopped else 12, best_epoch=3 if stopped else 9)
        if not stopped:  # only a trial that ran to the end evaluates on test and writes predictions
            prob = g.predict(strength, rng)
            path = root / f"{trial_id}.npz"
            np.savez(path, song_ids=g.ids, y_true=g.y, y_prob=prob)
            row.update(test_roc_auc=macro_roc_auc(g.y, prob), test_pr_auc=macro_average_precision(g.y, prob),
                       checkpoint_path=str(root / trial_id / "model"), predictions_path=str(path))
        rows.append(row)
        return row

    # Phase 1: search (one training seed); α log-uniform around the heuristic, some stopped, one error per cell.
    for n_moods in groups:
        for _ in range(2):
            run("search", n_moods, "none", 0, 0.0, "baseline", math.nan, 0, 1.0, 0.0)
    best_alpha = {}
    for n_moods, metadata, n_meta, optimum, gain in CELLS:
        h = n_moods / n_meta
        finished = []
        for i in range(10):
            alpha = float(h * 10 ** rng.uniform(-1.2, 1.5))
            status = "ERROR" if i == 7 else "TERMINATED"
            r = run("search", n_moods, metadata, n_meta, alpha, "search", h, 0, optimum, gain, status,
                    stopped=i in (3, 8))
            if status == "TERMINATED" and not r["early_stopped"]:
                finished.append(r)
        best_alpha[(n_moods, metadata)] = max(finished, key=lambda r: r["val_pr_auc"])["alpha"]

    # Phase 2: confirm, 3 fresh seeds per arm; the baseline is shared by the cells of one n_moods.
    for n_moods in groups:
        for s in (1, 2, 3):
            run("confirm", n_moods, "none", 0, 0.0, "baseline", math.nan, s, 1.0, 0.0)
    for n_moods, metadata, n_meta, optimum, gain in CELLS:
        h = n_moods / n_meta
        for s in (1, 2, 3):
            run("confirm", n_moods, metadata, n_meta, h, "heuristic", h, s, optimum, gain)
            status = "ERROR" if (n_moods, metadata, s > 1) == (9, "artist", True) else "TERMINATED"
            run("confirm", n_moods, metadata, n_meta, best_alpha[(n_moods, metadata)], "best", h, s, optimum, gain,
                status)
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return make_study(tmp_path_factory.mktemp("preds"))


@pytest.fixture(scope="module")
def verdict(study: pd.DataFrame) -> pd.DataFrame:
    return verdicts(study, n_boot=400)


def _row(table: pd.DataFrame, n_moods: int, metadata: str, arm: str | None = None) -> pd.Series:
    sel = (table["n_moods"] == n_moods) & (table["metadata"] == metadata)
    if arm is not None:
        sel &= table["arm"] == arm
    out = table[sel]
    assert len(out) == 1
    return out.iloc[0]


def test_table1_layout_and_ci(study: pd.DataFrame) -> None:
    t1 = build_table1(study)
    assert list(t1.columns) == TABLE1_COLUMNS
    assert len(t1) == 3 * len(CELLS)
    for n_moods, metadata, n_meta, _, _ in CELLS:
        cell = t1[(t1["n_moods"] == n_moods) & (t1["metadata"] == metadata)]
        assert list(cell["arm"]) == ["baseline", "heuristic", "best"]
        base, heur = cell.iloc[0], cell.iloc[1]
        assert base["alpha"] == 0 and math.isnan(base["pr_auc_gain_pts"]) and base["n_seeds"] == 3
        assert heur["alpha"] == pytest.approx(n_moods / n_meta) and heur["n_meta"] == n_meta
        # CI equals scipy's t-interval over the confirm seeds.
        seeds = study[(study["phase"] == "confirm") & (study["role"] == "heuristic") & (study["n_moods"] == n_moods)
                      & (study["metadata"] == metadata)]["test_pr_auc"].to_numpy()
        lo, hi = stats.t.interval(0.95, len(seeds) - 1, loc=seeds.mean(), scale=stats.sem(seeds))
        assert heur["test_pr_auc_pct_mean"] == pytest.approx(seeds.mean())
        assert (heur["test_pr_auc_pct_ci_low"], heur["test_pr_auc_pct_ci_high"]) == pytest.approx((lo, hi))
        assert heur["pr_auc_gain_pts"] == pytest.approx(seeds.mean() - base["test_pr_auc_pct_mean"])
    # Percent, not fractions.
    assert t1["test_roc_auc_pct_mean"].between(50, 100).all()


def test_table1_flags_one_seed_and_errors(study: pd.DataFrame) -> None:
    t1 = build_table1(study)
    best = _row(t1, 9, "artist", "best")
    assert best["n_seeds"] == 1 and best["n_unusable"] == 2
    assert math.isnan(best["test_pr_auc_pct_ci_low"]) and np.isfinite(best["test_pr_auc_pct_mean"])
    assert "fewer than 3 seeds" in best["note"] and "2 errored" in best["note"]
    assert _row(t1, 3, "artist", "best")["note"] == ""


def test_verdicts(verdict: pd.DataFrame) -> None:
    assert list(verdict.columns) == VERDICT_COLUMNS
    assert len(verdict) == len(CELLS)
    assert verdict["verdict"].str.len().gt(20).all()
    # Cell 1: the optimum is 8x the heuristic, so the tuned α wins clearly.
    wrong = _row(verdict, 3, "artist")
    assert bool(wrong["best_gain_significant"]) and wrong["best_gain_p"] < 0.01
    assert wrong["best_gain_ci_low"] > 0 and wrong["best_alpha"] > 0.15
    assert wrong["best_gain_ci_low"] <= wrong["best_gain_pts"] <= wrong["best_gain_ci_high"]
    # Cell 2: the heuristic is the optimum, its gain is real.
    right = _row(verdict, 3, "artist+year")
    assert bool(right["heuristic_gain_significant"]) and right["heuristic_gain_pts"] > 0
    assert right["verdict"].startswith("The heuristic α")
    # Cell 3: one best seed -> tentative, no CI for "within best's CI", but the bootstrap still runs.
    thin = _row(verdict, 9, "artist")
    assert thin["verdict"].startswith("Tentative (fewer than 3 seeds)")
    assert pd.isna(thin["heuristic_within_best_ci"]) and np.isfinite(thin["best_gain_p"])
    assert "fewer than 3 seeds" in thin["flags"]
    # Cell 4: metadata does nothing -> no significant gain either way.
    null = _row(verdict, 9, "year")
    assert null["verdict"].startswith("No significant gain") and not bool(null["heuristic_gain_significant"])
    assert verdict["n_test_songs"].eq(300).all()
    assert verdict["chance_pr_auc_pct"].between(10, 50).all()


def test_search_summary(study: pd.DataFrame) -> None:
    s = search_summary(study)
    cell = s[(s["n_moods"] == 3) & (s["metadata"] == "artist")].iloc[0]
    assert (cell["n_trials"], cell["n_finished"], cell["n_early_stopped"], cell["n_errored"]) == (10, 7, 2, 1)
    assert len(s) == len(CELLS) + 2  # plus one α=0 "none" row per n_moods


def test_write_report(study: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image as mpimg

    files = write_report(study, tmp_path / "report", title="test study", study_config={"name": "t", "alpha": [0, 1]},
                         n_boot=200)
    assert capsys.readouterr() == ("", "")
    for path in (files.trials_csv, files.trials_parquet, files.table1_csv, files.verdicts_csv, files.search_csv,
                 files.report_md, files.report_html):
        assert path.is_file() and path.stat().st_size > 0
    names = {p.name for p in files.plots}
    assert {"gains.png", "search_progress.png"} <= names and len(names) == 2 + len(CELLS)
    for png in files.plots:
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert len(pd.read_parquet(files.trials_parquet)) == len(study)
    assert list(pd.read_csv(files.table1_csv).columns) == TABLE1_COLUMNS
    md = files.report_md.read_text()
    assert "test PR-AUC (%) mean ± 95% CI" in md and "prevalence" in md and "fewer than 3 seeds" in md
    assert "](plots/gains.png)" in md
    page = files.report_html.read_text()
    assert page.count("data:image/png;base64,") == len(files.plots) and "<table>" in page
    assert not list((tmp_path / "report").rglob("*.tmp"))  # atomic writes leave no temp files
    # A table read back from CSV (flags as text, paths as strings) gives the same Table 1.
    back = pd.read_csv(files.trials_csv).assign(early_stopped=lambda d: d["early_stopped"].astype(str))
    pd.testing.assert_frame_equal(build_table1(back), build_table1(study), check_dtype=False)


def test_report_of_search_only_study(study: pd.DataFrame, tmp_path: Path) -> None:
    """An interrupted study (no confirm phase yet) still reports, with empty, flagged cells."""
    search = study[(study["phase"] == "search") & (study["n_moods"] == 9)]
    files = write_report(search, tmp_path, n_boot=50)
    t1 = pd.read_csv(files.table1_csv)
    assert len(t1) == 3 * 2 and (t1["n_seeds"] == 0).all()
    assert t1["note"].str.contains("no runs").all()
    v = pd.read_csv(files.verdicts_csv)
    assert v["verdict"].str.startswith("No verdict").all()


def test_missing_predictions_do_not_crash(study: pd.DataFrame) -> None:
    broken = study.copy()
    broken.loc[broken["role"] == "best", "predictions_path"] = "/nonexistent/preds.npz"
    v = verdicts(broken, n_boot=50)
    cell = _row(v, 3, "artist")
    assert np.isnan(cell["best_gain_p"]) and pd.isna(cell["best_gain_significant"])
    assert np.isfinite(cell["heuristic_gain_p"])  # the other arms still compare
    assert "missing or unreadable" in cell["flags"]


def test_search_progress_follows_launch_order(study: pd.DataFrame) -> None:
    from study.plots import launch_order

    search = study[study["phase"] == "search"]
    shuffled = search.sample(frac=1.0, random_state=0)  # the study's table is sorted by cell and α, not time
    assert list(launch_order(shuffled)["trial_id"]) == list(search["trial_id"])
    renamed = shuffled.assign(trial_id=[f"x{i}" for i in range(len(shuffled))])  # no counter: row order
    assert list(launch_order(renamed)["trial_id"]) == list(renamed["trial_id"])


def test_missing_required_column_is_named(study: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="role"):
        build_table1(study.drop(columns=["role"]))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/report_demo")
    trials = make_study(out / "predictions", n_test=600)
    result = write_report(trials, out, title="Demo α study (simulated)", study_config={"dataset": DATASET, "cells": CELLS})
    print(result.report_html)
