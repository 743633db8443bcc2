"""Categorical and diagonal-Gaussian policy heads as plain functions on their parameters.

Plain functions instead of torch.distributions objects: no argument validation and no object per step in the
acting path. Every quantity is per sample: log-probs, entropies and KLs sum over action dimensions.
"""
from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)


# ---- Categorical (logits [..., K]) ----
def categorical_sample(logits: torch.Tensor) -> torch.Tensor:
    """Sample by the Gumbel-max trick: argmax(logits + G), G = -log(-log U) standard Gumbel noise; one fused op
    chain, no multinomial bookkeeping. (The noise stream is part of what the shipped presets were measured with.)"""
    minus_gumbel = torch.rand_like(logits).clamp_min_(1e-20).log_().neg_().log_()  # log(-log u), in place
    return torch.argmax(logits - minus_gumbel, dim=-1)


def categorical_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=-1)
    return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_k p_k (log p_k - log q_k)."""
    log_p = torch.log_softmax(p_logits, dim=-1)
    log_q = torch.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# ---- Diagonal Gaussian (mean [..., D], log_std broadcastable to it) ----
def gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return mean + log_std.exp() * torch.randn_like(mean)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)


def gaussian_entropy(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return (log_std + 0.5 * (1.0 + _LOG_2PI)).expand_as(mean).sum(-1)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) = sum_d [ log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2 ]."""
    var_p = torch.exp(2.0 * log_std_p)
    var_q = torch.exp(2.0 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2.0 * var_q) - 0.5
    return kl.sum(-1)  # the (m_p - m_q)^2 term already has the full [..., D] shape


# ---- gSDE: generalised state-dependent exploration (Raffin, Kober & Stulp 2022), as Stable-Baselines3 ----
# a = mu(s) + z(s)^T E with z(s) the policy's last hidden features (detached) and E ~ N(0, exp(log_std)^2)
# elementwise, log_std of shape [features, action dim]; E is redrawn only now and then, so exploration is
# smooth in time. pi(a|s) = N(mu(s), sigma(s)^2) with sigma_j(s)^2 = sum_i z_i(s)^2 exp(log_std_ij)^2 + 1e-6.
def sde_log_std(features: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Per-sample log sigma(s) [B, D] from features [B, F] and the [F, D] log_std parameter."""
    var = (features.detach() ** 2) @ torch.exp(2.0 * log_std)
    return 0.5 * torch.log(var + 1e-6)


def sde_matrices(log_std: torch.Tensor, n: int) -> torch.Tensor:
    """n exploration matrices E [n, F, D] (one per env), drawn from torch's generator."""
    std = torch.exp(log_std.detach())
    return torch.randn((n, *std.shape), device=std.device) * std


def sde_noise(features: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """z(s)^T E for each row [B, D]; row i uses matrix i (a batch of another size uses the first matrix)."""
    if matrices.shape[0] != features.shape[0]:
        matrices = matrices[:1].expand(features.shape[0], *matrices.shape[1:])
    return torch.bmm(features.detach().unsqueeze(1), matrices).squeeze(1)
