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
        return clip_grad_norm_(self.param.grad, max_norm)


def clip_grad_norm_(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale a flat gradient [P] in place to norm <= max_norm (g <- g * min(1, max_norm / (|g| + 1e-6)), as
    torch.nn.utils.clip_grad_norm_), without a host sync; returns the pre-clip norm. A [K, P] gradient (K seeds,
    rlkit.core.seeds) is clipped row by row, each by its own norm; the norms [K] are returned."""
    norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
    grad.mul_((max_norm / (norm + 1e-6)).clamp_max(1.0))
    return norm.squeeze(-1)


class FlatRMSprop:
    """torch.optim.RMSprop's update (no momentum, not centred, no weight decay), the same in-place ops in the
    same order, on ONE flat parameter:   v <- alpha * v + (1 - alpha) * g^2;   p <- p - lr * g / (sqrt(v) + eps).
    tf_like=True is TensorFlow's RMSprop instead (Stable-Baselines3's RMSpropTFLike, which rl-zoo3's Atari A2C uses):
    v starts at 1, not 0, and eps goes inside the root, p <- p - lr * g / sqrt(v + eps). torch's v = 0 start makes
    the first steps about lr / sqrt(1 - alpha) = 10 lr per weight, in the sign of the gradient: enough to wreck a
    CNN at the start of an Atari run (measured: A2C on Pong stayed at a uniform policy for 2.8M steps).
    Why not torch.optim.RMSprop: its per-step Python bookkeeping costs more than these three lines (measured
    ~150 us against ~40 us per step on the CPU). Quacks like an optimiser: param_groups, step, state_dict.
    capturable=True (CUDA graphs): set_lr() keeps the learning rate in a device tensor, read by the step.
    """

    def __init__(self, param: torch.Tensor, lr: float, alpha: float, eps: float, capturable: bool = False,
                 tf_like: bool = False) -> None:
        self.param = param
        self.capturable, self.tf_like = capturable, tf_like
        self.param_groups: list[dict[str, Any]] = [{"lr": lr, "alpha": alpha, "eps": eps}]
        self.square_avg = torch.zeros_like(param, memory_format=torch.contiguous_format)
        if tf_like:
            self.square_avg.fill_(1.0)
        self._denom = torch.empty_like(self.square_avg)

    def step(self) -> None:
        g, group = self.param.grad, self.param_groups[0]
        lr = group["lr"]
        with torch.no_grad():
            self.square_avg.mul_(group["alpha"]).addcmul_(g, g, value=1.0 - group["alpha"])
            if self.tf_like:
                torch.add(self.square_avg, group["eps"], out=self._denom).sqrt_()
            else:
                torch.sqrt(self.square_avg, out=self._denom).add_(group["eps"])
            if isinstance(lr, torch.Tensor):  # a device learning rate: p <- p - g / ((sqrt(v) + eps) / lr)
                self.param.addcdiv_(g, self._denom.div_(lr), value=-1.0)
            else:
                self.param.addcdiv_(g, self._denom, value=-lr)

    def state_dict(self) -> dict[str, Any]:
        return {"square_avg": self.square_avg.clone(), "param_groups": _plain_groups(self.param_groups)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state_shape(state["square_avg"], self.square_avg)
        self.square_avg.copy_(state["square_avg"])
        _load_groups(self.param_groups, state["param_groups"])


class FlatAdam:
    """torch.optim.Adam's update (no weight decay, no amsgrad) on ONE flat parameter, for the same reason as
    FlatRMSprop (torch.optim.Adam's step wrapper costs ~200 us per call on the CPU, the arithmetic a few):
        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2;
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    capturable=True (CUDA graphs): the step count t and the bias corrections live on the device (as torch's
    capturable Adam keeps them), and set_lr() keeps the learning rate in a device tensor.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, capturable: bool = False) -> None:
        self.param = param
        self.capturable = capturable
        self.param_groups: list[dict[str, Any]] = [{"lr": lr, "betas": tuple(betas), "eps": eps}]
        self.exp_avg = torch.zeros_like(param, memory_format=torch.contiguous_format)
        self.exp_avg_sq = torch.zeros_like(self.exp_avg)
        self._denom = torch.empty_like(self.exp_avg)
        self.steps = 0
        self._t = torch.zeros((), dtype=torch.float64, device=param.device) if capturable else None

    def _scalars(self) -> tuple[float, float, float, float, float, float]:
        group = self.param_groups[0]
        (b1, b2), t = group["betas"], self.steps
        return b1, b2, group["lr"] / (1.0 - b1 ** t), math.sqrt(1.0 - b2 ** t), group["eps"], group["lr"]

    def step(self) -> None:
        if self._t is not None:
            return self._device_step()
        self.steps += 1
        b1, b2, step_size, bc2_sqrt, eps, _ = self._scalars()
        g = self.param.grad
        with torch.no_grad():
            self.exp_avg.lerp_(g, 1.0 - b1)
            self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            torch.sqrt(self.exp_avg_sq, out=self._denom).div_(bc2_sqrt).add_(eps)
            self.param.addcdiv_(self.exp_avg, self._denom, value=-step_size)

    def _device_step(self) -> None:
        """The same update with t, the bias corrections and the learning rate as device tensors (no host value
        changes from step to step, so a CUDA graph of it stays right)."""
        group = self.param_groups[0]
        b1, b2 = group["betas"]
        g, t, dtype = self.param.grad, self._t, self.param.dtype
        with torch.no_grad():
            t.add_(1.0)
            step_size = (group["lr"] / (1.0 - torch.pow(b1, t))).to(dtype)
            bc2_sqrt = torch.sqrt(1.0 - torch.pow(b2, t)).to(dtype)
            self.exp_avg.lerp_(g, 1.0 - b1)
            self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            torch.sqrt(self.exp_avg_sq, out=self._denom).div_(bc2_sqrt).add_(group["eps"]).div_(step_size)
            self.param.addcdiv_(self.exp_avg, self._denom, value=-1.0)

    def state_dict(self) -> dict[str, Any]:
        steps = int(self._t.item()) if self._t is not None else self.steps  # (a host read: checkpoints only)
        return {"exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone(), "steps": steps,
                "param_groups": _plain_groups(self.param_groups)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state_shape(state["exp_avg"], self.exp_avg)
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.steps = int(state["steps"])
        if self._t is not None:
            self._t.fill_(self.steps)
        _load_groups(self.param_groups, state["param_groups"])


def set_lr(optimizer: Any, lr: float) -> None:
    """Set the learning rate of every param group (a schedule's step). A rate that is a tensor is filled in place
    (a CUDA graph reads it there); a capturable optimizer (torch's with capturable=True, FlatAdam/FlatRMSprop with
    capturable=True) gets a device tensor on its first call, so a learning-rate schedule keeps working while the
    update is replayed as a CUDA graph."""
    for group in optimizer.param_groups:
        current = group["lr"]
        if isinstance(current, torch.Tensor):
            current.fill_(lr)
        elif group.get("capturable", False) or getattr(optimizer, "capturable", False):
            param = group["params"][0] if "params" in group else optimizer.param
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=param.device)
        else:
            group["lr"] = lr


def optimizer_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict() with tensor learning rates (set_lr under CUDA graphs) as plain floats, so a
    checkpoint loads on any device and into an optimizer of either kind (a host read: checkpoints only)."""
    state = optimizer.state_dict()
    state["param_groups"] = _plain_groups(state["param_groups"])
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """optimizer.load_state_dict(state), keeping this optimizer's own implementation settings (capturable,
    fused, foreach: what the device and CUDA graphs need, not what the checkpoint's run used) and its learning-rate
    tensors (filled with the saved rate), with Adam's step counters moved to where those settings keep them."""
    kept = [{k: g[k] for k in ("capturable", "fused", "foreach") if k in g} for g in optimizer.param_groups]
    lrs = [g["lr"] if isinstance(g["lr"], torch.Tensor) else None for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keep, lr in zip(optimizer.param_groups, kept, lrs):
        group.update(keep)
        if lr is not None:
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
        on_device = bool(group.get("capturable") or group.get("fused"))
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[p]["step"] = step.to(p.device if on_device else torch.device("cpu"))


def _plain_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Param groups with tensor learning rates as floats."""
    return [{k: (float(v) if k == "lr" and isinstance(v, torch.Tensor) else v) for k, v in g.items()} for g in groups]


def _load_groups(groups: list[dict[str, Any]], saved: list[dict[str, Any]]) -> None:
    """Take the saved hyperparameters; a device learning rate stays the same tensor (filled with the saved rate)."""
    values = dict(saved[0])
    lr = values.pop("lr")
    groups[0].update(values)
    if isinstance(groups[0]["lr"], torch.Tensor):
        groups[0]["lr"].fill_(float(lr))
    else:
        groups[0]["lr"] = lr


def _check_state_shape(saved: torch.Tensor, own: torch.Tensor) -> None:
    if saved.shape != own.shape:
        raise ValueError(f"optimizer state has {tuple(saved.shape)} elements, the parameters need {tuple(own.shape)}")
