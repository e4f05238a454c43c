"""MODEL_CARD.md: every contract value read from the checkpoint's config, the labels, alpha and
metadata, scores (with a study's intervals when the caller hands over the study's record, and a
plain "no interval" otherwise), limitations and the citation. (Building the record from a study's
files is the study's: tests/study/test_model_cards.py.)"""

from __future__ import annotations

from pathlib import Path

from helpers.model_cards import MOODS, card_checkpoint
from mtlmood.checkpoint import ModelCard
from mtlmood.config import DatasetConfig, FeatureConfig, LabelConfig, ModelConfig
from mtlmood.model_card import MODEL_CARD_FILE, render_model_card, write_model_card
from mtlmood.study_evidence import ArmScores, StudyRecord


def test_the_card_states_the_checkpoints_own_contract_labels_and_alpha(tmp_path: Path) -> None:
    text = write_model_card(card_checkpoint(tmp_path / "ckpt")).read_text()
    assert (tmp_path / "ckpt" / MODEL_CARD_FILE).is_file()
    for expected in (
        "22050 Hz",
        "the first 10 s = at most 430 frames",  # int(10 * 22050 / 512)
        "n_fft 1024, hop 512 (43.0664 frames/s)",
        "40 bands",
        "log10(1 + 100 · mel)",
        "non-overlapping windows of 24 frames (≈ 0.56 s)",
        "float32 (batch, 24, 40)",
        "the mean over the song's windows",
        "`calm`, `dark`, `happy`",
        "N_meta = 3",
        "`artist+year`",
        "α = 0.5, 0.5 × the paper's heuristic N_mood / N_meta = 3/3 = 1",
        "**PR-AUC 64.57**, ROC-AUC 81.23",
        "**No confidence interval is available**",
        "**This checkpoint was trained on synthetic songs**",
        "Only the first 10 s of a recording are heard",
        "features.n_mels = 40 (paper: 96)",
        "Kumar",
        "Multi-task Learning with Metadata for Music Mood Classification",
        "arXiv:2110.04765",
    ):
        assert expected in text, expected
    for paper_value in ("16000 Hz", "96 bands", "187 frames", "29 s"):
        assert paper_value not in text, paper_value


def test_a_paper_config_baseline_card(tmp_path: Path) -> None:
    card = ModelCard(
        mood_names=MOODS,
        meta_names=[],
        model=ModelConfig(n_filters=4),
        features=FeatureConfig(),
        alpha=0.0,
        dataset=DatasetConfig(name="mtg-jamendo"),
        labels=LabelConfig(metadata="none"),
    )
    text = render_model_card(card, "ckpt")
    for expected in ("16000 Hz", "96 bands", "187 frames (≈ 2.99 s)", "first 29 s = at most 1812 frames"):
        assert expected in text, expected
    assert "Single-task baseline: α = 0" in text and "No test scores were recorded" in text
    assert "trained on synthetic" not in text and "model.n_filters = 4 (paper: 128)" in text


RECORD = StudyRecord(
    run_dir="s3://bucket/studies/s",
    cell="3|artist+year",
    is_default=True,
    selected_by="highest validation PR-AUC",
    arm="x1/3",
    phase="curve",
    alpha=0.333,
    seed=2,
    val_pr_auc=70.0,
    test_pr_auc=71.5,
    test_roc_auc=80.25,
    arm_scores=ArmScores(3, 63.25, 61.75, 64.75, 82.5, 81.5, 83.5, 0.9, "report/curves.csv"),
)


def test_a_study_record_survives_json_and_renders_its_interval(tmp_path: Path) -> None:
    import json

    again = StudyRecord.from_dict(json.loads(json.dumps(RECORD.to_dict())))
    assert again == RECORD
    bare = StudyRecord.from_dict({**RECORD.to_dict(), "arm_scores": None, "arm_note": "no report"})
    assert bare.arm_scores is None and bare.arm_note == "no report"
    text = write_model_card(card_checkpoint(tmp_path / "ckpt"), study=again).read_text()
    assert "### From the α study `s3://bucket/studies/s`" in text
    assert "(the study's default cell for serving)" in text and "Arm `x1/3` (curve phase), α = 0.333, seed 2" in text
    assert "Its arm over 3 seeds (from the study's report/curves.csv; mean [90% interval]" in text
    assert "**PR-AUC 63.25 [61.75, 64.75]**, ROC-AUC 82.50 [81.50, 83.50]" in text
    assert "No confidence interval" not in text and "One training run" not in text
