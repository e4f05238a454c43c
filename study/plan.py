"""`mtlmood study plan CONFIG`: the study's cells and planned trials, printed without training.

Reads only the dataset's metadata (labels, artists, splits): no audio, no features, no Ray
cluster. A reviewer sees before any GPU-hour is spent what each cell is (mood labels,
metadata classes from training songs, the heuristic alpha, songs per split, artist
overlap), how the budget is spread (every cell gets its own search budget) and what it
costs in GPU-hours at the configured packing (study.forecast).
"""

from __future__ import annotations

import pandas as pd

from study.cells import Cell, cell_key, metadata_cells, study_cells
from study.config import StudyConfig
from study.curve_jobs import curve_trials, seed_chunks
from study.report.tables import labels_table


def plan_table(study: StudyConfig, cells: dict[str, Cell] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cells table, trials table) of a study config: one row per baseline (per mood count,
    shared by its metadata cells) and per metadata cell (a metadata set at an artist count,
    see study.cells), with its N_mood / N_meta; "extension runs" is the most that extending
    the grid beyond its end (curve.max_extensions rounds) can add to the cell."""
    from study.results import arm_name

    cells = cells if cells is not None else study_cells(study)
    labels = labels_table(list(cells.values()))
    rows = []
    curve_seeds = len(study.curve.seeds) if study.curve.enabled else 0
    for n in study.search.n_moods:
        rows.append(
            {
                "cell": cells[cell_key(n, "none")].label,
                "search trials": 0,
                "N_mood/N_meta": "",
                "curve arms": "alpha = 0 (baseline)",
                "curve runs": curve_seeds,
                "curve trials": _curve_trial_count(study, cell_key(n, "none"), ["baseline"]),
                "extension runs": 0,
            }
        )
    extension_runs = study.curve.max_extensions * curve_seeds if len(study.curve.grid) > 1 else 0
    for cell in metadata_cells(cells):
        arms = [arm_name(f) for f in study.curve.grid]
        arms += (["tuned"] if study.curve.tuned else []) + (["learned"] if study.curve.learned else [])
        rows.append(
            {
                "cell": cell.label,
                "N_mood/N_meta": round(cell.heuristic_alpha, 4),
                "search trials": study.search.trials_per_cell,
                "curve arms": ", ".join(arms),
                "curve runs": len(arms) * curve_seeds,
                "curve trials": _curve_trial_count(study, cell.key, arms),
                "extension runs": extension_runs,
            }
        )
    return labels, pd.DataFrame(rows)


def _curve_trial_count(study: StudyConfig, key: str, arms: list[str]) -> int:
    """The curve trials of one cell's ``arms``, packed as the study packs them (study.curve_jobs)."""
    if not study.curve.enabled:
        return 0
    jobs = [{"cell": key, "arm": arm, "seeds": chunk} for arm in arms for chunk in seed_chunks(study)]
    return len(curve_trials(jobs, study.curve.arms_per_trial))


def print_plan(
    study: StudyConfig, pilot: "str | None" = None, measure: bool = False, epochs: "int | None" = None
) -> None:
    """Print the cells, the planned trials, their cost forecast (study.forecast: from the GPU
    check's measured throughput, or from steps timed here with ``measure``; ``epochs`` per run
    instead of the cap) and the power forecast of the primary family (variance components from
    the ``pilot`` study's runs when given, else the config's defaults)."""
    from study.forecast import print_forecast
    from study.power import print_power

    cells = study_cells(study)  # reads the dataset's metadata once for the tables and the forecast
    labels, trials = plan_table(study, cells)
    print(f"study {study.name!r} on {study.run.dataset.name} ({study.run.dataset.root}); results in {study.run_dir}\n")
    print("cells (metadata classes and the heuristic come from the training songs):")
    print(labels.to_markdown(index=False, floatfmt=".4g"))
    print(
        "\nplanned trials (each cell its own Optuna study and ASHA rungs; curve seeds "
        f"{list(study.curve.seeds)} never used by the search {list(study.search.seeds)}):"
    )
    print(trials.to_markdown(index=False))
    print(
        f"\ntotal: {int(trials['search trials'].sum())} search trials, {int(trials['curve trials'].sum())} curve "
        f"trials ({int(trials['curve runs'].sum())} runs; the tuned arm is dropped where the search lands on a grid "
        "point)"
    )
    print_forecast(study, cells, trials, measure, epochs)
    print_power(study, cells, pilot)
