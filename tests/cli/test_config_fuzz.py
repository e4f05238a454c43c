"""Nothing thrown at ``--set`` breaks a command: random dotted keys (real and made up) and
random values of every type (numbers incl. nan/inf, strings, lists, mappings, booleans,
null, empty), spelled as YAML, JSON or Python would, at every command that takes
``--set``, through the CLI's ``main`` in-process.

Each command ends with exit status 0 or 2, never an exception and never a traceback; with
2 it prints exactly one ``mtlmood COMMAND: error: ...`` line. When the settings are invalid
(asked of the config loader directly, which must itself raise nothing but ConfigError)
that line is the loader's message and nothing at all appears in the example's fresh
directory (the working directory, output and storage); when they are valid, the command
stops before real work (no dataset at the configured root, a checkpoint that does not
exist, Ray replaced by a stub that refuses to start) and leaves no file behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlmood.coerce import apply_overrides, from_dict, to_dict
from mtlmood.config import RunConfig
from mtlmood.config_io import load_config, resolve_run_paths
from mtlmood.errors import ConfigError, MtlmoodError
from mtlmood_cli.main import main
from serve.config import ServeConfig
from serve.config_file import load_serve_config
from study.config import StudyConfig, load_study_config

EXAMPLES = 60  # per command: 1-5 s each once the command's modules are imported


def dotted_keys(cls: type, prefix: str = "") -> tuple[list[str], list[str]]:
    """(settings, sections) of a config class as dotted keys."""
    settings_, sections = [], []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            sections.append(key)
            more, subsections = dotted_keys(hints[f.name], key + ".")
            settings_ += more
            sections += subsections
        else:
            settings_.append(key)
    return settings_, sections


def keys(cls: type) -> st.SearchStrategy[str]:
    leaves, sections = dotted_keys(cls)
    name = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)
    return st.one_of(
        st.sampled_from(leaves),  # a real setting
        st.sampled_from(sections),  # a whole section
        st.builds(lambda s, n: f"{s}.{n}", st.sampled_from(sections), name),  # made up, in a real section
        st.builds(lambda s, n: f"{s}.{n}", st.sampled_from(leaves), name),  # below a setting
        st.builds(lambda a, b: f"{a}.{b}", name, name),  # made up entirely
        st.text(max_size=12),  # anything: dots, '=', spaces, newlines, unicode, empty
    )


SPECIAL = [
    "", " ", "auto", "learned", "none", "artist", "1/3", "1/0", "1e-3", "-1", "0", "[]", "{}", "[3", "{a",
    "a: b", "null", "~", "yes", "no", "on", ".nan", ".inf", "-.inf", "!!binary aGk=", "!!set {a}",
    "!!python/object/apply:os.system [true]", "*alias", "&anchor x", "2024-01-01", "0x1F", "1_000", "%", "@x",
    "`x`", "|", ">", "- a", "? a", "a\nb", "'", '"', "\\", "../..", "/", ".", "s3://bucket/x", "3|artist",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(SPECIAL),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def spell(value: Any, how: str) -> str:
    """How a person (or a script) might write ``value`` after ``KEY=``."""
    if how == "yaml":
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
        return text[: -len("\n...\n")] if text.endswith("\n...\n") else text.rstrip("\n")
    if how == "json":
        return json.dumps(value)
    return str(value)


value_texts = st.one_of(
    st.builds(spell, values, st.sampled_from(["yaml", "json", "str"])),
    st.sampled_from(SPECIAL),
    st.text(max_size=16),
)


def default_of(cls: type, dotted: str) -> Any:
    value: Any = cls()
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def plausible(default: Any) -> st.SearchStrategy[str]:
    """Values a person would give a setting with this default: mostly valid, some out of range."""
    if isinstance(default, bool):
        return st.sampled_from(["true", "false", "yes", "no", "1", "0"])
    if isinstance(default, int):
        return st.integers(min_value=-1, max_value=64).map(str)
    if isinstance(default, float):
        return st.sampled_from(["0", "0.05", "0.5", "0.9", "1", "1.5", "3", "1/3", "1e-3", "-1", "-1.0", ".inf"])
    if isinstance(default, str):
        words = ["auto", "learned", "artist", "year", "none", "moods", "all", "cpu", "glorot", "torch", "holm"]
        return st.sampled_from([default or "x", "x", "sub/dir", *words])
    if isinstance(default, (list, tuple)):
        items = [str(v) for v in default] or ["1"]
        return st.one_of(
            st.sampled_from(items), st.lists(st.sampled_from(items), min_size=1).map(", ".join).map("[{}]".format)
        )
    return st.sampled_from(["{}", "{3: all}", "{50: moods}"])


def real_setting(cls: type) -> st.SearchStrategy[str]:
    leaves, _ = dotted_keys(cls)
    return st.sampled_from(leaves).flatmap(lambda key: plausible(default_of(cls, key)).map(lambda v: f"{key}={v}"))


def overrides(cls: type) -> st.SearchStrategy[list[str]]:
    """1-3 overrides; half of the lists hold only real settings with plausible values (which
    are valid often enough to reach each command's checks beyond the config)."""
    anything = st.builds(lambda k, v: f"{k}={v}", keys(cls), value_texts)
    return st.one_of(
        st.lists(real_setting(cls), min_size=1, max_size=3),
        st.lists(st.one_of(real_setting(cls), anything), min_size=1, max_size=3),
    )


class RayWouldStart(MtlmoodError):
    """Raised by the stub that replaces study.ray_session.init_ray: the command got past
    every check it makes before Ray."""


@dataclasses.dataclass(frozen=True)
class Command:
    """A command that takes --set: its config class, its fixed arguments (output and storage
    under ``tmp``, datasets that do not exist) and the loader that says whether settings are valid."""

    config: type
    argv: Callable[[Path], list[str]]
    sets: Callable[[Path], list[str]]  # --set values the command gets before the fuzzed ones
    loader: Optional[Callable[[Path, list[str]], object]]  # None: the command fails before reading --set
    setup: Callable[[Path], None] = lambda tmp: None


def _run_loader(tmp: Path, sets: list[str]) -> object:
    return resolve_run_paths(load_config(RunConfig, None, sets))


def _demo_setup(tmp: Path) -> None:
    # The demo synthesizes a 2000-song dataset before it reads --set (study/demo.py); one
    # already in place is kept. This one is malformed, so a valid config stops at it.
    (tmp / "demo" / "data").mkdir(parents=True)
    (tmp / "demo" / "data" / "manifest.csv").write_text("not a manifest\n")


COMMANDS: dict[str, Command] = {
    "train": Command(
        RunConfig,
        lambda tmp: ["train", "--output", str(tmp / "out")],
        lambda tmp: [f"dataset.root={tmp / 'no-data'}"],
        _run_loader,
    ),
    "prepare": Command(
        RunConfig,
        lambda tmp: ["prepare", "--no-progress", "--workers", "1"],
        lambda tmp: [f"dataset.root={tmp / 'no-data'}", f"cache_dir={tmp / 'cache'}"],
        _run_loader,
    ),
    "data stats": Command(
        RunConfig, lambda tmp: ["data", "stats"], lambda tmp: [f"dataset.root={tmp / 'no-data'}"], _run_loader
    ),
    "evaluate": Command(RunConfig, lambda tmp: ["evaluate", str(tmp / "no-checkpoint")], lambda tmp: [], None),
    "study run": Command(
        StudyConfig,
        lambda tmp: ["study", "run", "synthetic"],
        lambda tmp: [f"run.dataset.root={tmp / 'no-data'}", f"storage_path={tmp / 'studies'}"],
        lambda tmp, sets: load_study_config("synthetic", sets),
    ),
    "study plan": Command(
        StudyConfig,
        lambda tmp: ["study", "plan", "synthetic"],
        lambda tmp: [f"run.dataset.root={tmp / 'no-data'}", f"storage_path={tmp / 'studies'}"],
        lambda tmp, sets: load_study_config("synthetic", sets),
    ),
    "serve": Command(
        ServeConfig,
        lambda tmp: ["serve", "--checkpoint", str(tmp / "no-checkpoint")],
        lambda tmp: [],
        lambda tmp, sets: load_serve_config(None, sets, checkpoint=str(tmp / "no-checkpoint"), study=""),
    ),
    "demo": Command(
        StudyConfig,
        lambda tmp: ["demo", "--output", str(tmp / "demo")],
        lambda tmp: [],
        # what study/demo.py does with --set
        lambda tmp, sets: load_study_config(
            "synthetic",
            [f"run.dataset.root={tmp / 'demo' / 'data'}", f"storage_path={tmp / 'demo' / 'studies'}", *sets],
        ),
        _demo_setup,
    ),
}


def _tree(root: Path) -> dict[str, bool]:
    """Every path under ``root`` -> whether it is a file."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), root)] = False
        for name in files:
            found[os.path.relpath(os.path.join(directory, name), root)] = True
    return found


def check_command(name: str, command: Command, sets: list[str], capsys: pytest.CaptureFixture[str], base: Path) -> None:
    """One example: run ``name`` with ``sets`` in a fresh directory and check the properties."""
    tmp = Path(tempfile.mkdtemp(dir=base))
    old_cwd = os.getcwd()
    os.chdir(tmp)  # relative paths in the fuzzed values land here too
    try:
        command.setup(tmp)
        before = _tree(tmp)
        all_sets = command.sets(tmp) + sets
        problem: Optional[str] = None
        if command.loader is not None:
            try:
                command.loader(tmp, all_sets)
            except ConfigError as exc:  # anything else fails the test: the loader raises only ConfigError
                problem = str(exc)
        capsys.readouterr()
        status = main(command.argv(tmp) + [f"--set={s}" for s in all_sets])
        err = capsys.readouterr().err
        after = _tree(tmp)
    finally:
        os.chdir(old_cwd)
    shown = f"{name} {sets!r}: status {status}, stderr {err[-2000:]!r}"
    assert status in (0, 2), shown
    assert "Traceback" not in err, shown
    if status == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"mtlmood {name.split()[0]}: "), shown
    new = {path: is_file for path, is_file in after.items() if path not in before}
    if problem is not None:
        assert status == 2 and problem in err, f"{shown}; the loader said {problem!r}"
        assert not new, f"{shown}; written: {sorted(new)}"
    else:
        assert not [path for path, is_file in new.items() if is_file], f"{shown}; written: {sorted(new)}"


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """`study run` and `demo` start Ray after reading their config; here they stop instead."""
    import study.ray_session

    def refuse(*args: object, **kwargs: object) -> None:
        raise RayWouldStart("ray would start here (stubbed by the test)")

    monkeypatch.setattr(study.ray_session, "init_ray", refuse)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_random_overrides_never_break_a_command(
    name: str, no_ray: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    command = COMMANDS[name]
    check_command(name, command, ["nope=1"], capsys, tmp_path)  # imports the command's modules once

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sets=overrides(command.config))
    def run(sets: list[str]) -> None:
        check_command(name, command, sets, capsys, tmp_path)

    run()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real checkpoint whose card's run config points at a dataset that does not exist."""
    from mtlmood.config import FeatureConfig, LabelConfig, ModelConfig
    from mtlmood.synth.checkpoints import untrained_checkpoint

    directory = tmp_path_factory.mktemp("checkpoint")
    model_config = ModelConfig(n_filters=4, n_blocks=2, segment_frames=16, n_mels=8)
    run = dataclasses.replace(
        RunConfig(),
        dataset=dataclasses.replace(RunConfig().dataset, root=str(directory / "no-data")),
        features=FeatureConfig(n_mels=8),
        model=model_config,
        labels=LabelConfig(n_moods=3, metadata="none"),
        train=dataclasses.replace(RunConfig().train, device="cpu"),
    )
    return untrained_checkpoint(
        directory / "model",
        model=model_config,
        moods=["calm", "dark", "happy"],
        meta_names=[],
        alpha=0.0,
        features=run.features,
        dataset=run.dataset,
        labels=run.labels,
        run_config=to_dict(run),
    )


def test_random_overrides_never_break_evaluate_of_a_real_checkpoint(
    checkpoint: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`evaluate` reads --set only after loading the checkpoint: this one exists."""
    card_config = json.loads((checkpoint / "model_card.json").read_text())["run_config"]
    command = Command(
        RunConfig,
        lambda tmp: ["evaluate", str(checkpoint)],
        lambda tmp: [],
        lambda tmp, sets: apply_overrides(from_dict(RunConfig, card_config), sets),
    )
    check_command("evaluate", command, ["nope=1"], capsys, tmp_path)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(sets=overrides(RunConfig))
    def run(sets: list[str]) -> None:
        check_command("evaluate", command, sets, capsys, tmp_path)

    run()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_the_loader_raises_only_one_line_config_errors(data: st.DataObject) -> None:
    """The library underneath: any override on any config class gives a config or one ConfigError line."""
    cls = data.draw(st.sampled_from([RunConfig, StudyConfig, ServeConfig]))
    sets = data.draw(overrides(cls))
    try:
        config = load_config(cls, None, sets)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert type(config) is cls
        assert load_config(cls, None, [f"{k}={json.dumps(v)}" for k, v in to_dict(config).items()]) == config
