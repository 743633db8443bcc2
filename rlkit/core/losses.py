"""Losses more than one agent uses, as pure functions returning (loss, diagnostics).

Only the policy-gradient loss is shared (REINFORCE, QAC and A2C differ only in the weights Psi); every other
loss is specific to its agent and lives in that agent's file.
"""
from __future__ import annotations

import torch


def policy_gradient_loss(logp: torch.Tensor, entropy: torch.Tensor | None, psi: torch.Tensor, ent_coef: float
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = -E[log pi(a|s) * Psi] - ent_coef * E[H[pi(.|s)]], with Psi detached: the advantage (A2C, REINFORCE with a
    baseline), the reward-to-go (REINFORCE without one) or Q(s, a) (QAC). Its gradient is the policy gradient
    E[grad log pi * Psi] + ent_coef * grad E[H]. With entropy None (ent_coef 0 and nothing to log) the entropy
    term and its backward pass are skipped."""
    loss = -(logp * psi).mean()
    if entropy is None:
        return loss, {"train/loss_pi": loss.detach()}
    ent = entropy.mean()
    if ent_coef > 0:
        loss = loss - ent_coef * ent
    return loss, {"train/loss_pi": loss.detach(), "train/entropy": ent.detach()}
