"""Speed: rlkit DDPG against Stable-Baselines3 DDPG on Pendulum-v1, side by side in one process.

SB3's default DDPG settings for both: [400, 300] ReLU actor and critic, Adam lr 1e-3, batch 256, buffer 1e6,
learning_starts 100, train_freq 1, gradient_steps 1, tau 0.005, gamma 0.99, no action noise (SB3's default),
one env. Runs alternate (rlkit, SB3, rlkit, SB3, ...). Prints environment steps per second of each run, the
medians and their ratio, and rlkit's bare update rate (updates/s of agent.update() alone on a full buffer,
so steps/s over it says how much the acting path costs on top of the update).

    python experiments/speed_ddpg_vs_sb3.py --device cpu --steps 3000 --sb3-steps 3000 --reps 2
    python experiments/speed_ddpg_vs_sb3.py --device cuda --steps 20000 --sb3-steps 3000 --reps 2

On CUDA rlkit replays its update as one CUDA graph; `--eager` also times the eager path (use_cuda_graph=False)
and `--sb3-order` rlkit with overlap_env_step=False (by default the update of step t runs on the GPU while the CPU
steps the env, sampling the transitions stored before step t; False stores first, then updates, as SB3). Each
timed run includes everything learn() does (random warm-up steps, graph capture). One torch thread.
Stable-Baselines3 is a benchmark-only extra (pip install -e ".[bench]"); rlkit never imports it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

SETTINGS = dict(hidden_sizes=(400, 300), learning_rate=1e-3, batch_size=256, buffer_size=1_000_000,
                learning_starts=100, train_freq=1, gradient_steps=1, tau=0.005, gamma=0.99, noise_type="none")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


VARIANTS = {"default": {}, "sb3_order": {"overlap_env_step": False}, "eager": {"use_cuda_graph": False}}


def run_rlkit(steps: int, seed: int, device: str, variant: str = "default") -> float:
    from rlkit import DDPG

    agent = DDPG("Pendulum-v1", seed=seed, device=device, **SETTINGS, **VARIANTS[variant])
    sync(device)
    t0 = time.perf_counter()
    agent.learn(steps, progress=False)
    sync(device)
    return agent.num_timesteps / (time.perf_counter() - t0)


def run_sb3(steps: int, seed: int, device: str) -> float:
    from stable_baselines3 import DDPG as SB3DDPG

    model = SB3DDPG("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, buffer_size=1_000_000, learning_starts=100,
                    batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, seed=seed,
                    device=device, verbose=0, policy_kwargs=dict(net_arch=[400, 300]))
    sync(device)
    t0 = time.perf_counter()
    model.learn(steps)
    sync(device)
    return model.num_timesteps / (time.perf_counter() - t0)


def bare_update_rate(device: str, n: int, graph: bool = True) -> float:
    """agent.update() alone, n times on a buffer of 1,000 random transitions (after a warm-up/capture)."""
    from rlkit import DDPG

    agent = DDPG("Pendulum-v1", seed=0, device=device, **{**SETTINGS, "learning_starts": 1000},
                 use_cuda_graph=graph)
    agent.learn(1000, progress=False)
    for _ in range(10):
        agent.update()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        agent.update()
    sync(device)
    return n / (time.perf_counter() - t0)


def profile_update(device: str, graph: bool) -> None:
    """Kernels per update and their GPU time (torch.profiler over 20 updates), for whoever speeds it up next."""
    from torch.profiler import ProfilerActivity, profile

    from rlkit import DDPG

    agent = DDPG("Pendulum-v1", seed=0, device=device, **{**SETTINGS, "learning_starts": 1000}, use_cuda_graph=graph)
    agent.learn(1000, progress=False)
    for _ in range(5):
        agent.update()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(20):
            agent.update()
        sync(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.device_time for e in kernels)
    print(f"profile ({'graph' if graph else 'eager'}): {len(kernels) / 20:.0f} GPU kernels per update, "
          f"{total / 20:.0f} us of kernel time per update")
    if not graph:
        print(prof.key_averages().table(sort_by="device_time_total", row_limit=15, max_name_column_width=60))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3000, help="environment steps per rlkit run")
    p.add_argument("--sb3-steps", type=int, default=3000, help="environment steps per SB3 run")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--bare-updates", type=int, default=None, help="default: 2000 on CUDA, 200 on CPU")
    p.add_argument("--eager", action="store_true", help="also time rlkit's eager update on CUDA")
    p.add_argument("--sb3-order", action="store_true", help="also time rlkit with overlap_env_step=False")
    p.add_argument("--profile", action="store_true", help="on CUDA, profile the update's kernels at the end")
    a = p.parse_args()
    torch.set_num_threads(1)
    cuda = a.device.startswith("cuda")
    run_rlkit(300, 0, a.device), run_sb3(300, 0, a.device)  # warm-up: imports, allocator, cuBLAS handles
    n = a.bare_updates or (2000 if cuda else 200)
    ours, theirs, eager, sb3_order, bare = [], [], [], [], []
    for rep in range(a.reps):
        ours.append(run_rlkit(a.steps, rep, a.device))
        bare.append(bare_update_rate(a.device, n))  # right after rlkit's run: same background load on a 2-core CPU
        theirs.append(run_sb3(a.sb3_steps, rep, a.device))
        line = (f"rep {rep}: rlkit {ours[-1]:,.0f} steps/s   SB3 {theirs[-1]:,.0f} steps/s   ratio "
                f"{ours[-1] / theirs[-1]:.2f}x   bare update {bare[-1]:,.0f}/s "
                f"(rlkit at {ours[-1] / bare[-1]:.2f} of it)")
        if a.sb3_order:
            sb3_order.append(run_rlkit(a.steps, rep, a.device, "sb3_order"))
            line += f"   (rlkit overlap_env_step=False {sb3_order[-1]:,.0f} steps/s, {sb3_order[-1] / theirs[-1]:.2f}x)"
        if cuda and a.eager:
            eager.append(run_rlkit(a.sb3_steps, rep, a.device, "eager"))
            line += f"   (rlkit eager {eager[-1]:,.0f} steps/s)"
        print(line, flush=True)
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"median over {a.reps} reps ({a.device}; rlkit {a.steps:,} steps, SB3 {a.sb3_steps:,} steps): "
          f"rlkit {mo:,.0f} steps/s, SB3 {mt:,.0f} steps/s, ratio {mo / mt:.2f}x")
    if sb3_order:
        print(f"rlkit with overlap_env_step=False: median {statistics.median(sb3_order):,.0f} steps/s, "
              f"ratio {statistics.median(sb3_order) / mt:.2f}x")
    mb = statistics.median(bare)
    print(f"bare rlkit update ({'CUDA graph' if cuda else 'eager'}): median {mb:,.0f} updates/s; "
          f"rlkit steps/s over it: {mo / mb:.2f}")
    if cuda and a.eager:
        print(f"bare rlkit update (eager): {bare_update_rate(a.device, n // 4, graph=False):,.0f} updates/s; "
              f"rlkit eager median {statistics.median(eager):,.0f} steps/s")
    if cuda and a.profile:
        for graph in (True, False):
            try:
                profile_update(a.device, graph)
            except Exception as e:  # noqa: BLE001 - the profile is a diagnostic; the figures above stand
                print(f"profile ({graph=}) failed: {e!r}")


if __name__ == "__main__":
    main()
