"""The curve's extension round on a local Ray: a 2-point grid (x1/3, x1) is never bracketed, so
one extension round (x1/9 or x3) trains over the same seeds; its rows join the curve table
as ordinary grid arms (curve_round 1), curve_extensions.json says where alpha* stands, and a
study killed before the extension round was recorded resumes without retraining anything,
even when Tune had not recorded the round's trial (its job then reports its finished runs
without starting Ray Train).

Calls run_curve itself (no search, no report): the orchestration is what is under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from helpers import shared_ray  # noqa: E402
from helpers.study_data import make_study_data, prepare_study_features, small_overrides  # noqa: E402
from study.cells import study_cells  # noqa: E402
from study.config import load_study_config  # noqa: E402
from study.results import trial_table  # noqa: E402
from study.runner import run_curve  # noqa: E402

pytestmark = pytest.mark.slow
SHARED_RAY = "study"  # the Ray of the study modules before and after it (helpers.shared_ray)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("extension")
    make_study_data(root / "data", seed=5)
    config = load_study_config(
        "synthetic",
        small_overrides(root / "data", root / "studies", "extend")
        + [
            "search.trials_per_cell=0",
            "curve.tuned=false",
            "curve.learned=false",
            "curve.max_extensions=1",
            "report.reference=false",
        ],
    )
    prepare_study_features(config)
    shared_ray.shared(SHARED_RAY, shared_ray.start_study_ray)
    return config


def _result_times(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.glob("runs/curve/**/result.json")}


def test_one_extension_round_joins_the_curve_and_resumes(study) -> None:
    cells = study_cells(study)
    table = run_curve(study, trial_table([]), cells)
    run_dir = Path(study.run_dir)

    assert (table["phase"] == "curve").all() and (table["status"] == "TERMINATED").all()
    grid = table[table["cell"] == "4|artist"]
    extension = grid[grid["curve_round"] == 1]
    assert set(grid[grid["curve_round"] == 0]["arm"]) == {"x1/3", "heuristic"}
    assert len(extension) == 2 and extension["arm"].nunique() == 1  # the same 2 curve seeds
    assert set(extension["seed"]) == {1, 2} and extension["arm"].iloc[0] in ("x1/9", "x3")
    factor = float(extension["alpha_factor"].iloc[0])
    assert factor == pytest.approx(1 / 9 if extension["arm"].iloc[0] == "x1/9" else 3.0)

    # Run folders: one segment per arm, whatever its display name.
    assert (run_dir / "runs/curve/4-artist/x1_3/seed-1/result.json").exists()
    assert not (run_dir / "runs/curve/4-artist/x1").exists()
    summary = json.loads((run_dir / "curve_extensions.json").read_text())
    cell = summary["cells"]["4|artist"]
    assert cell["extensions"] == [pytest.approx(factor)] and cell["bracketed"] != cell["limit_reached"]
    for marker in ("curve/round_done.json", "curve-ext1/round_done.json", "curve/phase_done.json"):
        assert (run_dir / marker).exists(), marker

    # Killed after the extension round trained but before it (and the phase) was recorded.
    before = _result_times(run_dir)
    for name in (
        "curve/phase_done.json",
        "curve/trials.parquet",
        "curve-ext1/round_done.json",
        "curve_extensions.json",
    ):
        (run_dir / name).unlink()
    again = run_curve(study, trial_table([]), cells)
    assert _result_times(run_dir) == before  # nothing retrained
    keys = ["cell", "arm", "seed", "curve_round", "val_pr_auc"]
    pd.testing.assert_frame_equal(again[keys], table[keys])
    assert json.loads((run_dir / "curve_extensions.json").read_text()) == summary

    # Killed before Tune recorded the extension trial at all (its experiment state gone too): the
    # round starts afresh, and its trial finds every run finished and reports them without
    # starting Ray Train (no new Train run folder).
    train_runs = sorted(p.name for p in (run_dir / "train").iterdir())
    for name in ("curve/phase_done.json", "curve/trials.parquet", "curve_extensions.json"):
        (run_dir / name).unlink()
    shutil.rmtree(run_dir / "curve-ext1")
    fresh = run_curve(study, trial_table([]), cells)
    assert _result_times(run_dir) == before
    assert sorted(p.name for p in (run_dir / "train").iterdir()) == train_runs
    pd.testing.assert_frame_equal(fresh[keys], table[keys])
    assert (fresh["status"] == "TERMINATED").all()
