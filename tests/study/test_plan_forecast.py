"""The cost forecast of `mtlmood study plan` (study.forecast), without Ray: its totals are runs x
epochs x batches over the throughput plus a start-up per trial, the GPU check's figure is picked
by precision and scaled by FLOPs to other sizes, a measured packing gain divides the GPU-hours,
and `--measure` times steps on the CPU with tiny settings."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.study_data import make_study_data
from mtlmood.config import ModelConfig
from mtlmood_cli.main import main
from study.cells import Cell, cell_key
from study.config import StudyConfig, load_study_config
from study.forecast import GPU_CHECK_FILE, Throughput, asha_epochs, forecast_table, measured_throughput
from study.plan import plan_table
from study.sizing import train_flops

SONGS = {3: 400, 9: 900}  # training songs per mood count


def _cells(study: StudyConfig) -> dict[str, Cell]:
    cells = {}
    for n in study.search.n_moods:
        for metadata, n_meta in (("none", 0), ("artist", 12)):
            facts = {"songs": {"train": SONGS[n], "validation": 50, "test": 50}}
            cells[cell_key(n, metadata)] = Cell(
                "synthetic", n, metadata, n, n_meta, n / n_meta if n_meta else 0.0, "moods", facts
            )
    return cells


def _study(tmp_path: Path, *overrides: str) -> StudyConfig:
    return load_study_config(
        "synthetic",
        [
            f"storage_path={tmp_path}",
            "search.n_moods=[3,9]",
            "search.n_artists=[]",
            "search.trials_per_cell=4",
            *overrides,
        ],
    )


def test_asha_epochs_follow_the_rungs() -> None:
    assert asha_epochs(30, 3, 3) == pytest.approx(3 + 6 / 3 + 18 / 9 + 3 / 27)
    assert asha_epochs(2, 3, 3) == 2  # no rung below the cap: every trial runs it


def test_totals_are_runs_times_epochs_times_batches_over_the_throughput(tmp_path: Path) -> None:
    study = _study(tmp_path, "scheduler.enabled=false", "run.train.max_batches_per_epoch=0", "run.train.max_epochs=7")
    cells = _cells(study)
    _, trials = plan_table(study, cells)
    rate = Throughput(segments_per_s=1000.0, startup_s=0.0, source="test")
    table = forecast_table(study, cells, trials, rate)
    tc = study.run.train
    expected = 0.0
    for _, row in trials.iterrows():
        cell = next(c for c in cells.values() if c.label == row["cell"])
        runs = row["search trials"] + row["curve runs"] + row["extension runs"]
        batches = math.ceil(tc.epoch_factor * cell.facts["songs"]["train"])  # no cap: the paper's epoch
        expected += runs * tc.max_epochs * batches
    total = table.iloc[-1]
    assert total["cell"] == "total" and total["batches"] == expected
    assert total["GPU-hours"] == pytest.approx(expected * tc.batch_size / 1000.0 / 3600)

    # Start-up: once per trial (seeds_per_trial seeds share one), on top.
    n_trials = int(trials["search trials"].sum() + trials["curve trials"].sum())
    n_trials += sum(-(-int(r) // study.curve.seeds_per_trial) for r in trials["extension runs"])
    with_startup = forecast_table(study, cells, trials, replace(rate, startup_s=36.0))
    assert with_startup.iloc[-1]["GPU-hours"] == pytest.approx(total["GPU-hours"] + n_trials * 36.0 / 3600)
    # A measured packing gain at the configured trials_per_gpu divides the GPU-hours.
    packed = replace(study, resources=replace(study.resources, trials_per_gpu=2))
    gained = forecast_table(packed, cells, trials, replace(rate, packing_gain={1: 1.0, 2: 1.6}))
    assert gained.iloc[-1]["GPU-hours"] == pytest.approx(total["GPU-hours"] / 1.6)


def test_the_gpu_checks_figure_by_precision_and_size(tmp_path: Path) -> None:
    study = _study(tmp_path, "run.model.n_filters=128")  # the measured sizes: 64 x 32, 128 filters, batch 32
    fp32 = measured_throughput(study.run)
    assert fp32.segments_per_s == 8326.8 and "host sampler" in fp32.source  # the slower fp32 figure
    bf16 = measured_throughput(replace(study.run, train=replace(study.run.train, bf16=True)))
    assert bf16.segments_per_s == 8075.5
    paper = load_study_config("mtg-jamendo").run  # 187 x 96 windows, bf16: scaled by training FLOPs
    scaled = measured_throughput(paper)
    small = ModelConfig(n_filters=128, n_mels=32, segment_frames=64)
    assert scaled.segments_per_s == pytest.approx(
        8075.5 * train_flops(small, 50, 50) / train_flops(paper.model, 50, 50)
    )
    assert "scaled by FLOPs" in scaled.source and GPU_CHECK_FILE.name in scaled.source
    assert scaled.packing_gain is None  # no gpu_study.json from a GPU run yet


def test_a_gpu_study_bench_file_gives_start_up_and_packing_gains(tmp_path: Path) -> None:
    bench = {"dry_run": False, "card": "H100", "date": "today", "levels": {}}
    bench["levels"] = {"1": {"trials_per_hour": 100.0, "startup_s": 9.0}, "4": {"trials_per_hour": 250.0}}
    (tmp_path / "gpu_study.json").write_text(json.dumps(bench))
    rate = measured_throughput(_study(tmp_path).run, study_file=tmp_path / "gpu_study.json")
    assert rate.startup_s == 9.0 and rate.packing_gain == {1: 1.0, 4: 2.5}
    (tmp_path / "gpu_study.json").write_text(json.dumps({**bench, "dry_run": True}))  # a CPU dry run says nothing
    assert measured_throughput(_study(tmp_path).run, study_file=tmp_path / "gpu_study.json").packing_gain is None


def test_plan_measure_times_steps_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_study_data(tmp_path / "data", seed=3)
    argv = ["study", "plan", "synthetic", "--measure", "--epochs", "2"]
    argv += [
        "--set",
        f"run.dataset.root={data}",
        "--set",
        f"storage_path={tmp_path}/st",
        "--set",
        "run.model.n_filters=4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    forecast = out[out.index("cost forecast") :]
    assert "segments/s measured now" in forecast and "| total" in forecast and "/ 2 " in forecast


def test_the_gpu_checks_files_feed_the_forecast(tmp_path: Path) -> None:
    """benchmarks/gpu_results.py turns the GPU check's benchmark files into gpu_check.json; a
    measurement at the study's own sizes is then used as it is, not scaled."""
    from benchmarks.gpu_results import main as write_gpu_check

    steps = {"host sampler + copy, fp32 (baseline)": {"segments_per_s": 8000.0}}
    accelerator = {"device": "cuda", "device_name": "GPU-X", "n_mels": 32, "segment_frames": 64, "steps": steps}
    (tmp_path / "train.json").write_text(json.dumps({"accelerator": accelerator}))
    rates = {"eager, fp32": 2000.0, "cuda graphs, fp32": 2600.0, "eager, bf16 autocast": 2400.0}
    graphs = {"card": "GPU-X", "n_filters": 128, "batch_size": 32, "agreement": {}, "segments_per_s": {}}
    graphs["segments_per_s"] = {"187 x 96 (paper)": rates, "64 x 32 (training benchmark)": rates}
    (tmp_path / "gpu_graphs.json").write_text(json.dumps(graphs))
    assert write_gpu_check([str(tmp_path), str(tmp_path)]) == 0
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written["card"] == "GPU-X" and len(written["train"]) == 3
    paper = load_study_config("mtg-jamendo").run  # 187 x 96, 128 filters, batch 32, bf16
    rate = measured_throughput(paper, check_file=tmp_path / "gpu_check.json", study_file=tmp_path / "none.json")
    assert rate.segments_per_s == 2400.0 and "scaled" not in rate.source
    graphed = replace(paper, train=replace(paper.train, bf16=False, cuda_graphs=True))
    assert measured_throughput(graphed, tmp_path / "gpu_check.json", tmp_path / "none.json").segments_per_s == 2600.0
