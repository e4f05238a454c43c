"""The checkpoint pointer of a run folder, ``best_checkpoint.json``: its name, its format, its
writer and its reader, and the resolution of "a checkpoint, or a folder whose pointer names
one" to a checkpoint folder (a path or a URI) and to a local copy of it.

    write_pointer(run_dir, cells, default_cell="9|artist", selected_by="highest validation PR-AUC")
    model_dir = local_checkpoint(run_dir)              # the default cell's model, as a local folder
    model_dir = local_checkpoint(run_dir, "3|artist")  # another cell's
    entry = cell_entry(read_pointer(run_dir), "3|artist")  # what the study says about that model

The format (the study writes it through ``write_pointer``; `mtlmood serve --study`, `mtlmood
predict RUN_DIR` and the catalog read it)::

    {"default_cell": "<cell>", "checkpoint": "<the default cell's checkpoint>",
     "selected_by": "<why these>", "cells": {"<cell>": {"checkpoint": "<path>", ...}, ...}}

A checkpoint path relative to the run folder is relative to it (a synced or moved run still
resolves); an absolute path or a URI is taken as it is. A pointer written before runs had
cells holds only ``checkpoint``. The core owns the format so that serve and the catalog, which
may not import the study, read what the study wrote through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from mtlmood.errors import CheckpointError, ConfigError
from mtlmood.remote_cache import local_copy
from mtlmood.storage import Location, exists, is_dir, is_file, is_uri, join, normalize, read_json_object, write_json

BEST_CHECKPOINTS_FILE = "best_checkpoint.json"
CARD_FILE = "model_card.json"  # mtlmood.checkpoint.CARD_FILE (not imported: keeps torch out)


def write_pointer(
    run_dir: Location, cells: Mapping[str, Mapping[str, Any]], default_cell: str, selected_by: str
) -> str:
    """Write ``<run_dir>/best_checkpoint.json``: ``cells`` (cell -> its entry, whose
    ``checkpoint`` is a path relative to ``run_dir``, absolute, or a URI; other keys are kept
    as they are), the default cell and its checkpoint, and ``selected_by`` (how they were
    chosen). Atomic (mtlmood.storage.write_json); returns the pointer's location."""
    if default_cell not in cells:
        raise ValueError(f"default cell {default_cell!r} is not one of the cells: {', '.join(sorted(cells))}")
    pointer = join(run_dir, BEST_CHECKPOINTS_FILE)
    write_json(
        pointer,
        {
            "default_cell": default_cell,
            "checkpoint": cells[default_cell]["checkpoint"],
            "selected_by": selected_by,
            "cells": cells,
        },
    )
    return pointer


def read_pointer(run_dir: Location) -> dict[str, Any]:
    """The pointer of ``run_dir`` as written; CheckpointError when it is missing or not a JSON object."""
    return read_json_object(join(run_dir, BEST_CHECKPOINTS_FILE), CheckpointError, "study pointer")


def has_pointer(run_dir: Location) -> bool:
    """Whether ``run_dir`` holds a pointer (a study folder), rather than being a checkpoint itself."""
    return is_file(join(run_dir, BEST_CHECKPOINTS_FILE))


def cell_entry(data: Mapping[str, Any], cell: str = "", where: str = BEST_CHECKPOINTS_FILE) -> dict[str, Any]:
    """What a pointer's content says about one cell's best model (``cell`` "" = its default cell):
    the cell's entry as written (checkpoint, arm, alpha, seed, scores...) plus ``cell`` and
    ``default_cell``. A pointer written before studies had cells gives ``{"cell": "", "checkpoint":
    ...}``. ConfigError when there is no such cell, CheckpointError when the entry names no
    checkpoint; ``where`` names the pointer in the messages. Models are only ever chosen within a
    cell: PR-AUC of different mood counts is not comparable."""
    cells = data.get("cells")
    if isinstance(cells, dict):
        chosen = cell or str(data.get("default_cell", ""))
        if chosen not in cells or not isinstance(cells[chosen], dict):
            raise ConfigError(f"cell {chosen!r} is not in {where}; its cells: {', '.join(sorted(cells))}")
        entry = {"cell": chosen, "default_cell": data.get("default_cell"), **cells[chosen]}
    else:  # a pointer written before studies had cells
        entry = {"cell": "", "checkpoint": data.get("checkpoint")}
    target = entry.get("checkpoint")
    if not isinstance(target, str) or not target:
        raise CheckpointError(f"{where} names no checkpoint")
    return entry


def pointed_checkpoint(data: Mapping[str, Any], cell: str = "", where: str = BEST_CHECKPOINTS_FILE) -> str:
    """The checkpoint path a pointer's content names for ``cell`` ("" = its default cell), as
    written (maybe relative); the errors of ``cell_entry``."""
    return str(cell_entry(data, cell, where)["checkpoint"])


def _folder_text(location: Location) -> str:
    """A run or checkpoint folder as text: a URI normalised, a local path with ``~`` expanded."""
    text = normalize(location)
    return text if is_uri(text) else str(Path(text).expanduser())


def pointed_location(run_dir: Location, target: str) -> str:
    """Where a checkpoint path that ``run_dir``'s pointer names is: a URI, or an absolute path of a
    local run, as written; a relative path below the run folder (a synced or moved run still
    resolves)."""
    text = _folder_text(run_dir)
    if is_uri(target) or (not is_uri(text) and Path(target).is_absolute()):
        return target
    return join(text, target)


def checkpoint_location(location: Location, cell: str = "") -> str:
    """The checkpoint folder named by ``location`` (a path or a URI): a checkpoint itself, or a
    study run folder whose ``best_checkpoint.json`` names one (``cell`` picks the cell, "" =
    the study's default). A relative path in the pointer is relative to the run folder.
    CheckpointError / ConfigError with the reason when there is none."""
    text = _folder_text(location)
    if not has_pointer(text):
        if cell:
            raise ConfigError(f"a cell names a cell of a study, but {text} has no {BEST_CHECKPOINTS_FILE}")
        if not is_dir(text):
            raise CheckpointError(f"checkpoint directory not found: {text}")
        return text
    return pointed_location(text, pointed_checkpoint(read_pointer(text), cell, join(text, BEST_CHECKPOINTS_FILE)))


def local_checkpoint(location: Location, cell: str = "", cache_dir: Optional[Location] = None) -> Path:
    """A local checkpoint folder (weights.pt + model_card.json) for ``location``: a checkpoint
    or a study run folder, local or a URI (``s3://bucket/studies/my-study``). Local folders are
    returned as they are; a remote checkpoint is downloaded once into the cache (see
    ``mtlmood.remote_cache.local_copy``). CheckpointError when the folder holds no ``model_card.json``.
    What `mtlmood serve` and `mtlmood predict` load.
    """
    target = checkpoint_location(location, cell)
    if not exists(target):
        raise CheckpointError(f"checkpoint directory not found: {target}")
    if not is_file(join(target, CARD_FILE)):
        raise CheckpointError(
            f"{target} is not a checkpoint (no {CARD_FILE}; an interrupted upload also leaves it missing)"
        )
    try:
        return local_copy(target, cache_dir)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint directory not found: {target}") from None


__all__ = [
    "BEST_CHECKPOINTS_FILE",
    "cell_entry",
    "checkpoint_location",
    "has_pointer",
    "local_checkpoint",
    "pointed_checkpoint",
    "pointed_location",
    "read_pointer",
    "write_pointer",
]
