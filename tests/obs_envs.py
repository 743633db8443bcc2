"""Tiny environments with image and Dict observations (tests of observation encoding).

Both hide a target among `n_targets` values in the observation; acting on it is rewarded. Episodes last `horizon`
steps and end by truncation for even targets, by termination for odd ones, so both flags occur. The observation
carries the step count (a bright row of pixels, the Dict's "vector"), so a final observation differs from the
reset one that replaces it.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class ImageEnv(gym.Env):
    """uint8 image observations of `shape` (HxWxC or CxHxW, given by `channels_first`): the target lights one
    quarter of the channels, the step count one row. Discrete(2) actions (Box(1,) with continuous=True)."""

    metadata: dict = {"render_modes": []}

    def __init__(self, shape: tuple[int, int, int] = (36, 36, 3), channels_first: bool = False,
                 continuous: bool = False, horizon: int = 6) -> None:
        self.shape, self.channels_first, self.horizon = tuple(shape), channels_first, horizon
        self.observation_space = gym.spaces.Box(0, 255, self.shape, np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else gym.spaces.Discrete(2)
        self.t, self.target = 0, 0

    def _obs(self) -> np.ndarray:
        img = np.zeros(self.shape, np.uint8)
        chw = img if self.channels_first else np.moveaxis(img, -1, 0)  # a view: writes land in img
        chw[:, :, : chw.shape[2] // 2] = 200 if self.target else 30
        chw[:, min(self.t, chw.shape[1] - 1), :] = 255
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.target = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        if isinstance(self.action_space, gym.spaces.Discrete):
            reward = 1.0 if int(action) == self.target else 0.0
        else:
            reward = -abs(float(np.asarray(action).reshape(-1)[0]) - (2 * self.target - 1))
        self.t += 1
        end = self.t >= self.horizon
        return self._obs(), reward, end and self.target == 1, end and self.target == 0, {}


class GoalDictEnv(gym.Env):
    """Dict observations, goal-conditioned: {"image": a uint8 image with a mark at the goal's column,
    "index": Discrete(4), the goal, "vector": [step / horizon, position, goal / 3] float32}. Acting the goal's
    parity (Discrete(2)) or moving the position towards the goal (Box(1,)) is rewarded."""

    metadata: dict = {"render_modes": []}

    def __init__(self, image_shape: tuple[int, int, int] = (36, 36, 3), continuous: bool = False,
                 horizon: int = 6, nan_at: int | None = None) -> None:
        self.image_shape, self.horizon, self.nan_at = tuple(image_shape), horizon, nan_at
        self.observation_space = gym.spaces.Dict({
            "vector": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
            "image": gym.spaces.Box(0, 255, self.image_shape, np.uint8),
            "index": gym.spaces.Discrete(4),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else gym.spaces.Discrete(2)
        self.t, self.goal, self.pos = 0, 0, 0.0

    def _obs(self) -> dict:
        img = np.zeros(self.image_shape, np.uint8)
        img[:, self.goal * (self.image_shape[1] // 4), :] = 255
        vec = np.array([self.t / self.horizon, self.pos, self.goal / 3], np.float32)
        if self.nan_at is not None and self.t == self.nan_at:
            vec[1] = np.nan
        return {"image": img, "index": self.goal, "vector": vec}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.goal, self.pos = 0, int(self.np_random.integers(4)), 0.0
        return self._obs(), {}

    def step(self, action):
        if isinstance(self.action_space, gym.spaces.Discrete):
            reward = 1.0 if int(action) == self.goal % 2 else 0.0
        else:
            self.pos = float(np.clip(self.pos + 0.25 * float(np.asarray(action).reshape(-1)[0]), -1, 1))
            reward = -abs(self.pos - (self.goal / 3))
        self.t += 1
        end = self.t >= self.horizon
        return self._obs(), reward, end and self.goal % 2 == 1, end and self.goal % 2 == 0, {}
