"""Preallocated storage on the training device.

RolloutBuffer: one on-policy rollout of T steps from N envs ([T, N, ...] tensors).
ReplayBuffer: see below (ring storage for off-policy agents).
"""
from __future__ import annotations

from typing import Sequence

import torch


class RolloutBuffer:
    """T x N transitions, allocated once on the device and overwritten by every rollout.

    Shapes:
      obs [T, N, *obs_shape]      observation the action was taken in
      actions [T, N, *act_shape]  the policy's (unclipped) action
      log_probs [T, N]            log pi_old(a|s) at collection time
      rewards, terminated, truncated [T, N]
      final_obs [T, N, *obs_shape] the TRUE final observation where truncated[t, n] (zeros elsewhere)
      last_obs [N, *obs_shape]     the observation after the last step (for bootstrapping)
    """

    def __init__(
        self,
        n_steps: int,
        n_envs: int,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        action_dtype: torch.dtype,
        device: torch.device,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if n_steps < 1 or n_envs < 1:
            raise ValueError(f"RolloutBuffer needs n_steps >= 1 and n_envs >= 1, got {n_steps}, {n_envs}")
        T, N = n_steps, n_envs
        self.n_steps, self.n_envs, self.device = T, N, device
        self.obs = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((T, N, *action_shape), dtype=action_dtype, device=device)
        self.log_probs = torch.zeros((T, N), device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.final_obs = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
        self.last_obs = torch.zeros((N, *obs_shape), dtype=obs_dtype, device=device)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [T * N, ...]."""
        return x.reshape(self.n_steps * self.n_envs, *x.shape[2:])
