"""Plots of an alpha study (matplotlib, Agg backend: no display needed on a cluster node).

* :func:`plot_cell` -- per (dataset, n_moods, metadata) cell, PR-AUC (%) vs α on a
  log axis: confirm-phase test scores on the left, search-phase validation
  scores on the right. α = 0 (the baseline) has no place on a log axis, so it is
  drawn as a horizontal line with its 95% CI band.
* :func:`plot_search_progress` -- best-so-far validation PR-AUC vs trial number.
* :func:`plot_gains` -- test PR-AUC gain over baseline with bootstrap CIs, all cells.

Every function returns a Figure (or None when there is nothing to draw);
:func:`render_all` turns them into PNG bytes for the report writer.
"""

from __future__ import annotations

import io
import math
import re
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # must precede pyplot: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from study.report_legacy import ARMS, Cell, cell_heuristic_alpha, cell_n_meta, normalize_trials, report_cells, summarize_arm  # noqa: E402

COLORS = {"baseline": "#555555", "heuristic": "#d95f02", "best": "#1b9e77", "search": "#7570b3"}
ALPHA_AXIS = "α (weight of the metadata loss, log scale)"
DPI = 110


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-").replace("+", "plus") or "x"


def cell_plot_name(cell: Cell) -> str:
    """File name of a cell's plot, e.g. ``cell_mtg-jamendo_3moods_artistplusyear.png``."""
    return f"cell_{_slug(cell[0])}_{cell[1]}moods_{_slug(cell[2])}.png"


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure; the figure is closed (a long study renders many)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _jitter(alpha: float, k: int) -> np.ndarray:
    """Spread k seed points of one α a little sideways (multiplicatively, the axis is log) so none hides another."""
    if k <= 1:
        return np.full(k, alpha)
    return alpha * np.exp(np.linspace(-0.06, 0.06, k))


def _alpha_marks(ax: plt.Axes, heuristic: float, best: float) -> None:
    """Vertical lines at the heuristic and best α (unlabelled: the arm's legend entry names the α)."""
    if np.isfinite(heuristic) and heuristic > 0:
        ax.axvline(heuristic, color=COLORS["heuristic"], ls="--", lw=1.3, zorder=1)
    if np.isfinite(best) and best > 0:
        ax.axvline(best, color=COLORS["best"], ls=":", lw=1.6, zorder=1)


def _baseline_band(ax: plt.Axes, mean: float, low: float, high: float, label: str) -> Optional[tuple]:
    """α = 0 cannot sit on a log axis: draw it as a horizontal line (+ CI band); returns its legend handle."""
    if not np.isfinite(mean):
        return None
    line = ax.axhline(mean, color=COLORS["baseline"], lw=1.4, ls="-.", zorder=2)
    if np.isfinite(low) and np.isfinite(high):
        band = ax.axhspan(low, high, color=COLORS["baseline"], alpha=0.13, lw=0, zorder=0)
        return (band, line), label
    return line, label


def _legend_below(ax: plt.Axes, entries: list, ncol: int = 1) -> None:
    entries = [e for e in entries if e is not None]
    if entries:
        handles, labels = zip(*entries)
        ax.legend(handles, labels, fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol,
                  frameon=False)


def _n_text(n: int) -> str:
    return f"n={n}" + (", no CI" if n == 1 else "")


