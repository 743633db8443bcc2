"""Many seeds in one process: K independent agents of one algorithm trained in lockstep, their networks run as one
batch (torch.func: functional_call of one agent's modules with every seed's parameters, vmapped over the seeds).

Every seed is an ordinary agent, built by the agent's own constructor (or load()) with its own seed: its own
parameters, optimiser state, envs, collector, observation and reward normalisers, episode statistics, run
directory, logs and checkpoints. Only the arithmetic is batched:

  * ParamStack: a group of parameters of the K agents becomes ONE [K, P] tensor (with a [K, P] gradient), and every
    agent's parameters (and its FlatParameters) become views of its row. The agents always hold their own live
    values: act(), evaluate(), save() and a later lone learn() work on any of them at any time.
  * SeedNets: one vmapped functional call runs a function of the agent's modules (a loss, a policy) for all seeds,
    each with its own parameters and buffers (normaliser statistics); one backward pass fills the [K, P]
    gradients. The function is the agent's own (its loss as written in its file): one source of truth.
  * StackedFlatOptimizer: FlatRMSprop / FlatAdam steps are elementwise, so one step on [K, P] is exactly K steps;
    clipping is per row, each seed by its own norm (rlkit.core.optim.clip_grad_norm_).
  * collect_lockstep (rlkit.core.rollout): one policy forward per step for the K observation batches, each seed's
    collector stepping its own envs and writing its own rollout buffer (views of one stacked Rollout);
    SeedTorchEnvs: the seeds' torch envs (env_backend="torch") stepped as one.
  * On CUDA the batched rollout and update are CUDA graphs (core.device.GraphedStep, as for one agent), with each
    seed's generator registered only in a graph that draws from it (SeedBatch.generators says why).

Randomness is per seed, and seed k of a batch follows the lone run of seed k up to floating-point rounding
(tests/test_seeds.py checks float64 runs within 1e-6 after 50 updates):
  * Torch envs: the rollout's draws (each seed's env resets and, from its collector, its action noise) come from
    counter-based streams (rlkit.core.streams.CounterStream), keyed from the seed, that a lone run uses too. The
    K seeds' streams are stacked (keys [K, 2], counters [K]; each seed's a view of its row), so ONE draw of
    [K, T, ...] per rollout gives every seed exactly its lone draws: no per-seed calls.
  * Everything a lone run draws from torch's global generator (action noise on Gymnasium envs, minibatch
    shuffles, replay indices, TRPO's Fisher subsample) comes from SeedStreams: right after seed k's agent is
    built, the global RNG state becomes seed k's stream, each such draw is taken from it with the same shape,
    dtype and order (K small generator calls per draw), and everything else that may draw or record random
    state (logging, callbacks, evaluation, checkpoints, which store the RNG) runs with seed k's stream put in the
    global generator. SeedBatch(..., exact=False) takes these draws for all seeds at once from one shared
    generator instead (the counter streams of torch envs stay exact: they cost one call either way).

The loop stays in each agent's file (`learn_seeds`, next to its `learn()`); this module holds only the machinery
and knows no agent. SeedBatch is the entry point: SeedBatch(A2C, "CartPole-v1", seeds=range(8)).learn(100_000).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from rlkit.core.agent_io import LearnRun, begin_learn, rollout_noise
from rlkit.core.buffers import Rollout, RolloutBuffer, obs_map
from rlkit.core.config import config_to_dict
from rlkit.core.device import rng_state, set_rng_state
from rlkit.core.envs import EnvWorkers, SameStepSyncVectorEnv, WorkerVecEnv, fork_available, usable_cores
from rlkit.core.networks import action_dim
from rlkit.core.optim import FlatAdam, FlatParameters, FlatRMSprop, set_lr
from rlkit.core.rollout import collect_lockstep, record_episodes, record_first_bad
from rlkit.core.rundir import StopSignals, TrainingInterrupted
from rlkit.core.streams import CounterStream
from rlkit.core.torch_envs import step_physics


# ---- per-seed randomness ---------------------------------------------------------------------------------------
class SeedStreams:
    """One random stream per seed: a torch.Generator on the agents' device, plus the seed's whole global RNG state
    (torch, NumPy, Python) for the code that uses the global generators (see scope()).

    With exact=False these draws (action noise on Gymnasium envs, shuffles, replay indices, TRPO's Fisher
    subsample) are taken for all seeds at once from ONE generator seeded from the list of seeds: one call instead
    of K per draw, the seeds still independent of each other and the batch reproducible, but seed k no longer
    draws what its lone run draws (and a resumed batch does not continue that shared stream). The rollouts of
    torch envs do not draw from here at all (SeedTorchEnvs: counter streams, exact in both modes)."""

    def __init__(self, device: torch.device, exact: bool = True, seeds: Sequence[int | None] = ()) -> None:
        self.device, self.exact = device, exact
        self.gens: list[torch.Generator] = []
        self.states: list[dict[str, Any]] = []
        self.shared: torch.Generator | None = None
        if not exact:
            words = np.random.SeedSequence([0 if s is None else int(s) for s in seeds] + [1]).generate_state(2)
            self.shared = torch.Generator(device=device)
            self.shared.manual_seed(((int(words[0]) << 32) | int(words[1])) & (2 ** 63 - 1))

    def __len__(self) -> int:
        return len(self.gens)

    def _device_state(self) -> torch.Tensor:
        if self.device.type == "cuda":
            return torch.cuda.get_rng_state(self.device)
        return torch.get_rng_state()

    def _set_device_state(self, state: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    def capture(self) -> None:
        """Make the global RNG's current state the next seed's stream (call right after building its agent)."""
        gen = torch.Generator(device=self.device)
        gen.set_state(self._device_state())
        self.gens.append(gen)
        self.states.append(rng_state())

    def rand(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> torch.Tensor:
        """U[0, 1) draws [K, *shape]: row k from seed k's stream, as torch.rand(shape) would draw in its lone run."""
        if self.shared is not None:
            return torch.rand((len(self), *shape), generator=self.shared, dtype=dtype, device=self.device)
        return torch.stack([torch.rand(tuple(shape), generator=g, dtype=dtype, device=self.device)
                            for g in self.gens])

    def randn(self, shape: Sequence[int], dtype: torch.dtype | None = None) -> torch.Tensor:
        """N(0, 1) draws [K, *shape], row k from seed k's stream."""
        if self.shared is not None:
            return torch.randn((len(self), *shape), generator=self.shared, dtype=dtype, device=self.device)
        return torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype, device=self.device)
                            for g in self.gens])

    def fill_uniform_(self, out: torch.Tensor) -> torch.Tensor:
        """rand() written into `out` [K, ...] in place (a tensor a CUDA graph reads): the same draws."""
        return self.filler(out, "uniform")()

    def fill_normal_(self, out: torch.Tensor) -> torch.Tensor:
        """randn() written into `out` [K, ...] in place: the same draws."""
        return self.filler(out, "normal")()

    def filler(self, out: torch.Tensor, kind: str) -> Callable[[], torch.Tensor]:
        """fill_uniform_(out) (kind "uniform") or fill_normal_(out) ("normal") as a call without arguments, for a
        tensor refilled at every step: the K rows of `out` are cut once, here, not at every fill (cutting a tensor
        into its rows costs the host about a microsecond a row, as much as a CPU draw of a few numbers)."""
        if kind not in ("uniform", "normal"):
            raise ValueError(f"SeedStreams.filler draws 'uniform' or 'normal' numbers, not {kind!r}")
        draw = torch.Tensor.uniform_ if kind == "uniform" else torch.Tensor.normal_
        shared = self.shared
        if shared is not None:
            return lambda: draw(out, generator=shared)
        rows = list(zip(self.gens, out.unbind(0)))

        def fill() -> torch.Tensor:
            for gen, row in rows:
                draw(row, generator=gen)
            return out
        return fill

    def randperm(self, n: int) -> torch.Tensor:
        """A permutation of range(n) per seed [K, n], row k from seed k's stream."""
        if self.shared is not None:
            return torch.argsort(torch.rand((len(self), n), generator=self.shared, device=self.device), dim=1)
        return torch.stack([torch.randperm(n, generator=g, device=self.device) for g in self.gens])

    @contextmanager
    def scope(self, k: int) -> Iterator[None]:
        """Run a block with seed k's stream as the global RNG (torch, NumPy, Python), then keep what it drew."""
        state = dict(self.states[k])
        if self.device.type == "cpu":
            state["torch"] = self.gens[k].get_state()
        set_rng_state(state)
        if self.device.type == "cuda":
            self._set_device_state(self.gens[k].get_state())
        try:
            yield
        finally:
            self.gens[k].set_state(self._device_state())
            self.states[k] = rng_state()


