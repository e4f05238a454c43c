"""Names of the files one layer writes and another reads, in one place (no heavy imports:
the Serve ingress reads them without loading torch)."""

from __future__ import annotations

# A study's pointer to the best checkpoint of each of its cells (written by study/report,
# read by serve).
BEST_CHECKPOINTS_FILE = "best_checkpoint.json"
# The resumable training state (model, optimizer, early stopping), one per run or trial.
TRAIN_STATE_FILE = "train_state.pt"
