"""Training throughput on the GPU with the torch env backend: environment steps per second of training (rollout
+ update, nothing else in between) for A2C, REINFORCE and TRPO on torch CartPole-v1, over a sweep of n_envs,
with and without CUDA graphs (cuda_graphs=True / False); and the env alone (no policy) at 1M sub-envs.

Each training measurement runs `--log-every` iterations before the clock starts (the two eager warm-up
iterations and the graph captures happen there; the first log point is where the clock starts) and then
`--timed-iters` more; the clock reads at log points, whose one host read waits for the GPU, so the rate counts
finished work: (steps at the last log - steps at the first) / (time between them). The log points themselves
(one host transfer every `--log-every` iterations) are part of the timed loop, as in real training.

THROUGHPUT_SETTINGS below are the per-algorithm configs measured (documented there); TRPO's critic minibatch
is a quarter of the batch (four minibatches per critic epoch) at every size.

  PYTHONPATH=$PWD python experiments/gpu_throughput.py                                   # on a GPU
  PYTHONPATH=$PWD python experiments/gpu_throughput.py --device cpu --sizes 256 --timed-iters 4 --log-every 2 \\
      --env-sizes 10000                                                                  # CPU smoke test
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch
from torch_env_speed import timed  # this folder is on sys.path when a script here runs

# Per-algorithm settings (Config fields) for the throughput runs: the 64-64 tanh MLPs of the defaults; short
# rollouts that keep the batch (n_envs x n_steps) in the range of a real run's updates.
THROUGHPUT_SETTINGS: dict[str, dict[str, Any]] = {
    # the race's settings (experiments/gpu_cartpole_race.py): Adam, normalised GAE advantages
    "a2c": {"n_steps": 16, "optimizer": "adam", "learning_rate": 1e-2, "gae_lambda": 0.95,
            "normalize_advantage": True},
    # reward-to-go over 32 steps (bootstrapped by the baseline), 5 baseline steps per update (the default)
    "reinforce": {"n_steps": 32},
    # the defaults' trust region: 15 CG iterations, 10 line-search candidates, 10 critic epochs
    "trpo": {"n_steps": 16},
}


def _sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def train_rate(algo: str, n_envs: int, graphs: bool, device: torch.device, timed_iters: int, log_every: int
               ) -> tuple[float, bool]:
    """(environment steps per second of training after the warm-up, whether graphs were used)."""
    import rlkit

    cls = getattr(rlkit, {"a2c": "A2C", "reinforce": "REINFORCE", "trpo": "TRPO"}[algo])
    cfg = dict(THROUGHPUT_SETTINGS[algo])
    if algo == "trpo":
        cfg["batch_size"] = max(n_envs * cfg["n_steps"] // 4, 64)
    agent = cls("CartPole-v1", seed=0, device=device, env_backend="torch", n_envs=n_envs, cuda_graphs=graphs, **cfg)
    batch = n_envs * agent.config.n_steps
    marks: list[tuple[float, int]] = []
    agent.learn((log_every + timed_iters) * batch, progress=False, log_interval=log_every * batch,
                callback=lambda a, m: marks.append((time.perf_counter(), a.num_timesteps)))
    (t0, s0), (t1, s1) = marks[0], marks[-1]
    return (s1 - s0) / (t1 - t0), bool(agent.cuda_graphs)


def env_rate(n_envs: int, graphs: bool, device: torch.device, steps_per_call: int, seconds: float) -> float:
    """Vector steps x n_envs per second of the env alone, fixed random actions; with graphs, `steps_per_call`
    env steps captured as one CUDA graph and replayed."""
    from rlkit import GraphedStep, make_vec_env

    env = make_vec_env("CartPole-v1", n_envs, seed=0, backend="torch", device=device)
    actions = torch.randint(0, 2, (n_envs,), device=device, generator=torch.Generator(device=device).manual_seed(0))
    call = GraphedStep(lambda: [env.step(actions) for _ in range(steps_per_call)], graphs, "env steps", warmup=1)
    return timed(call, steps_per_call, n_envs, device, seconds)  # the same clock as experiments/torch_env_speed.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--algos", default="a2c,reinforce,trpo")
    p.add_argument("--sizes", default="4096,16384,65536", help="n_envs of the training runs")
    p.add_argument("--graphs", default="on,off", help="on, off or both")
    p.add_argument("--timed-iters", type=int, default=50, help="timed training iterations (a multiple of --log-every)")
    p.add_argument("--log-every", type=int, default=10, help="iterations between log points (and before the clock)")
    p.add_argument("--env-sizes", default="1000000", help="n_envs of the env-only measurements ('' for none)")
    p.add_argument("--env-steps-per-call", type=int, default=20)
    p.add_argument("--seconds", type=float, default=2.0, help="time per env-only measurement")
    p.add_argument("--out", default="gpu_throughput.json")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.log_every < 3 and device.type == "cuda":
        p.error("--log-every must be >= 3 (two eager warm-up iterations and the capture come before the clock)")
    if args.log_every < 1 or args.timed_iters < args.log_every or args.timed_iters % args.log_every:
        p.error("--timed-iters must be a positive multiple of --log-every")
    modes = [m == "on" for m in args.graphs.split(",")]
    if device.type != "cuda" and True in modes:
        print(f"note: CUDA graphs need a CUDA device; on {device} only the eager rows are measured")
        modes = [m for m in modes if not m] or [False]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append({"device": str(device), "gpu": gpu, "torch": torch.__version__, **row})
        graphs = "graph" if row["cuda_graphs"] else "eager"
        print(f"{row['what']:<10} N={row['n_envs']:>9,}  {graphs:<5}  {row['steps_per_s']:>16,.0f} env steps/s",
              flush=True)

    for algo in args.algos.split(","):
        for n in (int(float(s)) for s in args.sizes.split(",")):
            for graphs in modes:
                rate, used = train_rate(algo, n, graphs, device, args.timed_iters, args.log_every)
                if graphs and not used:
                    print(f"  ({algo} N={n:,}: the CUDA graphs fell back to eager; see the warning above)")
                report({"what": algo, "n_envs": n, "cuda_graphs": used, "steps_per_s": rate,
                        "settings": THROUGHPUT_SETTINGS[algo], "timed_iters": args.timed_iters,
                        "log_every": args.log_every})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    for n in (int(float(s)) for s in args.env_sizes.split(",") if s):
        for graphs in modes:
            rate = env_rate(n, graphs, device, args.env_steps_per_call, args.seconds)
            report({"what": "env only", "n_envs": n, "cuda_graphs": graphs, "steps_per_s": rate,
                    "steps_per_call": args.env_steps_per_call})
    print("\n| run | n_envs | CUDA graphs | env steps/s |\n|---|---:|---|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['n_envs']:,} | {'yes' if r['cuda_graphs'] else 'no'} | {r['steps_per_s']:.3g} |")
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
