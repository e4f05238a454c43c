"""Writes a study's report: tables (CSV), figures (PNG), report.md + report.html, and the
best checkpoint of every cell for serving. Every file is written atomically (a temp file
and a rename, or one object PUT: the run directory may be an object store URI, see
mtlmood.storage), so an interrupted report never leaves half a table; re-running rewrites
it whole. Every path it records is relative to the run directory."""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd

from mtlmood import storage
from mtlmood.checkpoint import CARD_FILE
from mtlmood.filenames import BEST_CHECKPOINTS_FILE
from mtlmood.model_card import CURVES_FILE, STUDY_CONFIG_FILE, write_study_model_cards
from study.cells import Cell, metadata_cells
from study.config import StudyConfig
from study.reference import load_reference
from study.report.curves import AlphaStar, SlopeFit, fit_slope
from study.report.data import cell_evidence
from study.report.plots import figure_png, plot_alpha_star, plot_curve
from study.report.render import Report, display, fmt, fmt_ci, fmt_p
from study.report.tables import alpha_star_row, arm_estimates, curve_table, labels_table, table1_rows
from study.report.verdicts import adjust_study, cell_verdicts
from study.results import tuned_alpha_factor

REPORT_DIR = "report"
Location = Union[str, "os.PathLike[str]"]


