"""Configs are validated (pydantic, mtlmood.coerce.from_dict): a wrong type, an unknown key
or an out-of-range value, from a YAML file or from ``--set``, is one ConfigError line
naming the dotted key, the value and what is allowed; the CLI prints it and exits 2
before anything is written. Natural spellings are accepted (``--set search.n_moods=3``
is ``[3]``, ``train.alpha=1/3``). Loaded configs stay plain frozen dataclasses that
``dataclasses.replace`` and the YAML round trip (save_config -> load_config) keep working on.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from mtlmood.coerce import check_config, from_dict, to_dict
from mtlmood.config import FeatureConfig, RunConfig, TrainConfig
from mtlmood.config_io import load_config, save_config
from mtlmood.errors import ConfigError
from mtlmood_cli.main import main
from serve.config import ServeConfig, serve_config_from_mapping
from serve.config_file import load_serve_config
from study.config import StudyConfig, load_study_config, shipped_configs
from study.config import validate as validate_study

# --- accepted -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, path, expected",
    [
        ("search.n_moods=3", ("search", "n_moods"), [3]),  # a scalar where a list belongs
        ("search.n_moods=[3, 9]", ("search", "n_moods"), [3, 9]),
        ("curve.seeds=5", ("curve", "seeds"), [5]),
        ("search.metadata=artist", ("search", "metadata"), ["artist"]),
        ("search.metadata=[artist, year]", ("search", "metadata"), ["artist", "year"]),
        ("curve.grid=[1/3, 1, 3]", ("curve", "grid"), [1 / 3, 1.0, 3.0]),  # fractions read as numbers
        ("search.tag_sets.50=all", ("search", "tag_sets"), {50: "all"}),  # one entry of a mapping
        ("search.n_startup_trials=2", ("search", "n_startup_trials"), 2),
        ("search.n_startup_trials=auto", ("search", "n_startup_trials"), "auto"),
        ("resources.use_gpu=true", ("resources", "use_gpu"), "True"),  # YAML's true, as the string it was
        ("run.train.alpha=learned", ("run", "train", "alpha"), "learned"),
        ("run.dataset.root=2024", ("run", "dataset", "root"), "2024"),  # a number where a string belongs
        ("run.train={lr: 0.01, max_epochs: 2}", ("run", "train", "lr"), 0.01),  # a section's keys at once
    ],
)
def test_natural_spellings_are_accepted(override: str, path: tuple[str, ...], expected: Any) -> None:
    config: Any = load_config(StudyConfig, overrides=[override])
    for key in path:
        config = getattr(config, key)
    assert config == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("auto", "auto"),
        ("learned", "learned"),
        ("Learned", "learned"),
        ("0", 0.0),
        ("0.5", 0.5),
        ("3", 3.0),
        ("1e-3", 0.001),  # YAML reads 1e-3 (no dot) as a string
        ("1/3", 1 / 3),
    ],
)
def test_alpha_is_a_number_auto_or_learned(value: str, expected: Any) -> None:
    assert load_config(RunConfig, overrides=[f"train.alpha={value}"]).train.alpha == expected


def test_every_shipped_config_and_the_defaults_are_valid() -> None:
    for name in shipped_configs():
        study = load_study_config(name)
        assert validate_study(study) is study
    for cls in (RunConfig, StudyConfig, ServeConfig):
        assert check_config(cls()) == cls()
    assert load_serve_config() == ServeConfig()


# --- rejected: one line naming the key, the value and what is allowed -------------------

# (config class, --set overrides, dotted key, the bad value as the message shows it, a word of what is allowed)
BAD_OVERRIDES = [
    (RunConfig, ["train.lr=-1"], "train.lr", "-1", "greater than 0"),
    (RunConfig, ["train.lr=0"], "train.lr", "0", "greater than 0"),
    (RunConfig, ["train.lr=.inf"], "train.lr", "inf", "finite"),
    (RunConfig, ["train.lr=.nan"], "train.lr", "nan", "finite"),
    (RunConfig, ["labels.n_moods=0"], "labels.n_moods", "0", "greater than or equal to 1"),
    (RunConfig, ["split.train_fraction=1.5"], "split.train_fraction", "1.5", "less than 1"),
    (RunConfig, ["split.train_fraction=0"], "split.train_fraction", "0", "greater than 0"),
    (RunConfig, ["split.train_fraction=0.95"], "split.train_fraction", "0.95", "sum to less than 1"),
    (RunConfig, ["nope.key=1"], "nope.key", "1", "known top-level keys"),
    (RunConfig, ["train.nope=1"], "train.nope", "1", "known keys of train"),
    (RunConfig, ["train.max_epochs=abc"], "train.max_epochs", "abc", "integer"),
    (RunConfig, ["train.max_epochs=2.5"], "train.max_epochs", "2.5", "integer"),
    (RunConfig, ["train.max_epochs=true"], "train.max_epochs", "True", "number"),
    (RunConfig, ["train.max_epochs=[1, 2]"], "train.max_epochs", "[1, 2]", "integer"),
    (RunConfig, ["train.max_epochs={a: 1}"], "train.max_epochs", "{'a': 1}", "integer"),
    (RunConfig, ["train.patience=0"], "train.patience", "0", "greater than or equal to 1"),
    (RunConfig, ["train.alpha=-1"], "train.alpha", "-1", '"auto" or "learned"'),
    (RunConfig, ["train.alpha=abc"], "train.alpha", "abc", '"auto" or "learned"'),
    (RunConfig, ["train.alpha=.nan"], "train.alpha", "nan", '"auto" or "learned"'),
    (RunConfig, ["train.alpha=true"], "train.alpha", "True", '"auto" or "learned"'),
    (RunConfig, ["train.sampler=gpu"], "train.sampler", "gpu", "'device'"),
    (RunConfig, ["train.monitor=loss"], "train.monitor", "loss", "pr_auc, roc_auc"),
    (RunConfig, ["train.device=tpu"], "train.device", "tpu", "cuda:N"),
    (RunConfig, ["train.bf16=maybe"], "train.bf16", "maybe", "boolean"),
    (RunConfig, ["train.seed=-1"], "train.seed", "-1", "greater than or equal to 0"),
    (RunConfig, ["labels.metadata=genre"], "labels.metadata", "genre", "artist+year"),
    (RunConfig, ["model.dropout=1"], "model.dropout", "1", "less than 1"),
    (RunConfig, ["model.init=xavier"], "model.init", "xavier", "glorot, torch"),
    (RunConfig, ["dataset.tag_set=some"], "dataset.tag_set", "some", "'moods' or 'all'"),
    (RunConfig, ["dataset.root=null"], "dataset.root", "None", "string"),
    (RunConfig, ["train=3"], "train", "3", "section"),
    (RunConfig, ["train.lr.x=1"], "train.lr.x", "1", "not a section"),
    (StudyConfig, ["search.metadata=artists"], "search.metadata", "artists", "artist, year, artist+year"),
    (StudyConfig, ["search.metadata=none"], "search.metadata", "none", "always included"),
    (StudyConfig, ["search.n_moods=0"], "search.n_moods", "0", "greater than or equal to 1"),
    (StudyConfig, ["search.n_moods=[]"], "search.n_moods", "[]", "at least 1"),
    (StudyConfig, ["search.n_moods=abc"], "search.n_moods", "abc", "integer"),
    (StudyConfig, ["search.n_moods={a: 1}"], "search.n_moods", "{'a': 1}", "list"),
    (StudyConfig, ["search.n_startup_trials=-1"], "search.n_startup_trials", "-1", '"auto"'),
    (StudyConfig, ["search.tag_sets.50=most"], "search.tag_sets", "most", "moods, all"),
    (StudyConfig, ["curve.grid=[0]"], "curve.grid", "0", "greater than 0"),
    (StudyConfig, ["curve.seeds_per_trial=0"], "curve.seeds_per_trial", "0", "greater than or equal to 1"),
    (StudyConfig, ["scheduler.reduction_factor=1"], "scheduler.reduction_factor", "1", "greater than or equal to 2"),
    (StudyConfig, ["report.n_boot=10"], "report.n_boot", "10", "100"),
    (StudyConfig, ["report.confidence=1"], "report.confidence", "1", "less than 1"),
    (StudyConfig, ["report.adjust=bonferroni"], "report.adjust", "bonferroni", "holm, bh"),
    (StudyConfig, ["resources.use_gpu=maybe"], "resources.use_gpu", "maybe", "auto, true, false"),
    (StudyConfig, ["resources.num_workers=0"], "resources.num_workers", "0", "greater than or equal to 1"),
    (StudyConfig, ["run.train.lr=-1"], "run.train.lr", "-1", "greater than 0"),
    (StudyConfig, ["name="], "name", "''", "at least 1 character"),
    (ServeConfig, ["port=0"], "port", "0", "greater than or equal to 1"),
    (ServeConfig, ["port=70000"], "port", "70000", "less than or equal to 65535"),
    (ServeConfig, ["model.max_queued_requests=0"], "model.max_queued_requests", "0", "-1 = unbounded"),
    (ServeConfig, ["model.num_gpus=-2"], "model.num_gpus", "-2", "-1 = auto"),
    (ServeConfig, ["route_prefix=api"], "route_prefix", "api", "start with '/'"),
    (ServeConfig, ["model.replicas=3"], "model.replicas", "3", "known keys of model"),
]


@pytest.mark.parametrize("cls, overrides, key, value, allowed", BAD_OVERRIDES)
def test_bad_overrides_are_one_line_naming_key_value_and_what_is_allowed(
    cls: type, overrides: list[str], key: str, value: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(cls, overrides=overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert key in message and value in message and allowed in message, message


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["search.n_moods=[3, 3]"], ["search.n_moods", "[3, 3]", "repeat"]),
        (["curve.seeds=[0]", "search.seeds=[0]"], ["curve.seeds", "[0]", "fresh seeds"]),
        (["curve.grid=[2, 3]"], ["curve.grid", "[2.0, 3.0]", "include 1"]),
        (["search.alpha_factor_low=30"], ["search.alpha_factor_low", "30", "below"]),
        (["storage_path=ftp://host/studies"], ["storage_path", "ftp://host/studies", "s3://"]),
        (["storage_path=s3://"], ["storage_path", "bucket"]),
    ],
)
def test_study_rules_that_tie_settings_together(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_study_config("synthetic", overrides)
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_an_object_store_storage_path_is_a_study_location() -> None:
    study = load_study_config("synthetic", ["storage_path=s3://bucket/studies/", "name=s1"])
    assert study.storage_path == "s3://bucket/studies" and study.run_dir == "s3://bucket/studies/s1"
    local = load_study_config("synthetic", ["storage_path=file:///tmp/studies", "name=s1"])
    assert local.run_dir == "/tmp/studies/s1"  # a file:// URI is a local path


def test_unknown_study_config_names_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="not one of the shipped configs.*mtg-jamendo.*synthetic"):
        load_study_config("no-such-study")


def test_several_problems_share_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(RunConfig, overrides=["train.lr=-1", "train.max_epochs=0", "labels.n_moods=abc"])
    message = str(caught.value)
    assert "\n" not in message and all(k in message for k in ("train.lr", "train.max_epochs", "labels.n_moods"))


def test_an_override_must_have_an_equals_sign() -> None:
    with pytest.raises(ConfigError, match="train.lr.*must look like section.key=value"):
        load_config(RunConfig, overrides=["train.lr"])


# --- YAML files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("train: [1, 2]\n", ["train", "[1, 2]", "mapping"]),  # a list where a mapping belongs
        ("train: 3\n", ["train", "3", "mapping"]),
        ("train:\n  lr: [0.1]\n", ["train.lr", "[0.1]", "number"]),
        ("train:\n  nope: 1\n", ["train.nope", "known keys of train"]),
        ("labels:\n  n_moods: -3\n", ["labels.n_moods", "-3", "greater than or equal to 1"]),
        ("- a\n- b\n", ["mapping", "top level"]),
        ("train: {lr: [\n", ["not valid YAML"]),
        ("split:\n  method: both\n", ["split.method", "both", "'random' or 'official'"]),
        ("1: x\n", ["1", "known top-level keys"]),
    ],
)
def test_bad_yaml_files_are_one_line_naming_the_file_and_key(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(RunConfig, path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert all(word in message for word in words), message


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(RunConfig, tmp_path)  # a directory
    (tmp_path / "latin1.yaml").write_bytes(b"dataset: {root: caf\xe9}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(RunConfig, tmp_path / "latin1.yaml")


def test_an_empty_section_keeps_its_defaults_and_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\nlabels:\n  n_moods: 3\n")
    config = load_config(RunConfig, path, ["labels.n_moods=9"])
    assert config.train == TrainConfig() and config.labels.n_moods == 9


def test_model_card_sections_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.n_blocks=0"):
        from_dict(RunConfig().model.__class__, {"n_blocks": 0}, "model.")


# --- the classes stay plain frozen dataclasses ----------------------------------------


@pytest.mark.parametrize("cls", [RunConfig, StudyConfig, ServeConfig])
def test_yaml_round_trip_replace_and_frozen(tmp_path: Path, cls: type) -> None:
    config = load_config(cls, overrides=[])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(cls, path) == config and to_dict(load_config(cls, path)) == to_dict(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.some_field = 1  # type: ignore[attr-defined]
    assert type(config) is cls and dataclasses.is_dataclass(config)


def test_shipped_study_configs_round_trip(tmp_path: Path) -> None:
    for name in shipped_configs():
        study = load_study_config(name)
        save_config(study, tmp_path / f"{name}.yaml")
        assert load_study_config(tmp_path / f"{name}.yaml") == study
        assert dataclasses.replace(study, name="other").run == study.run


def test_code_built_configs_are_checked_on_request() -> None:
    bad = dataclasses.replace(RunConfig(), features=FeatureConfig(hop_length=0))  # replace does not validate
    with pytest.raises(ConfigError, match=r"features\.hop_length=0"):
        check_config(bad)


def test_serve_flags_and_mappings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"port=0: must be greater than or equal to 1"):
        load_serve_config(port=0)
    with pytest.raises(ConfigError, match=r"batching\.max_batch_size='many'"):
        serve_config_from_mapping({"batching": {"max_batch_size": "many"}})
    with pytest.raises(ConfigError, match="topology must be one of auto, split, combined"):
        load_serve_config(overrides=["topology=single"])


def test_synth_config_files_are_validated(tmp_path: Path) -> None:
    from mtlmood.synth import SynthConfig

    (tmp_path / "synth.yaml").write_text("difficulty: 2\nmoods: happy\n")
    with pytest.raises(ConfigError, match=r"difficulty=2.*less than or equal to 1"):
        load_config(SynthConfig, tmp_path / "synth.yaml")
    (tmp_path / "synth.yaml").write_text("moods: happy\nmood_count_probs: 1\nn_songs: 10\nn_artists: 2\n")
    config = load_config(SynthConfig, tmp_path / "synth.yaml")
    assert config.moods == ("happy",) and config.mood_count_probs == (1.0,)  # scalars where tuples belong
    assert config.validate() is config
    with pytest.raises(ConfigError, match=r"synth config: seed=-1"):
        SynthConfig(seed=-1).validate()


# --- the command line: one line, exit 2, nothing written --------------------------------


def _tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--set", "train.lr=-1", "--output", "{tmp}/out"],
        ["train", "--set", "train.max_epochs=abc", "--output", "{tmp}/out"],
        ["prepare", "--set", "labels.n_moods=0", "--set", "cache_dir={tmp}/cache"],
        ["data", "stats", "--set", "split.train_fraction=1.5"],
        ["study", "plan", "synthetic", "--set", "search.metadata=artists", "--set", "storage_path={tmp}/st"],
        ["study", "run", "synthetic", "--set", "nope.key=1", "--set", "storage_path={tmp}/st"],
        ["serve", "--checkpoint", "{tmp}/ckpt", "--set", "train.nope=1"],
        ["demo", "--output", "{tmp}/demo", "--set", "run.train.lr=-1"],
    ],
)
def test_cli_prints_one_line_and_writes_nothing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if argv[0] == "demo":
        # The demo synthesizes its dataset before it reads --set (study/demo.py); a dataset
        # already there is kept, so this checks only what --set does.
        (tmp_path / "demo" / "data").mkdir(parents=True)
        (tmp_path / "demo" / "data" / "manifest.csv").write_text("song_id,path,moods,artist,year\n")
    before = _tree(tmp_path)
    assert main([part.replace("{tmp}", str(tmp_path)) for part in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mtlmood {argv[0]}: error: "), err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before


def test_study_run_checks_the_dataset_before_starting_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import study.ray_session

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray started before the dataset was read")

    monkeypatch.setattr(study.ray_session, "init_ray", no_ray)
    argv = ["study", "run", "synthetic", "--set", f"run.dataset.root={tmp_path}/none"]
    assert main([*argv, "--set", f"storage_path={tmp_path}/st"]) == 2
    assert "no synthetic dataset" in capsys.readouterr().err
