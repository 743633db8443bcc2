"""Config plumbing shared by every agent: build a dataclass from overrides, validate fields, (de)serialise.

Errors name the field. Unknown keys list the valid ones. Nothing here knows any algorithm.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A malformed configuration: an unknown key, a value of the wrong type or out of range."""


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build_config(cls: type[C], config: C | dict[str, Any] | None = None, *, preset: dict[str, Any] | None = None,
                 **overrides: Any) -> C:
    """Return a validated instance of the dataclass `cls`: the preset's values (a dict of fields, or None), then a
    config (an instance replaces them all; a dict updates them), then keyword overrides."""
    base: dict[str, Any] = dict(preset or {})
    if config is None:
        pass
    elif isinstance(config, cls):
        base = dataclasses.asdict(config)
    elif isinstance(config, dict):
        base.update(config)
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
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, float) or not math.isfinite(value) or not value.is_integer():
            raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
        try:
            out = float(value)
        except OverflowError:  # a JSON integer too large for a float
            raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}") from None
        # NaN/inf would surface much later as a "non-finite" failure blamed on the environment. No config
        # field uses inf as a sentinel (optional features use None), so every float field refuses them.
        if not math.isfinite(out):
            raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
        return out
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


def check_cuda_graphs(cfg: Any, name: str = "cuda_graphs") -> None:
    """true, false or "auto"."""
    v = getattr(cfg, name)
    if not (isinstance(v, bool) or v == "auto"):
        raise ConfigError(f"{type(cfg).__name__}.{name} must be true, false or \"auto\", got {v!r}")


def check_choice(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be one of {list(choices)}, got {v!r}")


MAX_LAYER_WIDTH = 65_536  # wider hidden layers of an RL MLP are typos that would try to allocate gigabytes
MAX_HIDDEN_LAYERS = 64


def check_hidden_sizes(cfg: Any, name: str = "hidden_sizes", allow_empty: bool = False) -> None:
    """At least one hidden layer, unless allow_empty (A2C, whose heads then sit on the encoder's features, as
    Stable-Baselines3's CnnPolicy). Elsewhere an empty tuple would be a linear model no agent is documented as,
    so it is refused."""
    v = getattr(cfg, name)
    owner = type(cfg).__name__
    if not isinstance(v, tuple) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v):
        raise ConfigError(f"{owner}.{name} must be a tuple of positive layer widths, got {v!r}")
    if not v and not allow_empty:
        raise ConfigError(f"{owner}.{name} must name at least one hidden layer, e.g. [64, 64]; got []")
    if not v:
        return
    if len(v) > MAX_HIDDEN_LAYERS or max(v) > MAX_LAYER_WIDTH:
        raise ConfigError(f"{owner}.{name} allows at most {MAX_HIDDEN_LAYERS} layers of at most "
                          f"{MAX_LAYER_WIDTH:,} units, got {list(v)}")


def check_optional_bool(cfg: Any, *names: str, none: str = "detect") -> None:
    """Fields that are true, false or None (`none` says what None means)."""
    for name in names:
        v = getattr(cfg, name)
        if v is not None and not isinstance(v, bool):
            raise ConfigError(f"{type(cfg).__name__}.{name} must be true, false or null ({none}), got {v!r}")


def check_encoder_fields(cfg: Any) -> None:
    """The observation-encoding fields every agent config has: image_obs and image_channels_first (true, false or
    None) and cnn_features_dim (a positive layer width)."""
    owner = type(cfg).__name__
    check_optional_bool(cfg, "image_obs", "image_channels_first")
    v = cfg.cnn_features_dim
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_LAYER_WIDTH:
        raise ConfigError(f"{owner}.cnn_features_dim must be an integer in [1, {MAX_LAYER_WIDTH:,}], got {v!r}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON (or TOML) file of config overrides; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p} is not UTF-8 text (undecodable byte at offset {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error becomes a ConfigError naming the file
        raise ConfigError(f"config file {p} is malformed: {str(e).splitlines()[0] if str(e) else e!r}") from None
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
    except (ValueError, RecursionError):  # not JSON (or absurdly nested): keep the text, the field's type decides
        value = raw
    return key, value


# ---- presets: tuned settings per (algorithm, environment), shipped as data in rlkit/presets/<algo>.json -------------
def load_presets(algo: str) -> dict[str, dict[str, Any]]:
    """{env_id: {"steps": default training steps, "config": {field: value}, "source": where the figures come from}}
    for one algorithm ({} when it has none)."""
    from importlib import resources

    try:
        text = resources.files("rlkit").joinpath("presets", f"{algo.lower()}.json").read_text()
    except FileNotFoundError:
        return {}
    return json.loads(text)


# Preset families: a preset keyed by a family's name applies to every env id the family's predicate accepts,
# when no preset has that exact id (an exact id always wins). rlkit.core.envs registers "atari" (every Atari
# id): this module knows no environment.
PRESET_FAMILIES: dict[str, Callable[[str], bool]] = {}


def preset_key(presets: dict[str, Any], env_id: Any) -> str | None:
    """The key of `presets` that applies to `env_id`: the id itself, else the first family that accepts it."""
    if not isinstance(env_id, str):
        return None
    if env_id in presets:
        return env_id
    return next((f for f, accepts in PRESET_FAMILIES.items() if f in presets and accepts(env_id)), None)


def preset_for(algo: str, env_id: str) -> dict[str, Any] | None:
    """The preset for this (algo, env id), or None: the exact id's, else its family's (e.g. "atari")."""
    presets = load_presets(algo)
    key = preset_key(presets, env_id)
    return presets[key] if key is not None else None


def preset_config(algo: str, env: Any, wanted: bool) -> dict[str, Any] | None:
    """The config fields of the preset for (algo, env) when `wanted` (an agent built with preset=True), else None.
    ConfigError when asked for one that does not exist, naming the environments that have one."""
    if not wanted:
        return None
    presets = load_presets(algo)
    key = preset_key(presets, env)
    if key is None:
        names = [k + (f" (any {k} id)" if k in PRESET_FAMILIES else "") for k in sorted(presets)]
        raise ConfigError(f"no {algo} preset for {env!r}; presets exist for: {', '.join(names) or 'none'}")
    return dict(presets[key]["config"])
