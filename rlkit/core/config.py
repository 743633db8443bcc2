"""Config plumbing shared by every agent: build a dataclass from overrides, validate fields, (de)serialise.

Errors name the field. Unknown keys list the valid ones. Nothing here knows any algorithm.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A malformed configuration: an unknown key, a value of the wrong type or out of range."""


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build_config(cls: type[C], config: C | dict[str, Any] | None = None, **overrides: Any) -> C:
    """Return a validated instance of the dataclass `cls` from a base config (instance or dict) and overrides."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, cls):
        base = dataclasses.asdict(config)
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise ConfigError(f"config must be a {cls.__name__} or a dict, got {type(config).__name__}")
    base.update(overrides)
    valid = field_names(cls)
    unknown = sorted(set(base) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {unknown}; valid keys are: {', '.join(valid)}"
        )
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(cls.__name__, k, v, hints[k]) for k, v in base.items()}
    return cls(**coerced)  # __post_init__ validates ranges


def _coerce(owner: str, name: str, value: Any, hint: Any) -> Any:
    """Accept what JSON and the CLI produce (lists for tuples, ints for floats); reject wrong types."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _coerce(owner, name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{name} must be a list of integers, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(owner, name, v, elem) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")
    if hint is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or float(value) != int(value)):
            raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{name} must be a string, got {value!r}")
        return value
    return value


# Range checks used in each Config.__post_init__; each raises ConfigError naming the field.
def check_positive(cfg: Any, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{type(cfg).__name__}.{n} must be > 0, got {v!r}")


def check_nonnegative(cfg: Any, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{type(cfg).__name__}.{n} must be >= 0, got {v!r}")


def check_unit_interval(cfg: Any, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
            raise ConfigError(f"{type(cfg).__name__}.{n} must be in [0, 1], got {v!r}")


def check_sample_freq(cfg: Any, name: str = "sde_sample_freq") -> None:
    """-1 (once per rollout) or a positive integer."""
    v = getattr(cfg, name)
    if not isinstance(v, int) or isinstance(v, bool) or v == 0 or v < -1:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be -1 (once per rollout) or a positive integer, "
                          f"got {v!r}")


def check_choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be one of {list(choices)}, got {v!r}")


def check_hidden_sizes(cfg: Any, name: str = "hidden_sizes") -> None:
    v = getattr(cfg, name)
    if not isinstance(v, tuple) or not all(isinstance(h, int) and h > 0 for h in v):
        raise ConfigError(f"{type(cfg).__name__}.{name} must be a tuple of positive layer widths, got {v!r}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON (or TOML) file of config overrides; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes a ConfigError naming the file
        raise ConfigError(f"config file {p} is malformed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def parse_set_option(text: str) -> tuple[str, Any]:
    """Parse a CLI `key=value`; the value is read as JSON when it parses (numbers, lists, true), else a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value
