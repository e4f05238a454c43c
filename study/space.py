"""Phase 1's search, kept inside each cell: one Optuna TPE study per cell and ASHA rungs per cell.

Cells are the factors the study varies (mood count x metadata set); alpha is what it
searches. PR-AUC of 3 and 50 moods lives on different scales, so a searcher or scheduler
that compared trials across cells would spend the budget on the cell that scores higher
and stop the other cells' trials at their first rung. Here one Tune experiment keeps
cluster-wide parallelism, but

* :class:`CellSearcher` holds one ``OptunaSearch`` per cell, hands out each cell's own
  budget (round robin, so every cell progresses at once) and routes every result back to
  the study of the cell it came from; each cell's study lives in Optuna's own storage
  (a database: study.optuna_store), where optuna-dashboard and optuna.load_study open it;
* :class:`CellASHA` holds one ASHA scheduler per cell: a trial's rung cutoffs are set by
  trials of its own cell only.

Both classes live at module level: Tune pickles them with the experiment, and
``Tuner.restore`` brings back their state (each cell's Optuna study and rungs).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from study.config import StudyConfig
from study.optuna_store import fail_lost_trial, is_persistent, is_told, label_study, label_trial, reconcile
from study.optuna_urls import cell_study_name

CELL = "cell"  # trial config key naming the trial's cell ("n_moods|metadata")
OPTUNA_DEFAULT_STARTUP = 10  # optuna.samplers.TPESampler's own n_startup_trials
METRIC, MODE = "val_pr_auc", "max"


@dataclass(frozen=True)
class AlphaSpace:
    """Define-by-run space of one cell: alpha as a log-uniform multiple of its heuristic."""

    low: float
    high: float

    def __call__(self, trial: Any) -> None:
        trial.suggest_float("alpha_factor", self.low, self.high, log=True)


def n_startup_trials(study: StudyConfig) -> int:
    """TPE's random start-up per cell: "auto" = a third of the cell's budget, 2..10."""
    setting = study.search.n_startup_trials
    if setting == "auto":
        return max(2, min(OPTUNA_DEFAULT_STARTUP, study.search.trials_per_cell // 3))
    return int(setting)


def make_sampler(study: StudyConfig, cell_index: int) -> Any:
    """A seeded TPE sampler for one cell (constant liar: concurrent trials spread out)."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=study.search.optuna_seed + cell_index, n_startup_trials=n_startup_trials(study), constant_liar=True
    )


def make_cell_searcher(
    study: StudyConfig, cell_keys: list[str], storage: Any = None, max_concurrent: int = 0
) -> "CellSearcher":
    """The phase-1 searcher: one OptunaSearch per cell, the heuristic (x1) first in each;
    ``max_concurrent`` trials at a time at most (0: no limit).

    ``storage``: an ``optuna.storages.BaseStorage`` (study.optuna_store.fresh_storage) where
    each cell's study lives under its own name (``<study name>:<cell key>``), or None for
    Optuna's in-memory storage (tests, benchmarks). The search is the same either way."""
    space = AlphaSpace(study.search.alpha_factor_low, study.search.alpha_factor_high)
    searchers = {
        key: OptunaSearch(
            space,
            metric=METRIC,
            mode=MODE,
            points_to_evaluate=[{"alpha_factor": 1.0}],
            sampler=make_sampler(study, i),
            study_name=cell_study_name(study.name, key) if storage is not None else None,
            storage=storage,
        )
        for i, key in enumerate(cell_keys)
    }
    if storage is not None:
        for key, searcher in searchers.items():
            label_study(searcher, study.run_dir, key)
    return CellSearcher(searchers, study.search.trials_per_cell, max_concurrent)


def make_cell_scheduler(study: StudyConfig) -> Any:
    """ASHA with rungs per cell (epochs as time), or FIFO when the scheduler is off."""
    if not study.scheduler.enabled:
        return FIFOScheduler()
    return CellASHA(
        max_t=study.run.train.max_epochs + 1,
        grace_period=study.scheduler.grace_period,
        reduction_factor=study.scheduler.reduction_factor,
    )