def _csv(location: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    storage.write_text(location, buffer.getvalue())


def _parquet(location: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.write_bytes(location, buffer.getvalue())


# ------------------------------------------------------------------ serving pointer
def best_per_cell(trials: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per cell (baselines included), the finished run with the best *validation* PR-AUC."""
    usable = trials[(trials["checkpoint_path"].fillna("") != "") & trials["val_pr_auc"].notna()]
    best: dict[str, dict[str, Any]] = {}
    for key, rows in usable.groupby("cell"):
        row = rows.loc[rows["val_pr_auc"].idxmax()]
        best[str(key)] = {
            "checkpoint": row["checkpoint_path"],
            "arm": row["arm"],
            "phase": row["phase"],
            "alpha": float(row["alpha"]),
            "seed": int(row["seed"]),
            "n_moods": int(row["n_moods"]),
            "metadata": row["metadata"],
            "val_pr_auc": float(row["val_pr_auc"]),
            "test_pr_auc": float(row["test_pr_auc"]),
            "test_roc_auc": float(row["test_roc_auc"]),
        }
    return best


def default_serve_cell(study: StudyConfig, best: dict[str, dict[str, Any]]) -> Optional[str]:
    """The cell to serve: the config's ``report.serve_cell``, else the largest mood count with
    the metadata set (baseline included) whose best model scored highest on validation.
    Only cells of one mood count are compared: their PR-AUC shares a scale."""
    if study.report.serve_cell:
        return study.report.serve_cell if study.report.serve_cell in best else None
    for n_moods in sorted((int(n) for n in study.search.n_moods), reverse=True):
        same = {k: v for k, v in best.items() if v["n_moods"] == n_moods}
        if same:
            return max(same, key=lambda k: same[k]["val_pr_auc"])
    return None


def _write_model_cards(run_dir: str, best: dict[str, dict[str, Any]]) -> None:
    """MODEL_CARD.md beside each cell's best checkpoint (mtlmood.model_card reads and writes
    local files: a study on an object store gets them rendered from a local copy of the
    files they come from, then uploaded, with the copy's path replaced by the URI)."""
    if not storage.is_uri(run_dir):
        write_study_model_cards(run_dir)
        return
    needed = [BEST_CHECKPOINTS_FILE, STUDY_CONFIG_FILE, CURVES_FILE.as_posix()]
    needed += [f"{entry['checkpoint']}/{CARD_FILE}" for entry in best.values()]
    with tempfile.TemporaryDirectory(prefix="mtlmood-cards-") as tmp:
        mirror = Path(tmp)
        for relative in needed:
            try:
                data = storage.read_bytes(storage.join(run_dir, relative))
            except FileNotFoundError:
                continue
            (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
            (mirror / relative).write_bytes(data)
        for card in write_study_model_cards(mirror):
            text = card.read_text(encoding="utf-8").replace(str(mirror), run_dir)
            storage.write_text(storage.join(run_dir, card.relative_to(mirror).as_posix()), text)


def write_best_pointer(study: StudyConfig, trials: pd.DataFrame) -> str:
    """``<run>/best_checkpoint.json``: the best model of every cell (paths relative to the run
    directory), and the default one to serve; returns where the default one is."""
    run_dir = study.run_dir
    best = best_per_cell(trials)
    default = default_serve_cell(study, best)
    if default is None:
        return ""
    storage.write_json(
        storage.join(run_dir, BEST_CHECKPOINTS_FILE),
        {
            "default_cell": default,
            "checkpoint": best[default]["checkpoint"],
            "selected_by": "highest validation PR-AUC (%) within each cell; cells are never ranked against each other",
            "cells": best,
        },
    )
    _write_model_cards(run_dir, best)  # MODEL_CARD.md beside each cell's best checkpoint
    return storage.join(run_dir, best[default]["checkpoint"])


# ------------------------------------------------------------------ report
def _cell_sections(
    study: StudyConfig, trials: pd.DataFrame, cells: dict[str, Cell], run_dir: str, plots_dir: str
) -> dict[str, Any]:
    """Evidence, tables, verdicts and figures of every metadata cell."""
    r = study.report
    search = trials[trials["phase"] == "search"]
    out: dict[str, Any] = {"curves": [], "table1": [], "verdicts": [], "stars": [], "sections": [], "draws": []}
    for index, cell in enumerate(metadata_cells(cells)):
        evidence = cell_evidence(trials, cell, run_dir, r.bootstrap_unit)
        if evidence is None:
            out["sections"].append((cell, None, None, None))
            continue
        rows, star = cell_verdicts(
            evidence, margin=r.equivalence_margin, n_boot=r.n_boot, seed=index, confidence=r.confidence, power=r.power
        )
        tuned = tuned_alpha_factor(search, cell.key) if not search.empty else None
        estimates = arm_estimates(evidence, r.n_boot, r.confidence)
        curve = curve_table(evidence, cell, tuned, estimates)
        reference = load_reference(run_dir, cell.n_moods)
        n_test = int(evidence.y_true.shape[0])
        out["curves"].append(curve)
        out["table1"].extend(table1_rows(evidence, cell, reference, n_test, estimates))
        out["verdicts"].append(rows)
        out["stars"].append((cell, star, rows))
        png = f"curve-{cell.slug}.png"
        storage.write_bytes(
            storage.join(plots_dir, png), figure_png(plot_curve(curve, star, cell.heuristic_alpha, cell.label))
        )
        out["sections"].append((cell, curve, star, png))
    return out


def _slope(stars: list[tuple[Cell, AlphaStar, pd.DataFrame]], confidence: float) -> tuple[pd.DataFrame, SlopeFit]:
    points = pd.DataFrame([alpha_star_row(cell, star, rows) for cell, star, rows in stars])
    if points.empty:
        return points, fit_slope(np.empty(0), np.empty((0, 0)), np.empty(0), confidence)
    width = max((s.draws.size for _, s, _ in stars), default=0)
    draws = np.full((len(stars), width), np.nan)
    for i, (_, star, _) in enumerate(stars):
        draws[i, : star.draws.size] = star.draws
    fit = fit_slope(
        np.log(points["N_mood / N_meta"].to_numpy(float)), draws, np.log(points["alpha*"].to_numpy(float)), confidence
    )
    return points, fit


def _split_sentence(study: StudyConfig, cells: dict[str, Cell]) -> str:
    """How songs were split, and whether test artists were seen in training."""
    split = study.run.split
    if split.method == "official":
        how = f"the dataset's official split {split.official_split}"
    else:
        test = 1 - split.train_fraction - split.validation_fraction
        how = (
            f"a random song-level split {split.train_fraction:.0%}/{split.validation_fraction:.0%}/{test:.0%} "
            f"(seed {split.seed}; clips of one track stay together)"
        )
    values = [c.facts.get("test_songs_artist_in_train_percent") for c in cells.values()]
    shares = sorted({round(float(v)) for v in values if isinstance(v, (int, float))})
    if shares and shares[-1] == 0:
        overlap = "artist-disjoint: no test song is by an artist seen in training"
    elif shares:
        span = f"{shares[0]}" if len(shares) == 1 else f"{shares[0]}-{shares[-1]}"
        overlap = f"{span} % of test songs are by an artist seen in training"
    else:
        overlap = "artist overlap unknown (no artist metadata)"
    return (
        f"Split: {how}; {overlap}. Artist and year classes (N_meta) come from the training songs only, "
        "so the heuristic N_mood/N_meta counts classes the model can learn."
    )


def _budget_warning(trials: pd.DataFrame, study: StudyConfig) -> str:
    """Say so when the curve's runs mostly ran out of epochs instead of stopping early."""
    curve = trials[(trials["phase"] == "curve") & (trials["status"] == "TERMINATED")]
    if curve.empty:
        return ""
    capped = float((~curve["early_stopped"].astype(bool)).mean())
    best_last = float((curve["best_epoch"] >= curve["epochs"]).mean())
    if capped > 0.5 and best_last > 0.3:
        return (
            f"**Budget warning.** {capped:.0%} of the curve's runs used all {study.run.train.max_epochs} "
            f"epochs without early stopping and {best_last:.0%} had their best epoch last: these models were "
            f"still learning. Differences between arms may change with a larger budget "
            f"(`run.train.max_epochs`, `run.train.max_batches_per_epoch`)."
        )
    return ""


def _count_phrase(rows: pd.DataFrame, verdict_start: str) -> int:
    return int(rows["verdict"].astype(str).str.startswith(verdict_start).sum())


def _summary(points: pd.DataFrame, fit: SlopeFit, verdicts: pd.DataFrame, margin: float) -> str:
    """One paragraph a reader can quote: what the cells say about the heuristic, with the
    sizes the study could have detected."""
    pr = verdicts[verdicts["metric"] == "pr_auc"]
    n_cells = pr["cell"].nunique()
    gain = pr[(pr["comparison"] == "heuristic - baseline") & (pr["test"] == "difference")]
    regret = pr[(pr["comparison"] == "best alpha - heuristic") & (pr["test"] == "difference")]
    tost = pr[(pr["comparison"] == "best alpha - heuristic") & (pr["test"] != "difference")]
    learned = pr[(pr["comparison"] == "learned - heuristic") & (pr["test"] == "difference")]
    parts = [
        f"Over {n_cells} cell(s), the heuristic α = N_mood/N_meta gave a significant test PR-AUC gain over the "
        f"baseline in {_count_phrase(gain, 'significant gain')}, a significant loss in "
        f"{_count_phrase(gain, 'significant loss')}",
        f"its regret against the best α (chosen on validation, cross-fitted) was significant in "
        f"{_count_phrase(regret, 'significant')}, and equivalence within ±{margin:g} points was shown in "
        f"{_count_phrase(tost, 'equivalent')}",
    ]
    if not learned.empty:
        parts.append(
            f"the learned weight differed significantly from the heuristic in {_count_phrase(learned, 'significant')}"
        )
    mdes = pd.to_numeric(regret["mde"], errors="coerce").dropna()
    text = "; ".join(parts) + " (Holm-adjusted over the whole report)."
    if not mdes.empty:
        text += (
            f" Differences smaller than {mdes.min():.1f}-{mdes.max():.1f} points (the minimum detectable regret at "
            "80 % power) could not have been detected here: 'no significant difference' is not 'no difference'."
        )
    edges = int(points["at edge of grid"].astype(bool).sum()) if not points.empty else 0
    if edges:
        text += rf" α\* lies at the edge of the curve's grid in {edges} of {len(points)} cell(s): there it is a bound."
    return text


def _signed(value: float) -> str:
    return f"- {fmt(abs(value))}" if value < 0 else f"+ {fmt(value)}"


def _headline(points: pd.DataFrame, fit: SlopeFit, verdicts: pd.DataFrame, margin: float) -> list[str]:
    lines = [_summary(points, fit, verdicts, margin)]
    if math.isfinite(fit.slope):
        lines.append(
            rf"Across {fit.n_cells} cells, log α\* = {fmt(fit.intercept)} {_signed(fit.slope)} · "
            f"log(N_mood/N_meta); slope {fmt_ci(fit.slope, fit.slope_low, fit.slope_high, 2)}, intercept "
            f"{fmt_ci(fit.intercept, fit.intercept_low, fit.intercept_high, 2)} (the heuristic is slope 1, "
            f"intercept 0). {fit.note}".strip()
        )
    else:
        lines.append(f"No slope across cells: {fit.note}.")
    for _, row in verdicts[(verdicts["metric"] == "pr_auc")].iterrows():
        if row["comparison"] in ("heuristic - baseline", "best alpha - heuristic", "learned - heuristic"):
            lines.append(
                f"- {row['cell']}: {row['comparison']} = {fmt_ci(row['estimate'], row['low'], row['high'])} "
                f"PR-AUC points ({row['test']}, p adj {fmt_p(row['p_adjusted'])}): **{row['verdict']}**"
            )
    return lines


def write_study_report(study: StudyConfig, trials: pd.DataFrame, out_dir: Optional[Location] = None) -> str:
    """Write ``report/`` and ``best_checkpoint.json``; returns the default cell's best checkpoint."""
    from study.runner import load_cells

    run_dir = study.run_dir
    out = storage.normalize(out_dir) if out_dir is not None else storage.join(run_dir, REPORT_DIR)
    plots_dir = storage.join(out, "plots")
    storage.makedirs(plots_dir)
    cells = load_cells(run_dir)
    _csv(storage.join(out, "trials.csv"), trials)
    _parquet(storage.join(out, "trials.parquet"), trials)
    labels = labels_table(list(cells.values()))
    _csv(storage.join(out, "labels.csv"), labels)

    parts = _cell_sections(study, trials, cells, run_dir, plots_dir)
    verdicts = pd.concat(parts["verdicts"], ignore_index=True) if parts["verdicts"] else pd.DataFrame()
    if not verdicts.empty:
        verdicts = adjust_study(verdicts, method=study.report.adjust, level=1 - study.report.confidence)
    _csv(storage.join(out, "verdicts.csv"), verdicts)
    table1 = pd.DataFrame(parts["table1"])
    _csv(storage.join(out, "table1.csv"), table1)
    curves = pd.concat(parts["curves"], ignore_index=True) if parts["curves"] else pd.DataFrame()
    _csv(storage.join(out, "curves.csv"), curves)
    points, fit = _slope(parts["stars"], study.report.confidence)
    _csv(storage.join(out, "alpha_star.csv"), points)
    storage.write_json(
        storage.join(out, "slope.json"),
        {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in vars(fit).items()},
    )
    star_png = ""
    figure = plot_alpha_star(points, fit) if not points.empty else None
    if figure is not None:
        star_png = "alpha-star-vs-heuristic.png"
        storage.write_bytes(storage.join(plots_dir, star_png), figure_png(figure))

    report = Report(f"α study {study.name!r} on {study.run.dataset.name}")
    report.heading("Verdict on the heuristic α = N_mood / N_meta")
    for line in (
        _headline(points, fit, verdicts, study.report.equivalence_margin)
        if not verdicts.empty
        else ["No cell has curve runs yet: no verdict."]
    ):
        report.paragraph(line)
    if star_png:
        report.image(
            f"plots/{star_png}",
            "α* (validation, interval over seeds) against N_mood/N_meta, log-log; dashed: the heuristic (identity)",
        )
    if not points.empty:
        report.table(display(points.drop(columns=["alpha* method"])))
    warning = _budget_warning(trials, study)
    if warning:
        report.paragraph(warning)
    report.heading("Labels, splits and artist overlap per cell")
    report.paragraph(_split_sentence(study, cells))
    report.table(display(labels))
    for cell, curve, star, png in parts["sections"]:
        report.heading(f"Cell {cell.label}")
        if curve is None:
            report.paragraph("No usable curve runs (the baseline and the heuristic arm are needed).")
            continue
        report.paragraph(
            f"Heuristic α = {cell.n_mood_labels}/{cell.n_meta} = {fmt(cell.heuristic_alpha, 4)}; "
            f"α\\* on validation = {fmt_ci(star.alpha, star.low, star.high, 3)} ({star.method}"
            f"{', at the edge of the grid: a bound' if star.at_edge else ''})."
        )
        report.image(
            f"plots/{png}",
            f"α-response curve of {cell.label}: test PR-AUC (mean, CI over seeds and songs) and validation PR-AUC",
        )
        shown = curve.assign(
            **{
                "test PR-AUC": [
                    fmt_ci(m, lo, hi) for m, lo, hi in zip(curve["PR-AUC"], curve["PR-AUC low"], curve["PR-AUC high"])
                ],
                "test ROC-AUC": [
                    fmt_ci(m, lo, hi)
                    for m, lo, hi in zip(curve["ROC-AUC"], curve["ROC-AUC low"], curve["ROC-AUC high"])
                ],
            }
        )
        report.table(
            display(
                shown[["arm", "alpha", "x heuristic", "seeds", "val PR-AUC", "test PR-AUC", "test ROC-AUC", "note"]],
                {"alpha": 4},
            )
        )
        cell_table1 = table1[table1["cell"] == cell.label] if not table1.empty else table1
        if not cell_table1.empty:
            report.paragraph("Table 1 layout (test set, %, mean [CI] over seeds and test songs):")
            report.table(
                pd.DataFrame(
                    {
                        "config": cell_table1["config"],
                        "N_meta": cell_table1["N_meta"],
                        "α": [fmt(a, 4) for a in cell_table1["alpha"]],
                        "songs (test)": cell_table1["test songs"],
                        "seeds": cell_table1["seeds"],
                        "ROC-AUC": [
                            fmt_ci(m, lo, hi)
                            for m, lo, hi in zip(
                                cell_table1["ROC-AUC"], cell_table1["ROC-AUC low"], cell_table1["ROC-AUC high"]
                            )
                        ],
                        "PR-AUC": [
                            fmt_ci(m, lo, hi)
                            for m, lo, hi in zip(
                                cell_table1["PR-AUC"], cell_table1["PR-AUC low"], cell_table1["PR-AUC high"]
                            )
                        ],
                    }
                )
            )
        rows = verdicts[verdicts["cell"] == cell.label]
        report.table(
            pd.DataFrame(
                {
                    "comparison": rows["comparison"],
                    "metric": rows["metric"],
                    "estimate [CI]": [
                        fmt_ci(e, lo, hi, 2) for e, lo, hi in zip(rows["estimate"], rows["low"], rows["high"])
                    ],
                    "test": rows["test"],
                    "p raw": [fmt_p(p) for p in rows["p_raw"]],
                    "p adjusted": [fmt_p(p) for p in rows["p_adjusted"]],
                    "MDE": [fmt(m) for m in rows["mde"]],
                    "verdict": rows["verdict"],
                }
            )
        )
    report.heading("Method")
    report.paragraph(
        f"Search: per cell, Optuna TPE over α = factor × N_mood/N_meta (factor log-uniform in "
        f"[{study.search.alpha_factor_low:g}, {study.search.alpha_factor_high:g}], the heuristic first), ASHA "
        f"rungs per cell, seeds {list(study.search.seeds)}; the tuned α is the best search trial on validation. "
        f"Curve: per cell α = 0, multiples {list(study.curve.grid)} of the heuristic, the tuned α and the learned "
        f"weight, each over the fresh seeds {list(study.curve.seeds)}, every run to its own early stop. "
        f"Statistics: hierarchical bootstrap over seeds and test songs ({study.report.n_boot} resamples, unit: "
        f"{study.report.bootstrap_unit}); the seed and song variance components each scaled by their own t "
        f"quantile (Banerjee 1960; conservative with 3 seeds, the effective df is reported); "
        f"'best α' is cross-fitted (each seed's best α is chosen on the other seeds' validation scores); "
        f"p-values adjusted over the whole report ({study.report.adjust}); equivalence only by TOST with margin "
        f"±{study.report.equivalence_margin:g} PR-AUC points; MDE at {study.report.power:.0%} power. "
        f"All metrics in percent."
    )
    report.heading("Runs")
    counts = trials.groupby(["phase", "status"]).size().reset_index(name="runs")
    report.table(counts)
    storage.write_text(storage.join(out, "report.md"), report.markdown())
    storage.write_text(storage.join(out, "report.html"), report.html())
    return write_best_pointer(study, trials)


def _read_optional(location: str) -> Optional[bytes]:
    try:
        return storage.read_bytes(location)
    except FileNotFoundError:
        return None


def verdict_summary(run_dir: Location) -> str:
    """The verdict lines of a written report, for the terminal."""
    verdicts = _read_optional(storage.join(run_dir, REPORT_DIR, "verdicts.csv"))
    slope = _read_optional(storage.join(run_dir, REPORT_DIR, "slope.json"))
    lines = []
    if slope is not None:
        fit = json.loads(slope)
        if fit.get("slope") is not None:
            lines.append(
                f"alpha* vs N_mood/N_meta: slope {fit['slope']:.2f} "
                f"[{fit.get('slope_low') or float('nan'):.2f}, {fit.get('slope_high') or float('nan'):.2f}]"
                f" (1 = the heuristic tracks the optimum)"
            )
        elif fit.get("note"):
            lines.append(f"alpha* vs N_mood/N_meta: {fit['note']}")
    if verdicts is not None and len(verdicts) > 1:
        v = pd.read_csv(io.BytesIO(verdicts))
        for _, row in v[v["metric"] == "pr_auc"].iterrows():
            lines.append(
                f"{row['cell']}: {row['comparison']} {row['estimate']:+.2f} "
                f"[{row['low']:+.2f}, {row['high']:+.2f}] PR-AUC points -> {row['verdict']}"
            )
    return "\n".join(lines)
