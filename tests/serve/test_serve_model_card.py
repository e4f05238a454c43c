"""GET /model/card: which MODEL_CARD.md build_app hands the router (no Ray needed to check it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers.serve_apps import MOODS
from mtlmood.checkpoint import read_card
from mtlmood.model_card import MODEL_CARD_FILE
from mtlmood.synth.checkpoints import untrained_checkpoint


def test_rendered_from_the_card_or_taken_from_a_copy_of_a_study_checkpoint(tmp_path: Path) -> None:
    from serve.app import model_card_markdown

    checkpoint = untrained_checkpoint(tmp_path / "study" / "runs" / "best", n_filters=8, moods=MOODS)
    card = read_card(checkpoint)
    # A checkpoint no study chose: rendered from its card, naming where it is served from.
    text = model_card_markdown(checkpoint, card, source="s3://bucket/models/best")
    assert text.startswith(f"# Model card: mtlmood mood classifier `{card.checkpoint_id}`")
    assert "s3://bucket/models/best" in text
    # A copy away from its study (e.g. downloaded from a bucket) keeps the card the study wrote.
    (tmp_path / "study" / "best_checkpoint.json").write_text(json.dumps({"checkpoint": "runs/best"}))
    (checkpoint / MODEL_CARD_FILE).write_text("# the study's card\n")
    copy = Path(shutil.copytree(checkpoint, tmp_path / "cache" / "best"))
    assert model_card_markdown(copy, card) == "# the study's card\n"
