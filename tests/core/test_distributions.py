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


# ---- product heads: MultiDiscrete (independent categoricals) and MultiBinary (independent Bernoullis) ------------
def _multi(nvec, batch=40, seed=0, scale=2.0):
    """Random flat logits [B, sum(nvec)], the padded [B, D, K] tensor the actor builds, and the per-dimension
    torch.distributions.Categorical oracles."""
    g = torch.Generator().manual_seed(seed)
    flat = scale * torch.randn(batch, sum(nvec), generator=g, dtype=F64)
    padded = D.multicategorical_logits(flat, len(nvec), D.multicategorical_pad_index(nvec))
    blocks = torch.split(flat, list(nvec), dim=-1)
    return flat, padded, [torch.distributions.Categorical(logits=b) for b in blocks]


@pytest.mark.parametrize("nvec", [(3, 2, 4), (3, 3), (1, 5), (2,)])
def test_multicategorical_log_prob_entropy_kl_equal_summed_torch_categoricals(nvec):
    flat_p, p, cats_p = _multi(nvec, seed=1)
    flat_q, q, cats_q = _multi(nvec, seed=2)
    g = torch.Generator().manual_seed(3)
    actions = torch.stack([torch.randint(0, n, (flat_p.shape[0],), generator=g) for n in nvec], -1)
    want_logp = sum(c.log_prob(actions[:, d]) for d, c in enumerate(cats_p))
    want_h = sum(c.entropy() for c in cats_p)
    want_kl = sum(torch.distributions.kl_divergence(a, b) for a, b in zip(cats_p, cats_q))
    assert torch.allclose(D.multicategorical_log_prob(p, actions), want_logp, atol=1e-12)
    assert torch.allclose(D.multicategorical_entropy(p), want_h, atol=1e-12)
    assert torch.allclose(D.multicategorical_kl(p, q), want_kl, atol=1e-12)
    assert torch.allclose(D.multicategorical_kl(p, p), torch.zeros_like(want_kl), atol=1e-14)
    assert torch.equal(D.multicategorical_mode(p), torch.stack([c.logits.argmax(-1) for c in cats_p], -1))
    probs = D.multicategorical_probs(p, D.multicategorical_real_index(nvec))
    assert torch.allclose(probs, torch.cat([c.probs for c in cats_p], -1), atol=1e-14)


def test_multicategorical_uniform_nvec_is_a_reshape_and_ragged_pads_with_a_finite_constant():
    assert D.multicategorical_pad_index((4, 4, 4)) is None and D.multicategorical_real_index((4, 4)) is None
    flat = torch.arange(12.0).view(1, 12)
    assert torch.equal(D.multicategorical_logits(flat, 3, None), flat.view(1, 3, 4))
    padded = D.multicategorical_logits(flat[:, :9], 3, D.multicategorical_pad_index((3, 2, 4)))
    assert padded.shape == (1, 3, 4) and torch.isfinite(padded).all()
    assert padded[0, 0, :3].tolist() == [0.0, 1.0, 2.0] and padded[0, 1, :2].tolist() == [3.0, 4.0]
    assert padded[0, 2].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert padded[0, 0, 3] < -1e30 and (padded[0, 1, 2:] < -1e30).all()


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_padded_entries_add_exactly_zero_and_give_finite_gradients(dtype):
    """The padded layout gives the same numbers and gradients as the per-dimension oracle, also with extreme real
    logits; no NaN from 0 * log 0."""
    nvec = (3, 1, 5)
    for scale in (1.0, 30.0):
        flat, _, _ = _multi(nvec, scale=scale, seed=4)
        flat = flat.to(dtype).requires_grad_(True)
        other = _multi(nvec, scale=scale, seed=5)[0].to(dtype)
        actions = torch.tensor([[2, 0, 4]]).expand(flat.shape[0], 3)
        pad = D.multicategorical_pad_index(nvec)
        p, q = D.multicategorical_logits(flat, 3, pad), D.multicategorical_logits(other, 3, pad)
        total = (D.multicategorical_log_prob(p, actions) + D.multicategorical_entropy(p)
                 + D.multicategorical_kl(p, q) + D.multicategorical_kl(q, p)).sum()
        grad, = torch.autograd.grad(total, flat)
        ref_flat = flat.detach().to(F64).requires_grad_(True)  # the oracle in float64 (torch's float32 KL overflows)
        ref = 0.0
        for d, (a, b) in enumerate(zip(torch.split(ref_flat, nvec, -1), torch.split(other.to(F64), nvec, -1))):
            ca, cb = torch.distributions.Categorical(logits=a), torch.distributions.Categorical(logits=b)
            ref = ref + (ca.log_prob(actions[:, d]) + ca.entropy() + torch.distributions.kl_divergence(ca, cb)
                         + torch.distributions.kl_divergence(cb, ca)).sum()
        ref_grad, = torch.autograd.grad(ref, ref_flat)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        assert torch.isfinite(total) and torch.isfinite(grad).all()
        assert torch.allclose(total.to(F64), ref, rtol=tol, atol=tol * scale)
        assert torch.allclose(grad.to(F64), ref_grad, rtol=tol, atol=tol * scale)


