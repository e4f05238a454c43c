"""Early stopping that one noisy validation epoch cannot trigger (mtlmood.stopping):
the rule on recorded score sequences, then fit() with min_epochs / stop_smoothing,
the best raw epoch kept, and an exact resume mid-streak."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers.mtl_synthetic import make_run_data, small_config
from mtlmood.checkpoint import load_train_state, save_train_state
from mtlmood.config import RunConfig
from mtlmood.config_io import load_config
from mtlmood.errors import ConfigError
from mtlmood.rundata import RunData
from mtlmood.stopping import PatienceCounter, moving_average, should_stop, stop_epoch
from mtlmood.train import fit

# A run still learning, with one noisy validation dip at epoch 3 (and slow gains after):
# the raw rule (patience 3) stops at epoch 5, smoothing or a minimum keeps it going.
NOISY = [40.0, 50.0, 44.0, 49.0, 49.5, 49.8, 53.0, 54.0, 55.0, 55.5, 55.4, 55.3, 55.2]


def test_moving_average_skips_nans_and_starts_short() -> None:
    assert moving_average([1.0], 3) == 1.0
    assert moving_average([1.0, 2.0, 3.0, 4.0], 3) == 3.0
    assert moving_average([1.0, math.nan, 3.0], 3) == 2.0
    assert math.isnan(moving_average([math.nan], 2))
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_counter_treats_nan_as_no_gain() -> None:
    counter = PatienceCounter()
    assert counter.update(1.0) and counter.stale == 0
    assert not counter.update(math.nan) and counter.stale == 1
    assert not counter.update(1.0) and counter.stale == 2  # equal is no gain
    assert counter.update(1.5) and (counter.best, counter.stale) == (1.5, 0)


def test_one_noisy_dip_stops_the_raw_rule_but_not_the_smoothed_one() -> None:
    assert stop_epoch(NOISY, patience=3) == 5  # the paper's rule: dip at 3, no new best by 5
    assert stop_epoch(NOISY, patience=3, smoothing=3) is None  # the dip moves a 3-epoch mean by 1/3
    assert stop_epoch(NOISY, patience=3, min_epochs=8) == 13  # trains on; stops on the late plateau
    # A real plateau still stops the smoothed rule (k - 1 epochs later at most).
    plateau = [40.0, 50.0, 52.0] + [52.0] * 10
    assert stop_epoch(plateau, patience=3) == 6
    assert stop_epoch(plateau, patience=3, smoothing=3) == 8
    # k = 1 and no minimum is exactly the paper's rule.
    assert should_stop(3, 3, 3) and not should_stop(3, 3, 3, min_epochs=4)


def test_config_defaults_are_the_paper_rule_and_values_are_checked() -> None:
    tc = RunConfig().train
    assert (tc.patience, tc.min_epochs, tc.stop_smoothing) == (3, 0, 1)
    cfg = load_config(RunConfig, overrides=["train.min_epochs=8", "train.stop_smoothing=3"])
    assert (cfg.train.min_epochs, cfg.train.stop_smoothing) == (8, 3)
    for bad in ("train.min_epochs=-1", "train.stop_smoothing=0"):
        with pytest.raises(ConfigError):
            load_config(RunConfig, overrides=[bad])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    directory = tmp_path_factory.mktemp("synthetic")
    return make_run_data(directory, small_config(directory, max_epochs=4))


def _config(data: RunData, **train: Any) -> RunConfig:
    return dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, **train))


def test_min_epochs_trains_past_a_flat_curve_and_keeps_the_best_raw_epoch(data: RunData) -> None:
    # lr = 0 with frozen BatchNorm statistics: a flat validation curve, best = epoch 1.
    config = dataclasses.replace(
        _config(data, lr=0.0, patience=1, max_epochs=10, max_batches_per_epoch=2, min_epochs=4),
        model=dataclasses.replace(data.config.model, bn_momentum=0.0),
    )
    result = fit(data, config)
    assert len(result.history) == 4 and result.stopped_early and result.best_epoch == 1
    assert [h.stale_epochs for h in result.history] == [0, 1, 2, 3]


def test_smoothed_stopping_resumes_exactly(data: RunData, tmp_path: Path) -> None:
    config = _config(data, alpha="auto", max_epochs=5, patience=2, stop_smoothing=3, min_epochs=2)
    snapshot = tmp_path / "epoch2.pt"

    def save_at_2(epoch: Any, state: Any) -> None:
        if epoch.epoch == 2:
            save_train_state(snapshot, state.to_dict())

    full = fit(data, config, callback=save_at_2)
    history = [h.val["pr_auc"] for h in full.history]
    # What fit watched is the moving average of the raw scores; the kept epoch is the best raw one.
    for i, h in enumerate(full.history):
        assert h.stop_score == pytest.approx(moving_average(history[: i + 1], 3))
    assert full.best_epoch == 1 + max(range(len(history)), key=lambda i: (history[i], -i))
    assert stop_epoch(history, 2, 2, 3) == (len(history) if full.stopped_early else None)
    state = load_train_state(snapshot)
    assert "stop_best" in state and "stale_epochs" in state
    resumed = fit(data, config, resume=state)
    assert [h.to_dict() | {"seconds": 0, "segments_per_second": 0} for h in resumed.history] == [
        h.to_dict() | {"seconds": 0, "segments_per_second": 0} for h in full.history
    ]
    assert resumed.best_epoch == full.best_epoch and resumed.stopped_early == full.stopped_early
    sd_a, sd_b = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_a_snapshot_without_the_new_state_resumes_on_the_raw_rule(data: RunData) -> None:
    captured: dict[str, Any] = {}
    config = _config(data, max_epochs=2)
    fit(data, config, callback=lambda e, s: captured.update(state=s.to_dict()) if e.epoch == 1 else None)
    old = {k: v for k, v in captured["state"].items() if k not in ("stop_best", "stale_epochs")}
    old["history"] = [{k: v for k, v in h.items() if k not in ("stop_score", "stale_epochs")} for h in old["history"]]
    resumed = fit(data, config, resume=old)
    assert len(resumed.history) == 2 and math.isnan(resumed.history[0].stop_score)