def plot_cell(trials: pd.DataFrame, cell: Cell, confidence: float = 0.95) -> Figure:
    """PR-AUC (%) vs α for one cell: confirm test scores (left), search validation scores (right)."""
    df = normalize_trials(trials)
    dataset, n_moods, metadata = cell
    s = {arm: summarize_arm(df, cell, arm, confidence) for arm in ARMS}
    heuristic = s["heuristic"].alpha if np.isfinite(s["heuristic"].alpha) else cell_heuristic_alpha(df, cell)
    best = s["best"].alpha
    search = df[(df["phase"] == "search") & (df["dataset"] == dataset) & (df["n_moods"] == n_moods)]
    in_cell = search[search["metadata"] == metadata]
    scored = in_cell[np.isfinite(in_cell["val_pr_auc"].to_numpy()) & (in_cell["alpha"] > 0)]
    zero = search[(search["alpha"] == 0) & np.isfinite(search["val_pr_auc"].to_numpy())]

    fig, (ax_t, ax_v) = plt.subplots(1, 2, figsize=(13, 5.6), sharex=True)

    # Left: confirm phase, test PR-AUC of every seed (small dots) plus mean and CI per arm.
    base = s["baseline"]
    entries_t = [_baseline_band(ax_t, *base.pr, f"baseline α=0: mean ± 95% CI ({_n_text(base.n_seeds)})")]
    for arm, marker, name in (("heuristic", "o", "heuristic α = N_mood/N_meta"), ("best", "s", "best α found on val")):
        a = s[arm]
        if a.n_seeds == 0 or not np.isfinite(a.alpha) or a.alpha <= 0:
            continue
        y = a.usable["test_pr_auc"].to_numpy()
        ax_t.scatter(_jitter(a.alpha, len(y)), y, color=COLORS[arm], marker=marker, s=22, alpha=0.5, zorder=3)
        mean, low, high = a.pr
        yerr = None if not np.isfinite(low) else [[mean - low], [high - mean]]
        handle = ax_t.errorbar([a.alpha], [mean], yerr=yerr, color=COLORS[arm], marker="D", ms=7, capsize=5,
                               lw=2, zorder=4)
        entries_t.append((handle, f"{name} = {a.alpha:.3g}: mean ± 95% CI ({_n_text(a.n_seeds)})"))
    _alpha_marks(ax_t, heuristic, best)
    ax_t.set_title("Confirm phase: test PR-AUC (dots: seeds)")
    ax_t.set_ylabel("test PR-AUC (%)")
    if not (base.n_seeds or s["heuristic"].n_seeds or s["best"].n_seeds):
        ax_t.text(0.5, 0.5, "no usable confirm-phase runs", transform=ax_t.transAxes, ha="center", va="center",
                  color="#888")

    # Right: search phase, validation PR-AUC (early-stopped trials hollow: their score is from fewer epochs).
    finished = scored[~scored["early_stopped"]]
    stopped = scored[scored["early_stopped"]]
    entries_v: list = []
    if len(finished):
        h = ax_v.scatter(finished["alpha"], finished["val_pr_auc"], color=COLORS["search"], s=30, alpha=0.8, zorder=3)
        entries_v.append((h, f"search trial, finished (n={len(finished)})"))
    if len(stopped):
        h = ax_v.scatter(stopped["alpha"], stopped["val_pr_auc"], facecolors="none", edgecolors=COLORS["search"],
                         s=30, zorder=3)
        entries_v.append((h, f"search trial, stopped early (n={len(stopped)})"))
    if len(zero):
        entries_v.append(_baseline_band(ax_v, float(zero["val_pr_auc"].mean()), math.nan, math.nan,
                                        f"α=0 search trials: mean (n={len(zero)})"))
    _alpha_marks(ax_v, heuristic, best)
    if np.isfinite(heuristic) and heuristic > 0:
        entries_v.append((plt.Line2D([], [], color=COLORS["heuristic"], ls="--"), f"heuristic α = {heuristic:.3g}"))
    if np.isfinite(best) and best > 0:
        entries_v.append((plt.Line2D([], [], color=COLORS["best"], ls=":", lw=1.6), f"best α found = {best:.3g}"))
    n_err = int((in_cell["status"] == "ERROR").sum())
    ax_v.set_title("Search phase: validation PR-AUC per trial" + (f" ({n_err} errored, not shown)" if n_err else ""))
    ax_v.set_ylabel("validation PR-AUC (%)")
    if not len(scored):
        ax_v.text(0.5, 0.5, "no scored search trials with α > 0", transform=ax_v.transAxes, ha="center", va="center",
                  color="#888")

    # A log axis needs positive limits even when only one α (or none) was run.
    alphas = [a for a in [heuristic, best, *scored["alpha"].tolist()] if np.isfinite(a) and a > 0]
    lo, hi = (min(alphas), max(alphas)) if alphas else (0.01, 1.0)
    for ax in (ax_t, ax_v):
        ax.set_xscale("log")
        ax.set_xlim(lo / 2.5, hi * 2.5)
        ax.set_xlabel(ALPHA_AXIS)
        ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax_t, entries_t)
    _legend_below(ax_v, entries_v, ncol=2)
    n_meta = cell_n_meta(df, cell)
    fig.suptitle(f"{dataset} · {n_moods} moods · metadata: {metadata} (N_meta = {n_meta})", fontsize=13)
    fig.tight_layout()
    return fig