class CellSearcher(Searcher):
    """One Optuna study per cell; each cell gets ``budget`` trials (see the module docstring),
    ``max_concurrent`` at a time at most (0: no limit).

    It keeps its own counts (trials issued per cell, trials live) instead of Tune's
    ``ConcurrencyLimiter`` and ``num_samples``, so that a resume can correct them: Tune saves
    the searcher, its generator and the experiment's trial list in separate files, uploaded one
    by one, and a driver killed between the uploads leaves them from different moments. Then
    Tune's counts are wrong (the S3 study test lost a trial so, 2026-12-07: see
    :class:`CellSearchGenerator`; a limiter holding a trial the list lacks would wait forever).
    :meth:`restore` makes this searcher's counts agree with the restored trials."""

    def __init__(self, searchers: dict[str, Any], budget: int, max_concurrent: int = 0) -> None:
        # No metric at this level: Tune would then demand it in every result, a trial's
        # one-line failure report included. Each cell's OptunaSearch knows it.
        super().__init__()
        self.searchers = searchers
        self.budget = budget
        self.max_concurrent = max_concurrent
        self.issued = {key: 0 for key in searchers}
        self.owner: dict[str, str] = {}
        self.live: set[str] = set()
        self.adopted: set[str] = set()  # restored trials never issued here: no Optuna trial of ours

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True  # each cell's OptunaSearch already knows its metric, mode and space

    def _next_cell(self) -> Optional[str]:
        open_cells = [key for key, n in self.issued.items() if n < self.budget]
        return min(open_cells, key=lambda key: self.issued[key]) if open_cells else None

    def suggest(self, trial_id: str) -> Optional[dict]:
        key = self._next_cell()
        if key is None:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel is a str; its annotation omits it
        if self.max_concurrent and len(self.live) >= self.max_concurrent:
            return None  # Tune asks again when a trial has ended
        config = self.searchers[key].suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        label_trial(self.searchers[key], trial_id)  # users find the Tune trial of an Optuna trial
        self.issued[key] += 1
        self.owner[trial_id] = key
        self.live.add(trial_id)
        return {**config, CELL: key}

    def _open(self, trial_id: str) -> Optional[Any]:
        """The OptunaSearch of a trial whose result may still be written to its study: a trial
        told already (a resumed search runs it again, see study.optuna_store.reconcile) is not."""
        search = self.searchers.get(self.owner.get(trial_id, ""))
        if search is None or trial_id in self.adopted or is_told(search, trial_id):
            return None
        return search

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        search = self._open(trial_id)
        if search is not None and METRIC in result:
            search.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        self.live.discard(trial_id)
        search = self._open(trial_id)
        if search is not None:
            usable = result if result and METRIC in result else None
            search.on_trial_complete(trial_id, usable, error or usable is None)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__.copy(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        for name, empty in (("live", set()), ("adopted", set()), ("max_concurrent", 0)):
            self.__dict__.setdefault(name, empty)  # saved before the searcher kept these
        # A study in a database may be ahead of the state just restored: bring it in line.
        for search in self.searchers.values():
            if is_persistent(search):
                reconcile(search)
        # Tune downloads the experiment's saved files beside this one before restoring it.
        restored = restored_trials(Path(checkpoint_path).parent)
        if restored is not None:
            self.reconcile_trials(restored)

    def reconcile_trials(self, restored: dict[str, tuple[str, str]]) -> None:
        """Make the counts agree with the trials Tune restored (id -> (cell, Tune status)).

        * A trial this searcher issued that Tune's experiment lacks is forgotten: its cell gets
          the trial back and its Optuna trial is failed (study.optuna_store.fail_lost_trial).
        * A trial Tune restored that this searcher never issued (the experiment saved after
          it) counts against its cell's budget; Tune runs it, its results stay out of Optuna,
          whose trial for it ``reconcile`` failed as asked after the save.
        * Live are the restored trials Tune runs again: all but the finished ones."""
        for trial_id in sorted(set(self.owner) - set(restored)):
            key = self.owner.pop(trial_id)
            self.issued[key] -= 1
            fail_lost_trial(self.searchers[key], trial_id)
        for trial_id, (key, _) in sorted(restored.items()):
            if trial_id not in self.owner and key in self.issued:
                self.owner[trial_id] = key
                self.issued[key] += 1
                self.adopted.add(trial_id)
        self.live = {t for t, (_, status) in restored.items() if t in self.owner and status != "TERMINATED"}


def restored_trials(experiment_dir: Path) -> Optional[dict[str, tuple[str, str]]]:
    """Trial id -> (its cell, its Tune status) of the newest experiment state file in
    ``experiment_dir`` (the one ``Tuner.restore`` restores: newest by name), or None when there
    is none."""
    from ray.tune.execution.tune_controller import TuneController

    states = sorted(experiment_dir.glob(TuneController.CKPT_FILE_TMPL.format("*")))
    if not states:
        return None
    # Each entry is (the trial's state as a JSON text, its run metadata): TuneController.save_to_dir.
    trials = [json.loads(state) for state, _ in json.loads(states[-1].read_text())["trial_data"]]
    return {t["trial_id"]: (str((t.get("config") or {}).get(CELL, "")), str(t.get("status", ""))) for t in trials}


class CellSearchGenerator(SearchGenerator):
    """Tune's SearchGenerator around a :class:`CellSearcher`, which alone decides when the search
    is over. Tune saves this generator's "finished" flag in a file of its own: restored from a
    later snapshot than the trial list (a driver killed between uploads, 2026-12-07), it ended a
    search whose last trial the restored experiment did not have, and that trial never ran. So a
    restored generator is never finished: the restored searcher says FINISHED again if it is."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._finished = False


class CellASHA(FIFOScheduler):
    """One ASHAScheduler per cell: rung cutoffs come from the trial's own cell only."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int) -> None:
        super().__init__()
        self.settings = {"max_t": max_t, "grace_period": grace_period, "reduction_factor": reduction_factor}
        self.cells: dict[str, Any] = {}
        # No metric at this level either (see CellSearcher): each cell's ASHA has it.
        self._metric, self._mode = None, None

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        return True

    def asha_of(self, trial: Any) -> Any:
        key = str((trial.config or {}).get(CELL, ""))
        if key not in self.cells:
            self.cells[key] = ASHAScheduler(
                time_attr="training_iteration",
                metric=METRIC,
                mode=MODE,
                max_t=self.settings["max_t"],
                grace_period=self.settings["grace_period"],
                reduction_factor=self.settings["reduction_factor"],
            )
        return self.cells[key]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.asha_of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.asha_of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        asha = self.asha_of(trial)
        if trial.trial_id in asha._trial_info:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        asha = self.asha_of(trial)
        if trial.trial_id in asha._trial_info:
            asha.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "ASHA per cell: " + "; ".join(
            f"{key}: {asha._num_stopped} stopped" for key, asha in sorted(self.cells.items())
        )
