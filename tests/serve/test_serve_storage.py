"""`mtlmood serve --study/--checkpoint` from a local folder or an object store (s3://, a local moto
server): the replicas get the location and make their own local copy (mtlmood.storage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.serve_apps import MOODS
from mtlmood import remote_cache, storage
from mtlmood.checkpoint import read_card
from mtlmood.synth.checkpoints import untrained_checkpoint

BUCKET = "mtlmood-serve"


def make_study(run_dir: Path) -> Path:
    """A study folder whose best_checkpoint.json names a real checkpoint (relative path) for one cell."""
    checkpoint = untrained_checkpoint(run_dir / "runs" / "3-artist" / "model", n_filters=8, moods=MOODS)
    cell = {"checkpoint": "runs/3-artist/model", "arm": "heuristic", "val_pr_auc": 70.0, "n_moods": len(MOODS)}
    (run_dir / "best_checkpoint.json").write_text(json.dumps({"default_cell": "5|artist", "cells": {"5|artist": cell}}))
    return checkpoint


def test_a_local_study_given_relative_is_served_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.config import ServeConfig, checkpoint_source, resolve_checkpoint, study_selection

    checkpoint = make_study(tmp_path / "study")
    monkeypatch.chdir(tmp_path)
    config = ServeConfig(study="study")
    assert checkpoint_source(config) == str(checkpoint.resolve())  # what every replica gets
    assert resolve_checkpoint(config) == checkpoint.resolve()
    assert study_selection("study")["arm"] == "heuristic"


def test_a_study_in_a_bucket_is_served_from_each_replicas_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.s3_server import s3_server
    from serve.app import build_app
    from serve.config import (
        ModelSettings,
        ServeConfig,
        checkpoint_source,
        resolve_checkpoint,
        serve_config_to_dict,
        study_selection,
    )
    from serve.deployments import MoodModel

    checkpoint = make_study(tmp_path / "study")
    with s3_server(BUCKET):
        monkeypatch.setenv(remote_cache.CACHE_ENV, str(tmp_path / "cache"))
        uri = f"s3://{BUCKET}/studies/alpha"
        storage.upload_dir(tmp_path / "study", uri)
        config = ServeConfig(study=uri, model=ModelSettings(num_gpus=0))
        # The replicas are told where the model is, not a path on this machine.
        source = checkpoint_source(config)
        assert source == f"{uri}/runs/3-artist/model"
        local = resolve_checkpoint(config)  # downloaded once, here
        assert local.is_relative_to(tmp_path / "cache") and read_card(local) == read_card(checkpoint)
        assert study_selection(uri)["cell"] == "5|artist"  # GET /model's study block, read from the bucket
        assert build_app(config) is not None  # the builder reads the card from its own copy
        # A model replica's constructor copies the URI into its node's cache and loads it from there.
        replica = MoodModel.func_or_class(source, serve_config_to_dict(config))
        assert replica.info()["device"] == "cpu"
        assert replica.scorer.scorer.predictor.card.checkpoint_id == read_card(checkpoint).checkpoint_id
