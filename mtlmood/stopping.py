"""The early-stopping rule of ``mtlmood.train.fit``, as pure functions of the validation scores.

The paper stops after ``patience`` (3) epochs without a new best raw validation score.
That is fine on 20,000 songs, but on a small validation set (the demo's ~300 songs,
a width-8 model) one noisy epoch below the best, followed by two more, stops a run at
epoch 2-8 while it is still learning, and the test score then depends more on the
seed than on alpha. Two settings (``TrainConfig``) make one noisy epoch harmless:

- ``min_epochs``: never stop before this many epochs (0 = the paper: no minimum);
- ``stop_smoothing`` (k): patience counts epochs without a new best of the **moving
  average of the last k validation scores** (k = 1 = the raw score, the paper's rule).
  A single dip moves a k-epoch mean by 1/k of the dip, so it rarely ends a streak of
  gains.

Only *when* to stop is smoothed. The weights kept are still those of the best **raw**
validation epoch (``TrainState.best_epoch``): the smoothed curve says whether training
still improves, the raw score says which epoch's model is best.

The rule's state is two numbers (the best smoothed score so far and the epochs since
it), saved in ``TrainState.to_dict()`` so a resumed run stops exactly where an
uninterrupted one would. The smoothed score itself is recomputed from the history of
validation scores, which the state holds as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


def moving_average(scores: Sequence[float], k: int) -> float:
    """The mean of the last ``k`` scores (fewer while fewer exist), NaNs skipped; NaN if
    none of them is a number (a validation set without positives scores NaN)."""
    if k < 1:
        raise ValueError(f"the moving-average window must be >= 1, got {k}")
    window = [s for s in scores[-k:] if not math.isnan(s)]
    return sum(window) / len(window) if window else math.nan


@dataclass
class PatienceCounter:
    """Epochs since the smoothed validation score last reached a new best.

    ``best`` starts at -inf, so the first numeric score is always a new best; a NaN
    score is never one (it counts as an epoch without gain)."""

    best: float = -math.inf
    stale: int = 0

    def update(self, smoothed: float) -> bool:
        """Count one epoch with this smoothed score; True when it is a new best."""
        if not math.isnan(smoothed) and smoothed > self.best:
            self.best, self.stale = smoothed, 0
            return True
        self.stale += 1
        return False


def should_stop(epoch: int, stale: int, patience: int, min_epochs: int = 0) -> bool:
    """Stop after ``epoch`` completed epochs: ``patience`` epochs without a smoothed gain,
    and at least ``min_epochs`` trained."""
    return epoch >= min_epochs and stale >= patience


def stop_epoch(scores: Sequence[float], patience: int, min_epochs: int = 0, smoothing: int = 1) -> Optional[int]:
    """The epoch (1-based) after which the rule stops a run whose validation scores are
    ``scores``, or None if it trains through all of them. What ``fit`` does, epoch by
    epoch; used by tests and benchmarks to replay a recorded validation curve."""
    counter = PatienceCounter()
    for epoch in range(1, len(scores) + 1):
        counter.update(moving_average(scores[:epoch], smoothing))
        if should_stop(epoch, counter.stale, patience, min_epochs):
            return epoch
    return None


__all__ = ["PatienceCounter", "moving_average", "should_stop", "stop_epoch"]
