"""One module per algorithm. Agents import rlkit.core only, never each other.

REGISTRY maps the CLI/checkpoint name of each algorithm to (module, class); classes import lazily so
`rlkit list` and a single agent's import stay fast.
"""
from __future__ import annotations

import importlib
from typing import Any

REGISTRY: dict[str, tuple[str, str]] = {
    "reinforce": ("rlkit.agents.reinforce", "REINFORCE"),
    "qac": ("rlkit.agents.qac", "QAC"),
    "a2c": ("rlkit.agents.a2c", "A2C"),
    "trpo": ("rlkit.agents.trpo", "TRPO"),
    "ddpg": ("rlkit.agents.ddpg", "DDPG"),
}


def get_agent_class(name: str) -> Any:
    key = name.lower()
    if key not in REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; choose from: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[key]
    return getattr(importlib.import_module(module), cls)


def available() -> list[str]:
    """Algorithms whose module is present in this installation."""
    out = []
    for name, (module, _) in REGISTRY.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        out.append(name)
    return out
