"""A checkpoint with a hand-made card (contract values unlike the paper's, known scores), for model card tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlmood.config import DatasetConfig, FeatureConfig, LabelConfig, ModelConfig
from mtlmood.synth.checkpoints import untrained_checkpoint

MOODS = ["calm", "dark", "happy"]
# Deliberately unlike the paper's values, so a hard-coded 16 kHz / 96 / 187 would show.
FEATURES = FeatureConfig(sample_rate=22050, max_seconds=10.0, n_fft=1024, hop_length=512, n_mels=40, log_multiplier=100)
MODEL = ModelConfig(n_filters=4, n_blocks=2, segment_frames=24, n_mels=40)
TEST = {
    "roc_auc": 81.234,
    "pr_auc": 64.567,
    "prevalence": 33.3,
    "n_songs": 77,
    "n_labels": 3,
    "excluded_labels": [],
    "per_label": {m: {"roc_auc": 80.0, "pr_auc": 60.0, "positives": 10} for m in MOODS},
}


def card_checkpoint(directory: Path, n_meta: int = 3, alpha: float = 0.5, **card: Any) -> Path:
    """An untrained checkpoint of MODEL / FEATURES whose card carries known scores and settings
    (``n_meta`` metadata outputs: artists and one year bucket; ``card``: further card fields)."""
    meta = [f"artist:a{i}" for i in range(n_meta - 1)] + (["year:2005-2009"] if n_meta else [])
    options: dict[str, Any] = dict(
        dataset=DatasetConfig(name="synthetic", root="/data/synth"),
        labels=LabelConfig(n_moods=3, metadata="artist+year" if n_meta else "none", n_artists=2),
        metrics={"best_epoch": 4, "validation": {"pr_auc": 60.1, "n_songs": 70}, "test": TEST},
        run_config={"train": {"alpha": "auto"}},
    )
    options.update(card)
    return untrained_checkpoint(
        directory, model=MODEL, features=FEATURES, moods=MOODS, meta_names=meta, alpha=alpha, seed=7, **options
    )
