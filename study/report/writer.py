"""Writes a study's report: tables (CSV), figures (PNG), report.md + report.html, and the
best checkpoint of every cell for serving. Every file is written atomically (a temp file
and a rename, or one object PUT: the run directory may be an object store URI, see
mtlmood.storage), so an interrupted report never leaves half a table; re-running rewrites
it whole. Every path it records is relative to the run directory."""

from __future__ import annotations

import io
import math
import os
from typing import Any, Optional, Union

import numpy as np
import pandas as pd

from mtlmood import storage
from study.cells import Cell, load_cells, metadata_cells
from study.config import StudyConfig
from study.filenames import CURVES_FILE
from study.reference import load_reference
from study.report.bootstrap import chance_pr_auc
from study.report.curves import AlphaStar, SlopeFit, fit_slope
from study.report.data import cell_evidence
from study.report.document import Parts, build_report, slope_sentence
from study.report.families import adjust_study, assign_families, slope_row
from study.report.learning import LearningCheck, check_cell, checks_table, warning_line
from study.report.plots import figure_png, plot_alpha_star, plot_curve
from study.report.serving import write_best_pointer
from study.report.summary import LEARNING_FILE, REPORT_DIR, primary_lines, primary_summary, split_sentence
from study.report.tables import alpha_star_row, arm_estimates, curve_table, labels_table, table1_rows
from study.report.verdicts import BASELINE, cell_verdicts
from study.results import tuned_alpha_factor

Location = Union[str, "os.PathLike[str]"]


