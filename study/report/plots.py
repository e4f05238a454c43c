"""The report's figures (matplotlib, Agg backend: no display on a cluster node or in CI).

* :func:`plot_curve` -- one cell's alpha-response curve: test PR-AUC (mean and CI over
  seeds and songs) of every alpha arm on a log axis, the baseline (alpha = 0) as a band,
  the learned weight at the alpha it ended with, the heuristic and alpha* (with its
  validation interval) marked; validation scores in a second panel.
* :func:`plot_alpha_star` -- across cells, alpha* against N_mood / N_meta on log-log axes,
  one point per cell with its interval, the identity line (the heuristic) and the fit.
"""

from __future__ import annotations

import io
import math
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # must precede pyplot: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from study.report.curves import AlphaStar, SlopeFit  # noqa: E402

DPI = 110
COLORS = {
    "curve": "#1b9e77",
    "heuristic": "#d95f02",
    "baseline": "#555555",
    "learned": "#7570b3",
    "star": "#e7298a",
    "tuned": "#66a61e",
}


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure (and close it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_curve(curve: pd.DataFrame, star: AlphaStar, heuristic: float, title: str) -> Figure:
    """PR-AUC (%) vs alpha for one cell (``curve``: the rows of ``tables.curve_table``)."""
    fig, (ax_test, ax_val) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    arms = curve[curve["alpha"] > 0]
    grid = arms[~arms["arm"].isin(["learned"])]
    for ax, column, label in ((ax_test, "PR-AUC", "test"), (ax_val, "val PR-AUC", "validation")):
        if column == "PR-AUC":
            yerr = np.vstack([grid["PR-AUC"] - grid["PR-AUC low"], grid["PR-AUC high"] - grid["PR-AUC"]])
            ax.errorbar(
                grid["alpha"],
                grid["PR-AUC"],
                yerr=np.nan_to_num(yerr),
                fmt="o-",
                color=COLORS["curve"],
                capsize=3,
                label="alpha arms (mean, CI)",
            )
        else:
            ax.plot(grid["alpha"], grid[column], "o-", color=COLORS["curve"], label="alpha arms (mean over seeds)")
        tuned = grid[grid["arm"] == "tuned"]
        if not tuned.empty:
            ax.plot(tuned["alpha"], tuned[column], "s", color=COLORS["tuned"], ms=9, label="tuned alpha (search)")
        base = curve[curve["arm"] == "baseline"]
        if not base.empty:
            row = base.iloc[0]
            ax.axhline(row[column], color=COLORS["baseline"], ls="--", label="baseline (alpha = 0)")
            if column == "PR-AUC" and math.isfinite(row["PR-AUC low"]):
                ax.axhspan(row["PR-AUC low"], row["PR-AUC high"], color=COLORS["baseline"], alpha=0.12)
        learned = curve[curve["arm"] == "learned"]
        if not learned.empty and learned.iloc[0]["alpha"] > 0:
            row = learned.iloc[0]
            err = None
            if column == "PR-AUC" and math.isfinite(row["PR-AUC low"]):
                err = [[row["PR-AUC"] - row["PR-AUC low"]], [row["PR-AUC high"] - row["PR-AUC"]]]
            ax.errorbar(
                [row["alpha"]],
                [row[column]],
                yerr=err,
                fmt="D",
                color=COLORS["learned"],
                capsize=3,
                label="learned weight (at its final alpha)",
            )
        ax.axvline(heuristic, color=COLORS["heuristic"], ls=":", label="heuristic N_mood/N_meta")
        if math.isfinite(star.alpha):
            ax.axvline(star.alpha, color=COLORS["star"], lw=1, label="alpha* (validation)")
            if not (math.isnan(star.low) or math.isnan(star.high)):
                # An interval open to 0 or infinity (alpha* beyond the grid) is drawn to just past the grid.
                lo = star.low if star.low > 0 else float(grid["alpha"].min()) / 3
                hi = star.high if math.isfinite(star.high) else float(grid["alpha"].max()) * 3
                ax.axvspan(lo, hi, color=COLORS["star"], alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("alpha (weight of the metadata loss, log scale)")
        ax.set_ylabel(f"{label} PR-AUC (%)")
        ax.set_title(f"{label}")
        ax.grid(alpha=0.3)
    handles, labels = ax_test.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle(title)
    return fig


def plot_alpha_star(points: pd.DataFrame, fit: SlopeFit) -> Optional[Figure]:
    """alpha* vs N_mood/N_meta (log-log), one point per cell, identity line and fitted line."""
    points = points[np.isfinite(points["alpha*"]) & (points["N_mood / N_meta"] > 0)]
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(6, 5))
    x = points["N_mood / N_meta"].to_numpy(float)
    y = points["alpha*"].to_numpy(float)
    # An end open to 0 or infinity (a bound) has no bar on that side; its marker says the direction.
    low = np.where(np.isfinite(points["alpha* low"]) & (points["alpha* low"] > 0), points["alpha* low"], y)
    high = np.where(np.isfinite(points["alpha* high"]), points["alpha* high"], y)
    bound = points["alpha* bound"].fillna("").to_numpy(str) if "alpha* bound" in points else np.full(len(y), "")
    exact = bound == ""
    ax.errorbar(
        x[exact],
        y[exact],
        yerr=[(y - low)[exact], (high - y)[exact]],
        fmt="o",
        color=COLORS["star"],
        capsize=4,
        label="alpha* per cell",
    )
    for which, marker, text in (
        ("lower", "^", "best at the largest alpha"),
        ("upper", "v", "best at the smallest alpha"),
    ):
        sel = bound == which
        if sel.any():
            ax.plot(x[sel], y[sel], marker, color=COLORS["star"], ms=8, ls="none", label=f"bound: {text}")
    for xi, yi, name in zip(x, y, points["cell"]):
        ax.annotate(name.split(" · ", 1)[-1], (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    span = np.array([min(x.min(), low.min()) / 2, max(x.max(), high.max()) * 2])
    ax.plot(span, span, color=COLORS["heuristic"], ls="--", label="alpha* = N_mood/N_meta (the heuristic)")
    if math.isfinite(fit.slope):
        ax.plot(
            span,
            np.exp(fit.intercept) * span**fit.slope,
            color="#333333",
            label=f"fit: slope {fit.slope:.2f} "
            + (
                f"[{fit.slope_low:.2f}, {fit.slope_high:.2f}]"
                if math.isfinite(fit.slope_low)
                else "(too few cells to test)"
            ),
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N_mood / N_meta (log)")
    ax.set_ylabel("alpha* on validation (log)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Does the heuristic track the best alpha?")
    return fig
