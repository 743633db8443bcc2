"""Categorical, diagonal-Gaussian and the product (MultiDiscrete, MultiBinary) policy heads as plain functions on
their parameters.

Plain functions instead of torch.distributions objects: no argument validation and no object per step in the
acting path. Every quantity is per sample: log-probs, entropies and KLs sum over action dimensions.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.nn import functional as F

_LOG_2PI = math.log(2.0 * math.pi)


# ---- Categorical (logits [..., K]) ----
def categorical_sample(logits: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Sample by the Gumbel-max trick: argmax(logits + G), G = -log(-log U) standard Gumbel noise; one fused op
    chain, no multinomial bookkeeping. (The noise stream is part of what the shipped presets were measured with.)
    `uniform`: the U[0, 1) draws to use (the logits' shape), else they come from torch's generator."""
    u = torch.rand_like(logits) if uniform is None else uniform.clone()
    minus_gumbel = u.clamp_min_(1e-20).log_().neg_().log_()  # log(-log u), in place
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


# ---- Independent categoricals, one per dimension (MultiDiscrete; padded logits [..., D, K]) ----
# Dimension d has nvec[d] choices. Its logits sit in row d of a [..., D, K] tensor, K = max(nvec); the K - nvec[d]
# entries past them hold MULTI_PAD, a finite large negative number (not -inf: 0 * -inf = nan in the entropy, the KL
# and their gradients). exp(MULTI_PAD - logsumexp) underflows to exactly 0 in float16/32/64, so a padded entry is
# never sampled or the mode, and adds exactly 0 to every entropy and KL sum; log-probs read only real entries.
# With a uniform nvec there is no padding: the padded layout is a reshape of the flat [..., sum(nvec)] logits.
def multicategorical_pad_index(nvec: Sequence[int]) -> torch.Tensor | None:
    """Index [D * K] that gathers padded [..., D, K] logits from flat [..., sum(nvec)] logits with one extra
    trailing MULTI_PAD column (index sum(nvec)); None when nvec is uniform (a reshape does it)."""
    sizes = [int(n) for n in nvec]
    k, total = max(sizes), sum(sizes)
    if min(sizes) == k:
        return None
    index, offset = [], 0
    for n in sizes:  # once, when the actor is built
        index += list(range(offset, offset + n)) + [total] * (k - n)
        offset += n
    return torch.tensor(index, dtype=torch.int64)


def multicategorical_real_index(nvec: Sequence[int]) -> torch.Tensor | None:
    """Positions d * K + k (k < nvec[d]) of the real entries in flattened [D * K] padded logits; None when nvec is
    uniform (every entry is real)."""
    sizes = [int(n) for n in nvec]
    k = max(sizes)
    if min(sizes) == k:
        return None
    return torch.tensor([d * k + i for d, n in enumerate(sizes) for i in range(n)], dtype=torch.int64)


def multicategorical_logits(flat: torch.Tensor, n_dims: int, pad_index: torch.Tensor | None) -> torch.Tensor:
    """Flat logits [..., sum(nvec)] (dimension after dimension) -> padded logits [..., D, K]: one reshape, or one
    gather with pad_index = multicategorical_pad_index(nvec) for a ragged nvec."""
    if pad_index is None:
        return flat.reshape(*flat.shape[:-1], n_dims, flat.shape[-1] // n_dims)
    pad = torch.full((*flat.shape[:-1], 1), _multi_pad(flat.dtype), dtype=flat.dtype, device=flat.device)
    padded = torch.cat([flat, pad], dim=-1).index_select(-1, pad_index)
    return padded.reshape(*flat.shape[:-1], n_dims, pad_index.shape[0] // n_dims)


def _multi_pad(dtype: torch.dtype) -> float:
    """MULTI_PAD for a dtype: half the most negative finite value, so subtracting a logit cannot overflow."""
    return torch.finfo(dtype).min / 2


def multicategorical_sample(logits: torch.Tensor) -> torch.Tensor:
    """Padded logits [..., D, K] -> actions [..., D]: categorical_sample on every row at once (Gumbel-max; the
    bounded Gumbel noise cannot lift a padded entry above a real one)."""
    return categorical_sample(logits)


def multicategorical_mode(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


def multicategorical_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a) = sum_d log pi_d(a_d); actions [..., D] (integers in [0, nvec[d]))."""
    return categorical_log_prob(logits, actions).sum(-1)


def multicategorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    return categorical_entropy(logits).sum(-1)


def multicategorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_d KL(p_d || q_d) (the dimensions are independent under both)."""
    return categorical_kl(p_logits, q_logits).sum(-1)


def multicategorical_probs(logits: torch.Tensor, real_index: torch.Tensor | None) -> torch.Tensor:
    """Padded logits [..., D, K] -> the probabilities of the real entries, flat [..., sum(nvec)] in the layout of
    the flat logits (real_index: the positions of the real entries in the flattened [D * K]; None: no padding)."""
    probs = torch.softmax(logits, dim=-1).flatten(-2)
    return probs if real_index is None else probs.index_select(-1, real_index)


# ---- Independent Bernoullis (MultiBinary; logits [..., D], P(a_d = 1) = sigmoid(logit_d)) ----
def bernoulli_sample(logits: torch.Tensor) -> torch.Tensor:
    """a_d = [u_d < sigmoid(l_d)], u_d ~ U[0, 1): int64 0/1 of the logits' shape."""
    return (torch.rand_like(logits) < torch.sigmoid(logits)).to(torch.int64)


def bernoulli_mode(logits: torch.Tensor) -> torch.Tensor:
    return (logits > 0).to(torch.int64)


def bernoulli_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """sum_d [a_d l_d - softplus(l_d)] = sum_d log sigmoid(+-l_d), stable for any logit."""
    return (actions.to(logits.dtype) * logits - F.softplus(logits)).sum(-1)


def bernoulli_entropy(logits: torch.Tensor) -> torch.Tensor:
    """sum_d [softplus(l_d) - sigmoid(l_d) l_d] = sum_d -p log p - (1 - p) log(1 - p)."""
    return (F.softplus(logits) - torch.sigmoid(logits) * logits).sum(-1)


def bernoulli_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_d [softplus(l_q) - softplus(l_p) - sigmoid(l_p) (l_q - l_p)]."""
    return (F.softplus(q_logits) - F.softplus(p_logits) - torch.sigmoid(p_logits) * (q_logits - p_logits)).sum(-1)


def bernoulli_probs(logits: torch.Tensor) -> torch.Tensor:
    """[..., D] logits -> [..., 2 * D] probabilities (P(a_d = 0), P(a_d = 1)) dimension after dimension: the layout of
    MultiDiscrete([2] * D)."""
    p = torch.sigmoid(logits)
    return torch.stack([1.0 - p, p], dim=-1).flatten(-2)


# ---- Diagonal Gaussian (mean [..., D], log_std broadcastable to it) ----
def gaussian_sample(mean: torch.Tensor, log_std: torch.Tensor, normal: torch.Tensor | None = None) -> torch.Tensor:
    """mean + std * eps with eps ~ N(0, 1): `normal` (the mean's shape) when given, else torch's generator."""
    return mean + log_std.exp() * (torch.randn_like(mean) if normal is None else normal)


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
