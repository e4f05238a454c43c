"""Each cell's Optuna study in Optuna's own storage, where ``optuna-dashboard`` and
``optuna.load_study`` open it (docs/STUDY.md, "The Optuna studies").

    url = storage_url(study)                       # search.optuna_storage, or the default
    optuna.load_study(study_name=cell_study_name(study.name, "3|artist"), storage=url)

Where: ``search.optuna_storage``, a SQLAlchemy database URL; by default the SQLite file
``<run dir>/optuna.db``. A study on an object store cannot keep SQLite there (it needs a
file system with locks), so its default is a file on the driver's machine,
``<mtlmood cache>/optuna/<scheme>/<bucket>/<path>/optuna.db`` (the cache of
mtlmood.remote_cache, where the lock of such a study lives too), copied to
``<run dir>/optuna.db`` when the search ends.

Names: ``<study name>:<cell key>``, e.g. ``synthetic-alpha:3|artist@3``. Every trial carries
its Tune trial id (user attribute ``tune_trial_id``, the ``trial_id`` of the trial table).

Resume: Tune saves each cell's ``OptunaSearch`` (its Optuna study handle included) with the
experiment, and ``Tuner.restore`` brings that state back; the database, written at once,
may be ahead of it. :func:`reconcile` makes the database agree with the restored searcher,
so that the resumed search samples what an in-memory study would and no trial is written
twice (see its docstring).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Optional

from mtlmood import storage
from mtlmood.errors import ConfigError
from study.config import StudyConfig
from study.optuna_urls import OPTUNA_FILE, cell_study_name, default_storage_url, local_database

STUDIES_FILE = "optuna_studies.json"  # in the run directory: where the studies are, their names
TUNE_TRIAL_ATTR = "tune_trial_id"  # trial user attribute: the Tune trial (trial table's trial_id)
RUN_DIR_ATTR = "mtlmood_run_dir"  # study user attribute: the study run directory it belongs to
CELL_ATTR = "mtlmood_cell"  # study user attribute: the cell key
STALE_ATTR = "mtlmood_stale"  # trial user attribute: asked after Tune's last saved state, failed on resume
FIXED_PARAMS = "fixed_params"  # Optuna's system attribute of an enqueued point (the heuristic)


def storage_url(study: StudyConfig) -> str:
    """Where this study's Optuna studies are: ``search.optuna_storage``, or the default."""
    return study.search.optuna_storage or default_storage_url(study.run_dir)


def open_storage(url: str) -> Any:
    """An ``optuna.storages.RDBStorage`` on ``url`` (a SQLite file's folder is created first).
    One line (ConfigError) when the database or its driver cannot be reached."""
    import optuna
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        # RDBStorage fills {SCHEMA_VERSION}-style templates in the URL: braces in a path stay braces.
        return optuna.storages.RDBStorage(url.replace("{", "{{").replace("}", "}}"))
    except ImportError as exc:
        raise ConfigError(f"search.optuna_storage={url!r}: the database driver is not installed ({exc})") from None
    except Exception as exc:  # SQLAlchemy's OperationalError & co.: one line, not a traceback
        raise ConfigError(f"search.optuna_storage={url!r}: cannot open it: {str(exc).splitlines()[0]}") from None


def fresh_storage(study: StudyConfig, cell_keys: list[str]) -> Any:
    """The storage of a search that starts afresh (no Tune state to restore): a cell study of
    the same name left there by an earlier attempt of this study (stopped before Tune saved
    anything, or set aside after a deterministic failure) is deleted, so that the new search
    starts from an empty study. With an explicit ``search.optuna_storage`` (a database other
    studies may share) a study recorded for another run directory is refused, never deleted."""
    import optuna

    url = storage_url(study)
    rdb = open_storage(url)
    existing = set(optuna.get_all_study_names(rdb))
    for key in cell_keys:
        name = cell_study_name(study.name, key)
        if name not in existing:
            continue
        owner = optuna.load_study(study_name=name, storage=rdb).user_attrs.get(RUN_DIR_ATTR)
        if study.search.optuna_storage and owner not in (None, study.run_dir):
            raise ConfigError(
                f"search.optuna_storage={url!r} already holds the Optuna study {name!r} of the study at "
                f"{owner}: give this study another name, or delete that Optuna study (optuna.delete_study)"
            )
        print(f"[search] starting afresh: replacing the Optuna study {name!r} of an earlier attempt", flush=True)
        optuna.delete_study(study_name=name, storage=rdb)
    return rdb


def check_resumable(study: StudyConfig) -> None:
    """Before an interrupted search is restored: its SQLite file must be there (Tune's saved
    state points at it, and would open an empty one in its place). Missing when the search
    began on another machine (a study on an object store keeps it on the driver's machine)
    or when it was deleted: one line."""
    from sqlalchemy.engine import make_url

    if not storage.exists(storage.join(study.run_dir, STUDIES_FILE)):
        return  # a search begun before its studies were stored: Tune's state holds them in memory
    url = make_url(storage_url(study))
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise ConfigError(
            f"the interrupted search of {study.run_dir} keeps its Optuna studies in {url.database}, which is "
            "not on this machine (the search began on another one, or the file was deleted): resume it where "
            "it began, copy that file here, or remove the search/ folder of the study to search afresh"
        )


