"""Checkpoints: weights_only-loadable weights + model card, atomic, validated on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mtlmood
from mtlmood.checkpoint import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelCard,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from mtlmood.config import DatasetConfig, FeatureConfig, LabelConfig, ModelConfig
from mtlmood.errors import CheckpointError
from mtlmood.model import MoodCNN

CFG = ModelConfig(n_filters=4, n_blocks=2, segment_frames=16, n_mels=8)


def _card(n_meta: int = 2) -> ModelCard:
    return ModelCard(
        mood_names=["calm", "happy", "dark"],
        meta_names=[f"artist:a{i}" for i in range(n_meta)],
        model=CFG,
        features=FeatureConfig(n_mels=8),
        alpha=1.5,
        dataset=DatasetConfig(name="csv", root="x.csv"),
        labels=LabelConfig(n_moods=3),
        metrics={"test": {"pr_auc": 71.2}},
        seed=7,
    )


def _model(n_meta: int = 2) -> MoodCNN:
    torch.manual_seed(0)
    model = MoodCNN(CFG, 3, n_meta)
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model


def test_round_trip(tmp_path: Path) -> None:
    model = _model()
    written = save_checkpoint(tmp_path, model, _card())
    loaded, card = load_checkpoint(tmp_path)
    assert not loaded.training
    x = torch.randn(3, 16, 8)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x)[0], loaded(x)[0]) and torch.equal(model(x)[1], loaded(x)[1])
    assert card == written and card.mood_names == ["calm", "happy", "dark"] and card.alpha == 1.5
    assert card.model == CFG and card.features == FeatureConfig(n_mels=8) and card.seed == 7
    assert card.code_version == mtlmood.__version__ and card.created_at and len(card.checkpoint_id) == 12
    assert card.metrics["test"]["pr_auc"] == 71.2
    # The weights are a plain state_dict that the safe loader accepts.
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    assert set(state) == set(model.state_dict())
    on_disk = json.loads((tmp_path / CARD_FILE).read_text())
    assert on_disk["labels"]["n_moods"] == 3 and on_disk["checkpoint_id"] == card.checkpoint_id


def test_baseline_without_metadata_head(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _model(0), _card(0))
    model, card = load_checkpoint(tmp_path)
    assert model.meta_head is None and card.meta_names == []


def test_card_must_describe_the_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="mood / 2 meta"):
        save_checkpoint(tmp_path, _model(2), _card(5))


def test_missing_and_corrupt_files_raise_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="missing model_card.json"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _model(), _card())
    weights = tmp_path / WEIGHTS_FILE
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    weights.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="no weights.pt"):
        load_checkpoint(tmp_path)
    weights.write_bytes(good)
    (tmp_path / CARD_FILE).write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupt model card"):
        load_checkpoint(tmp_path)
    (tmp_path / CARD_FILE).write_text(json.dumps({"mood_names": ["a"]}))
    with pytest.raises(CheckpointError, match="malformed model card"):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_match_the_card_are_rejected(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a", _model(), _card())
    other = tmp_path / "b"
    save_checkpoint(
        other,
        MoodCNN(ModelConfig(n_filters=8, n_blocks=2, segment_frames=16, n_mels=8), 3, 2),
        ModelCard(**{**_card().__dict__, "model": ModelConfig(n_filters=8, n_blocks=2, segment_frames=16, n_mels=8)}),
    )
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="does not match its model card"):
        load_checkpoint(tmp_path / "a")
    # Without an id to compare, the shapes still are.
    card = json.loads((tmp_path / "a" / CARD_FILE).read_text())
    card["checkpoint_id"] = ""
    (tmp_path / "a" / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "a")


def test_feature_config_must_match_the_model(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _model(), _card())
    card = json.loads((tmp_path / CARD_FILE).read_text())
    card["features"]["n_mels"] = 96
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="mel bands"):
        load_checkpoint(tmp_path)


def test_train_state_round_trip_is_weights_only(tmp_path: Path) -> None:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), eps=1e-7)
    model(torch.randn(2, 16, 8))[0].sum().backward()
    optimizer.step()
    state = {
        "format": 1,
        "epoch": 3,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_score": float("-inf"),
        "history": [{"val": {"excluded_labels": ["x"]}}],
        "best_model": None,
    }
    save_train_state(tmp_path / "state.pt", state)
    loaded = load_train_state(tmp_path / "state.pt")
    assert loaded["epoch"] == 3 and loaded["history"][0]["val"]["excluded_labels"] == ["x"]
    assert torch.equal(loaded["model"]["mood_head.weight"], model.state_dict()["mood_head.weight"])
    fresh = torch.optim.Adam(_model().parameters(), eps=1e-7)
    fresh.load_state_dict(loaded["optimizer"])
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_train_state(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_train_state(tmp_path / "missing.pt")
