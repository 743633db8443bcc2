"""conjugate_gradient (rlkit.core.optim): exact solves of SPD systems, b = 0, the TRPO oracle system."""
from __future__ import annotations

import pytest
import torch

from rlkit.core.optim import conjugate_gradient


def random_spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    return a @ a.T + n * torch.eye(n, dtype=torch.float64)  # well conditioned: CG converges in n iterations


@pytest.mark.parametrize("n,seed", [(20, 0), (20, 1), (20, 2), (10, 3), (10, 4)])
def test_random_spd_system_matches_linalg_solve(n, seed):
    a = random_spd(n, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, max_iters=n, residual_tol=1e-20)
    ref = torch.linalg.solve(a, b)
    assert torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref) <= 1e-6


def test_ill_conditioned_system_still_converges_with_more_iterations():
    g = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(0, 3, 20, dtype=torch.float64)) @ q.T  # condition number 1000
    b = torch.randn(20, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, max_iters=60, residual_tol=1e-24)
    ref = torch.linalg.solve(a, b)
    assert torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref) <= 1e-6


def test_zero_right_hand_side_gives_exactly_zero():
    a = random_spd(5, 0)
    x = conjugate_gradient(lambda v: a @ v, torch.zeros(5, dtype=torch.float64), max_iters=10)
    assert torch.equal(x, torch.zeros(5, dtype=torch.float64))


def test_iterations_after_convergence_are_masked_not_harmful():
    """More iterations than the dimension: the masked updates keep x at the solution (no 0/0, no drift)."""
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, max_iters=50)
    assert torch.isfinite(x).all()
    # The hand-computed TRPO oracle: s = F^-1 g = [1/11, 7/11].
    assert torch.allclose(x, torch.tensor([0.090909, 0.636364], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(x, torch.tensor([1 / 11, 7 / 11], dtype=torch.float64), rtol=1e-12, atol=0)


def test_float32_system():
    a = random_spd(8, 5).float()
    b = torch.ones(8)
    x = conjugate_gradient(lambda v: a @ v, b, max_iters=8)
    assert torch.allclose(a @ x, b, atol=1e-4)
