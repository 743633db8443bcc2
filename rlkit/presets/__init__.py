"""Tuned settings per (algorithm, environment), shipped as data: presets/<algo>.json maps an env id to
{"steps": default training steps, "config": {Config overrides}, "source": where the figures come from}.
`rlkit train` applies the preset for its (algo, env) unless --no-preset; --config and --set override it.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_presets(algo: str) -> dict[str, dict[str, Any]]:
    try:
        text = resources.files(__name__).joinpath(f"{algo.lower()}.json").read_text()
    except FileNotFoundError:
        return {}
    return json.loads(text)


def preset_for(algo: str, env_id: str) -> dict[str, Any] | None:
    """{"steps": int, "config": dict} for this (algo, env), or None when there is no tuned preset."""
    return load_presets(algo).get(env_id)
