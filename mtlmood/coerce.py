"""The coercion engine: builds and validates frozen config dataclasses from plain mappings.

What comes from outside (a YAML file, ``--set``, a model card, a trial's config) goes
through :func:`from_dict`, which makes YAML/CLI values fit the annotations where that is
natural and then validates them with pydantic: types, ranges (``Annotated[int, Field(ge=1)]``),
allowed words and unknown keys. A bad value becomes one :class:`~mtlmood.errors.ConfigError`
line naming the dotted key, the value and what is allowed, e.g.
``train.lr=-1: must be greater than 0``. :func:`apply_overrides` applies dotted
``section.key=value`` strings. The engine knows no particular config: the run's schema
(mtlmood.config), the study's (study.config) and the server's (serve.config) all use it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from typing import (
    Annotated,
    Any,
    Callable,
    Hashable,
    TypeVar,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from mtlmood.errors import ConfigError


def parse_number(text: str) -> float:
    """A float from YAML/CLI text; "1/9" reads better than 0.111 in grids (ValueError otherwise)."""
    if "/" in text:
        numerator, denominator = text.split("/", 1)
        try:
            return float(numerator) / float(denominator)
        except ZeroDivisionError:
            raise ValueError(f"{text!r} divides by zero") from None
    return float(text)


C = TypeVar("C")

MAX_PROBLEMS = 6  # problems named in one error line; the rest are counted


def show_value(value: Any) -> str:
    """A value as the error line shows it: repr (so one line, quotes on strings), cut when long."""
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails (cannot come from YAML, but be safe)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def problem(key: str, value: Any, what: str) -> str:
    """One problem: ``dotted.key=value: what is allowed``."""
    shown = key if key.isprintable() else repr(key)  # a made-up key with a newline stays on one line
    return f"{shown or '<config>'}={show_value(value)}: {what}"


def one_line(text: str) -> str:
    """``text`` with its whitespace runs (newlines included) made single spaces: errors are one line."""
    return " ".join(str(text).split())


def _raise(problems: list[str]) -> None:
    """One ConfigError naming the first MAX_PROBLEMS problems (and counting the rest), if any."""
    if problems:
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        raise ConfigError(one_line("; ".join(shown) + (f"; and {more} more" if more else "")))


def join_key(where: str, key: Any) -> str:
    """The dotted key of ``key`` inside section ``where`` ("" = the top level)."""
    return f"{where}.{key}" if where else str(key)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def _known(where: str, names: list[str]) -> str:
    return f"known keys of {where}: {', '.join(names)}" if where else f"known top-level keys: {', '.join(names)}"


def _coerce(value: Any, annotation: Any, where: str, problems: list[str]) -> Any:
    """Make a YAML/CLI value fit the annotation where that is natural, before pydantic judges it.

    A scalar where a list belongs is a list of one (``--set search.n_moods=3``), "1/9" is a
    number, a number where a string belongs is that string (``--set dataset.root=2024``), a
    missing section (``train:`` with nothing under it) keeps its defaults. Anything else is
    passed on unchanged for pydantic to accept or reject; unknown keys and true/false where a
    number belongs are recorded in ``problems`` here.
    """
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    origin = get_origin(annotation)
    if _is_section(annotation):
        return _coerce_section(annotation, value, where, problems)
    if origin in (list, tuple):
        item = (get_args(annotation) or (Any,))[0]
        if isinstance(value, dict):
            return value  # pydantic: "must be a valid list"
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, item, f"{where}[{i}]", problems) for i, v in enumerate(values)]
    if origin is dict:
        if not isinstance(value, dict):
            return value
        key_type, value_type = get_args(annotation) or (Any, Any)
        return {
            _coerce(k, key_type, where, problems): _coerce(v, value_type, join_key(where, k), problems)
            for k, v in value.items()
        }
    if annotation in (int, float):
        if isinstance(value, bool):
            problems.append(problem(where, value, f"must be a number ({annotation.__name__}), not true/false"))
        elif annotation is float and isinstance(value, str) and "/" in value:
            try:
                return parse_number(value)
            except ValueError:
                return value
        return value
    if annotation is str and isinstance(value, (bool, int, float, datetime.date)):
        try:
            return str(value)
        except ValueError:  # an integer too long to print: pydantic says it is not a string
            return value
    return value


def _coerce_section(cls: type, value: Any, where: str, problems: list[str]) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(problem(where, value, f"must be a mapping of {cls.__name__} settings"))
        return value
    hints, names = _hints(cls), _field_names(cls)
    data = {}
    for key, item in value.items():
        if key not in names:
            unknown = join_key(where, key)
            problems.append(problem(unknown, item, f"unknown key {unknown!r}; {_known(where, names)}"))
            continue
        data[key] = _coerce(item, hints[key], join_key(where, key), problems)
    return data


@functools.lru_cache(maxsize=None)
def _validator(cls: Hashable) -> type[BaseModel]:
    """A pydantic model with one field of type ``cls``; nested sections share its settings."""
    return create_model(
        f"Validated{getattr(cls, '__name__', 'Config')}",
        __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
        config=(cast(Any, cls), ...),
    )


def _loc(where: str, loc: tuple[Any, ...]) -> str:
    key = where
    for part in loc:
        key = f"{key}[{part}]" if isinstance(part, int) else join_key(key, part)
    return key


def _describe(where: str, error: Any) -> str:
    """One pydantic error as ``dotted.key=value: what is allowed``."""
    loc = tuple(error["loc"][1:])  # [0] is the wrapper's field
    if loc and loc[-1] == "[key]":  # a mapping's key failed, not its value
        return f"{_loc(where, loc[:-2])}: key {show_value(error.get('input'))} {_what(error)}"
    return problem(_loc(where, loc), error.get("input"), _what(error))


def _what(error: Any) -> str:
    """pydantic's message as "what is allowed"."""
    if error["type"] == "dataclass_type":
        return "must be a mapping of settings"
    if error["type"] == "unexpected_keyword_argument":
        return "unknown key"
    if error["type"] in ("too_short", "string_too_short"):
        least = (error.get("ctx") or {}).get("min_length", 1)
        if isinstance(error.get("input"), str):
            return f"must have at least {least} character{'' if least == 1 else 's'}"
        return f"must list at least {least} {'entry' if least == 1 else 'entries'}"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message.replace("Input should be", "must be")