def test_multicategorical_sampling_frequencies_and_padding_never_sampled():
    """Chi-square per dimension against the softmax of its block (fixed seed; the 0.999 quantile of chi2 with up to
    3 degrees of freedom is 16.3). Real logits far below 0 still beat the padding."""
    nvec, n = (3, 2, 4), 100_000
    flat, p, cats = _multi(nvec, batch=1, seed=6, scale=1.0)
    torch.manual_seed(7)
    a = D.multicategorical_sample(p.expand(n, *p.shape[1:]))
    assert a.shape == (n, 3) and a.dtype == torch.int64
    for d, (k, c) in enumerate(zip(nvec, cats)):
        assert int(a[:, d].max()) < k and int(a[:, d].min()) >= 0  # the padded entries never come out
        counts = torch.bincount(a[:, d], minlength=k).to(F64)
        expected = n * c.probs[0]
        assert float(((counts - expected) ** 2 / expected).sum()) < 16.3
    very_negative = D.multicategorical_logits(torch.full((n, 5), -1e6), 2, D.multicategorical_pad_index((1, 4)))
    b = D.multicategorical_sample(very_negative)
    assert (b[:, 0] == 0).all() and int(b[:, 1].max()) < 4


def test_multicategorical_sampling_is_categorical_sample_on_every_row():
    """The sampler IS categorical_sample (Gumbel-max, one uniform per entry): the random stream of Discrete
    actions is untouched, and MultiDiscrete([n]) draws what Discrete(n) draws under the same seed."""
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(8))
    torch.manual_seed(9)
    want = D.categorical_sample(logits)
    torch.manual_seed(9)
    got = D.multicategorical_sample(D.multicategorical_logits(logits, 1, None))
    assert torch.equal(got[:, 0], want)


def test_fisher_of_the_multicategorical_head_is_block_diagonal():
    nvec = (3, 2)
    p = [torch.tensor([0.2, 0.3, 0.5], dtype=F64), torch.tensor([0.6, 0.4], dtype=F64)]
    old = torch.cat([x.log() for x in p])
    pad = D.multicategorical_pad_index(nvec)
    kl = lambda z: D.multicategorical_kl(D.multicategorical_logits(old, 2, pad), D.multicategorical_logits(z, 2, pad))
    h = torch.autograd.functional.hessian(kl, old.clone())
    want = torch.block_diag(*[torch.diag(x) - torch.outer(x, x) for x in p])
    assert torch.allclose(h, want, atol=1e-12)


def test_bernoulli_log_prob_entropy_kl_equal_summed_torch_bernoullis():
    g = torch.Generator().manual_seed(10)
    lp, lq = 3.0 * torch.randn(50, 4, generator=g, dtype=F64), 3.0 * torch.randn(50, 4, generator=g, dtype=F64)
    a = torch.randint(0, 2, (50, 4), generator=g)
    bp, bq = torch.distributions.Bernoulli(logits=lp), torch.distributions.Bernoulli(logits=lq)
    assert torch.allclose(D.bernoulli_log_prob(lp, a), bp.log_prob(a.to(F64)).sum(-1), atol=1e-12)
    assert torch.allclose(D.bernoulli_entropy(lp), bp.entropy().sum(-1), atol=1e-12)
    assert torch.allclose(D.bernoulli_kl(lp, lq), torch.distributions.kl_divergence(bp, bq).sum(-1), atol=1e-12)
    assert torch.allclose(D.bernoulli_kl(lp, lp), torch.zeros(50, dtype=F64), atol=1e-14)
    assert torch.equal(D.bernoulli_mode(lp), (torch.sigmoid(lp) > 0.5).to(torch.int64))
    probs = D.bernoulli_probs(lp).view(50, 4, 2)
    assert torch.allclose(probs[..., 1], bp.probs, atol=1e-14)
    assert torch.allclose(probs.sum(-1), torch.ones(50, 4, dtype=F64))


def test_bernoulli_sampling_frequencies_and_finite_gradients_at_extreme_logits():
    logits = torch.tensor([-2.0, -0.3, 0.0, 1.5])
    n = 100_000
    torch.manual_seed(11)
    a = D.bernoulli_sample(logits.expand(n, 4))
    assert a.dtype == torch.int64 and set(a.unique().tolist()) <= {0, 1}
    ones, p = a.sum(0).to(F64), torch.sigmoid(logits).to(F64)
    chi2 = ((ones - n * p) ** 2 / (n * p) + (ones - n * p) ** 2 / (n * (1 - p))).sum()  # 4 dof; 0.999 quantile 18.5
    assert float(chi2) < 18.5
    big = torch.tensor([[-80.0, -20.0, 20.0, 80.0]], dtype=F64, requires_grad=True)
    other = torch.tensor([[80.0, 0.0, -3.0, 80.0]], dtype=F64)
    total = (D.bernoulli_log_prob(big, torch.tensor([[1, 0, 1, 0]])) + D.bernoulli_entropy(big)
             + D.bernoulli_kl(big, other) + D.bernoulli_kl(other, big)).sum()
    grad, = torch.autograd.grad(total, big)
    assert torch.isfinite(total) and torch.isfinite(grad).all()


def test_fisher_of_the_bernoulli_head_is_diag_p_one_minus_p():
    old = torch.tensor([-1.0, 0.5, 2.0], dtype=F64)
    h = torch.autograd.functional.hessian(lambda z: D.bernoulli_kl(old, z), old.clone())
    p = torch.sigmoid(old)
    assert torch.allclose(h, torch.diag(p * (1 - p)), atol=1e-12)
