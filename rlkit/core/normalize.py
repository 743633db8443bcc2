"""Running reward normalisation: rewards divided by the running standard deviation of the discounted return.

As Stable-Baselines3's VecNormalize (and Engstrom et al. 2020, "Implementation matters in deep policy gradients"):
every env keeps a discounted return R <- gamma * R + r, reset to 0 when its episode ends; the variance of R over
all steps seen so far is tracked with the parallel (Chan et al.) mean/variance update; the agent trains on
clip(r / sqrt(Var[R] + eps), -clip, clip). Only the scale changes (no mean is subtracted), so the optimal policy
is the same. What is logged as the episode return is always the raw reward (rlkit.core.rollout).

Observation normalisation lives in the networks' ObsEncoder (rlkit.core.networks): there the statistics travel
with the modules into checkpoints and are read (never updated) at evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class ReturnNormalizer:
    """Scale rewards by the running std of the discounted return. State: count, mean, var (of R) and R per env."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = float(gamma), float(clip), float(eps)
        self.returns = np.zeros(n_envs, dtype=np.float64)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4  # the prior SB3 uses: no division by zero at first

    def __call__(self, rewards: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Normalised rewards for one vector step (statistics updated first, as VecNormalize does); `done` marks
        the envs whose episode ended at this step (their return restarts)."""
        r = np.asarray(rewards, dtype=np.float64)
        self.returns = self.returns * self.gamma + r
        self._update(self.returns)
        self.returns[np.asarray(done, dtype=bool)] = 0.0
        scaled = np.clip(r / np.sqrt(self.var + self.eps), -self.clip, self.clip)
        return scaled.astype(np.float32)

    def _update(self, x: np.ndarray) -> None:
        b_mean, b_var, b_count = float(x.mean()), float(x.var()), x.size
        delta, total = b_mean - self.mean, self.count + b_count
        self.mean += delta * b_count / total
        self.var = (self.var * self.count + b_var * b_count + delta * delta * self.count * b_count / total) / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"returns": self.returns.tolist(), "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        returns = np.asarray(state["returns"], dtype=np.float64)
        if returns.shape != self.returns.shape:
            raise ValueError(f"reward normaliser state is for {returns.size} envs, this run has {self.returns.size}")
        self.returns = returns
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
