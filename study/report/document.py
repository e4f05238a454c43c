"""The report document (Markdown + HTML) of a study, from the tables the writer computed.

Order: the learning check first (a verdict about models that learned nothing must say so
before anything else), then the primary verdict, the cross-cell α* plot, labels and
splits, one section per cell (curve, Table 1, every verdict row with its family), the
method, the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from study.cells import Cell
from study.config import StudyConfig
from study.report.curves import AlphaStar
from study.report.render import Report, display, fmt, fmt_ci, fmt_p
from study.report.statistics import ADJUST_NAMES


@dataclass
class Parts:
    """Everything the document shows."""

    learning_lines: list[str]
    warning: str
    summary: str
    primary_lines: list[str]
    slope_line: str
    star_png: str
    points: pd.DataFrame
    split: str
    labels: pd.DataFrame
    sections: list[tuple[Cell, Any, Any, Any]]
    table1: pd.DataFrame
    verdicts: pd.DataFrame
    trials: pd.DataFrame


def _ci_column(frame: pd.DataFrame, name: str) -> list[str]:
    return [fmt_ci(m, lo, hi) for m, lo, hi in zip(frame[name], frame[f"{name} low"], frame[f"{name} high"])]


def _cell_section(report: Report, cell: Cell, curve: pd.DataFrame, star: AlphaStar, png: str, p: Parts) -> None:
    if star.bound:
        side = "≥" if star.bound == "lower" else "≤"
        edge = "largest" if star.bound == "lower" else "smallest"
        where = f"a {star.bound} bound: α\\* {side} {fmt(star.limit, 3)} (best arm at the {edge} α of the grid)"
    else:
        where = f"{fmt_ci(star.alpha, star.low, star.high, 3)} ({star.method})"
    report.paragraph(
        f"Heuristic α = {cell.n_mood_labels}/{cell.n_meta} = {fmt(cell.heuristic_alpha, 4)}; "
        f"α\\* on validation (grid arms): {where}."
    )
    report.image(
        f"plots/{png}",
        f"α-response curve of {cell.label}: test PR-AUC (mean, CI over seeds and songs) and validation PR-AUC",
    )
    shown = curve.assign(**{"test PR-AUC": _ci_column(curve, "PR-AUC"), "test ROC-AUC": _ci_column(curve, "ROC-AUC")})
    columns = ["arm", "alpha", "x heuristic", "seeds", "val PR-AUC", "test PR-AUC", "test ROC-AUC", "note"]
    report.table(display(shown[columns], {"alpha": 4}))
    rows1 = p.table1[p.table1["cell"] == cell.label] if not p.table1.empty else p.table1
    if not rows1.empty:
        report.paragraph("Table 1 layout (test set, %, mean [CI] over seeds and test songs):")
        report.table(
            pd.DataFrame(
                {
                    "config": rows1["config"],
                    "N_meta": rows1["N_meta"],
                    "α": [fmt(a, 4) for a in rows1["alpha"]],
                    "songs (test)": rows1["test songs"],
                    "seeds": rows1["seeds"],
                    "ROC-AUC": _ci_column(rows1, "ROC-AUC"),
                    "PR-AUC": _ci_column(rows1, "PR-AUC"),
                }
            )
        )
    rows = p.verdicts[p.verdicts["cell"] == cell.label]
    report.table(
        pd.DataFrame(
            {
                "family": rows["family"],
                "comparison": rows["comparison"],
                "metric": rows["metric"],
                "estimate [CI]": [
                    fmt_ci(e, lo, hi, 2) for e, lo, hi in zip(rows["estimate"], rows["low"], rows["high"])
                ],
                "test": rows["test"],
                "seed df": [fmt(d, 0) for d in rows["seed_df"]],
                "p raw": [fmt_p(v) for v in rows["p_raw"]],
                "p adjusted": [fmt_p(v) for v in rows["p_adjusted"]],
                "MDE": [fmt(m) for m in rows["mde"]],
                "verdict": rows["verdict"],
            }
        )
    )


def _method(study: StudyConfig) -> str:
    r, s, c = study.report, study.search, study.curve
    level = 1.0 - r.confidence
    return (
        f"Search: per cell, Optuna TPE over α = factor × N_mood/N_meta (factor log-uniform in "
        f"[{s.alpha_factor_low:g}, {s.alpha_factor_high:g}], the heuristic first), ASHA rungs per cell, seeds "
        f"{list(s.seeds)}; the tuned α is the best search trial on validation at a fair budget. Curve: per cell "
        f"α = 0, multiples {list(c.grid)} of the heuristic (extended beyond the grid's end, up to "
        f"{getattr(c, 'max_extensions', 0)} times, while α\\* on validation sits at it), the tuned α and the "
        f"learned weight, each over the fresh seeds {list(c.seeds)}. Statistics: every arm of a cell in one "
        "pooled arm × seed model (the seed a shared factor; seed noise with (arms − 1)(seeds − 1) df), combined "
        f"with a song bootstrap clustered by the bootstrap unit ({r.n_boot} resamples, setting "
        f"'{r.bootstrap_unit}'), each component scaled by its own t quantile (Banerjee 1960); 'best α' is "
        f"cross-fitted (each seed's best α chosen on the other seeds' validation scores); α\\* from the grid arms "
        f"only. The declared primary family ({', '.join(r.primary)} on {r.primary_metric}) is adjusted by "
        f"{ADJUST_NAMES.get(r.adjust, r.adjust)} at level {level:g}; every other row is secondary (adjusted in its "
        f"own family, exploratory); equivalence only by TOST with margin ±{r.equivalence_margin:g} points; MDE at "
        f"{r.power:.0%} power and level / family size. All metrics in percent."
    )


def build_report(study: StudyConfig, p: Parts) -> Report:
    """The report document."""
    report = Report(f"α study {study.name!r} on {study.run.dataset.name}")
    report.heading("Did the CNN learn?")
    if p.warning:
        report.paragraph(p.warning)
    for line in p.learning_lines:
        report.paragraph(f"- {line}")
    report.heading("Verdict on the heuristic α = N_mood / N_meta")
    if p.verdicts.empty:
        report.paragraph("No cell has curve runs yet: no verdict.")
    else:
        if p.warning:
            report.paragraph(p.warning.split(". ")[0] + ".")
        report.paragraph(p.summary)
        for line in p.primary_lines:
            report.paragraph(line)
        report.paragraph(p.slope_line)
    if p.star_png:
        report.image(
            f"plots/{p.star_png}",
            "α* (validation, interval over seeds) against N_mood/N_meta, log-log; dashed: the heuristic (identity)",
        )
    if not p.points.empty:
        report.table(display(p.points.drop(columns=[c for c in ("alpha* method",) if c in p.points])))
    report.heading("Labels, splits and artist overlap per cell")
    report.paragraph(p.split)
    report.table(display(p.labels))
    for cell, curve, star, png in p.sections:
        report.heading(f"Cell {cell.label}")
        if curve is None:
            report.paragraph("No usable curve runs (the baseline and the heuristic arm are needed).")
            continue
        _cell_section(report, cell, curve, star, png, p)
    report.heading("Method")
    report.paragraph(_method(study))
    report.heading("Runs")
    report.table(p.trials.groupby(["phase", "status"]).size().reset_index(name="runs"))
    return report


def slope_sentence(fit: Any) -> str:
    """The cross-cell rule in words."""
    import math

    if not math.isfinite(fit.slope):
        return f"No slope across cells: {fit.note}."
    sign = f"- {fmt(abs(fit.slope))}" if fit.slope < 0 else f"+ {fmt(fit.slope)}"
    return (
        rf"Across {fit.n_cells} cells, log α\* = {fmt(fit.intercept)} {sign} · log(N_mood/N_meta); slope "
        f"{fmt_ci(fit.slope, fit.slope_low, fit.slope_high, 2)}, intercept "
        f"{fmt_ci(fit.intercept, fit.intercept_low, fit.intercept_high, 2)} (the heuristic is slope 1, intercept 0). "
        f"{fit.note}".strip()
    )
