"""An untrained checkpoint of the paper's model, for tests, benchmarks and smoke runs.

    untrained_checkpoint("runs/ckpt", n_filters=8)                    # 9 moods, 3 artists
    untrained_checkpoint(path, moods=["happy", "sad"], n_meta=50, realistic_batchnorm=True)
    untrained_checkpoint(path, model=ModelConfig(n_filters=4, n_blocks=2, segment_frames=16, n_mels=8),
                         features=FeatureConfig(n_mels=8), meta_names=[], alpha=0.0)  # a tiny baseline

Serving, export and batch inference are exact functions of the weights, whatever they are,
and their speed does not depend on them: a seeded untrained model tests and times them
without a training run. ``realistic_batchnorm`` gives the BatchNorm layers running
statistics away from (0, 1), so that a path that forgets to apply them (or applies them
twice) changes the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mtlmood.checkpoint import ModelCard, save_checkpoint
from mtlmood.config import FeatureConfig, LabelConfig, ModelConfig

DEFAULT_MOODS = tuple(f"mood_{i}" for i in range(9))


def untrained_checkpoint(
    directory: Union[str, Path],
    *,
    n_filters: int = 8,
    model: Optional[ModelConfig] = None,
    moods: Sequence[str] = DEFAULT_MOODS,
    meta_names: Optional[Sequence[str]] = None,
    n_meta: int = 3,
    alpha: Optional[float] = None,
    seed: int = 0,
    realistic_batchnorm: bool = False,
    **card: Any,
) -> Path:
    """Save a seeded, untrained MoodCNN and its card to ``directory``; returns the directory.

    ``model`` defaults to the paper's ModelConfig ``n_filters`` wide; ``meta_names`` to
    ``artist_0 .. artist_{n_meta-1}``; ``alpha`` to the paper's n_moods / n_meta. ``seed``
    seeds the weights and is the card's seed. Further keyword arguments are ModelCard fields
    (``features=``, ``labels=``, ``dataset=``, ``metrics=``, ...).
    """
    import torch

    from mtlmood.model import MoodCNN

    names = list(meta_names) if meta_names is not None else [f"artist_{i}" for i in range(n_meta)]
    torch.manual_seed(seed)
    config = model if model is not None else ModelConfig(n_filters=n_filters)
    network = MoodCNN(config, len(moods), len(names))
    if realistic_batchnorm:
        with torch.no_grad():
            for norm in (m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)):
                assert norm.running_mean is not None and norm.running_var is not None  # track_running_stats
                norm.running_mean.uniform_(0.0, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
    card.setdefault("labels", LabelConfig(n_moods=len(moods)))
    model_card = ModelCard(
        mood_names=list(moods),
        meta_names=names,
        model=config,
        features=card.pop("features", FeatureConfig()),
        alpha=alpha if alpha is not None else len(moods) / max(len(names), 1),
        seed=seed,
        **card,
    )
    directory = Path(directory)
    save_checkpoint(directory, network, model_card)
    return directory