# Checks that involve several fields of one section, run after pydantic's, wherever the
# section occurs (a RunConfig, a study's run, a model card).
CROSS_CHECKS: dict[type, Callable[[Any, str], list[str]]] = {}  # filled by the schema modules


def _cross_problems(config: Any, where: str) -> list[str]:
    problems = list(CROSS_CHECKS[type(config)](config, where)) if type(config) in CROSS_CHECKS else []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            problems += _cross_problems(value, join_key(where, f.name))
    return problems


def from_dict(cls: type[C], data: Any, where: str = "") -> C:
    """Build and validate a config dataclass from a (possibly partial) mapping.

    Missing keys keep their defaults; unknown keys, wrong types and out-of-range values
    raise one ConfigError naming every bad ``dotted.key=value`` (``where`` prefixes the keys).
    """
    where = where.rstrip(".")
    problems: list[str] = []
    data = _coerce_section(cls, data, where, problems)
    _raise(problems)
    try:
        validated = _validator(cast(Hashable, cls)).model_validate({"config": data})
    except ValidationError as exc:
        _raise([_describe(where, error) for error in exc.errors(include_url=False)])
        raise  # unreachable: a ValidationError has at least one error
    config = cast(C, validated.config)  # type: ignore[attr-defined]
    _raise(_cross_problems(config, where))
    return config


def check_config(config: C) -> C:
    """Validate a config built in code (``dataclasses.replace`` does not); returns it validated."""
    return from_dict(type(config), to_dict(config))


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a config dataclass."""
    return dataclasses.asdict(config)


def _parse_value(raw: str) -> Any:
    """An override's value: YAML (``3``, ``[3, 9]``, ``true``, ``1e-3``); text that is not
    valid YAML is taken as it is (a path such as ``runs/[x]``)."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        return raw


def _assign(node: dict[str, Any], cls: type, keys: list[str], value: Any, dotted: str, where: str = "") -> None:
    """Set ``keys`` (a path below section ``cls``, whose data is ``node``) to ``value``."""
    key, rest = keys[0], keys[1:]
    names = _field_names(cls)
    here = join_key(where, key)
    if key not in names:
        raise ConfigError(problem(dotted, value, f"unknown key {here!r}; {_known(where, names)}"))
    annotation = _hints(cls)[key]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if _is_section(annotation):
        if not isinstance(node.get(key), dict):
            node[key] = {}
        if rest:
            _assign(node[key], annotation, rest, value, dotted, here)
        elif isinstance(value, dict):  # section=VALUE with a mapping: set each of its keys
            for sub, item in value.items():
                _assign(node[key], annotation, [str(sub)], item, f"{dotted}.{sub}", here)
        else:
            raise ConfigError(
                problem(dotted, value, f"{here} is a section: set its keys ({here}.KEY=VALUE) or give a mapping")
            )
    elif rest and get_origin(annotation) is dict and len(rest) == 1:  # search.tag_sets.50=all
        entries = dict(node.get(key) or {})
        entries[_parse_value(rest[0])] = value
        node[key] = entries
    elif rest:
        raise ConfigError(problem(dotted, value, f"{here} is a setting, not a section"))
    else:
        node[key] = value


def apply_overrides(config: C, overrides: list[str]) -> C:
    """Apply ``section.key=value`` overrides (values parsed as YAML), then validate."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {show_value(item)} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip()
        _assign(data, type(config), dotted.split("."), _parse_value(raw), dotted)
    return from_dict(type(config), data)
