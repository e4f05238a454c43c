"""Power planning: the minimum detectable effect (MDE) each primary comparison of a study
can reach, forecast before any run, and the seeds a target MDE needs.

The forecast uses the report's own model (:mod:`study.report.pooled`,
:mod:`study.report.combine`): a difference of two arms of a cell has a seed component
``2 sigma^2 / S`` with (arms - 1)(S - 1) df (the pooled arm x seed model) and a song
component ``kappa^2 / n_clusters`` with n_clusters - 1 df, combined with Banerjee's rule,
at the level the primary family really uses (level / family size: Holm's first step) and
the configured power. sigma (the SD of one run around its arm and seed effects) and kappa
(the song-level SD of a difference per test cluster) come from a finished **pilot** study
when one is given (its curve runs, through the report's code), else from the config's
declared defaults (``report.plan_run_sd``, ``report.plan_song_sd``).

tests/study/test_power_forecast.py checks the forecast against the MDE the report realizes
in simulated studies at the planned design (within +/- 25 %).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from study.cells import Cell, load_cells, metadata_cells
from study.config import StudyConfig
from study.report.combine import components_mde

MAX_SEEDS = 200


@dataclass(frozen=True)
class VarianceComponents:
    """What a forecast needs: the run SD (points) and the song SD of a difference per test cluster (points)."""

    run_sd: float
    song_sd: float
    source: str  # "declared defaults" or "pilot <path>"


def forecast_mde(
    components: VarianceComponents, n_arms: int, n_seeds: int, n_clusters: int, level: float, power: float
) -> float:
    """The forecast MDE (points) of a difference of two arms of a cell at this design."""
    if n_seeds < 2 or n_arms < 2 or n_clusters < 2:
        return math.nan
    seed = (2.0 * components.run_sd**2 / n_seeds, float((n_arms - 1) * (n_seeds - 1)))
    song = (components.song_sd**2 / n_clusters, float(n_clusters - 1))
    return components_mde([seed, song], level, power)


def seeds_needed(
    components: VarianceComponents, n_arms: int, n_clusters: int, level: float, power: float, target: float
) -> Optional[int]:
    """The fewest seeds whose forecast MDE is at most ``target``; None when the test songs alone forbid it."""
    for s in range(2, MAX_SEEDS + 1):
        if forecast_mde(components, n_arms, s, n_clusters, level, power) <= target:
            return s
    return None


def song_floor(components: VarianceComponents, n_clusters: int, level: float, power: float) -> float:
    """The MDE with infinitely many seeds: what the test songs alone allow."""
    return components_mde([(components.song_sd**2 / n_clusters, float(n_clusters - 1))], level, power)


def curve_arms(study: StudyConfig) -> int:
    """Arms of a metadata cell's curve: the baseline, the grid, the tuned α and the learned weight."""
    c = study.curve
    return 1 + len(c.grid) + int(c.tuned) + int(c.learned)


def family_size(study: StudyConfig, n_cells: int) -> int:
    """Tests in the declared primary family: the per-cell comparisons of every cell, plus the slope."""
    per_cell = sum(1 for name in study.report.primary if name != "slope")
    return per_cell * n_cells + int("slope" in study.report.primary and n_cells >= 2)


def cluster_count(cell: Cell, unit: str) -> int:
    """The song bootstrap's units among the cell's test songs (artists when they share artists with training)."""
    facts = cell.facts
    songs = int(facts.get("songs", {}).get("test", 0))
    overlap = float(facts.get("test_songs_artist_in_train_percent") or 0.0) > 0
    if unit == "artist" or (unit == "auto" and overlap):
        return max(2, int(facts.get("artists_test", songs)))
    return songs


