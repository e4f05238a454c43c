"""train.alpha: learned — uncertainty weighting (Kendall, Gal & Cipolla 2018): the formula,
where its gradient leads, fit() with it (effective alpha reported, exact resume, model card),
the errors, and two gloo DDP ranks staying in step."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from helpers.mtl_synthetic import make_run_data, small_config
from mtlmood.checkpoint import load_checkpoint, load_train_state, save_train_state
from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.loss import UncertaintyWeights, alpha_mode, multitask_loss, resolve_alpha
from mtlmood.rundata import RunData
from mtlmood.train import fit
from mtlmood.train_state import FitResult

EPOCHS = 3


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _learned(config: Any, **train: Any) -> Any:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, alpha="learned", **train))


# ---------------------------------------------------------------- the loss


def test_alpha_mode_and_resolve() -> None:
    assert alpha_mode("learned") == alpha_mode(" Learned ") == "learned"
    assert alpha_mode("auto") == alpha_mode(0.5) == alpha_mode("0.5") == "fixed"
    assert resolve_alpha("learned", 3, 50) == 1.0  # exp(-0) / exp(-0): where training starts
    with pytest.raises(ConfigError, match=r"train\.alpha.*labels\.metadata"):
        resolve_alpha("learned", 3, 0)


def test_the_formula_and_the_effective_alpha() -> None:
    weights = UncertaintyWeights()
    assert [p.item() for p in weights.parameters()] == [0.0, 0.0]  # s_mood, s_meta start at 0
    with torch.no_grad():
        weights.s_mood.fill_(0.3)
        weights.s_meta.fill_(-1.2)
    mood, meta = torch.tensor(0.7), torch.tensor(2.5)
    expected = math.exp(-0.3) * 0.7 + math.exp(1.2) * 2.5 + 0.5 * (0.3 - 1.2)
    assert weights(mood, meta).item() == pytest.approx(expected, rel=1e-6)
    assert weights.effective_alpha == pytest.approx(math.exp(1.2) / math.exp(-0.3), rel=1e-6)
    # Through multitask_loss: the same two BCE terms, weighted by the module.
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(8, 3, generator=g), torch.randn(8, 5, generator=g))
    targets = ((torch.rand(8, 3, generator=g) > 0.5).float(), (torch.rand(8, 5, generator=g) > 0.5).float())
    total, mood_loss, meta_loss = multitask_loss(logits[0], logits[1], targets[0], targets[1], weights)
    assert torch.allclose(total, weights(mood_loss, meta_loss))
    assert torch.allclose(multitask_loss(logits[0], logits[1], targets[0], targets[1], 1.0)[1], mood_loss)


def test_the_gradient_moves_each_s_to_log_of_twice_its_loss() -> None:
    weights = UncertaintyWeights()
    mood_loss, meta_loss = torch.tensor(0.3), torch.tensor(2.0)
    weights(mood_loss, meta_loss).backward()
    # d/ds [exp(-s) L + s/2] = 0.5 - exp(-s) L at s = 0: below 0 when L > 0.5, so s grows, and vice versa.
    assert weights.s_mood.grad.item() == pytest.approx(0.5 - 0.3)
    assert weights.s_meta.grad.item() == pytest.approx(0.5 - 2.0)
    optimizer = torch.optim.Adam(weights.parameters(), lr=0.05)
    for _ in range(2000):
        optimizer.zero_grad()
        weights(mood_loss, meta_loss).backward()
        optimizer.step()
    assert weights.s_mood.item() == pytest.approx(math.log(2 * 0.3), abs=1e-3)
    assert weights.s_meta.item() == pytest.approx(math.log(2 * 2.0), abs=1e-3)
    # At the optimum the effective alpha is L_mood / L_meta: the noisier task counts less.
    assert weights.effective_alpha == pytest.approx(0.3 / 2.0, rel=1e-2)


# ---------------------------------------------------------------- fit()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> RunData:
    directory = tmp_path_factory.mktemp("synthetic")
    return make_run_data(directory, small_config(directory, max_epochs=EPOCHS))


@pytest.fixture(scope="module")
def learned(data: RunData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted learned-alpha run, with a snapshot saved after epoch 1."""
    config = _learned(data.config)
    snapshot = tmp_path_factory.mktemp("state") / "epoch1.pt"
    seen: dict[str, Any] = {"weights": []}

    def callback(epoch, state) -> None:
        if epoch.epoch == 1:
            save_train_state(snapshot, state.to_dict())
        seen["weights"].append({k: v.detach().clone() for k, v in state.weighting.state_dict().items()})

    result = fit(data, config, callback=callback)
    return {"config": config, "result": result, "snapshot": snapshot, **seen}


