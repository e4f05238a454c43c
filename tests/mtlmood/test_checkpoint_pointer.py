"""mtlmood.checkpoint_pointer writes best_checkpoint.json byte for byte as the study wrote it
before the core owned the format (existing studies keep resolving), and reads back what it wrote."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtlmood.checkpoint_pointer import (
    BEST_CHECKPOINTS_FILE,
    cell_entry,
    checkpoint_location,
    has_pointer,
    pointed_checkpoint,
    pointed_location,
    read_pointer,
    write_pointer,
)
from mtlmood.errors import CheckpointError, ConfigError

CELLS = {
    "3|artist": {
        "checkpoint": "runs/curve/3-artist/heuristic/seed-1/model",
        "arm": "heuristic",
        "phase": "curve",
        "alpha": 0.06,
        "seed": 1,
        "n_moods": 3,
        "metadata": "artist",
        "val_pr_auc": 71.5,
        "test_pr_auc": 69.25,
        "test_roc_auc": 80.0,
    },
    "50|none": {"checkpoint": "/abs/model", "arm": "baseline", "alpha": 0.0, "n_moods": 50},
}
SELECTED_BY = "highest validation PR-AUC (%) within each cell; cells are never ranked against each other"
# What study/report/serving.py wrote before the format moved to mtlmood (storage.write_json of this dict).
WRITTEN_BEFORE = """{
  "default_cell": "3|artist",
  "checkpoint": "runs/curve/3-artist/heuristic/seed-1/model",
  "selected_by": "highest validation PR-AUC (%) within each cell; cells are never ranked against each other",
  "cells": {
    "3|artist": {
      "checkpoint": "runs/curve/3-artist/heuristic/seed-1/model",
      "arm": "heuristic",
      "phase": "curve",
      "alpha": 0.06,
      "seed": 1,
      "n_moods": 3,
      "metadata": "artist",
      "val_pr_auc": 71.5,
      "test_pr_auc": 69.25,
      "test_roc_auc": 80.0
    },
    "50|none": {
      "checkpoint": "/abs/model",
      "arm": "baseline",
      "alpha": 0.0,
      "n_moods": 50
    }
  }
}
"""


def test_the_pointer_is_written_byte_for_byte_as_before(tmp_path: Path) -> None:
    assert not has_pointer(tmp_path)
    where = write_pointer(tmp_path, CELLS, "3|artist", SELECTED_BY)
    assert where == str(tmp_path / BEST_CHECKPOINTS_FILE) and BEST_CHECKPOINTS_FILE == "best_checkpoint.json"
    assert (tmp_path / BEST_CHECKPOINTS_FILE).read_text() == WRITTEN_BEFORE
    assert has_pointer(tmp_path) and read_pointer(tmp_path)["cells"] == CELLS
    with pytest.raises(ValueError, match=re.escape("default cell '9|none' is not one of the cells")):
        write_pointer(tmp_path, CELLS, "9|none", SELECTED_BY)
    assert (tmp_path / BEST_CHECKPOINTS_FILE).read_text() == WRITTEN_BEFORE  # a refused write leaves it


def test_what_a_pointer_names_per_cell_and_before_cells(tmp_path: Path) -> None:
    """Relative paths are below the run folder, absolute ones are kept; a pointer without cells
    (written before studies had them) names one checkpoint."""
    write_pointer(tmp_path, CELLS, "3|artist", SELECTED_BY)
    assert checkpoint_location(tmp_path) == str(tmp_path / "runs/curve/3-artist/heuristic/seed-1/model")
    assert checkpoint_location(tmp_path, "50|none") == "/abs/model"
    refused = re.escape(f"cell '4|none' is not in {tmp_path / BEST_CHECKPOINTS_FILE}; its cells: 3|artist, 50|none")
    with pytest.raises(ConfigError, match=refused):
        checkpoint_location(tmp_path, "4|none")
    assert pointed_checkpoint({"checkpoint": "runs/best"}) == "runs/best"
    with pytest.raises(CheckpointError, match="names no checkpoint"):
        pointed_checkpoint({"cells": {"3|artist": {"arm": "baseline"}}, "default_cell": "3|artist"})
    with pytest.raises(ConfigError, match="a cell names a cell of a study"):
        checkpoint_location(tmp_path / "runs", "3|artist")


def test_what_the_pointer_says_about_a_cell_is_read_by_the_core(tmp_path: Path) -> None:
    """cell_entry: the chosen cell's entry with its name and the default (what `GET /model` shows);
    pointed_location: where its checkpoint is, relative paths below the run folder."""
    write_pointer(tmp_path, CELLS, "3|artist", SELECTED_BY)
    entry = cell_entry(read_pointer(tmp_path))
    assert entry == {"cell": "3|artist", "default_cell": "3|artist", **CELLS["3|artist"]}
    assert cell_entry(read_pointer(tmp_path), "50|none")["arm"] == "baseline"
    assert cell_entry({"checkpoint": "runs/best"}) == {"cell": "", "checkpoint": "runs/best"}  # before cells
    with pytest.raises(ConfigError, match=re.escape("cell '4|none' is not in where.json")):
        cell_entry(read_pointer(tmp_path), "4|none", "where.json")
    assert pointed_location(tmp_path, entry["checkpoint"]) == str(tmp_path / entry["checkpoint"])
    assert pointed_location(tmp_path, "/abs/model") == "/abs/model"
    assert pointed_location("s3://bucket/study", "runs/m") == "s3://bucket/study/runs/m"
    assert pointed_location(tmp_path, "s3://bucket/m") == "s3://bucket/m"
