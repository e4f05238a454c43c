"""What `mtlmood train` leaves in its output directory, and how to read it back.

``train_run`` (what `mtlmood train` runs: mtlmood.train.fit, saving as it goes) writes,
after every epoch, the resolved ``config.yaml`` (from the first epoch on) and
``train_state.pt``; at the end ``metrics.json`` and the
checkpoint (``weights.pt`` + ``model_card.json``, the card last: it marks a finished
run). ``inspect_output_dir`` says what a directory holds (nothing, a run to resume, a
finished run) and which settings differ from the config at hand; ``clear_output_dir``
removes a run's files; ``format_epoch`` is the progress line it prints. The training loop
(mtlmood.train) and this directory bookkeeping each stay one readable file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from mtlmood.checkpoint import CARD_FILE, WEIGHTS_FILE, load_train_state, save_checkpoint, save_train_state
from mtlmood.coerce import from_dict, to_dict
from mtlmood.config import RunConfig
from mtlmood.config_io import save_config
from mtlmood.distributed import rank_and_world
from mtlmood.errors import ConfigError
from mtlmood.fileio import atomic_write_json, read_json_object
from mtlmood.filenames import TRAIN_STATE_FILE
from mtlmood.rundata import load_run_data
from mtlmood.train import fit
from mtlmood.train_state import Callback, EpochResult, FitResult, TrainState

# What train_run writes into its output directory. The model card is written last: it
# marks a finished run.
CONFIG_FILE = "config.yaml"
STATE_FILE = TRAIN_STATE_FILE
METRICS_FILE = "metrics.json"
RUN_FILES = (CARD_FILE, WEIGHTS_FILE, METRICS_FILE, STATE_FILE, CONFIG_FILE)  # card first: removal order
# Settings that may differ between a run and its resume: where the directory is now.
_NOT_COMPARED = ("output_dir",)


@dataclass
class OutputDir:
    """What a training output directory holds, compared with the config about to run in it.

    ``differences``: the settings (dotted keys) whose saved value differs from the config,
    each as ``key (saved -> now)``; a non-empty list means the directory holds another run.
    ``state``: the last epoch's ``TrainState.to_dict()`` when there is one to resume.
    ``finished``: the run completed (its model card, written last, exists); ``metrics``
    its metrics.json when readable.
    """

    path: Path
    differences: list[str] = field(default_factory=list)
    state: Optional[dict[str, Any]] = None
    finished: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict[str, Any], config: RunConfig) -> list[str]:
    """The settings in which ``config`` differs from a saved resolved config (a dict of
    ``config.yaml``), as ``key (saved -> now)``; ``output_dir`` is not compared."""
    try:
        normalised = to_dict(from_dict(RunConfig, saved))  # defaults for keys it did not save
    except ConfigError as exc:
        raise ConfigError(f"cannot compare with the saved config: {exc}") from None
    before, now = _flatten(normalised), _flatten(to_dict(config))
    return [
        f"{key} ({before.get(key)!r} -> {now.get(key)!r})"
        for key in sorted(set(before) | set(now))
        if key not in _NOT_COMPARED and before.get(key) != now.get(key)
    ]


def inspect_output_dir(config: RunConfig, output_dir: Union[str, Path]) -> OutputDir:
    """What ``output_dir`` holds for a run of ``config`` (see ``OutputDir``). The saved
    config is ``config.yaml``, else the training state's, else the model card's."""
    import yaml

    path = Path(output_dir)
    found = OutputDir(path=path, finished=(path / CARD_FILE).exists())
    state_path = path / STATE_FILE
    # A finished run's state is not needed (and may be large): its config is in config.yaml.
    state = load_train_state(state_path) if state_path.exists() and not found.finished else None
    saved: Optional[dict[str, Any]] = None
    if (path / CONFIG_FILE).exists():
        try:
            loaded = yaml.safe_load((path / CONFIG_FILE).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {path / CONFIG_FILE}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"cannot read {path / CONFIG_FILE}: not a mapping")
        saved = loaded
    elif state is not None and isinstance(state.get("config"), dict):
        saved = state["config"]
    elif found.finished:
        card = read_json_object(path / CARD_FILE, ConfigError, "model card")
        saved = card.get("run_config") if isinstance(card.get("run_config"), dict) else None
    if saved is not None:
        found.differences = config_differences(saved, config)
    if found.finished and (path / METRICS_FILE).exists():
        try:
            found.metrics = read_json_object(path / METRICS_FILE, ConfigError, "metrics")
        except ConfigError:
            found.metrics = {}
    found.state = state
    return found


def clear_output_dir(output_dir: Union[str, Path]) -> list[str]:
    """Delete what train_run wrote into ``output_dir`` (the model card first, so the
    directory never looks finished half-way); returns the names removed. Other files stay."""
    path = Path(output_dir)
    removed = []
    for name in RUN_FILES:
        if (path / name).exists():
            (path / name).unlink()
            removed.append(name)
    return removed


def format_epoch(result: EpochResult, max_epochs: int, monitor: str = "pr_auc") -> str:
    """One progress line per epoch."""
    val = result.val
    return (
        f"epoch {result.epoch:>2}/{max_epochs}  loss {result.train_loss:.4f} "
        f"(mood {result.train_mood_loss:.4f}, meta {result.train_meta_loss:.4f})  "
        f"val ROC-AUC {val.get('roc_auc', math.nan):6.2f}%  PR-AUC {val.get('pr_auc', math.nan):6.2f}%"
        f"{'  *best' if result.is_best else f'  ({result.bad_epochs} without {monitor} gain)'}  "
        f"{result.seconds:.1f}s, {result.segments_per_second:.0f} seg/s"
    )


def train_run(
    config: RunConfig,
    output_dir: Union[str, Path, None] = None,
    callback: Optional[Callback] = None,
    resume: Optional[dict[str, Any]] = None,
) -> FitResult:
    """load_run_data + fit + test scores, writing into ``output_dir`` (default ``config.output_dir``).

    After every epoch: ``config.yaml`` (resolved; from the first epoch on) and ``train_state.pt``
    (the full ``TrainState.to_dict()``), then ``callback``. At the end: ``metrics.json`` and
    the checkpoint (``weights.pt`` + ``model_card.json``, written last as the commit
    marker). Every file is written atomically. ``resume``: a state from ``train_state.pt``
    (``inspect_output_dir(...).state``) to continue from; the caller checks that it
    belongs to this config (``OutputDir.differences``)."""
    output_dir = Path(output_dir or config.output_dir)
    writer = rank_and_world()[1] == 0
    data = load_run_data(config)
    config_written = False

    def save_epoch(result: EpochResult, state: TrainState) -> Optional[bool]:
        nonlocal config_written
        if writer:
            if not config_written:  # the first finished epoch: the directory now holds this run
                save_config(config, output_dir / CONFIG_FILE)
                config_written = True
            save_train_state(output_dir / STATE_FILE, state.to_dict())
        return callback(result, state) if callback is not None else None

    result = fit(data, config, callback=save_epoch, resume=resume)
    if writer:
        save_config(config, output_dir / CONFIG_FILE)
        atomic_write_json(output_dir / METRICS_FILE, result.to_dict())
        save_checkpoint(output_dir, result.model, result.model_card())
    return result


__all__ = [
    "CONFIG_FILE",
    "STATE_FILE",
    "METRICS_FILE",
    "RUN_FILES",
    "OutputDir",
    "config_differences",
    "inspect_output_dir",
    "clear_output_dir",
    "format_epoch",
    "train_run",
]
