"""fit(): learning, determinism, exact resume, early stopping, callbacks, DDP (gloo)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers.mtl_synthetic import ddp_worker, make_run_data, small_config
from mtlmood.checkpoint import ModelCard, load_checkpoint, load_train_state, save_train_state
from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.rundata import RunData
from mtlmood.train import evaluate_split, fit
from mtlmood.train_state import FitResult

EPOCHS = 3


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    directory = tmp_path_factory.mktemp("synthetic")
    return make_run_data(directory, small_config(directory, max_epochs=EPOCHS))


@pytest.fixture(scope="module")
def multitask(data: RunData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted multi-task run, with a saved snapshot after epoch 1."""
    config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, alpha="auto"))
    snapshot = tmp_path_factory.mktemp("state") / "epoch1.pt"
    seen: dict[str, Any] = {}

    def callback(epoch, state) -> None:
        if epoch.epoch == 1:
            save_train_state(snapshot, state.to_dict())
        seen["best_state"] = {k: v.clone() for k, v in state.best_state.items()}

    result = fit(data, config, callback=callback)
    return {"config": config, "result": result, "snapshot": snapshot, **seen}


@pytest.fixture(scope="module")
def baseline(data: RunData) -> FitResult:
    config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, alpha=0.0))
    return fit(data, config)


def test_baseline_and_multitask_beat_chance_on_test(
    data: RunData, baseline: FitResult, multitask: dict[str, Any]
) -> None:
    mt: FitResult = multitask["result"]
    for result in (baseline, mt):
        test = result.test
        assert test is not None and test["n_labels"] == data.n_moods
        assert test["pr_auc"] > test["prevalence"] + 25, test
        assert test["roc_auc"] > 75, test
        assert len(result.history) == EPOCHS and result.history[-1].segments_per_second > 0
    assert baseline.alpha == 0.0 and baseline.n_meta == 0 and baseline.meta_names == []
    assert baseline.model.meta_head is None
    assert all(h.train_meta_loss == 0.0 for h in baseline.history)
    # alpha=auto is the paper's heuristic N_mood / N_meta.
    assert mt.alpha == pytest.approx(data.n_moods / data.n_meta) and mt.n_meta == data.n_meta
    assert mt.model.meta_head is not None
    assert all(h.train_loss == pytest.approx(h.train_mood_loss + mt.alpha * h.train_meta_loss) for h in mt.history)
    # A fixed alpha is reported every epoch, unchanged; the card says it was fixed.
    assert baseline.alpha_mode == mt.alpha_mode == "fixed" and mt.model_card().alpha_mode == "fixed"
    assert all(h.alpha == mt.alpha and h.metrics()["alpha"] == mt.alpha for h in mt.history)
    assert all(h.alpha == 0.0 for h in baseline.history)
    assert mt.data_summary["split_facts"]["songs"] == mt.data_summary["songs"]


def test_best_epoch_is_the_best_validation_score(multitask: dict[str, Any]) -> None:
    result: FitResult = multitask["result"]
    assert _state_equal(result.model.state_dict(), multitask["best_state"])
    assert result.best_val == next(h.val for h in result.history if h.epoch == result.best_epoch)
    assert result.best_val["pr_auc"] == max(h.val["pr_auc"] for h in result.history)
    assert not result.model.training


def test_best_weights_are_restored_over_the_last_ones(data: RunData) -> None:
    """Whichever epoch was best, the returned model holds its weights: after the last
    epoch the callback spoils the live weights, so only a restore can give them back."""
    config = dataclasses.replace(
        data.config, train=dataclasses.replace(data.config.train, max_epochs=2, max_batches_per_epoch=3)
    )
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def spoil_after_the_last_epoch(epoch, state) -> None:
        seen["best"] = {k: v.clone() for k, v in state.best_state.items()}
        if epoch.epoch == config.train.max_epochs:
            with torch.no_grad():
                for parameter in state.model.parameters():
                    parameter.add_(1.0)
            seen["last"] = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}

    result = fit(data, config, callback=spoil_after_the_last_epoch)
    assert _state_equal(result.model.state_dict(), seen["best"])
    assert not _state_equal(result.model.state_dict(), seen["last"])


def test_same_seed_same_run_and_callback_stop_and_exact_resume(data: RunData, multitask: dict[str, Any]) -> None:
    config, full = multitask["config"], multitask["result"]
    # A second run with the same seed, stopped by its callback after epoch 1 ...
    stopped = fit(data, config, callback=lambda epoch, state: epoch.epoch == 1)
    assert len(stopped.history) == 1 and not stopped.stopped_early
    assert stopped.history[0].train_loss == full.history[0].train_loss  # bit-identical: deterministic
    assert stopped.history[0].val == full.history[0].val
    # ... and resumed from the snapshot (saved, then loaded weights_only) ends exactly like the full run.
    state = load_train_state(multitask["snapshot"])
    assert state["epoch"] == 1
    resumed = fit(data, config, resume=state)
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in full.history]
    assert [h.val for h in resumed.history] == [h.val for h in full.history]
    assert resumed.best_epoch == full.best_epoch and resumed.test == full.test
    assert _state_equal(resumed.model.state_dict(), full.model.state_dict())


