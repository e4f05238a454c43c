"""The embedded default main job: synthesize a small dataset, prepare its features, run a
small alpha study on local Ray and write the report. Everything lands under one folder,
and every step is resumable: re-running skips finished work."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from mtlmood.cache import default_cache_dir
from mtlmood.datasets import load_run_songs
from mtlmood.prepare import prepare_features
from mtlmood.synth import synthesize
from mtlmood.synth.worlds import world_config
from study.config import load_study_config

if TYPE_CHECKING:
    from study.runner import StudyOutcome

# The demo's data: the known-answer world "metadata-costs" (mtlmood/synth/worlds.py): 2,000
# songs of 3.5-4 s (one ~3 s segment each, so the test split is large while epochs stay
# cheap), 3 clearly audible moods, 12 audible artists that say nothing about mood.
DEMO_DATA = world_config("metadata-costs")


def run_demo(output: Path, overrides: list[str], num_cpus: Optional[int] = None) -> StudyOutcome:
    """synth -> prepare -> study (search + curve) -> report, printing each step; the study's outcome
    (the caller, `mtlmood demo`, prints where its results are)."""
    from study.ray_session import init_ray
    from study.runner import run_study

    start = time.monotonic()
    output = output.resolve()
    data_dir = output / "data"
    # Settings first: a bad --set is one line before minutes of synthesis.
    study = load_study_config(
        "synthetic", [f"run.dataset.root={data_dir}", f"storage_path={output / 'studies'}", *overrides]
    )
    print(f"[1/4] synthesizing the demo dataset in {data_dir}", flush=True)
    # Resumes: songs already written with the same settings are kept; a folder holding another
    # dataset (e.g. an older demo's world) is refused in one line naming it.
    synthesize(data_dir, DEMO_DATA, workers=max(1, min(os.cpu_count() or 1, 8)))

    print("[2/4] computing log-mel features (cached, resumable)", flush=True)
    cache_dir = default_cache_dir(study.run)
    report = prepare_features(load_run_songs(study.run), cache_dir, study.run.features)
    if report.failures:
        print(f"      {len(report.failures)} songs failed; see {cache_dir / 'failures.csv'}")

    print(f"[3/4] running the alpha study {study.name!r} on local Ray", flush=True)
    init_ray(None, num_cpus)
    outcome = run_study(study)
    print(f"[4/4] done in {time.monotonic() - start:.0f} s", flush=True)
    return outcome
