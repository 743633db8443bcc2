"""Tuned settings per (algorithm, environment), shipped as data: presets/<algo>.json maps an env id to
{"steps": default training steps, "config": {Config overrides}, "source": where the figures come from}.

The same presets reach the CLI (`rlkit train` applies the one for its (algo, env) unless --no-preset) and the
Python API (`rlkit.A2C("CartPole-v1", preset=True)`, `rlkit.make_agent("a2c", "CartPole-v1")`); an explicit
keyword, --config or --set overrides a preset value. `rlkit list --presets` lists them with their sources.
"""
from __future__ import annotations

from rlkit.core.config import load_presets, preset_for

__all__ = ["load_presets", "preset_for"]
