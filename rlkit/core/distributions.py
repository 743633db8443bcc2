"""Categorical and diagonal-Gaussian policy heads as plain functions on their parameters.

Plain functions instead of torch.distributions objects: no argument validation and no object per step in the
acting path. Every quantity is per sample: log-probs, entropies and KLs sum over action dimensions.
"""
from __future__ import annotations

import math

import numpy as np
import torch

_LOG_2PI = math.log(2.0 * math.pi)


# ---- Categorical (logits [..., K]) ----
def categorical_sample(logits: torch.Tensor) -> torch.Tensor:
    """Sample by the Gumbel-max trick: one fused op chain, no multinomial bookkeeping."""
    u = torch.rand_like(logits)
    return torch.argmax(logits - torch.log(-torch.log(u.clamp_min(1e-20))), dim=-1)


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


# ---- The policy-gradient loss differentiated by hand, in NumPy ----
# For loss = -mean_b(w_b * log pi(a_b | s_b)) - ent_coef * mean_b(H_b) with fixed weights w (advantages, Q values),
# these return d loss / d (distribution parameters) for agents that update small networks on the CPU in NumPy
# (see rlkit.core.networks.NumpyMLP). tests/core/test_distributions.py checks them against autograd.
def categorical_pg_grad_np(
    logits: np.ndarray, actions: np.ndarray, weights: np.ndarray, ent_coef: float, entropy: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(d loss / d logits [B, K], log pi(a) [B], entropy [B] or None unless asked or ent_coef > 0).

    d(-log p_a)/dz = p - onehot(a);   dH/dz = -p * (log p + H).
    """
    rows = np.arange(logits.shape[0])
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    s = e.sum(-1, keepdims=True)
    p, log_p = e / s, z - np.log(s)
    w = weights * np.float32(1.0 / logits.shape[0])
    grad = p * w[:, None]
    grad[rows, actions] -= w
    ent = -(p * log_p).sum(-1) if (entropy or ent_coef > 0) else None
    if ent_coef > 0:
        grad += np.float32(ent_coef / logits.shape[0]) * p * (log_p + ent[:, None])
    return grad, log_p[rows, actions], ent


def gaussian_pg_grad_np(
    mean: np.ndarray, log_std: np.ndarray, actions: np.ndarray, weights: np.ndarray, ent_coef: float,
    entropy: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(d loss / d mean [B, D], d loss / d log_std [D], log pi(a) [B], entropy [B] or None); log_std is the
    state-independent [D] parameter. With z = (a - mean) / std: d log p / d mean = z / std,
    d log p / d log_std = z^2 - 1, and dH / d log_std = 1 per dimension."""
    inv_std = np.exp(-log_std)
    z = (actions - mean) * inv_std
    z2 = z * z
    w = (weights * np.float32(1.0 / mean.shape[0]))[:, None]
    g_mean = -(w * z) * inv_std
    g_log_std = (w * (1.0 - z2)).sum(0) - np.float32(ent_coef)
    logp = (-0.5 * z2 - log_std - np.float32(0.5 * _LOG_2PI)).sum(-1)
    ent = np.broadcast_to(log_std.sum() + np.float32(0.5 * (1.0 + _LOG_2PI) * mean.shape[1]), (mean.shape[0],)) \
        if entropy else None
    return g_mean, g_log_std, logp, ent