def test_fit_learns_the_weights_and_reports_the_effective_alpha(learned: dict[str, Any]) -> None:
    result: FitResult = learned["result"]
    assert result.alpha_mode == "learned" and result.n_meta == 6 and result.model.meta_head is not None
    alphas = [h.alpha for h in result.history]
    assert len(alphas) == EPOCHS and len(set(alphas)) == EPOCHS and all(a != 1.0 for a in alphas)
    for h, weights in zip(result.history, learned["weights"]):  # each epoch's alpha = its weights'
        assert h.alpha == pytest.approx(math.exp(weights["s_mood"].item() - weights["s_meta"].item()), rel=1e-6)
        assert h.metrics()["alpha"] == h.alpha
    assert result.alpha == result.history[result.best_epoch - 1].alpha  # the best epoch's
    assert result.to_dict()["alpha_mode"] == "learned"
    test = result.test
    assert test is not None and test["pr_auc"] > test["prevalence"] + 25, test


def test_learned_run_resumes_bit_exactly(data: RunData, learned: dict[str, Any]) -> None:
    config, full = learned["config"], learned["result"]
    state = load_train_state(learned["snapshot"])  # saved, then loaded weights_only
    assert state["epoch"] == 1 and state["alpha_mode"] == "learned"
    assert state["alpha"] == full.history[0].alpha
    assert _state_equal(state["weighting"], learned["weights"][0])
    resumed = fit(data, config, resume=state)
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in full.history]
    assert [h.alpha for h in resumed.history] == [h.alpha for h in full.history]
    assert [h.val for h in resumed.history] == [h.val for h in full.history]
    assert resumed.best_epoch == full.best_epoch and resumed.alpha == full.alpha and resumed.test == full.test
    assert _state_equal(resumed.model.state_dict(), full.model.state_dict())


def test_resume_refuses_another_alpha_mode(data: RunData, learned: dict[str, Any]) -> None:
    state = load_train_state(learned["snapshot"])
    fixed = dataclasses.replace(data.config, train=dataclasses.replace(data.config.train, alpha=1.0))
    with pytest.raises(CheckpointError, match="alpha"):
        fit(data, fixed, resume=state)
    fixed_state: dict[str, Any] = {}
    fit(
        data,
        dataclasses.replace(fixed, train=dataclasses.replace(fixed.train, max_epochs=1)),
        callback=lambda epoch, s: fixed_state.update(s.to_dict()),
    )
    assert fixed_state["alpha_mode"] == "fixed" and fixed_state["weighting"] is None
    with pytest.raises(CheckpointError, match="alpha"):
        fit(data, learned["config"], resume=fixed_state)


def test_model_card_records_mode_and_effective_alpha(data: RunData, learned: dict[str, Any], tmp_path: Path) -> None:
    result: FitResult = learned["result"]
    card = result.model_card()
    assert card.alpha_mode == "learned" and card.alpha == result.alpha
    cards = []
    fit(
        data,
        _learned(data.config, max_epochs=2),
        callback=lambda epoch, state: cards.append(state.save_best(tmp_path / f"e{epoch.epoch}")),
    )
    _, saved = load_checkpoint(tmp_path / "e2")
    assert saved == cards[-1] and saved.alpha_mode == "learned"
    assert saved.alpha == learned["result"].history[saved.metrics["best_epoch"] - 1].alpha  # same seed, same run


def test_learned_without_metadata_is_a_config_error(data: RunData) -> None:
    labelled = dataclasses.replace(
        data.labelled, meta_names=[], meta_targets=np.zeros((len(data.labelled), 0), np.float32)
    )
    with pytest.raises(ConfigError, match=r"train\.alpha.*labels\.metadata"):
        fit(dataclasses.replace(data, labelled=labelled), _learned(data.config))


# ---------------------------------------------------------------- DDP


def _ddp_learned_worker(rank: int, world_size: int, directory: str) -> None:
    """One rank of a gloo DDP run with alpha=learned (torch.multiprocessing.spawn target)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=world_size)
    try:
        config = small_config(Path(directory) / "cache", alpha="learned", max_epochs=2, max_batches_per_epoch=8)
        data = make_run_data(Path(directory) / "cache", config)
        states: list[dict[str, Any]] = []
        result = fit(data, config, callback=lambda e, s: states.append(s.to_dict()))
        torch.save(
            {
                "weights": result.model.state_dict(),
                "alphas": [h.alpha for h in result.history],
                "losses": [h.train_loss for h in result.history],
                "alpha": result.alpha,
                "weighting": states[-1]["weighting"],
                "optimizer": states[-1]["optimizer"],
            },
            f"{directory}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_learned_weights_stay_in_step_across_two_gloo_ranks(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    make_run_data(cache, small_config(cache))  # write the cache once, before the ranks read it
    mp.spawn(_ddp_learned_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # The ranks saw different batches, yet their averaged gradients gave identical weights.
    assert _state_equal(ranks[0]["weighting"], ranks[1]["weighting"])
    assert ranks[0]["alphas"] == ranks[1]["alphas"] and ranks[0]["alpha"] == ranks[1]["alpha"]
    assert len(set(ranks[0]["alphas"])) == 2 and 1.0 not in ranks[0]["alphas"]
    assert _state_equal(ranks[0]["weights"], ranks[1]["weights"])
    assert ranks[0]["losses"] == ranks[1]["losses"]
    exp_avg = [ranks[r]["optimizer"]["state"] for r in range(2)]  # Adam moments of s too
    assert all(torch.equal(exp_avg[0][k]["exp_avg"], exp_avg[1][k]["exp_avg"]) for k in exp_avg[0])
