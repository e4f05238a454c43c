"""`mtlmood serve --study RUN [--cell N|META]`: the model is chosen within a cell, never across."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtlmood.errors import ConfigError
from serve.config import ServeConfig, checkpoint_source, resolve_checkpoint, study_selection
from serve.config_file import load_serve_config


def best_checkpoint_of_study(run_dir: Path, cell: str = "") -> Path:
    """Where `mtlmood serve --study RUN [--cell CELL]` takes its model from (mtlmood.storage's resolution)."""
    return Path(checkpoint_source(ServeConfig(study=str(run_dir), cell=cell)))


def _pointer(run_dir: Path) -> None:
    cells = {
        "3|artist": {
            "checkpoint": "runs/curve/3-artist/heuristic/seed-1/model",
            "arm": "heuristic",
            "val_pr_auc": 71.0,
            "n_moods": 3,
        },
        "50|artist": {
            "checkpoint": "runs/curve/50-artist/x3/seed-2/model",
            "arm": "x3",
            "val_pr_auc": 17.5,
            "n_moods": 50,
        },
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "best_checkpoint.json").write_text(
        json.dumps({"default_cell": "50|artist", "checkpoint": cells["50|artist"]["checkpoint"], "cells": cells})
    )


def test_default_cell_then_a_named_cell(tmp_path: Path) -> None:
    _pointer(tmp_path)
    # The default is the study's choice (the largest mood count), not the highest raw PR-AUC.
    assert best_checkpoint_of_study(tmp_path) == tmp_path / "runs/curve/50-artist/x3/seed-2/model"
    assert best_checkpoint_of_study(tmp_path, "3|artist") == tmp_path / "runs/curve/3-artist/heuristic/seed-1/model"
    selection = study_selection(tmp_path, "3|artist")
    assert selection["cell"] == "3|artist" and selection["arm"] == "heuristic"


def test_an_unknown_cell_names_the_cells_there_are(tmp_path: Path) -> None:
    _pointer(tmp_path)
    with pytest.raises(ConfigError, match=r"'9\|artist'.*3\|artist, 50\|artist"):
        best_checkpoint_of_study(tmp_path, "9|artist")


def test_a_cell_without_a_study_is_refused(tmp_path: Path) -> None:
    config = load_serve_config(None, [], checkpoint=str(tmp_path), cell="3|artist")
    with pytest.raises(ConfigError, match="--study"):
        resolve_checkpoint(config)