def test_resume_must_match_the_run(data: RunData, multitask: dict[str, Any]) -> None:
    state = load_train_state(multitask["snapshot"])
    config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, alpha=2.0))
    with pytest.raises(CheckpointError, match="alpha"):
        fit(data, config, resume=state)
    with pytest.raises(CheckpointError, match="TrainState"):
        fit(data, multitask["config"], resume={"epoch": 1})


def test_early_stopping_with_patience(data: RunData) -> None:
    # lr = 0 and frozen BatchNorm statistics: the validation score never changes, so only
    # epoch 1 is a "best", and patience 2 stops training after epoch 3.
    config = dataclasses.replace(
        data.config,
        model=dataclasses.replace(data.config.model, bn_momentum=0.0),
        train=dataclasses.replace(data.config.train, lr=0.0, patience=2, max_epochs=10, max_batches_per_epoch=2),
    )
    result = fit(data, config)
    assert result.stopped_early and result.best_epoch == 1
    assert [h.bad_epochs for h in result.history] == [0, 1, 2]
    assert [h.is_best for h in result.history] == [True, False, False]
    # Resuming a finished run trains no more.
    again = fit(data, config, resume=_finished_state(data, config))
    assert [(h.epoch, h.train_loss, h.val) for h in again.history] == [
        (h.epoch, h.train_loss, h.val) for h in result.history
    ]


def _finished_state(data: RunData, config) -> dict[str, Any]:
    captured = {}
    fit(data, config, callback=lambda epoch, state: captured.update(state=state.to_dict()))
    return captured["state"]


def test_evaluate_split_and_config_errors(data: RunData, baseline: FitResult) -> None:
    evaluation = evaluate_split(baseline.model, data, "test")
    scores = evaluation.scores
    assert scores == baseline.test and set(scores["per_label"]) == set(data.mood_names)
    assert evaluation.song_ids == data.song_ids("test") and evaluation.y_prob.shape == evaluation.y_true.shape
    np.testing.assert_array_equal(evaluation.y_prob, baseline.test_evaluation.y_prob)
    assert evaluation.y_prob.shape == (len(data.splits["test"]), data.n_moods)
    bad = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, monitor="loss"))
    with pytest.raises(ConfigError, match="monitor"):
        fit(data, bad)
    with pytest.raises(ConfigError, match="split"):
        evaluate_split(baseline.model, data, "holdout")


def test_distributed_data_parallel_on_two_gloo_ranks(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_run_data(cache, small_config(cache))  # write the cache once, before the ranks read it
    mp.spawn(ddp_worker, args=(2, str(tmp_path), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == [1, 2]  # the callback ran on every rank
    assert ranks[0]["val"] == ranks[1]["val"]  # rank 0's validation scores reached rank 1
    assert ranks[0]["history"] == [
        {
            **h,
            "seconds": ranks[0]["history"][i]["seconds"],
            "segments_per_second": ranks[0]["history"][i]["segments_per_second"],
        }
        for i, h in enumerate(ranks[1]["history"])
    ]
    assert _state_equal(ranks[0]["weights"], ranks[1]["weights"])  # DDP kept the replicas in sync
    assert ranks[0]["test"] == ranks[1]["test"] and not math.isnan(ranks[0]["test"]["pr_auc"])


def test_callback_can_save_a_servable_best_checkpoint(data: RunData, tmp_path: Path) -> None:
    config = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, max_epochs=2))
    cards = []
    result = fit(
        data, config, callback=lambda epoch, state: cards.append(state.save_best(tmp_path / f"e{epoch.epoch}"))
    )
    model, card = load_checkpoint(tmp_path / "e2")
    assert card == cards[-1] and card.metrics["best_epoch"] == result.best_epoch
    final = ModelCard.from_fit(result, test_metrics={"pr_auc": 1.0})
    assert final.metrics["test"] == {"pr_auc": 1.0} and final.meta_names == result.meta_names
    assert result.model_card().metrics["test"]["pr_auc"] == result.test["pr_auc"]
    assert card.mood_names == data.mood_names and card.meta_names == data.meta_names
    assert _state_equal(model.state_dict(), result.model.state_dict())


def test_bf16_autocast_and_channels_last_train(data: RunData) -> None:
    config = dataclasses.replace(
        data.config,
        train=dataclasses.replace(
            data.config.train, bf16=True, channels_last=True, max_epochs=1, max_batches_per_epoch=3
        ),
    )
    result = fit(data, config)
    assert math.isfinite(result.history[0].train_loss) and result.test is not None
    assert result.model.mood_head.weight.dtype == torch.float32  # autocast, not a bf16 model


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": 0}, "not a TrainState.to_dict\\(\\) snapshot"),
        ({"n_moods": 4}, "4 mood / 6 meta outputs, this run 3 / 6"),
        ({"alpha_mode": "learned"}, "trained with a learned alpha"),
    ],
)
def test_a_snapshot_of_another_format_or_model_is_refused_before_training(
    data: RunData, multitask: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    """What fit() resumes from must be this run's kind of TrainState: an older snapshot format,
    other output heads or another alpha mode is a CheckpointError naming the difference, raised
    before any epoch runs (the callback never fires)."""
    state = {**load_train_state(multitask["snapshot"]), **change}
    epochs: list[int] = []
    with pytest.raises(CheckpointError, match=message):
        fit(data, multitask["config"], resume=state, callback=lambda epoch, _: epochs.append(epoch.epoch))
    assert epochs == []
