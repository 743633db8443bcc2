"""Tiny envs with MultiDiscrete and MultiBinary actions whose reward counts the action dimensions that match a
target shown in the observation: chance is known exactly, and a learning policy beats it clearly."""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class MatchMultiDiscreteEnv(gym.Env):
    """MultiDiscrete(nvec, start) actions; obs = the one-hot targets of every dimension (a fresh random target each
    step); reward = number of dimensions whose action equals its target; the episode is truncated after
    `horizon` steps. The env asserts that every action is a member of its space (shape, dtype range, start)."""

    metadata: dict = {"render_modes": []}

    def __init__(self, nvec=(3, 2, 4), start=None, horizon: int = 8):
        self.nvec = np.asarray(nvec, dtype=np.int64)
        self.start = np.zeros_like(self.nvec) if start is None else np.asarray(start, dtype=np.int64)
        self.action_space = gym.spaces.MultiDiscrete(self.nvec, start=self.start)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (int(self.nvec.sum()),), np.float32)  # nvec may be 2-D
        self.horizon = horizon

    def chance(self) -> float:
        """Expected reward per step of the uniform random policy."""
        return float(np.sum(1.0 / self.nvec))

    def _draw(self) -> np.ndarray:
        self.target = self.np_random.integers(0, self.nvec)
        obs = np.zeros(int(self.nvec.sum()), np.float32)
        flat = self.nvec.reshape(-1)
        obs[np.concatenate([[0], np.cumsum(flat)[:-1]]) + self.target.reshape(-1)] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        assert self.action_space.contains(action), f"{action!r} is not in {self.action_space}"
        reward = float(np.sum(np.asarray(action) - self.start == self.target))
        self.t += 1
        return self._draw(), reward, False, self.t >= self.horizon, {}


class MatchMultiBinaryEnv(gym.Env):
    """MultiBinary(shape) actions; obs = the target bits as +-1 (fresh each step, flattened); reward = number of
    bits equal to their target; truncated after `horizon` steps. The env asserts that actions are in its space."""

    metadata: dict = {"render_modes": []}

    def __init__(self, shape=4, horizon: int = 8):
        self.action_space = gym.spaces.MultiBinary(shape)
        self.n = int(np.prod(self.action_space.shape))
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (self.n,), np.float32)
        self.horizon = horizon

    def chance(self) -> float:
        return self.n / 2.0

    def _draw(self) -> np.ndarray:
        self.target = self.np_random.integers(0, 2, self.action_space.shape)
        return (2.0 * self.target.reshape(-1) - 1.0).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        assert self.action_space.contains(action), f"{action!r} is not in {self.action_space}"
        reward = float(np.sum(np.asarray(action) == self.target))
        self.t += 1
        return self._draw(), reward, False, self.t >= self.horizon, {}