# ---- stacked tensors and parameters ----------------------------------------------------------------------------
def stack_tensors_(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack K same-shaped tensors into one [K, ...] tensor and make each of them a view of its row (`.data` is
    re-pointed: the objects stay the same, so whoever holds them reads and writes the stacked storage)."""
    with torch.no_grad():
        stacked = torch.stack([t.detach() for t in tensors])
    for k, t in enumerate(tensors):
        t.data = stacked[k]
    return stacked


def stack_rollouts(buffers: Sequence[RolloutBuffer]) -> Rollout:
    """Every seed's RolloutBuffer tensors become views of one [K, ...] tensor per field: collect() keeps writing each
    seed's own buffer, and the stacked Rollout is the batch of the vmapped losses (no copy per update)."""
    return Rollout(*(stack_tensors_([getattr(b, name) for b in buffers]) for name in Rollout._fields))


class ParamStack:
    """One group of parameters of K agents (the same shapes in the same order) as ONE leaf tensor `param` [K, P]
    with its gradient `param.grad` [K, P]. Each agent's parameters become views of its row (their .grad views of
    the gradient's row; with `flats`, the agent's FlatParameters too), so the agents always hold their own live
    values and an optimiser of one agent still steps exactly its own row."""

    def __init__(self, params: Sequence[Sequence[nn.Parameter]], flats: Sequence[FlatParameters] | None = None
                 ) -> None:
        shapes = [tuple(p.shape) for p in params[0]]
        for k, ps in enumerate(params[1:], 1):
            if [tuple(p.shape) for p in ps] != shapes:
                raise ValueError(f"seed {k}'s parameters differ from seed 0's in number or shape; every seed needs "
                                 "the same networks")
        trainable = any(p.requires_grad for p in params[0])
        with torch.no_grad():
            data = torch.stack([torch.cat([p.detach().reshape(-1) for p in ps]) for ps in params])
        self.param = nn.Parameter(data, requires_grad=trainable)
        if trainable:
            self.param.grad = torch.zeros_like(data)
        self.slots: list[tuple[int, int, tuple[int, ...]]] = []
        offset = 0
        for shape in shapes:
            n = math.prod(shape)
            self.slots.append((offset, n, shape))
            offset += n
        for k, ps in enumerate(params):
            for p, (o, n, shape) in zip(ps, self.slots):
                p.data = self.param.data[k, o:o + n].view(shape)
                if trainable and p.requires_grad:
                    p.grad = self.param.grad[k, o:o + n].view(shape)
            if flats is not None:
                flats[k].param.data = self.param.data[k]
                flats[k].param.grad = self.param.grad[k]
        self.params0 = list(params[0])  # seed 0's parameter objects: SeedNets names the slots through them

    @classmethod
    def of_flats(cls, flats: Sequence[FlatParameters]) -> "ParamStack":
        """The group of each agent's FlatParameters, in its flat layout (row k IS agent k's flat vector)."""
        return cls([f.params for f in flats], flats)

    @classmethod
    def of_modules(cls, modules: Sequence[nn.Module]) -> "ParamStack":
        """The group of each agent's module's parameters (each shared one once)."""
        return cls([list(m.parameters()) for m in modules])

    def unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-parameter views of a flat vector [..., P] (one seed's row inside vmap, or all rows), cut by one
        split: its backward joins the parameters' gradients into the vector's with one cat (the backward of
        separate slices writes each slice's gradient into a zero [..., P] tensor and sums them: two or three
        full-size kernels per parameter; an unread parameter's gradient is zeros either way). The views are
        read-only for autograd: an in-place change to one raises (change the vector under torch.no_grad(), as
        an optimiser does)."""
        lead = flat.shape[:-1]
        pieces = flat.split([n for _, n, _ in self.slots], dim=-1)
        return [piece.reshape(*lead, *shape) for piece, (_, _, shape) in zip(pieces, self.slots)]


class _Bundle(nn.Module):
    """An agent's modules under one root, so that functional_call swaps all their parameters and buffers at once;
    forward(*args) runs self.fn(self, *args), whose modules are then the seed's."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.fn: Callable[..., Any] | None = None

    def forward(self, *args: Any) -> Any:
        return self.fn(self, *args)


class SeedNets:
    """Run a function of an agent's modules for K seeds at once.

    `modules[k]` names agent k's modules ({"actor": ..., "critic": ...}); `groups` are the ParamStacks that hold
    every trainable (and target) parameter of those modules. call(fn, *args) evaluates fn(m, *args) for every
    seed, where m.actor, m.critic, ... are agent 0's modules running with seed k's parameters and buffers
    (functional_call), vmapped over a leading seed dimension of every tensor in args (and of the results).
    The modules' buffers (observation statistics) are stacked too: each agent's buffers are views of their row,
    so ObsEncoder.update_stats() on one agent updates what the batch reads. `uses` (names of modules) limits
    the parameters swapped in to those the function reads (fewer to swap: less Python per call)."""

    def __init__(self, modules: Sequence[dict[str, nn.Module]], groups: dict[str, ParamStack]) -> None:
        bundles = [_Bundle(dict(m)) for m in modules]
        self.bundle, self.groups = bundles[0], dict(groups)
        where = {id(p): (g, i) for g, stack in self.groups.items() for i, p in enumerate(stack.params0)}
        self.names: dict[str, tuple[str, int]] = {}
        for name, p in self.bundle.named_parameters():
            if id(p) not in where:
                raise ValueError(f"parameter {name} is in no parameter group")
            self.names[name] = where[id(p)]
        self.buffers = {name: stack_tensors_([b.get_buffer(name) for b in bundles])
                        for name, _ in self.bundle.named_buffers()}
        self.dtype = next(iter(self.groups.values())).param.dtype
        self._used: dict[tuple[str, ...] | None, list[str]] = {None: list(self.names)}

    def _names_used(self, uses: tuple[str, ...] | None) -> list[str]:
        if uses not in self._used:  # by parameter identity: a module shared by two (a trunk) is named once
            ids = {id(p) for m in uses for p in getattr(self.bundle, m).parameters()}  # type: ignore[union-attr]
            self._used[uses] = [n for n, p in self.bundle.named_parameters() if id(p) in ids]
        return self._used[uses]

    def vmap(self, fn: Callable[..., Any], *args: Any, uses: Sequence[str] | None = None) -> Any:
        """fn(apply, *args) for every seed at once (args and results with a leading seed dimension), where
        apply(inner, *a, **flats) evaluates inner(m, *a) with the seed's modules; a group named in `flats` runs
        with the given flat vector (e.g. TRPO's line-search candidates) instead of its parameters."""
        names = self._names_used(None if uses is None else tuple(uses))

        def one(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], *a: Any) -> Any:
            def apply(inner: Callable[..., Any], *ia: Any, **override: torch.Tensor) -> Any:
                swapped = params
                if override:
                    swapped = dict(params)
                    views = {g: self.groups[g].unflatten(flat) for g, flat in override.items()}
                    for name in names:
                        g, i = self.names[name]
                        if g in views:
                            swapped[name] = views[g][i]
                self.bundle.fn = inner
                # Shared modules (one encoder under actor and critic) are named once and swapped once: with
                # tie_weights=True torch swaps a tied tensor under every name and restores it wrongly.
                return functional_call(self.bundle, (swapped, buffers), ia, tie_weights=False)
            return fn(apply, *a)

        in_dims = (0, 0, *(None if a is None else 0 for a in args))  # None arguments pass through as None
        return vmap(one, in_dims=in_dims)(self._views(names), self.buffers, *args)

    def _views(self, names: list[str]) -> dict[str, torch.Tensor]:
        """[K, ...] views of the stacks for these parameters, made anew on every call: views kept from one call to
        the next would keep their autograd nodes (and the stream those were made on) alive, and a CUDA graph
        captured on another stream then fails ("operation would make the legacy stream depend on a capturing
        blocking stream")."""
        groups = {self.names[n][0] for n in names}
        with torch.enable_grad():
            views = {g: self.groups[g].unflatten(self.groups[g].param) for g in groups}
        return {n: views[self.names[n][0]][self.names[n][1]] for n in names}

    def call(self, fn: Callable[..., Any], *args: Any, uses: Sequence[str] | None = None) -> Any:
        """fn(m, *args) for every seed at once (see the class docstring)."""
        return self.vmap(lambda apply, *a: apply(fn, *a), *args, uses=uses)

    def update_obs_stats(self, obs: Any) -> torch.Tensor:
        """Every seed's actor.encoder.update_stats() with its rows of `obs` [K, B, ...] (a tensor or a dict of
        them), in one vmapped call, in place on the stacked statistics that each agent's encoders read."""
        def one(m: Any, o: Any) -> torch.Tensor:
            m.actor.encoder.update_stats(o)
            return torch.zeros(())
        return self.call(one, obs, uses=("actor",))

    def backward(self, loss: torch.Tensor, *groups: str) -> None:
        """The gradients of every seed's loss ([K]) into the groups' [K, P] .grad (replacing what was there)."""
        stacks = [self.groups[g] for g in groups]
        grads = torch.autograd.grad(loss.sum(), [s.param for s in stacks])  # seeds are independent: row k = grad_k
        for stack, grad in zip(stacks, grads):
            stack.param.grad.copy_(grad)


class StackedFlatOptimizer:
    """The K agents' FlatRMSprop or FlatAdam as one optimiser of the same class on a ParamStack's [K, P] tensor.
    Their updates are elementwise, so one step on [K, P] is exactly each seed's own step; each agent's optimiser
    keeps its state as views of its row (its checkpoints hold its own moments), and the seeds share one learning
    rate and (capturable FlatAdam) one step counter, as they step together."""

    def __init__(self, optimizers: Sequence[FlatRMSprop | FlatAdam], stack: ParamStack) -> None:
        first, group = optimizers[0], optimizers[0].param_groups[0]
        self.optimizers = list(optimizers)
        lr = group["lr"] if not isinstance(group["lr"], torch.Tensor) else float(group["lr"])
        capturable = bool(getattr(first, "capturable", False))
        self.opt: FlatRMSprop | FlatAdam
        if isinstance(first, FlatRMSprop):
            self.opt = FlatRMSprop(stack.param, lr, group["alpha"], group["eps"], capturable=capturable,
                                   tf_like=first.tf_like)
            self.opt.square_avg = stack_tensors_([o.square_avg for o in optimizers])
        elif isinstance(first, FlatAdam):
            if len({o.state_dict()["steps"] for o in optimizers}) != 1:
                raise ValueError("the seeds' optimisers have taken different numbers of steps")
            self.opt = FlatAdam(stack.param, lr, group["betas"], group["eps"], capturable=capturable)
            self.opt.exp_avg = stack_tensors_([o.exp_avg for o in optimizers])
            self.opt.exp_avg_sq = stack_tensors_([o.exp_avg_sq for o in optimizers])
            self.opt.steps = first.steps
            if self.opt._t is not None:  # one device step counter for all seeds
                self.opt._t.copy_(first._t)
                for o in optimizers:
                    o._t.data = self.opt._t
        else:
            raise TypeError(f"StackedFlatOptimizer takes FlatRMSprop or FlatAdam, not {type(first).__name__}")
        if isinstance(group["lr"], torch.Tensor):
            self.set_lr(lr)

    def set_lr(self, lr: float) -> None:
        """optim.set_lr on the batch (a device tensor when capturable), shared by every agent's optimiser."""
        set_lr(self.opt, lr)
        for o in self.optimizers:
            o.param_groups[0]["lr"] = self.opt.param_groups[0]["lr"]

    def step(self) -> None:
        self.opt.step()
        if isinstance(self.opt, FlatAdam):
            for o in self.optimizers:
                o.steps = self.opt.steps


ADAM_CHUNKS = 32  # StackedAdam's pieces of a stack on a GPU (one launch of torch's fused Adam: at most 36 tensors)


class StackedAdam:
    """The K agents' torch.optim.Adam (one parameter group each: one agent's parameters of a ParamStack, in its
    order, with the same settings) as ONE torch.optim.Adam on the stack's [K, P] tensor: one (fused) step for all
    seeds instead of K. Adam is elementwise, so that step is exactly each seed's own. Each agent's optimiser keeps
    its moments as views of its row of the stacked moments (its checkpoints hold its own) and its own step counts,
    advanced with every step; the seeds step together, so they share one learning rate and one step count.

    `pieces`: how many contiguous pieces of the stack the step takes (default: ADAM_CHUNKS on a GPU, 1 elsewhere).

    A group with frozen parameters (requires_grad False) cannot be one tensor's step (the stack has one gradient
    for all its slots): then each agent's own optimiser steps, as in its lone run (`stacked` is False)."""

    def __init__(self, optimizers: Sequence[torch.optim.Adam], stack: ParamStack, pieces: int | None = None) -> None:
        self.optimizers = list(optimizers)
        first = optimizers[0]
        if any(type(o) is not torch.optim.Adam or len(o.param_groups) != 1 for o in optimizers):
            raise TypeError("StackedAdam takes torch.optim.Adam optimisers of one parameter group")
        group = {k: v for k, v in first.param_groups[0].items() if k != "params"}
        for k, o in enumerate(optimizers):
            params = o.param_groups[0]["params"]
            if len(params) != len(stack.slots) or any(
                    p.data_ptr() != stack.param.data[k, off:off + n].data_ptr() or tuple(p.shape) != shape
                    for p, (off, n, shape) in zip(params, stack.slots)):
                raise ValueError(f"seed {k}'s optimiser does not hold its parameters in the stack's order")
            other = {key: v for key, v in o.param_groups[0].items() if key != "params"}
            for key in group.keys() | other.keys():
                if group.get(key) != other.get(key):
                    raise ValueError(f"the seeds' optimisers differ in {key}: seed 0 has {group.get(key)!r}, seed "
                                     f"{k} {other.get(key)!r}")
        self.stacked = not group["amsgrad"] and all(p.requires_grad for p in first.param_groups[0]["params"])
        if not self.stacked:
            return
        param = self.stack_param = stack.param
        exp_avg, exp_avg_sq = torch.zeros_like(param), torch.zeros_like(param)
        capturable, fused = bool(group["capturable"]), bool(group["fused"])
        counts: dict[float, int] = {}
        self.steps: list[torch.Tensor] = []
        for k, o in enumerate(optimizers):
            for p, (off, n, shape) in zip(o.param_groups[0]["params"], stack.slots):
                old = o.state.get(p) or {}
                step = old.get("step")
                if step is None:  # a fresh optimiser: the state Adam's first step would create (its dtype, device)
                    dtype = torch.float32 if fused else \
                        (torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)
                    step = torch.zeros((), dtype=dtype, device=p.device if capturable or fused else "cpu")
                else:
                    exp_avg[k, off:off + n].copy_(old["exp_avg"].reshape(-1))
                    exp_avg_sq[k, off:off + n].copy_(old["exp_avg_sq"].reshape(-1))
                counts.setdefault(float(step), k)
                o.state[p] = {"step": step, "exp_avg": exp_avg[k, off:off + n].view(shape),
                              "exp_avg_sq": exp_avg_sq[k, off:off + n].view(shape)}
                self.steps.append(step)
        if len(counts) != 1:
            (a, ka), (b, kb) = list(counts.items())[:2]
            raise ValueError(f"the seeds' optimisers have taken different numbers of steps: seed {ka} {a:g}, seed "
                             f"{kb} {b:g}")
        # On a GPU the stack steps as ADAM_CHUNKS contiguous pieces of its storage: torch's fused Adam gives a
        # tensor one thread block per 65,536 elements, so a [K, P] stack of a million parameters would use 16
        # blocks of the GPU's hundreds; one launch takes up to 36 tensors, a block each. Adam is elementwise and
        # every piece has the same step count, so the pieces' steps are the one tensor's step, bit for bit.
        pieces = pieces or (ADAM_CHUNKS if param.is_cuda else 1)
        size = -(-param.numel() // pieces)
        size = -(-size // 128) * 128  # pieces of whole 128-value blocks: each starts aligned for vectorised loads
        flat = [t.view(-1).split(size) for t in (param.data, param.grad, exp_avg, exp_avg_sq)]
        chunks = []
        for data, grad, avg, avg_sq in zip(*flat):
            chunk = nn.Parameter(torch.empty(0, dtype=param.dtype, device=param.device))
            chunk.data, chunk.grad = data, grad  # views of the stack's storage: its values and its gradient
            chunks.append((chunk, {"step": self.steps[0].clone(), "exp_avg": avg, "exp_avg_sq": avg_sq}))
        self.opt = torch.optim.Adam([c for c, _ in chunks])
        self.opt.param_groups[0].update(group)  # every setting as the agents have it (keys of any torch version)
        self.opt.state.update(chunks)

    def step(self) -> None:
        if not self.stacked:
            for o in self.optimizers:
                o.step()
            return
        self.opt.step()
        # The pieces are other tensors over the stack's storage: tell autograd that the stack changed in place, so
        # a graph built from its values before this step refuses to run backward, as after any in-place step.
        torch.autograd.graph.increment_version(self.stack_param)
        with torch.no_grad():  # every agent's own step counts, as its own step() advances them
            torch._foreach_add_(self.steps, 1.0)


class SeedTorchEnvs:
    """The K seeds' TorchVecEnvs (rlkit.core.torch_envs) and their collectors' tensor paths stepped as one: the
    physics once for all K x N envs (step_physics), the episode records and non-finite records of all seeds in one
    call each (rollout.record_episodes, record_first_bad, with a leading seed dimension). Each agent's env state,
    collector records and stream counters are views of its row of the stacked tensors, so every agent stays whole
    (its collector's sync() reads its own row, its checkpoint holds its own counters). The random numbers of a
    rollout are two draws for all seeds and all T steps: the reset draws from the seeds' env streams and the
    action noise from their collectors' streams, stacked (core.streams.CounterStream), so every seed draws
    exactly what its lone collect() draws. Nothing reads the host and every tensor is updated in place, so a
    rollout can be one CUDA graph (core.device.GraphedStep; counter streams need no generator registered)."""

    def __init__(self, batch: "SeedBatch") -> None:
        agents = batch.agents
        envs, cols = [a.env for a in agents], [a.collector for a in agents]
        e0 = envs[0]
        for e in envs[1:]:
            if (type(e.physics), e.num_envs, e.device, e.dtype) != (type(e0.physics), e0.num_envs, e0.device, e0.dtype):
                raise ValueError("the seeds' torch envs differ (env, number of envs, device or dtype)")
        self.batch, self.envs, self.cols = batch, envs, cols
        self.state, self.elapsed = stack_tensors_([e.state for e in envs]), stack_tensors_([e.elapsed for e in envs])
        self.records = [stack_tensors_([getattr(c, name) for c in cols]) for name in
                        ("_ep_return_t", "_ep_length_t", "_ring_return", "_ring_length", "_episodes_t")]
        self.steps = stack_tensors_([c._steps_t for c in cols])
        self.env_bad = stack_tensors_([c._env_bad for c in cols])  # the collectors' first-non-finite records
        self.act_bad = stack_tensors_([c._act_bad for c in cols])
        self.obs = stack_tensors_([c._obs_t for c in cols])  # the current observations [K, N, ...]
        self.env_streams = _stack_streams([e.stream for e in envs])  # keys [K, 2], counters [K]
        self.noise_streams = _stack_streams([c.action_noise_stream for c in cols])
        self.noise = rollout_noise(agents[0].actor, agents[0].config)  # what each lone collect() draws
        if self.noise is None:
            raise ValueError(f"{type(agents[0].actor).__name__} takes no sampling noise from outside (noise_kind)")

    @torch.no_grad()
    def _step(self, nets: SeedNets, rollouts: Rollout, t: int, noise: torch.Tensor, resets: torch.Tensor) -> None:
        """Step t of a rollout for every seed with its draws (noise [K, N, A], resets [K, N, d]): act, step the envs,
        keep the records, write the buffers."""
        e0, c0, batch = self.envs[0], self.cols[0], self.batch
        K, N, d = self.state.shape
        actions = batch.sample_actions(nets, self.obs, noise)
        rollouts.obs[:, t] = self.obs
        rollouts.actions[:, t] = actions
        env_actions = c0._env_actions_tensor(actions)  # elementwise: clip to the Box, or the Discrete's offset
        out = step_physics(e0.physics, self.state.view(K * N, d), self.elapsed.view(K * N),
                           env_actions.reshape(K * N, *env_actions.shape[2:]).to(e0.device),
                           e0.reset_states(resets).reshape(K * N, d), e0.max_episode_steps)
        dev = c0.device
        rewards, terminated, truncated = (x.to(dev).view(K, N) for x in (out.reward, out.terminated, out.truncated))
        next_obs, true_next = (x.to(dev).view(K, N, *x.shape[1:]) for x in (out.obs, out.final_obs))
        if c0.check_finite:  # the collector's records: the first non-finite env output, and action, of each seed
            bad = ~(torch.isfinite(rewards) & torch.isfinite(true_next.reshape(K, N, -1)).all(-1))
            record_first_bad(self.env_bad, bad, self.steps, c0._sub_env, c0._NONE)
            if actions.is_floating_point():
                bad_actions = ~torch.isfinite(actions.reshape(K, N, -1)).all(-1)
                record_first_bad(self.act_bad, bad_actions, self.steps, c0._sub_env, c0._NONE)
        record_episodes(*self.records, rewards, terminated | truncated, c0.EPISODE_WINDOW)
        self.steps += N
        rollouts.rewards[:, t], rollouts.terminated[:, t], rollouts.truncated[:, t] = rewards, terminated, truncated
        shape = (K, N) + (1,) * (true_next.dim() - 2)
        rollouts.final_obs[:, t] = torch.where(truncated.view(shape), true_next, 0.0)
        self.obs.copy_(next_obs)

    def collect(self, nets: SeedNets, rollouts: Rollout) -> None:
        """One rollout of every seed into the stacked Rollout [K, T, N, ...] (each agent's buffer is a view of its
        row), as each collector's collect() writes it, with each seed's actor (one batched forward per step)."""
        T, c0, e0 = rollouts.rewards.shape[1], self.cols[0], self.envs[0]
        resets = self.env_streams.uniform(e0.state.shape, e0.dtype, T)  # [K, T, N, d]: TorchVecEnv.draw_resets(T)
        noise = self.noise_streams.draw(self.noise[0], c0.noise_shape, self.noise[1], T)  # [K, T, N, A]
        for t in range(T):
            self._step(nets, rollouts, t, noise[:, t], resets[:, t])
        rollouts.last_obs.copy_(self.obs)


def _stack_streams(streams: Sequence[CounterStream]) -> CounterStream:
    """The K streams as one batch (keys [K, 2], counters [K]) whose draws are theirs row by row; each stream's keys
    and counter become views of its row, so their owners (envs, collectors) keep advancing and saving them."""
    batch = CounterStream(stack_tensors_([s.keys for s in streams]), stack_tensors_([s.counter for s in streams]))
    for s in streams:  # a stream re-keyed later (env.reset(seed=...)) refreshes the batch's kept words too
        s._batches.add(batch)
    return batch


# ---- the edges of a batched learn(): K LearnRuns ---------------------------------------------------------------
class SeedRuns:
    """The K seeds' LearnRuns (logs, callbacks, evaluation, checkpoints, each in its own run directory), driven
    together: end_of_iteration() runs each seed's in turn with that seed's RNG stream in the global generator
    (checkpoints record it, so a seed resumes alone exactly), and only when something is due (the same for
    every seed: they are at the same step). One set of stop signals serves all seeds: after SIGINT/SIGTERM
    every seed writes its checkpoint before TrainingInterrupted is raised."""

    def __init__(self, batch: "SeedBatch", runs: list[LearnRun]) -> None:
        self.batch, self.runs = batch, runs
        for run in reversed(runs):  # begin_learn installed one handler per seed, nested: keep one for all
            if run.signals is not None:
                run.signals.uninstall()
        self.signals = StopSignals().install()
        for run in runs:
            run.signals = self.signals
        self.target = runs[0].target
        watches = [run.loss_watch for run in runs]  # torch envs: each seed's first non-finite loss, on the device
        self.loss_watch = None if any(w is None for w in watches) else stack_tensors_(watches)

    def active(self) -> bool:
        return self.batch.agents[0].num_timesteps < self.target

    def log_due(self) -> bool:
        return self.runs[0].log_due(self.batch.agents[0])

    def schedule_fraction(self) -> float:
        return self.runs[0].schedule_fraction(self.batch.agents[0])

    def end_of_iteration(self, info: dict[str, torch.Tensor]) -> bool:
        """Each seed's LearnRun.end_of_iteration with its row of the batched diagnostics [K]; False when any
        seed's callback asked to stop (all seeds stop: they run in lockstep)."""
        if self.loss_watch is not None:  # LearnRun.watch_losses for all seeds at once: every iteration, no host read
            losses = [v for k, v in info.items() if k.startswith("train/loss") and isinstance(v, torch.Tensor)]
            if losses:
                total = torch.stack([v.detach().reshape(len(self.runs), -1).sum(-1).float() for v in losses]).sum(0)
                first = torch.where(torch.isfinite(total), torch.iinfo(torch.int64).max,
                                    self.batch.agents[0].num_timesteps)
                torch.minimum(self.loss_watch, first, out=self.loss_watch)
        if not self.runs[0].due(self.batch.agents[0]):
            return True
        go_on, stopped = True, None
        for k, (run, agent) in enumerate(zip(self.runs, self.batch.agents)):
            with self.batch.streams.scope(k):
                try:
                    go_on = run.end_of_iteration(agent, {name: v[k] for name, v in info.items()}) and go_on
                except TrainingInterrupted as e:  # the others still write their checkpoints
                    stopped = stopped or e
        if stopped is not None:
            raise stopped
        return go_on

    def finish(self) -> None:
        for k, (run, agent) in enumerate(zip(self.runs, self.batch.agents)):
            with self.batch.streams.scope(k):
                run.finish(agent)

    def close(self) -> None:
        errors = []
        for run in self.runs:
            try:
                run.close()
            except BaseException as e:  # noqa: BLE001 - close every run, then re-raise the first failure
                errors.append(e)
        self.signals.uninstall()
        if errors:
            raise errors[0]


# ---- the entry point ------------------------------------------------------------------------------------------
def _check_spaces_batchable(first: Any) -> None:
    """Refuse, in one line, spaces (and agent settings: the agent's seed_batch_refusal()) a batch cannot train yet."""
    refusal = getattr(first, "seed_batch_refusal", None)
    reason = refusal() if callable(refusal) else None
    if reason:
        raise ValueError(reason)
    if type(first.observation_space).__name__ == "Dict":  # the stacked rollouts hold one tensor per field
        raise ValueError(f"{first.algo}: Dict observations cannot be trained as several seeds in one process "
                         "yet (Box, image and Discrete ones can); train those seeds one at a time")
    actor = getattr(first, "actor", None)
    if callable(getattr(actor, "sample_actions", None)) and getattr(actor, "noise_kind", None) is None:
        raise ValueError(f"{first.algo}: {first.action_space} actions cannot be trained as several seeds in "
                         "one process yet (Discrete and Box can); train those seeds one at a time")


class SeedBatch:
    """K agents of one class (seeds[k] each) trained in lockstep in one process by the class's learn_seeds()
    (supported: A2C, TRPO, REINFORCE, DDPG). `agents[k]` is an ordinary agent in every respect (act, evaluate,
    save, load; its run directory is what a lone run of its seed writes).

        batch = SeedBatch(A2C, "CartPole-v1", seeds=range(8), n_envs=8)
        batch.learn(100_000, run_dirs=[f"runs/a2c/seed{s}" for s in batch.seeds])
        batch.agents[3].save("seed3.pt")

    `env` is an env id or a callable (each seed builds its own envs, seeded as a lone run's); other keywords go to
    the agent's constructor (config fields, device, env_backend, ...), the same for every seed.

    Every seed draws what its lone run draws (the module docstring says how): on torch envs (env_backend="torch")
    a rollout's reset states and action noise come from the seeds' counter streams, one call for all seeds;
    draws from torch's global generator (Gymnasium envs' action noise, shuffles, replay indices) from per-seed
    generators, K calls each. exact=False takes those generator draws from one shared generator instead (the
    seeds no longer equal their lone runs); the counter streams stay exact either way."""

    def __init__(self, agent_cls: Any, env: Any, seeds: Sequence[int], *, exact: bool = True, **kwargs: Any) -> None:
        _check_batchable(agent_cls)
        seeds = _check_seeds(seeds)
        if not (isinstance(env, str) or callable(env)) or isinstance(env, nn.Module):
            raise ValueError(f"SeedBatch builds one set of envs per seed: pass an env id or a callable that builds a "
                             f"fresh env, not a {type(env).__name__} instance")
        for role in ("policy", "critic", "encoder"):
            if isinstance(kwargs.get(role), nn.Module):
                factory = "f(observation_space)" if role == "encoder" else "f(in_dim, out_dim)"
                raise ValueError(f"SeedBatch: pass {role}= as a factory {factory}, not a module instance, so "
                                 "that every seed builds (and initialises) its own network")
        self._build([lambda s=s: agent_cls(env, seed=s, **kwargs) for s in seeds], exact)

    @classmethod
    def load(cls, agent_cls: Any, paths: Sequence[str | Path], env: Any = None, device: str | torch.device = "auto",
             *, exact: bool = True, **kwargs: Any) -> "SeedBatch":
        """The batch of K checkpoints (one per seed, all at the same step), each loaded as agent_cls.load() does
        (with its RNG state, so seed k continues its stream); kwargs go to load() (e.g. restore_env=True)."""
        _check_batchable(agent_cls)
        batch = cls.__new__(cls)
        batch._build([lambda p=p: agent_cls.load(p, env=env, device=device, **kwargs) for p in paths], exact)
        return batch

    def _build(self, makers: Sequence[Callable[[], Any]], exact: bool) -> None:
        if not makers:
            raise ValueError("SeedBatch needs at least one seed")
        self.agents: list[Any] = []
        try:
            for make in makers:
                self.agents.append(make())
                if len(self.agents) == 1:
                    _check_spaces_batchable(self.agents[0])  # before the other seeds' agents (and envs) are built
                    self.streams = SeedStreams(self.agents[0].device)
                self.streams.capture()  # the global RNG as this seed's constructor (or load) left it
            if not exact:
                shared = SeedStreams(self.device, exact=False, seeds=self.seeds)
                shared.gens, shared.states = self.streams.gens, self.streams.states
                self.streams = shared
            self._torch_envs: SeedTorchEnvs | None = None
            first = self.agents[0]
            for a in self.agents[1:]:
                if a.device != first.device:
                    raise ValueError(f"the seeds' agents are on different devices ({first.device}, {a.device})")
                if config_to_dict(a.config) != config_to_dict(first.config) or a.env_id != first.env_id:
                    raise ValueError("the seeds' agents differ in config or env; a SeedBatch trains one setting")
                if a.num_timesteps != first.num_timesteps:
                    raise ValueError(f"the seeds' agents are at different steps ({first.num_timesteps:,} and "
                                     f"{a.num_timesteps:,}); a SeedBatch trains them in lockstep")
            if len({a.seed for a in self.agents}) != len(self.agents):
                raise ValueError("the seeds of a SeedBatch must be distinct (each writes its own run directory)")
        except BaseException:
            for a in self.agents:
                if getattr(a, "env", None) is not None:
                    a.env.close()
            raise

    @property
    def seeds(self) -> list[int | None]:
        return [a.seed for a in self.agents]

    @property
    def device(self) -> torch.device:
        return self.agents[0].device

    def learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], bool | None] | None = None,
              run_dirs: Sequence[str | Path] | None = None, progress: bool = True, log_interval: int = 1000, *,
              total_budget: int | None = None, eval_freq: int = 0, n_eval_episodes: int = 10) -> "SeedBatch":
        """Train every seed for `total_steps` more environment steps, as agent.learn() would train it alone;
        `run_dirs` (one per seed) get what a lone run writes; `callback(agent, metrics)` runs for each seed (False
        from any stops all); the progress bar and the console summary follow seed 0."""
        steps = sorted({a.num_timesteps for a in self.agents})
        if len(steps) > 1:  # one of them was trained alone in between
            raise ValueError(f"the seeds' agents are at different steps ({', '.join(f'{n:,}' for n in steps)}); a "
                             "SeedBatch trains them in lockstep")
        if run_dirs is not None:
            run_dirs = list(run_dirs)
            if len(run_dirs) != len(self.agents):
                raise ValueError(f"run_dirs has {len(run_dirs)} entries for {len(self.agents)} seeds")
            if len({str(Path(d).absolute()) for d in run_dirs}) != len(run_dirs):
                raise ValueError("run_dirs must be distinct (one run directory per seed)")
        type(self.agents[0]).learn_seeds(self, total_steps, callback=callback, run_dirs=run_dirs, progress=progress,
                                         log_interval=log_interval, total_budget=total_budget, eval_freq=eval_freq,
                                         n_eval_episodes=n_eval_episodes)
        return self

    # ---- pieces for the agents' learn_seeds() -------------------------------------------------------------------
    def share_env_workers(self, n_workers: int | None = None, spin: bool | None = None) -> bool:
        """Move the seeds' in-process Gymnasium envs (each agent's SameStepSyncVectorEnv) into ONE set of worker
        processes shared by all seeds (rlkit.core.envs.EnvWorkers: several sub-envs per process; by default one
        process per core), so that rollout.Lockstep steps every seed's envs in one step of the workers.

        Each sub-env moves as it is (the workers are forked from this process: its simulator state and RNGs go on;
        nothing is rebuilt or reseeded), so every seed still steps exactly as alone. Each agent's env (and its
        collector's) becomes its WorkerVecEnv view and stays so: act(), evaluate(), save() (the env state beside
        checkpoints too, pickled in the workers) and a later lone learn() work as before.
        Envs already in one shared set of workers stay there; other envs (async, torch envs), a platform without
        fork, one core, or one sub-env in all are left as they are. `spin`: EnvWorkers' polling (None: its default).
        Returns whether the envs are in shared workers."""
        envs = [a.env for a in self.agents]
        if all(isinstance(e, WorkerVecEnv) and e.pool is envs[0].pool for e in envs):
            return True
        if not all(type(e) is SameStepSyncVectorEnv and not e.closed for e in envs) or not fork_available() \
                or usable_cores() < 2 or sum(e.num_envs for e in envs) < 2:
            return False
        for a, view in zip(self.agents, EnvWorkers(envs, n_workers, spin=spin).views):
            a.env = a.collector.env = view
        return True

    def refuse(self, condition: bool, what: str) -> None:
        """ValueError naming an option that a batched run does not support."""
        if condition:
            raise ValueError(f"{self.agents[0].algo}: {what} is not supported when training several seeds in one "
                             "process; train those seeds one at a time")

    def begin_learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], Any] | None,
                    run_dirs: Sequence[str | Path] | None, progress: bool, log_interval: int,
                    total_budget: int | None, eval_freq: int, n_eval_episodes: int) -> SeedRuns:
        """Each seed's begin_learn() (its run directory locked and opened, its budget); SeedRuns drives them."""
        runs: list[LearnRun] = []
        try:
            for k, agent in enumerate(self.agents):
                runs.append(begin_learn(agent, total_steps, None if run_dirs is None else run_dirs[k],
                                        progress and k == 0, log_interval, callback, total_budget, eval_freq,
                                        n_eval_episodes))
                runs[-1].logger.console = runs[-1].logger.console and k == 0  # one console summary: seed 0's
        except BaseException:
            for run in reversed(runs):
                run.close()
            raise
        return SeedRuns(self, runs)

    def action_noise(self, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The noise the K actors' sample_actions draw for n observations each, [K, n, A] (the logits' or the
        means' shape), each seed's from its own stream; written into `out` when given."""
        actor = self.agents[0].actor
        kind = getattr(actor, "noise_kind", None)
        if kind not in ("uniform", "normal"):
            raise ValueError(f"{type(actor).__name__} cannot take its sampling noise from outside (noise_kind)")
        out = self.action_noise_buffer(n) if out is None else out
        return self.streams.fill_uniform_(out) if kind == "uniform" else self.streams.fill_normal_(out)

    def action_noise_buffer(self, n: int) -> torch.Tensor:
        """An (undrawn) tensor of action_noise()'s shape and dtype."""
        dtype = next(self.agents[0].actor.parameters()).dtype
        return torch.empty((len(self.agents), n, action_dim(self.agents[0].action_space)), dtype=dtype,
                           device=self.device)

    def sample_actions(self, nets: SeedNets, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The K actors' stochastic actions [K, N, ...] for observations [K, N, ...], each seed's noise from its own
        stream (the draw its lone run's actor.sample_actions takes from the global generator)."""
        noise = self.action_noise(obs.shape[1]) if noise is None else noise
        return nets.call(lambda m, o, u: m.actor.sample_actions(o, u), obs, noise, uses=("actor",))

    def after_update(self, nets: SeedNets, rollouts: Rollout) -> None:
        """What an on-policy agent's lone learn() does after its update, for every seed: count the update and, with
        normalize_obs, update the observation statistics with the rollout (all seeds in one vmapped call: a
        call per seed costs milliseconds of host time per iteration with hundreds of seeds)."""
        for a in self.agents:
            a.n_updates += 1
        if self.agents[0].config.normalize_obs:
            nets.update_obs_stats(obs_map(lambda t: t.flatten(1, 2), rollouts.obs))  # [K, T * N, ...]

    def generators(self) -> list[torch.Generator]:
        """The generators the batch's steps draw from, to register with a CUDA graph that draws from them: each
        seed's stream (or the shared one). Register them only where a graph draws: every replay refills each
        registered generator's seed and offset (two fill kernels launched per generator, about 15 us on the
        host), which for K seeds can cost more than the step itself. Torch envs' rollouts draw from counter
        streams and register none; DDPG draws its per-step numbers eagerly, just before its graphs."""
        if not self.streams.exact:
            return [self.streams.shared]  # type: ignore[list-item]
        return list(self.streams.gens)

    def collect(self, nets: SeedNets, rollouts: Rollout) -> None:
        """One rollout per seed into each agent's buffer (`rollouts`: the stacked buffers, stack_rollouts), in
        lockstep: one batched policy forward per step; Gymnasium envs step seed by seed (rollout.collect_lockstep),
        torch envs all at once (SeedTorchEnvs)."""
        if self.agents[0].collector.tensor_env:
            if self._torch_envs is None:
                self._torch_envs = SeedTorchEnvs(self)
            self._torch_envs.collect(nets, rollouts)
        else:
            collect_lockstep([a.collector for a in self.agents], [a.buffer for a in self.agents],
                             lambda obs: self.sample_actions(nets, obs))


def _check_batchable(agent_cls: Any) -> None:
    if not callable(getattr(agent_cls, "learn_seeds", None)):
        name = getattr(agent_cls, "algo", getattr(agent_cls, "__name__", repr(agent_cls)))
        raise ValueError(f"{name} cannot train several seeds in one process (it has no learn_seeds)")


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    out = list(seeds)
    if not out:
        raise ValueError("SeedBatch needs at least one seed")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in out):
        raise ValueError(f"seeds must be non-negative integers, got {out!r:.80}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct, got {out!r:.80}")
    return out
