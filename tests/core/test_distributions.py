"""Analytic KL and entropy (rlkit.core.distributions): hand-computed oracles, Monte-Carlo agreement, the
Fisher matrices of both heads (the Hessian of KL(old || new) at new = old)."""
from __future__ import annotations

import math

import pytest
import torch

from rlkit.core import distributions as D

F64 = torch.float64


def test_gaussian_kl_and_entropy_oracles():
    m1, s1 = torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64)
    m2, s2 = torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([2.0, 1.0], dtype=F64)
    kl = D.gaussian_kl(m1, s1.log(), m2, s2.log())
    assert kl.item() == pytest.approx(1.75, abs=1e-12)
    assert D.gaussian_entropy(m1, s1.log()).item() == pytest.approx(3.531024, abs=1e-6)


def test_categorical_kl_and_entropy_oracles():
    p = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    q = torch.tensor([0.1, 0.6, 0.3], dtype=F64)
    assert D.categorical_kl(p.log(), q.log()).item() == pytest.approx(0.186098, abs=1e-6)
    assert D.categorical_kl(q.log(), p.log()).item() == pytest.approx(0.193326, abs=1e-6)
    assert D.categorical_entropy(p.log()).item() == pytest.approx(1.029653, abs=1e-6)
    # Logits are defined up to a constant: shifting them changes nothing.
    assert D.categorical_kl(p.log() + 3.0, q.log() - 1.0).item() == pytest.approx(0.186098, abs=1e-6)


def test_kl_is_zero_for_identical_distributions_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=g, dtype=F64)
    assert torch.allclose(D.categorical_kl(logits, logits), torch.zeros(50, dtype=F64), atol=1e-15)
    assert (D.categorical_kl(logits, torch.randn(50, 4, generator=g, dtype=F64)) > 0).all()
    m, ls = torch.randn(50, 3, generator=g, dtype=F64), torch.randn(50, 3, generator=g, dtype=F64)
    assert torch.allclose(D.gaussian_kl(m, ls, m, ls), torch.zeros(50, dtype=F64), atol=1e-15)


def test_categorical_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    p_logits, q_logits = torch.randn(5, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64)
    torch.manual_seed(2)
    a = D.categorical_sample(p_logits.expand(400_000, 5))
    p_big, q_big = p_logits.expand(400_000, 5), q_logits.expand(400_000, 5)
    mc = D.categorical_log_prob(p_big, a) - D.categorical_log_prob(q_big, a)
    se = mc.std() / math.sqrt(mc.numel())
    assert abs(mc.mean() - D.categorical_kl(p_logits, q_logits)) < 5 * se
    # The sampler draws each action with its probability.
    freq = torch.bincount(a, minlength=5).to(F64) / a.numel()
    assert torch.allclose(freq, torch.softmax(p_logits, -1), atol=5e-3)


def test_gaussian_kl_and_entropy_match_monte_carlo():
    g = torch.Generator().manual_seed(3)
    mp, lp = torch.randn(3, generator=g, dtype=F64), 0.3 * torch.randn(3, generator=g, dtype=F64)
    mq, lq = torch.randn(3, generator=g, dtype=F64), 0.3 * torch.randn(3, generator=g, dtype=F64)
    torch.manual_seed(4)
    n = 400_000
    x = D.gaussian_sample(mp.expand(n, 3), lp)
    log_p, log_q = D.gaussian_log_prob(mp, lp, x), D.gaussian_log_prob(mq, lq, x)
    mc_kl, se_kl = (log_p - log_q).mean(), (log_p - log_q).std() / math.sqrt(n)
    assert abs(mc_kl - D.gaussian_kl(mp, lp, mq, lq)) < 5 * se_kl
    mc_h, se_h = (-log_p).mean(), log_p.std() / math.sqrt(n)
    assert abs(mc_h - D.gaussian_entropy(mp, lp)) < 5 * se_h


def test_fisher_of_the_categorical_head_is_diag_p_minus_ppT():
    p = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    old = p.log()
    h = torch.autograd.functional.hessian(lambda z: D.categorical_kl(old, z), old.clone())
    assert torch.allclose(h, torch.diag(p) - torch.outer(p, p), atol=1e-12)
    assert torch.linalg.matrix_rank(h) == 2  # singular: the reason TRPO damps F


def test_fisher_of_the_gaussian_head_is_diag_inv_var_and_two():
    m, s = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([1.0, 2.0], dtype=F64)
    x0 = torch.cat([m, s.log()])
    h = torch.autograd.functional.hessian(lambda x: D.gaussian_kl(m, s.log(), x[:2], x[2:]), x0)
    assert torch.allclose(h, torch.diag(torch.cat([1 / s**2, torch.full((2,), 2.0, dtype=F64)])), atol=1e-12)
