"""Returns and GAE against hand-computed arrays (oracles) and their invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlkit.core.returns import explained_variance, gae, next_values, reward_to_go

D = torch.float64


def oracle():
    """One env, gamma .9, lambda .8; step 1 truncated with V(final obs)=10; step 3 terminated; V(s_5)=3."""
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=D)
    v = torch.tensor([[0.5], [1.0], [1.5], [2.0], [2.5]], dtype=D)
    term = torch.tensor([[False], [False], [False], [True], [False]])
    trunc = torch.tensor([[False], [True], [False], [False], [False]])
    fv = torch.zeros_like(r)
    fv[1, 0] = 10.0
    last = torch.tensor([3.0], dtype=D)
    return r, v, term, trunc, fv, last


def test_gae_oracle():
    r, v, term, trunc, fv, last = oracle()
    adv, ret = gae(r, v, term, trunc, fv, last, 0.9, 0.8)
    expected = torch.tensor([8.6, 10.0, 4.74, 2.0, 5.2], dtype=D)
    assert torch.allclose(adv[:, 0], expected, atol=1e-12, rtol=0)
    assert torch.allclose(ret, adv + v, atol=0, rtol=0)


def _wrong_truncation_as_termination(r, v, term, trunc, fv, last):
    return gae(r, v, term | trunc, torch.zeros_like(trunc), fv, last, 0.9, 0.8)[0]


def _wrong_trace_not_cut(r, v, term, trunc, fv, last):
    """The classic bug: done ignored, next value read from the buffer."""
    T = r.shape[0]
    adv = torch.zeros_like(r)
    running = torch.zeros_like(last)
    for t in reversed(range(T)):
        nv = last if t == T - 1 else v[t + 1]
        nv = torch.where(term[t], torch.zeros_like(nv), nv)
        delta = r[t] + 0.9 * nv - v[t]
        running = delta + 0.9 * 0.8 * running * (~term[t]).to(D)
        adv[t] = running
    return adv


def test_gae_wrong_variants_give_the_documented_wrong_answers():
    """The two buggy variants reproduce the hand-computed wrong arrays, which differ from the correct one: so
    test_gae_oracle can tell them apart."""
    args = oracle()
    w1 = _wrong_truncation_as_termination(*args)[:, 0]
    assert torch.allclose(w1, torch.tensor([2.12, 1.0, 4.74, 2.0, 5.2], dtype=D), atol=1e-12)
    correct = torch.tensor([8.6, 10.0, 4.74, 2.0, 5.2], dtype=D)
    assert not torch.allclose(w1, correct, atol=1e-6)
    r, v, term, trunc, fv, last = args
    # The "not cut" variant reads V(s_2) from the buffer after the truncation at step 1.
    w2 = _wrong_trace_not_cut(r, v, term, trunc, fv, last)[:, 0]
    assert not torch.allclose(w2, correct, atol=1e-6)


def test_lambda_one_is_return_minus_value_and_lambda_zero_is_delta():
    torch.manual_seed(0)
    T, N = 123, 7
    r = torch.randn(T, N, dtype=D)
    v = torch.randn(T, N, dtype=D)
    term = torch.rand(T, N) < 0.05
    trunc = (torch.rand(T, N) < 0.05) & ~term
    fv = torch.randn(T, N, dtype=D)
    last = torch.randn(N, dtype=D)
    a1, _ = gae(r, v, term, trunc, fv, last, 0.97, 1.0)
    g = reward_to_go(r, term, trunc, 0.97, fv, last)
    assert torch.allclose(a1, g - v, atol=1e-10)
    a0, _ = gae(r, v, term, trunc, fv, last, 0.97, 0.0)
    delta = r + 0.97 * next_values(v, term, trunc, fv, last) - v
    assert torch.allclose(a0, delta, atol=1e-12)


def test_vectorised_equals_per_env_loop():
    torch.manual_seed(1)
    T, N = 123, 7
    r, v = torch.randn(T, N, dtype=D), torch.randn(T, N, dtype=D)
    term = torch.rand(T, N) < 0.05
    trunc = (torch.rand(T, N) < 0.05) & ~term
    fv, last = torch.randn(T, N, dtype=D), torch.randn(N, dtype=D)
    adv, _ = gae(r, v, term, trunc, fv, last, 0.99, 0.95)
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            if term[t, n]:
                nv = 0.0
            elif trunc[t, n]:
                nv = fv[t, n].item()
            else:
                nv = last[n].item() if t == T - 1 else v[t + 1, n].item()
            delta = r[t, n].item() + 0.99 * nv - v[t, n].item()
            running = delta + (0.0 if (term[t, n] or trunc[t, n]) else 0.99 * 0.95 * running)
            assert abs(adv[t, n].item() - running) < 1e-9


def test_splitting_at_an_episode_boundary_changes_nothing():
    r, v, term, trunc, fv, last = oracle()
    full, _ = gae(r, v, term, trunc, fv, last, 0.9, 0.8)
    # Split after step 1 (a truncation): the first half's "last value" is irrelevant because the trace is cut.
    first, _ = gae(r[:2], v[:2], term[:2], trunc[:2], fv[:2], torch.tensor([123.0], dtype=D), 0.9, 0.8)
    second, _ = gae(r[2:], v[2:], term[2:], trunc[2:], fv[2:], last, 0.9, 0.8)
    assert torch.allclose(torch.cat([first, second]), full, atol=1e-12)


def test_terminated_and_truncated_on_the_same_step_do_not_bootstrap():
    r = torch.tensor([[1.0]], dtype=D)
    v = torch.tensor([[0.5]], dtype=D)
    adv, _ = gae(r, v, torch.tensor([[True]]), torch.tensor([[True]]), torch.tensor([[100.0]], dtype=D),
                 torch.tensor([50.0], dtype=D), 0.9, 0.8)
    assert adv.item() == pytest.approx(0.5)


def test_nan_final_observation_value_of_terminated_step_stays_out():
    r, v, term, trunc, fv, last = oracle()
    fv[3, 0] = float("nan")  # terminated step: its final value must never be read
    fv[0, 0] = float("nan")  # ordinary step: likewise
    adv, ret = gae(r, v, term, trunc, fv, last, 0.9, 0.8)
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()


def test_reward_to_go_oracle_and_reset_at_episode_end():
    r = torch.tensor([[1.0], [2.0], [3.0]], dtype=D)
    f = torch.zeros(3, 1, dtype=torch.bool)
    assert torch.allclose(reward_to_go(r, f, f, 0.5)[:, 0], torch.tensor([2.75, 3.5, 3.0], dtype=D))
    term = torch.tensor([[False], [True], [False]])
    g = reward_to_go(r, term, f, 0.5)[:, 0]
    assert torch.allclose(g, torch.tensor([2.0, 2.0, 3.0], dtype=D))  # resets after step 1


def test_reward_to_go_bootstraps_truncation_from_final_value():
    r = torch.tensor([[1.0], [1.0]], dtype=D)
    trunc = torch.tensor([[True], [False]])
    term = torch.zeros(2, 1, dtype=torch.bool)
    fv = torch.tensor([[4.0], [0.0]], dtype=D)
    g = reward_to_go(r, term, trunc, 0.5, fv, torch.tensor([2.0], dtype=D))[:, 0]
    assert torch.allclose(g, torch.tensor([3.0, 2.0], dtype=D))


def test_gae_rejects_bad_shapes():
    with pytest.raises(ValueError, match="gae expects"):
        gae(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool),
            torch.zeros(3), torch.zeros(1), 0.9, 0.9)


def test_explained_variance():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(y, y).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4) + y.mean(), y).item() == pytest.approx(0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_matches_a_plain_loop_on_random_episodes(dtype):
    """gae() against a scalar Python loop of the textbook recursion; NaN in unused final-value slots never leaks."""
    g = torch.Generator().manual_seed(0)
    T, N = 37, 5
    r = torch.randn(T, N, generator=g, dtype=dtype)
    v = torch.randn(T, N, generator=g, dtype=dtype)
    term = torch.rand(T, N, generator=g) < 0.1
    trunc = (torch.rand(T, N, generator=g) < 0.1) & ~term
    trunc[3, 1] = term[3, 1] = True  # both flags: termination wins
    fv = torch.where(trunc, torch.randn(T, N, generator=g, dtype=dtype), torch.full((T, N), float("nan"), dtype=dtype))
    last = torch.randn(N, generator=g, dtype=dtype)
    adv, ret = gae(r, v, term, trunc, fv, last, 0.97, 0.9)
    ref = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            following = v[t + 1, n] if t + 1 < T else last[n]
            nxt = 0.0 if term[t, n] else float(fv[t, n]) if trunc[t, n] else float(following)
            delta = float(r[t, n]) + 0.97 * nxt - float(v[t, n])
            running = delta + (0.0 if term[t, n] or trunc[t, n] else 0.97 * 0.9 * running)
            ref[t, n] = running
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert adv.dtype == dtype and np.allclose(adv.numpy(), ref, atol=tol, rtol=0)
    assert torch.allclose(ret, adv + v) and not torch.isnan(ret).any()


def test_normalize():
    from rlkit.core.returns import normalize

    x = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    t = normalize(x)
    assert abs(float(t.mean())) < 1e-12 and float(t.std()) == pytest.approx(1.0, abs=1e-6)
    one = torch.tensor([3.0])
    assert normalize(one) is one