def launch_order(trials: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted in the order the search launched them, numbered 1.. in ``trial_no``.

    The trial table is sorted by cell and α, not by time, so the order comes from
    (first that applies) a ``trial_number`` column, the running counter Ray Tune
    puts at the end of trial ids (``..._00012``), or else the row order.
    """
    df = trials.copy()
    if "trial_number" in df.columns and df["trial_number"].notna().all():
        key = pd.to_numeric(df["trial_number"], errors="coerce")
    else:
        suffix = df["trial_id"].astype(str).str.extract(r"(\d+)$")[0]
        key = pd.to_numeric(suffix, errors="coerce") if suffix.notna().all() else pd.Series(np.arange(len(df)), df.index)
    df = df.assign(_key=key.to_numpy()).sort_values("_key", kind="stable").drop(columns="_key").reset_index(drop=True)
    df["trial_no"] = np.arange(1, len(df) + 1)
    return df


def plot_search_progress(trials: pd.DataFrame) -> Optional[Figure]:
    """Best-so-far validation PR-AUC (%) vs search trial number, one panel per (dataset, n_moods).

    Trials are numbered in launch order (:func:`launch_order`). Panels are
    separate because PR-AUC's chance level depends on the mood set, so curves of
    different n_moods are not comparable.
    """
    df = normalize_trials(trials)
    search = df[df["phase"] == "search"]
    if search.empty:
        return None
    search = launch_order(search)
    groups = sorted({(d, int(n)) for d, n in search[["dataset", "n_moods"]].itertuples(index=False)})
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 5.2), squeeze=False)
    order = {"none": 0, "artist": 1, "year": 2, "artist+year": 3}
    for ax, (dataset, n_moods) in zip(axes[0], groups):
        g = search[(search["dataset"] == dataset) & (search["n_moods"] == n_moods)]
        for i, metadata in enumerate(sorted(g["metadata"].unique(), key=lambda m: (order.get(m, 99), m))):
            m = g[g["metadata"] == metadata]
            val = m["val_pr_auc"].to_numpy(dtype=float)
            color = COLORS["baseline"] if metadata == "none" else plt.get_cmap("tab10")(i)
            stopped = m["early_stopped"].to_numpy()
            ok = np.isfinite(val)
            ax.scatter(m["trial_no"][ok & ~stopped], val[ok & ~stopped], color=color, s=16, alpha=0.45)
            ax.scatter(m["trial_no"][ok & stopped], val[ok & stopped], facecolors="none", edgecolors=color, s=16,
                       alpha=0.7)
            # The line follows the selection rule (finished trials only); errored or stopped
            # trials carry the best so far forward instead of breaking the line.
            best_so_far = pd.Series(np.where(stopped, np.nan, val)).cummax().ffill().to_numpy()
            label = "no metadata (α=0)" if metadata == "none" else f"metadata: {metadata}"
            # Extend the last plateau to the panel's last trial: "nothing better found since".
            x = np.append(m["trial_no"].to_numpy(), g["trial_no"].max())
            ax.step(x, np.append(best_so_far, best_so_far[-1]), where="post", color=color, lw=2,
                    label=f"{label} (n={len(m)})")
        ax.set_title(f"{dataset} · {n_moods} moods")
        ax.set_xlabel("search trial number (all cells, launch order)")
        ax.set_ylabel("validation PR-AUC (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle("Search progress: lines = best-so-far validation PR-AUC of finished trials per cell;\n"
                 "dots = each trial (hollow: stopped early)", fontsize=11.5)
    fig.tight_layout()
    return fig


def plot_gains(verdicts: pd.DataFrame) -> Optional[Figure]:
    """Test-metric gain over baseline (points) of heuristic and best α per cell, with paired-bootstrap 95% CIs."""
    if verdicts is None or verdicts.empty:
        return None
    v = verdicts.reset_index(drop=True)
    labels = [f"{r.dataset} · {r.n_moods} moods · {r.metadata}" for r in v.itertuples(index=False)]
    metric = {"pr_auc": "PR-AUC", "roc_auc": "ROC-AUC"}.get(str(v["metric"].iloc[0]), "metric")
    fig, ax = plt.subplots(figsize=(9, 1.1 + 0.75 * len(v)))
    y = np.arange(len(v))
    for offset, arm, marker in ((-0.15, "heuristic", "o"), (0.15, "best", "s")):
        gain = v[f"{arm}_gain_pts"].to_numpy(dtype=float)
        low = v[f"{arm}_gain_ci_low"].to_numpy(dtype=float)
        high = v[f"{arm}_gain_ci_high"].to_numpy(dtype=float)
        has_ci = np.isfinite(low) & np.isfinite(high) & np.isfinite(gain)
        err = np.vstack([np.where(has_ci, gain - low, 0), np.where(has_ci, high - gain, 0)])
        ok = np.isfinite(gain)
        ax.errorbar(gain[ok], y[ok] + offset, xerr=err[:, ok], fmt=marker, color=COLORS[arm], capsize=4, ms=7,
                    label="heuristic α" if arm == "heuristic" else "best α found")
    ax.axvline(0, color="#333", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()  # first cell on top, like the tables
    ax.set_xlabel(f"test {metric} gain over baseline (percentage points), paired-bootstrap 95% CI")
    ax.set_title(f"Does metadata help? Test {metric} gain over the α=0 baseline")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="best")
    fig.tight_layout()
    return fig


def render_all(trials: pd.DataFrame, verdicts: pd.DataFrame) -> list[tuple[str, bytes]]:
    """Every report plot as (file name, PNG bytes): gains.png, one cell_*.png per cell, search_progress.png."""
    df = normalize_trials(trials)
    out: list[tuple[str, bytes]] = []
    gains = plot_gains(verdicts)
    if gains is not None:
        out.append(("gains.png", figure_png(gains)))
    for cell in report_cells(df):
        out.append((cell_plot_name(cell), figure_png(plot_cell(df, cell))))
    progress = plot_search_progress(df)
    if progress is not None:
        out.append(("search_progress.png", figure_png(progress)))
    return out
