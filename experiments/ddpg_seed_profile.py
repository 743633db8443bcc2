"""Where the time of a DDPG lockstep step goes: K seeds in one process (rlkit.core.seeds.SeedBatch) and one seed alone.

For DDPG on --env (hidden 256,256 unless --hidden-sizes, batch 256; otherwise the setup of
experiments/seed_batching.py's ddpg()) it prints, for the batch of --seeds seeds and for one seed alone, a line of
  (a) full    ms per lockstep step of learn(), everything included (act, env steps, stores, update, bookkeeping);
  (b) host    ms per lockstep step of learn() with the gradient step replaced by a no-op (DDPG._gradient_step_seeds
              for the batch, DDPG.update for the lone agent): the act, the env steps and all host bookkeeping;
              also the main process's CPU time per step (worker processes not counted: with envs in workers,
              what the main process alone spends, which bounds the step where the workers have cores to spare);
  (c) update  ms per batched update alone: the update learn() built (the same GraphedStep: a CUDA graph on CUDA),
              called repeatedly on the filled replay buffers (cuda synchronised before and after).
With --free-act, (b) also takes the act at no cost: after its first calls every step the batch builds (act,
update, observation statistics) returns its first output again, and so does the lone seed's act. The host's own
bookkeeping is then what is left beside the env steps, as a GPU's graph replays leave it, measured on a CPU (the
actions repeat; the envs still step).
Every timed learn() follows an untimed one of --warmup steps past learning_starts (first kernels, graph capture).
One torch thread. A figure is the mean over --steps lockstep steps (--updates updates for (c)).

  PYTHONPATH=$PWD python experiments/ddpg_seed_profile.py --device cpu --steps 300
  PYTHONPATH=$PWD python experiments/ddpg_seed_profile.py --device cpu --steps 500 --host-only --hidden-sizes 16,16
  PYTHONPATH=$PWD python experiments/ddpg_seed_profile.py --device cpu --steps 2000 --host-only --free-act \
      --hidden-sizes 16,16 --vectorization sync
  PYTHONPATH=$PWD python experiments/ddpg_seed_profile.py --device cuda --steps 3000
  PYTHONPATH=$PWD python experiments/ddpg_seed_profile.py --device cuda --steps 3000 --kernels --hidden-sizes 400,300
(--vectorization sync: the batch's envs in this process, as before shared env workers; --vectorization auto is the
default: a batch's envs in shared worker processes, rlkit.core.envs.EnvWorkers.)
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterator

import torch

from rlkit import DDPG, SeedBatch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _ms_per_step(learner: Any, steps: int, device: str) -> tuple[float, float]:
    """(wall, this process's CPU) ms per lockstep step of learner.learn(steps) (n_envs=1: a vector step per env
    step). The CPU time is the main process's alone (its threads, not worker processes)."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    learner.learn(steps, progress=False, log_interval=10**9)
    _sync(device)
    return 1e3 * (time.perf_counter() - t0) / steps, 1e3 * (time.process_time() - c0) / steps


def _ms_per_call(fn: Callable[[], Any], n: int, device: str) -> float:
    fn()  # one untimed call
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return 1e3 * (time.perf_counter() - t0) / n


@contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _lone_update_noop(self: DDPG) -> dict[str, torch.Tensor]:
    self.n_updates += 1  # what update() counts; no gradient step
    return {}


class _KeptOutput:
    """--free-act: a GraphedStep (same arguments) whose calls after the first two return the second call's output
    again, at no cost (a stand-in for a graph replay, whose host cost this leaves out)."""

    def __init__(self, fn: Callable[[], Any], *args: Any, **kwargs: Any) -> None:
        self.fn, self.calls, self.out = fn, 0, None

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= 2:
            self.out = self.fn()
        return self.out


def _free_act() -> AbstractContextManager[None]:
    """--free-act for a lone agent: its act returns its first noisy action again."""
    kept: dict[int, torch.Tensor] = {}
    real = DDPG._noisy_action

    def noisy_action(self: DDPG, obs: torch.Tensor) -> torch.Tensor:
        if id(self) not in kept:
            kept[id(self)] = real(self, obs)
        return kept[id(self)]
    return _patched(DDPG, "_noisy_action", noisy_action)


