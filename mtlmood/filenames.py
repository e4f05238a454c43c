"""Names of the files one layer writes and another reads, in one place (no heavy imports:
the Serve ingress reads them without loading torch). The checkpoint pointer of a study,
whose format the core owns too, is mtlmood.checkpoint_pointer.BEST_CHECKPOINTS_FILE."""

from __future__ import annotations

# The resumable training state (model, optimizer, early stopping), one per run or trial.
TRAIN_STATE_FILE = "train_state.pt"
# What a study says about a checkpoint it chose as a cell's best (mtlmood.study_evidence.StudyRecord
# as JSON), written by study/report beside that checkpoint and read by serve to render its
# MODEL_CARD.md. mtlmood defines the record but never reads this file.
STUDY_EVIDENCE_FILE = "study_evidence.json"