def pilot_components(run_dir: str) -> VarianceComponents:
    """sigma and kappa from a finished study: the median over its cells of the pooled seed model's sigma
    and of the song variance of heuristic - baseline times the cell's test clusters."""
    from mtlmood import storage
    from study.report.bootstrap import arm_draws, cluster_weights, n_clusters
    from study.report.data import cell_evidence
    from study.report.pooled import aligned, contrast_song_variance, fit_seed_model

    trials = pd.read_parquet(io.BytesIO(storage.read_bytes(storage.join(run_dir, "report", "trials.parquet"))))
    study_config = load_pilot_config(run_dir)
    sigmas, kappas = [], []
    for cell in metadata_cells(load_cells(run_dir)):
        e = cell_evidence(trials, cell, run_dir, study_config.report.bootstrap_unit)
        if e is None:
            continue
        weights = cluster_weights(e.clusters, 400, np.random.default_rng(0))
        draws = {k: arm_draws(e.y_true, arm, weights, "pr_auc", k) for k, arm in e.arms.items()}
        model = fit_seed_model(draws)
        v_song, _ = contrast_song_variance(*aligned(draws["heuristic"], draws["baseline"]))
        if math.isfinite(model.resid_var):
            sigmas.append(math.sqrt(model.resid_var))
        if math.isfinite(v_song):
            kappas.append(math.sqrt(v_song * n_clusters(e.clusters)))
    if not sigmas or not kappas:
        raise ValueError(f"pilot study {run_dir} has no cell with curve runs to estimate variance components from")
    return VarianceComponents(float(np.median(sigmas)), float(np.median(kappas)), f"pilot {run_dir}")


def load_pilot_config(run_dir: str) -> StudyConfig:
    """The resolved config a pilot study recorded."""
    from mtlmood import storage
    from study.config import load_study_config
    from study.filenames import STUDY_CONFIG_FILE

    return load_study_config(storage.join(run_dir, STUDY_CONFIG_FILE))


def power_table(study: StudyConfig, cells: dict[str, Cell], components: VarianceComponents) -> pd.DataFrame:
    """Per metadata cell and primary comparison: the forecast MDE at the planned seeds and test clusters,
    and the seeds needed for ``report.target_mde``."""
    r = study.report
    level = 1.0 - r.confidence
    searched = metadata_cells(cells)
    m = max(1, family_size(study, len(searched)))
    n_arms, n_seeds = curve_arms(study), len(study.curve.seeds)
    rows = []
    for cell in searched:
        clusters = cluster_count(cell, r.bootstrap_unit)
        for name in (p for p in r.primary if p != "slope"):
            needed = seeds_needed(components, n_arms, clusters, level / m, r.power, r.target_mde)
            floor = song_floor(components, clusters, level / m, r.power)
            rows.append(
                {
                    "cell": cell.label,
                    "N_mood / N_meta": cell.heuristic_alpha,
                    "comparison": name,
                    "arms": n_arms,
                    "seeds": n_seeds,
                    "test clusters": clusters,
                    "level": level / m,
                    "forecast MDE (points)": forecast_mde(components, n_arms, n_seeds, clusters, level / m, r.power),
                    f"seeds for MDE {r.target_mde:g}": needed
                    if needed is not None
                    else f"unreachable: the test songs alone allow {floor:.2f}",
                }
            )
    return pd.DataFrame(rows)


def print_power(study: StudyConfig, cells: dict[str, Cell], pilot: Optional[str] = None) -> None:
    """Print the power forecast of a study's primary family."""
    r = study.report
    if pilot:
        components = pilot_components(pilot)
    else:
        components = VarianceComponents(r.plan_run_sd, r.plan_song_sd, "declared defaults")
    table = power_table(study, cells, components)
    m = max(1, family_size(study, len(metadata_cells(cells))))
    print(
        f"\npower forecast of the primary family ({', '.join(r.primary)} on {r.primary_metric}; {m} tests, "
        f"{r.adjust} at level {1 - r.confidence:g} -> {(1 - r.confidence) / m:.4g} per test at the first step, "
        f"{r.power:.0%} power); variance components from {components.source}: run SD {components.run_sd:.2f} "
        f"points, song SD {components.song_sd:.1f} points per test cluster:"
    )
    print(table.to_markdown(index=False, floatfmt=".3g") if not table.empty else "(no metadata cells)")
    ratios = sorted({round(c.heuristic_alpha, 6) for c in metadata_cells(cells)})
    print(f"distinct N_mood/N_meta ratios across cells: {len(ratios)} ({', '.join(f'{x:.3g}' for x in ratios)})")
