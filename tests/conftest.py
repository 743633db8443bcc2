"""Shared fixtures: tiny deterministic environments with known dynamics, and CUDA skipping."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `python -m pytest -m cuda` on a machine with one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class CountingEnv(gym.Env):
    """obs = [t, episode_id] as float32; reward = 1 each step; truncates at `horizon`, or terminates there when
    terminate=True. The reset observation is [0, episode_id], so bootstrapping from it instead of the true final
    observation [horizon, episode_id] is detectable."""

    metadata: dict = {"render_modes": []}

    def __init__(self, horizon: int = 3, terminate: bool = False, box_actions: bool = False):
        self.horizon, self.terminate_at_end = horizon, terminate
        self.observation_space = gym.spaces.Box(-1e6, 1e6, shape=(2,), dtype=np.float32)
        self.action_space = (gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32) if box_actions
                             else gym.spaces.Discrete(2))
        self.t, self.episode = 0, -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return np.array([0.0, self.episode], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.horizon
        obs = np.array([self.t, self.episode], dtype=np.float32)
        return obs, 1.0, end and self.terminate_at_end, end and not self.terminate_at_end, {}


class BadEnv(CountingEnv):
    """Returns a NaN observation on its second step."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        if self.t == 2:
            obs = obs * np.nan
        return obs, r, term, trunc, info


@pytest.fixture
def counting_env_fn():
    return lambda: CountingEnv(horizon=3)
