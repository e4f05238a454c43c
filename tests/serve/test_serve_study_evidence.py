"""GET /model/card of a checkpoint a study chose: rendered from the record the study wrote beside it
(serve reads the study's files, never its code), naming where the checkpoint is served from."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.serve_apps import MOODS
from mtlmood.checkpoint import read_card
from mtlmood.filenames import STUDY_EVIDENCE_FILE
from mtlmood.model_card import MODEL_CARD_FILE
from mtlmood.study_evidence import ArmScores, StudyRecord
from mtlmood.synth.checkpoints import untrained_checkpoint


def test_a_study_checkpoint_is_rendered_with_the_evidence_the_study_wrote_beside_it(tmp_path: Path) -> None:
    from serve.app import model_card_markdown

    checkpoint = untrained_checkpoint(tmp_path / "best", n_filters=8, moods=MOODS)
    scores = ArmScores(3, 63.25, 61.75, 64.75, 82.5, 81.5, 83.5, 0.9, "report/curves.csv")
    record = StudyRecord(
        "/studies/s", "3|artist", True, "by validation", "x1", "curve", 1.0, 2, 70.0, 71.5, 80.25, scores
    )
    (checkpoint / STUDY_EVIDENCE_FILE).write_text(json.dumps(record.to_dict()))
    (checkpoint / MODEL_CARD_FILE).write_text("# the study's card\n")
    text = model_card_markdown(checkpoint, read_card(checkpoint), source="s3://bucket/studies/s/runs/best")
    assert "### From the α study `/studies/s`" in text and "**PR-AUC 63.25 [61.75, 64.75]**" in text
    assert "s3://bucket/studies/s/runs/best" in text
    (checkpoint / STUDY_EVIDENCE_FILE).write_text("not json")  # unreadable: served without it, never refused
    assert model_card_markdown(checkpoint, read_card(checkpoint)) == "# the study's card\n"
