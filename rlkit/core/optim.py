"""Pure optimisation helpers: flat parameter vectors, conjugate gradient, Polyak averaging, flat buffers."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn


def flat_params(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """Concatenate parameters into one detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


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
        self.params = list({id(p): p for p in params if p.requires_grad}.values())  # shared modules: once
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


class FlatRMSprop:
    """torch.optim.RMSprop's update (no momentum, not centred, no weight decay), the same in-place ops in the
    same order, on ONE flat parameter:   v <- alpha * v + (1 - alpha) * g^2;   p <- p - lr * g / (sqrt(v) + eps).
    Why not torch.optim.RMSprop: its per-step Python bookkeeping costs more than these three lines (measured
    ~150 us against ~40 us per step on the CPU). Quacks like an optimiser: param_groups, step, state_dict.
    """

    def __init__(self, param: torch.Tensor, lr: float, alpha: float, eps: float) -> None:
        self.param = param
        self.param_groups = [{"lr": lr, "alpha": alpha, "eps": eps}]
        self.square_avg = torch.zeros_like(param, memory_format=torch.contiguous_format)
        self._denom = torch.empty_like(self.square_avg)

    def step(self) -> None:
        g, group = self.param.grad, self.param_groups[0]
        with torch.no_grad():
            self.square_avg.mul_(group["alpha"]).addcmul_(g, g, value=1.0 - group["alpha"])
            torch.sqrt(self.square_avg, out=self._denom).add_(group["eps"])
            self.param.addcdiv_(g, self._denom, value=-group["lr"])


    def state_dict(self) -> dict[str, Any]:
        return {"square_avg": self.square_avg.clone(), "param_groups": [dict(g) for g in self.param_groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state_shape(state["square_avg"], self.square_avg)
        self.square_avg.copy_(state["square_avg"])
        self.param_groups[0].update(state["param_groups"][0])


class FlatAdam:
    """torch.optim.Adam's update (no weight decay, no amsgrad) on ONE flat parameter, for the same reason as
    FlatRMSprop (torch.optim.Adam's step wrapper costs ~200 us per call on the CPU, the arithmetic a few):
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.param = param
        self.param_groups = [{"lr": lr, "betas": tuple(betas), "eps": eps}]
        self.exp_avg = torch.zeros_like(param, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        self._denom = torch.empty_like(self.exp_avg)
        self.steps = 0

    def _scalars(self) -> tuple[float, float, float, float, float, float]:
        group = self.param_groups[0]
        (b1, b2), t = group["betas"], self.steps
        return b1, b2, group["lr"] / (1.0 - b1 ** t), math.sqrt(1.0 - b2 ** t), group["eps"], group["lr"]

    def step(self) -> None:
        self.steps += 1
        b1, b2, step_size, bc2_sqrt, eps, _ = self._scalars()
        g = self.param.grad
        with torch.no_grad():
            self.exp_avg.lerp_(g, 1.0 - b1)
            self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            torch.sqrt(self.exp_avg_sq, out=self._denom).div_(bc2_sqrt).add_(eps)
            self.param.addcdiv_(self.exp_avg, self._denom, value=-step_size)


    def state_dict(self) -> dict[str, Any]:
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "steps": self.steps,
                "param_groups": [dict(g) for g in self.param_groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state_shape(state["exp_avg"], self.exp_avg)
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
        self.param_groups[0].update(state["param_groups"][0])


def _check_state_shape(saved: torch.Tensor, own: torch.Tensor) -> None:
    if saved.shape != own.shape:
        raise ValueError(f"optimizer state has {tuple(saved.shape)} elements, the parameters need {tuple(own.shape)}")