def _kernel_table(fn: Callable[[], Any], n: int, who: str) -> None:
    """The GPU kernels of n calls of fn (torch.profiler): their count and time per call, and the top 20 by time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / n / 1e3
    print(f"{who}: {len(kernels) / n:.0f} GPU kernels per update, {busy:.3f} ms of kernel time per update")
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=20, max_name_column_width=70))


def profile(args: argparse.Namespace, k: int) -> dict[str, float]:
    """(a), (b), (c) for k seeds (k=0: one seed alone, through DDPG.learn, not a batch of one)."""
    cfg = dict(hidden_sizes=args.hidden_sizes, batch_size=256, buffer_size=max(args.warmup * 3 + 2 * args.steps, 1000),
               learning_starts=args.learning_starts, device=args.device, vectorization=args.vectorization,
               use_cuda_graph=not args.eager)
    # The batched update is a local of DDPG.learn_seeds: to time that very step (a CUDA graph on CUDA), record the
    # GraphedSteps learn_seeds builds, through DDPG's own module (a profiler reaches inside; nothing else here does).
    ddpg_module = sys.modules[DDPG.__module__]
    built: list[Any] = []
    real = ddpg_module.GraphedStep

    def recording(*a: Any, **kw: Any) -> Any:
        g = real(*a, **kw)
        built.append(g)
        return g

    if k:
        learner: Any = SeedBatch(DDPG, args.env, list(range(k)), **cfg)
        agents = learner.agents
    else:
        learner = DDPG(args.env, seed=0, **cfg)
        agents = [learner]
    try:
        learner.learn(args.learning_starts + args.warmup, progress=False)  # random steps, first updates, captures
        full = math.nan if args.host_only else _ms_per_step(learner, args.steps, args.device)[0]
        stub = (_patched(DDPG, "_gradient_step_seeds", staticmethod(lambda *a, **kw: {})) if k
                else _patched(DDPG, "update", _lone_update_noop))
        free = nullcontext() if not args.free_act else (_patched(ddpg_module, "GraphedStep", _KeptOutput) if k
                                                        else _free_act())
        with stub, free:
            learner.learn(args.warmup, progress=False)  # the stub's own graph captures, outside the clock
            host, host_cpu = _ms_per_step(learner, args.steps, args.device)
        if args.host_only:
            update = math.nan
        elif k:
            with _patched(ddpg_module, "GraphedStep", recording):
                learner.learn(args.warmup, progress=False)  # builds (and warms) the batch's steps again
            update_step = next(g for g in built if g.name == "DDPG update of the seeds" and g.calls)
            update = _ms_per_call(update_step, args.updates, args.device)
            if args.kernels:
                _kernel_table(update_step, 20, f"{k} seeds")
        else:
            update = _ms_per_call(learner.update, args.updates, args.device)
            if args.kernels:
                _kernel_table(learner.update, 20, "1 seed alone")
    finally:
        for a in agents:
            a.env.close()
    who = f"{k} seeds" if k else "1 seed alone"
    print(f"{who}: (a) full {full:.3f} ms per lockstep step", flush=True)
    noop = "update and act no-ops" if args.free_act else "update a no-op"
    print(f"{who}: (b) host {host:.3f} ms per lockstep step ({noop}; main process CPU {host_cpu:.3f} ms)")
    print(f"{who}: (c) update {update:.3f} ms per {'batched ' if k else ''}update", flush=True)
    return {"full": full, "host": host, "host_cpu": host_cpu, "update": update}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=2000, help="lockstep steps per timed learn()")
    p.add_argument("--warmup", type=int, default=50, help="untimed steps before each timed learn()")
    p.add_argument("--updates", type=int, default=200, help="updates timed for (c)")
    p.add_argument("--learning-starts", type=int, default=100)
    p.add_argument("--hidden-sizes", default="256,256", type=lambda s: tuple(int(w) for w in s.split(",")),
                   help="layer widths (on a CPU the act of 256x256 networks costs more than a GPU's graphed act: "
                   "small ones show the host side as a GPU leaves it)")
    p.add_argument("--vectorization", default="auto", help="the agents' vectorization (DDPGConfig; auto: a batch's "
                   "envs in shared worker processes, a lone seed's in this process)")
    p.add_argument("--host-only", action="store_true", help="measure (b) only ((a) and (c) print nan)")
    p.add_argument("--eager", action="store_true", help="no CUDA graphs (use_cuda_graph=False)")
    p.add_argument("--free-act", action="store_true", help="(b): the act also a no-op after its first calls (its "
                   "first output kept): the host's bookkeeping beside the env steps, as a GPU's graphs leave it")
    p.add_argument("--kernels", action="store_true", help="CUDA: also the update's GPU kernels (torch.profiler): "
                   "their count and time per update, and the 20 that take the most")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"DDPG {args.env} on {args.device}, hidden {args.hidden_sizes}, batch 256, {args.vectorization} envs, "
          f"{args.steps} timed steps")
    batch = profile(args, args.seeds)
    one = profile(args, 0)
    print(f"aggregate speed-up of {args.seeds} seeds over one: {args.seeds * one['full'] / batch['full']:.2f}x "
          f"(host side alone: {args.seeds * one['host'] / batch['host']:.2f}x)")


if __name__ == "__main__":
    main()
