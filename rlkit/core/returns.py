"""Discounted reward-to-go and GAE on [T, N] tensors, with `terminated` and `truncated` kept apart.

Conventions (t = 0..T-1 indexes time, columns are envs):
  rewards[t], values[t] = V(s_t), terminated[t], truncated[t] describe the step s_t -> s_{t+1};
  final_values[t] = V(true final observation) where truncated[t] (ignored elsewhere, may hold NaN);
  last_values = V(s_T), the observation after the rollout's last step.
The value that follows step t is
  0                      if terminated[t]   (a real end: never bootstrap)
  final_values[t]        if truncated[t]    (a time limit: bootstrap from the TRUE final observation,
                                             not the reset observation the vector env returned)
  values[t+1]            otherwise          (last_values at t = T-1)
and traces are cut on either kind of end. Selection uses torch.where / np.where, so NaN in an unused slot
cannot leak.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

Array = Union[torch.Tensor, np.ndarray]


def next_values(
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    last_values: torch.Tensor,
) -> torch.Tensor:
    """V of the state after each step, with termination and truncation applied. Shapes: all [T, N]; last [N]."""
    shifted = torch.cat([values[1:], last_values.unsqueeze(0)], dim=0)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.where(terminated, zero, torch.where(truncated, final_values, shifted))


def normalize(x: Array) -> Array:
    """(x - mean) / (std + 1e-8) with the unbiased std, for torch tensors and NumPy arrays alike (advantages,
    Q weights); a single sample is returned unchanged (its std is NaN)."""
    if x.size < 2 if isinstance(x, np.ndarray) else x.numel() < 2:
        return x
    std = x.std(ddof=1) if isinstance(x, np.ndarray) else x.std()
    return (x - x.mean()) / (std + 1e-8)


def gae(
    rewards: Array,
    values: Array,
    terminated: Array,
    truncated: Array,
    final_values: Array,
    last_values: Array,
    gamma: float,
    gae_lambda: float,
) -> tuple[Array, Array]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16). Returns (advantages, returns = A + V).

    delta_t = r_t + gamma * V_next_t - V_t;   A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}.
    gae_lambda = 1 gives A = (bootstrapped discounted return) - V; gae_lambda = 0 gives A = delta.

    Shapes: rewards, values, terminated, truncated, final_values: [T, N]; last_values: [N]. Takes torch tensors
    (returns tensors; the backward recursion runs in NumPy on CPU tensors: T steps of [N]-sized ops cost per-op
    overhead, ~1 us in NumPy against ~4 in torch) or NumPy arrays (returns arrays).
    """
    if rewards.ndim != 2 or values.shape != rewards.shape or last_values.shape != rewards.shape[1:]:
        raise ValueError(
            f"gae expects [T, N] rewards/values and [N] last_values, got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(last_values.shape)}"
        )
    if isinstance(values, np.ndarray):
        return gae_numpy(rewards, values, terminated, truncated, final_values, last_values, gamma, gae_lambda)
    if values.device.type == "cpu":
        arrays = (x.detach().numpy() for x in (rewards, values, terminated, truncated, final_values, last_values))
        adv = torch.from_numpy(gae_numpy(*arrays, gamma, gae_lambda)[0])
        return adv, adv + values
    return gae_torch(rewards, values, terminated, truncated, final_values, last_values, gamma, gae_lambda)


def gae_numpy(rewards: np.ndarray, values: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
              final_values: np.ndarray, last_values: np.ndarray, gamma: float, gae_lambda: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """gae() on NumPy arrays, in the dtype of `values`."""
    nxt = np.concatenate((values[1:], last_values[None]))
    nxt = np.where(terminated, np.zeros((), values.dtype), np.where(truncated, final_values, nxt))
    deltas = (rewards + gamma * nxt - values).astype(values.dtype, copy=False)
    decay = ((gamma * gae_lambda) * ~(terminated | truncated)).astype(values.dtype)
    advantages = np.empty_like(deltas)
    running = np.zeros_like(last_values)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages, advantages + values


def gae_torch(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
              final_values: torch.Tensor, last_values: torch.Tensor, gamma: float, gae_lambda: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """gae() in torch ops on the tensors' device (no host sync: the CUDA path)."""
    deltas = rewards + gamma * next_values(values, terminated, truncated, final_values, last_values) - values
    decay = (gamma * gae_lambda) * (~(terminated | truncated)).to(values.dtype)
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(last_values)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = torch.addcmul(deltas[t], decay[t], running)
        advantages[t] = running
    return advantages, advantages + values


def reward_to_go(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    final_values: torch.Tensor | None = None,
    last_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discounted reward-to-go G_t = r_t + gamma * G_{t+1}, reset at every episode end.

    On truncation G continues from final_values (a critic's estimate of the true final observation) and an
    unfinished episode at the rollout's end continues from last_values; both default to 0 (no critic).
    Shapes: [T, N] in, [T, N] out; last_values [N].
    """
    zeros = torch.zeros_like(rewards)
    fv = zeros if final_values is None else final_values
    lv = zeros[0] if last_values is None else last_values
    zero = torch.zeros((), dtype=rewards.dtype, device=rewards.device)
    out = torch.empty_like(rewards)
    running = lv
    for t in range(rewards.shape[0] - 1, -1, -1):
        nxt = torch.where(terminated[t], zero, torch.where(truncated[t], fv[t], running))
        running = rewards[t] + gamma * nxt
        out[t] = running
    return out


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target]; NaN when the target is constant. A tensor: no host sync."""
    var_t = target.var(unbiased=False)
    return 1.0 - (target - predicted).var(unbiased=False) / var_t
