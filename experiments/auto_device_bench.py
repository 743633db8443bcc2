"""Measure what rlkit.core.device.auto_device decides: environment steps per second of one training run on the
CPU and on the GPU, for on-policy agents at growing batch sizes (n_envs x n_steps transitions per update) and
for DDPG. Run on the GPU machine (experiments/device_run.sh) and read the crossover batch off the table:

    python experiments/auto_device_bench.py [--steps-per-case N] [CASE ...]

A CASE is algo:env:n_envs:n_steps (n_steps is ignored for ddpg). One torch thread per run, as rlkit's default.
"""
from __future__ import annotations

import argparse
import time

import torch

DEFAULT = ["a2c:Pendulum-v1:8:5", "a2c:Pendulum-v1:64:32", "trpo:Pendulum-v1:1:2048", "trpo:Pendulum-v1:8:1024",
           "trpo:Pendulum-v1:32:1024", "trpo:Pendulum-v1:64:1024", "reinforce:CartPole-v1:64:256",
           "ddpg:Pendulum-v1:1:0"]


def steps_per_second(algo: str, env: str, n_envs: int, n_steps: int, device: str, updates: int) -> float:
    from rlkit import get_agent_class

    cfg = {"n_envs": n_envs} if algo == "ddpg" else {"n_envs": n_envs, "n_steps": n_steps}
    if algo == "ddpg":
        cfg.update(learning_starts=100)
    agent = get_agent_class(algo)(env, config=cfg, seed=0, device=device)
    batch = n_envs if algo == "ddpg" else n_envs * n_steps
    per_call = max(batch, 1) * (200 if algo == "ddpg" else 1)
    agent.learn(per_call * 2, progress=False)  # warm-up: allocation, CUDA context, graph capture
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    agent.learn(per_call * updates, progress=False)
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    return per_call * updates / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cases", nargs="*", default=DEFAULT)
    p.add_argument("--updates", type=int, default=3)
    args = p.parse_args()
    from rlkit import auto_device

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{'case':<28} {'batch':>7} " + " ".join(f"{d + ' sps':>10}" for d in devices) + "  auto picks")
    for case in args.cases:
        algo, env, n_envs, n_steps = case.split(":")
        n_envs, n_steps = int(n_envs), int(n_steps)
        batch = 256 if algo == "ddpg" else n_envs * n_steps  # DDPG: its default replay batch
        sps = [steps_per_second(algo, env, n_envs, n_steps, d, args.updates) for d in devices]
        pick = auto_device(algo, False, batch, cuda_available=torch.cuda.is_available())
        print(f"{case:<28} {batch:>7} " + " ".join(f"{s:>10.0f}" for s in sps) + f"  {pick[0]} ({pick[1]})",
              flush=True)


if __name__ == "__main__":
    main()