def label_study(search: Any, run_dir: str, cell_key: str) -> None:
    """Record, on a cell's new Optuna study, the run directory and cell it belongs to."""
    search._ot_study.set_user_attr(RUN_DIR_ATTR, run_dir)
    search._ot_study.set_user_attr(CELL_ATTR, cell_key)


def label_trial(search: Any, trial_id: str) -> None:
    """Record the Tune trial id on the Optuna trial just asked for it (once)."""
    trial = search._ot_trials.get(trial_id)
    if trial is not None and TUNE_TRIAL_ATTR not in trial.user_attrs:
        trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)


def is_persistent(search: Any) -> bool:
    """Whether a cell's OptunaSearch writes to a database (not Optuna's in-memory storage)."""
    import optuna

    study = getattr(search, "_ot_study", None)
    return study is not None and not isinstance(study._storage, optuna.storages.InMemoryStorage)


def reconcile(search: Any) -> None:
    """Make a cell's database agree with its OptunaSearch just restored by ``Tuner.restore``.

    Tune saved the searcher (each trial it asked, the sampler's random state) at its last
    experiment checkpoint; the database holds everything written until the driver died:

    * a trial the saved searcher knows and the database has finished (told after the save):
      marked told, so that when Tune runs that trial again its results are not written twice
      (Optuna refuses writes to a finished trial);
    * a running trial the saved searcher never asked for (asked after the save, and Tune's
      saved state has no such trial either): failed, with ``mtlmood_stale`` set, so that TPE
      (constant liar) does not count it as pending; when it was an enqueued point (the
      heuristic, ``points_to_evaluate``) that point is enqueued again, for the resumed search
      asks for it again as an in-memory study restored from the same save would.

    The result: the database samples and ends as the in-memory study would have. (A trial
    asked *and* finished after the save cannot be removed: Optuna never deletes a trial.
    Tune saves its state at least every 10 s and a trial takes longer, so it does not occur.)
    """
    from optuna.trial import TrialState

    study = search._ot_study
    rdb = study._storage
    try:
        rdb.get_study_name_from_id(study._study_id)
    except KeyError:
        raise ConfigError(
            f"the Optuna study {search._study_name!r} of the interrupted search is no longer in its storage"
        ) from None
    trials = study.get_trials(deepcopy=False)
    known = {trial._trial_id: tune_id for tune_id, trial in search._ot_trials.items()}
    for frozen in trials:
        tune_id = known.get(frozen._trial_id)
        if tune_id is not None:
            if frozen.state.is_finished():
                search._completed_trials.add(tune_id)
            continue
        if frozen.state != TrialState.RUNNING:
            continue
        _fail_stale(study, frozen, "asked after the last saved search state")


def fail_lost_trial(search: Any, trial_id: str) -> None:
    """Fail the Optuna trial of Tune's trial ``trial_id`` that the restored experiment no longer
    has (study.space.CellSearcher.reconcile_trials), as :func:`reconcile` fails a trial asked
    after the save: the resumed search asks for its enqueued point (the heuristic) anew."""
    trial = search._ot_trials.pop(trial_id, None)
    if trial is None:
        return
    frozen = search._ot_study._storage.get_trial(trial._trial_id)
    if not frozen.state.is_finished():
        _fail_stale(search._ot_study, frozen, "lost with Tune's trial on resume")


def _fail_stale(study: Any, frozen: Any, reason: str) -> None:
    """Mark an unfinished Optuna trial failed and stale (``reason``); enqueue its fixed point again."""
    from optuna.trial import TrialState

    study._storage.set_trial_user_attr(frozen._trial_id, STALE_ATTR, reason)
    study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)
    fixed = frozen.system_attrs.get(FIXED_PARAMS)
    if fixed:
        study.enqueue_trial(dict(fixed))


def is_told(search: Any, trial_id: str) -> bool:
    """Whether Tune's trial ``trial_id`` is already finished in its cell's study."""
    return trial_id in search._completed_trials


def publish_studies(study: StudyConfig, cell_keys: list[str]) -> Optional[str]:
    """Write ``<run dir>/optuna_studies.json`` (the storage URL and each cell's study name) and,
    for a study on an object store whose studies are in the default local SQLite file, a
    consistent copy of that file to ``<run dir>/optuna.db``. Returns where the copy went."""
    url = storage_url(study)
    copied = None
    if storage.is_uri(study.run_dir) and not study.search.optuna_storage:
        local = local_database(study.run_dir)
        if local.exists():
            copied = storage.join(study.run_dir, OPTUNA_FILE)
            storage.write_bytes(copied, _snapshot(local))
    index = {
        "storage": url,
        "copy": OPTUNA_FILE if copied else None,
        "studies": {key: cell_study_name(study.name, key) for key in cell_keys},
    }
    storage.write_text(storage.join(study.run_dir, STUDIES_FILE), json.dumps(index, indent=2) + "\n")
    return copied


def _snapshot(path: Path) -> bytes:
    """A consistent copy of a SQLite file (its backup API), as bytes."""
    with tempfile.TemporaryDirectory(prefix="mtlmood-optuna-") as tmp:
        target = Path(tmp) / OPTUNA_FILE
        source, copy = sqlite3.connect(path), sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        return target.read_bytes()
