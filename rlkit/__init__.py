"""rlkit: readable, fast reinforcement-learning agents on PyTorch and Gymnasium.

    import rlkit
    agent = rlkit.A2C("CartPole-v1", n_envs=8, seed=0)
    agent.learn(total_steps=100_000)
    agent.evaluate(n_episodes=10)

    batch = rlkit.SeedBatch(rlkit.A2C, "CartPole-v1", seeds=range(8), n_envs=8)  # 8 seeds in one process
    batch.learn(total_steps=100_000)

Agents and their Config classes are imported lazily on first access.
"""
from __future__ import annotations

import importlib
from typing import Any

from rlkit.agents import REGISTRY, get_agent_class
from rlkit.core.checkpoint import CheckpointError, peek_algo
from rlkit.core.config import ConfigError
from rlkit.core.device import GraphedStep, auto_device, resolve_device, seed_everything
from rlkit.core.envs import TORCH_ENV_IDS, SpaceError, make_vec_env

__version__ = "0.1.0"

_LAZY = {cls: module for module, cls in REGISTRY.values()}
_LAZY.update({cls + "Config": module for module, cls in REGISTRY.values()})
_LAZY["SeedBatch"] = "rlkit.core.seeds"  # many seeds of one agent trained in one process

__all__ = [
    "REINFORCE", "REINFORCEConfig", "QAC", "QACConfig", "A2C", "A2CConfig", "TRPO", "TRPOConfig",
    "DDPG", "DDPGConfig", "load_agent", "make_agent", "make_env", "make_vec_env", "resolve_device", "auto_device",
    "SeedBatch", "seed_everything", "GraphedStep", "CheckpointError", "ConfigError", "SpaceError", "TORCH_ENV_IDS",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlkit' has no attribute {name!r}")


def make_env(env_id: str, **kwargs: Any) -> Any:
    """One Gymnasium env, as evaluation builds it; kwargs go to gymnasium.make. An Atari id gets the evaluation
    preprocessing (whole games, raw rewards; docs/guide.md#atari) unless atari_preprocessing=False."""
    from rlkit.core.envs import env_factory

    return env_factory(env_id, kwargs)[0]()


def load_agent(path: str, env: Any = None, device: str = "auto", **kwargs: Any) -> Any:
    """Load any rlkit checkpoint: the algorithm is read from the file."""
    return get_agent_class(peek_algo(path)).load(path, env=env, device=device, **kwargs)


def make_agent(algo: str, env: Any, *, preset: bool | None = None, **kwargs: Any) -> Any:
    """Build the agent named `algo` ("a2c", "trpo", ...) on `env`, starting from the tuned preset for this env id
    when one exists (as `rlkit train` does; preset=False ignores it, preset=True requires one). Keywords are the
    agent's constructor arguments and Config fields, and override the preset's values."""
    from rlkit.core.config import preset_for

    cls = get_agent_class(algo)
    if preset is None:
        preset = isinstance(env, str) and preset_for(cls.algo, env) is not None
    return cls(env, preset=preset, **kwargs)
