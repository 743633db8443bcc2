"""Small shared types: the Agent protocol every algorithm satisfies."""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Agent(Protocol):
    """What experiments, the CLI and research code may rely on for any rlkit agent."""

    algo: str
    num_timesteps: int

    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray: ...

    def learn(
        self,
        total_steps: int,
        callback: Callable[[dict[str, float]], bool | None] | None = None,
        run_dir: str | None = None,
        progress: bool = True,
    ) -> "Agent": ...

    def evaluate(self, n_episodes: int = 10, deterministic: bool = True) -> dict[str, float]: ...

    def save(self, path: str) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...
