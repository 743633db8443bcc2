"""Pure optimisation helpers: flat parameter vectors, conjugate gradient, Polyak averaging, flat buffers."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn


def flat_params(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate parameters into one detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def set_flat_params_(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Write a flat vector back into the parameters, in place (keeps the objects optimisers hold)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} elements, parameters need {offset}")


def flat_grad(
    output: torch.Tensor,
    params: Sequence[torch.Tensor],
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> torch.Tensor:
    """d output / d params as one vector (zeros for parameters the output does not depend on)."""
    grads = torch.autograd.grad(
        output, params, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    max_iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x (Hestenes & Stiefel 1952).

    Runs exactly `max_iters` iterations with no host synchronisation: once the squared residual falls below
    `residual_tol` the update is masked to zero on the device instead of breaking out of the loop (a Python
    `if` on a tensor would sync the GPU). b = 0 returns 0.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max_iters):
        active = rr > residual_tol
        ap = matvec(p)
        pap = p.dot(ap)
        alpha = torch.where(active & (pap > 0), rr / pap.clamp_min(tiny), torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r.dot(r)
        beta = torch.where(active, rr_new / rr.clamp_min(tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = torch.where(active, rr_new, rr)
    return x


@torch.no_grad()
def polyak_update(target: Sequence[torch.Tensor], source: Sequence[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, one foreach op. tau = 1 copies, tau = 0 leaves target as is."""
    if tau == 0.0:
        return
    if tau == 1.0:
        torch._foreach_copy_(list(target), list(source))
        return
    torch._foreach_lerp_(list(target), list(source), tau)


class FlatParameters:
    """Make every parameter of some modules a view into ONE flat tensor, and every .grad a view into ONE
    flat gradient tensor.

    Why: with a dozen small tensors, an optimiser step or a grad-norm clip costs a dozen-plus kernel launches
    and Python iterations; over one flat tensor it is a handful of ops. Autograd accumulates into the existing
    .grad views in place, so the flat gradient fills itself. Hand `self.param` (a single nn.Parameter whose
    .grad is the flat gradient) to any torch optimiser. Module state_dict()/load_state_dict() keep working
    (loading copies into the views).
    """

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("FlatParameters needs at least one trainable parameter")
        dtype, device = self.params[0].dtype, self.params[0].device
        total = sum(p.numel() for p in self.params)
        self.param = nn.Parameter(torch.empty(total, dtype=dtype, device=device))
        self.param.grad = torch.zeros(total, dtype=dtype, device=device)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                n = p.numel()
                self.param[offset : offset + n].copy_(p.reshape(-1))
                p.data = self.param.data[offset : offset + n].view_as(p)
                p.grad = self.param.grad[offset : offset + n].view_as(p)
                offset += n

    def zero_grad(self) -> None:
        """Zero the flat gradient in place (never set_to_none: the views must survive)."""
        self.param.grad.zero_()

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the flat gradient to norm <= max_norm without a host sync; returns the pre-clip norm."""
        grad = self.param.grad
        norm = torch.linalg.vector_norm(grad)
        grad.mul_((max_norm / (norm + 1e-6)).clamp_max(1.0))
        return norm

    def clip_grad_norm_numpy_(self, max_norm: float) -> float:
        """clip_grad_norm_ in NumPy on the (CPU) flat gradient: for updates that run in NumPy, where a torch op's
        overhead costs more than the arithmetic. Same formula, same result up to rounding."""
        grad = self.param.grad.numpy()
        norm = float(np.sqrt(np.dot(grad, grad)))
        grad *= np.float32(min(1.0, max_norm / (norm + 1e-6)))
        return norm
