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
and traces are cut on either kind of end. Selection uses torch.where, so NaN in an unused slot
cannot leak.
"""
from __future__ import annotations

import torch


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


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-8) with the unbiased std (advantages, Q weights); a single sample is returned
    unchanged (its std is NaN)."""
    if x.numel() < 2:
        return x
    return (x - x.mean()) / (x.std() + 1e-8)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16). Returns (advantages, returns = A + V).

    delta_t = r_t + gamma * V_next_t - V_t;   A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}.
    gae_lambda = 1 gives A = (bootstrapped discounted return) - V; gae_lambda = 0 gives A = delta.

    Shapes: rewards, values, terminated, truncated, final_values: [T, N]; last_values: [N]. Torch ops on the
    tensors' device, no host sync.
    """
    if rewards.ndim != 2 or values.shape != rewards.shape or last_values.shape != rewards.shape[1:]:
        raise ValueError(
            f"gae expects [T, N] rewards/values and [N] last_values, got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(last_values.shape)}"
        )
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