def _csv(location: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    storage.write_text(location, buffer.getvalue())


def _parquet(location: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.write_bytes(location, buffer.getvalue())


def _cell_runs(trials: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    """The finished curve runs of a cell and of its mood count's baseline."""
    curve = trials[(trials["phase"] == "curve") & (trials["status"] == "TERMINATED")]
    own = curve["cell"] == cell.key
    base = (curve["arm"] == BASELINE) & (pd.to_numeric(curve["n_moods"], errors="coerce") == cell.n_moods)
    return curve[own | base]


def _cell_sections(
    study: StudyConfig, trials: pd.DataFrame, cells: dict[str, Cell], run_dir: str, plots_dir: str
) -> dict[str, Any]:
    """Evidence, tables, verdicts, learning checks and figures of every metadata cell."""
    r = study.report
    search = trials[trials["phase"] == "search"]
    out: dict[str, Any] = {"curves": [], "table1": [], "verdicts": [], "stars": [], "sections": [], "learning": []}
    units: set[str] = set()
    for index, cell in enumerate(metadata_cells(cells)):
        evidence = cell_evidence(trials, cell, run_dir, r.bootstrap_unit)
        if evidence is None:
            out["sections"].append((cell, None, None, None))
            continue
        units.add(evidence.unit)
        rows, star = cell_verdicts(
            evidence, margin=r.equivalence_margin, n_boot=r.n_boot, seed=index, confidence=r.confidence, power=r.power
        )
        tuned = tuned_alpha_factor(search, cell.key) if not search.empty else None
        estimates = arm_estimates(evidence, r.n_boot, r.confidence)
        curve = curve_table(evidence, cell, tuned, estimates)
        reference = load_reference(run_dir, cell.n_moods)
        out["curves"].append(curve)
        out["table1"].extend(table1_rows(evidence, cell, reference, int(evidence.y_true.shape[0]), estimates))
        out["verdicts"].append(rows)
        out["stars"].append((cell, star, rows))
        out["learning"].append(
            check_cell(
                cell.label,
                estimates[BASELINE]["pr_auc"],
                estimates[BASELINE]["roc_auc"],
                chance_pr_auc(evidence.y_true),
                reference,
                _cell_runs(trials, cell),
                study.run.train.max_epochs,
            )
        )
        png = f"curve-{cell.slug}.png"
        storage.write_bytes(
            storage.join(plots_dir, png), figure_png(plot_curve(curve, star, cell.heuristic_alpha, cell.label))
        )
        out["sections"].append((cell, curve, star, png))
    out["units"] = ", ".join(sorted(units)) or r.bootstrap_unit
    return out


def _slope(stars: list[tuple[Cell, AlphaStar, pd.DataFrame]], confidence: float) -> tuple[pd.DataFrame, SlopeFit]:
    """alpha* of every cell as a table, and the censored slope of log alpha* on log(N_mood / N_meta)."""
    points = pd.DataFrame([alpha_star_row(cell, star, rows) for cell, star, rows in stars])
    ratios = np.log(np.array([cell.heuristic_alpha for cell, _, _ in stars], dtype=float))
    return points, fit_slope(ratios, [star for _, star, _ in stars], confidence=confidence)


def _learning_json(checks: list[LearningCheck], warning: str) -> dict[str, Any]:
    return {
        "warning": warning,
        "learned": all(c.learned for c in checks),
        "statuses": [c.status for c in checks],
        "cells": [c.sentence() for c in checks],
    }


def write_study_report(study: StudyConfig, trials: pd.DataFrame, out_dir: Optional[Location] = None) -> str:
    """Write ``report/`` and ``best_checkpoint.json``; returns the default cell's best checkpoint."""
    run_dir = study.run_dir
    r = study.report
    out = storage.normalize(out_dir) if out_dir is not None else storage.join(run_dir, REPORT_DIR)
    plots_dir = storage.join(out, "plots")
    storage.makedirs(plots_dir)
    cells = load_cells(run_dir)
    _csv(storage.join(out, "trials.csv"), trials)
    _parquet(storage.join(out, "trials.parquet"), trials)
    labels = labels_table(list(cells.values()))
    _csv(storage.join(out, "labels.csv"), labels)

    parts = _cell_sections(study, trials, cells, run_dir, plots_dir)
    points, fit = _slope(parts["stars"], r.confidence)
    verdicts = pd.concat(parts["verdicts"], ignore_index=True) if parts["verdicts"] else pd.DataFrame()
    if not verdicts.empty:
        if len(parts["stars"]) >= 2:  # a slope needs cells to compare; one cell has no slope row at all
            verdicts = pd.concat([verdicts, pd.DataFrame([slope_row(fit, r.primary_metric)])], ignore_index=True)
        verdicts = assign_families(verdicts, r.primary, r.primary_metric)
        verdicts = adjust_study(verdicts, method=r.adjust, level=1 - r.confidence, power=r.power)
    _csv(storage.join(out, "verdicts.csv"), verdicts)
    table1 = pd.DataFrame(parts["table1"])
    _csv(storage.join(out, "table1.csv"), table1)
    curves = pd.concat(parts["curves"], ignore_index=True) if parts["curves"] else pd.DataFrame()
    _csv(storage.join(out, CURVES_FILE), curves)
    _csv(storage.join(out, "alpha_star.csv"), points)
    storage.write_json(
        storage.join(out, "slope.json"),
        {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in vars(fit).items()},
    )
    checks: list[LearningCheck] = parts["learning"]
    warning = warning_line(checks, study.run.train, study.run.model)
    _csv(storage.join(out, "learning.csv"), checks_table(checks))
    storage.write_json(storage.join(out, LEARNING_FILE), _learning_json(checks, warning))
    star_png = ""
    figure = plot_alpha_star(points, fit) if not points.empty else None
    if figure is not None:
        star_png = "alpha-star-vs-heuristic.png"
        storage.write_bytes(storage.join(plots_dir, star_png), figure_png(figure))

    document = Parts(
        learning_lines=[c.sentence() for c in checks],
        warning=warning,
        summary=primary_summary(verdicts, study) if not verdicts.empty else "",
        primary_lines=primary_lines(verdicts) if not verdicts.empty else [],
        slope_line=slope_sentence(fit),
        star_png=star_png,
        points=points,
        split=split_sentence(study, cells, parts["units"]),
        labels=labels,
        sections=parts["sections"],
        table1=table1,
        verdicts=verdicts,
        trials=trials,
    )
    report = build_report(study, document)
    storage.write_text(storage.join(out, "report.md"), report.markdown())
    storage.write_text(storage.join(out, "report.html"), report.html())
    return write_best_pointer(study, trials)
