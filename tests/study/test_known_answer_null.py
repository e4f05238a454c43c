"""The null known-answer world through `mtlmood study run`: metadata independent of mood, so
the study must find no significant primary verdict (and its CNN must have learned, or the
silence would mean nothing).

Small: 600 songs of the null world with clear mood cues, one cell (3 moods x 12 artists: a
small heuristic alpha of 0.25; in this world a large alpha costs mood through the narrow
trunk, the demo's known answer), the baseline and three grid arms over three seeds, no
search; about 75 s on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from helpers import shared_ray  # noqa: E402
from helpers.study_data import prepare_study_features, study_run_command  # noqa: E402
from mtlmood.synth import synthesize  # noqa: E402
from mtlmood.synth.worlds import world_config  # noqa: E402
from study.config import load_study_config  # noqa: E402

pytestmark = pytest.mark.slow
SHARED_RAY = "study"  # the Ray of the study modules before and after it (helpers.shared_ray)
REPO = Path(__file__).resolve().parents[2]


def _overrides(data_dir: Path, storage: Path) -> list[str]:
    return [
        "name=null-world",
        f"storage_path={storage}",
        f"run.dataset.root={data_dir}",
        "run.train.max_epochs=8",
        "run.train.min_epochs=4",
        "run.train.max_batches_per_epoch=20",
        "search.trials_per_cell=0",
        "search.n_moods=[3]",
        "search.metadata=[artist]",
        "search.n_artists=[12]",  # 3/12: a small heuristic alpha (a large one costs mood even here)
        "curve.grid=[1/3,1,3]",
        "curve.seeds=[1,2,3]",
        "curve.seeds_per_trial=3",
        # Trials: the baseline, x1/3 + heuristic, x3: two at a time they end together, as four
        # did, with one Ray Train start-up fewer (~14 CPU-s on 2 cores).
        "curve.arms_per_trial=2",
        "curve.tuned=false",
        "curve.learned=false",
        "curve.max_extensions=0",
        "report.n_boot=300",
        # NHWC convolutions: 74 instead of 80 s for the module on 2 cores (2026-12-07), the same
        # verdicts; an ordinary TrainConfig option, NCHW stays trained by the other study tests.
        "run.train.channels_last=true",
    ]


@pytest.fixture(scope="module")
def null_world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("null-world")
    data_dir = root / "data"
    # Clear mood cues (the CNN must learn), artists that say nothing about mood.
    synthesize(data_dir, world_config("null", n_songs=600, difficulty=0.3, label_noise=0.0), workers=2)
    study = load_study_config("synthetic", _overrides(data_dir, root / "studies"))
    prepare_study_features(study)
    shared_ray.shared(SHARED_RAY, shared_ray.start_study_ray)
    return root, data_dir


def test_the_null_world_gives_no_significant_primary_verdict(null_world) -> None:
    root, data_dir = null_world
    done = subprocess.run(
        study_run_command(_overrides(data_dir, root / "studies")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = root / "studies" / "null-world" / "report"
    learning = json.loads((report / "learning.json").read_text())
    # A silent study of models that learned nothing would prove nothing: the CNN must be well above chance.
    assert learning["statuses"] and "at chance" not in learning["statuses"], learning
    verdicts = pd.read_csv(report / "verdicts.csv")
    primary = verdicts[verdicts["family"] == "primary"]
    assert set(primary["comparison"]) == {"heuristic - baseline", "best alpha - heuristic"}
    print(primary[["comparison", "estimate", "low", "high", "p_adjusted", "verdict"]].to_string())
    assert not primary["verdict"].str.startswith("significant").any()
    # The console says whether the CNN learned before it prints the verdict.
    out = done.stdout
    assert out.index("learning check:") < out.index("heuristic - baseline")
