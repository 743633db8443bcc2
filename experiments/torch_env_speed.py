"""Steps per second of the torch env backend alone (rlkit/core/torch_envs.py): no policy, no collector; fixed
random actions drawn once. For each device, env, number of sub-envs N and mode:

  eager  env.step(actions) from Python, one call per vector step;
  graph  (CUDA only) `--graph-steps` calls of env.step captured once as a CUDA graph and replayed (the state is
         updated in place and the reset draws come from a counter stream whose device counter every replay
         advances, so replays continue the episodes with fresh reset states).

Prints one line per measurement and writes a JSON list to --out. The issue's target on an H200: >= 1e9
CartPole steps/s at N = 1M (docs/performance.md, "GPU-native classic control").

  PYTHONPATH=$PWD python experiments/torch_env_speed.py --devices cpu --sizes 1000,10000 --seconds 0.5
  PYTHONPATH=$PWD python experiments/torch_env_speed.py --devices cuda --sizes 1000,10000,100000,1000000
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch

from rlkit import TORCH_ENV_IDS, make_vec_env


def _actions(env: Any, n: int, device: torch.device) -> torch.Tensor:
    space = env.single_action_space
    g = torch.Generator(device="cpu").manual_seed(0)
    if hasattr(space, "n"):
        return torch.randint(0, int(space.n), (n,), generator=g).to(device)
    low, high = float(space.low[0]), float(space.high[0])
    return (low + (high - low) * torch.rand(n, 1, generator=g)).to(device)


def timed(call: Callable[[], Any], steps_per_call: int, n: int, device: torch.device, seconds: float) -> float:
    """Vector steps x N per second of call(), run for about `seconds` after a warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        call()
    sync()
    calls, t0 = 0, time.perf_counter()
    block = 1
    while True:
        for _ in range(block):
            call()
        calls += block
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls * steps_per_call * n / elapsed
        block = min(block * 2, 1024)


def _graph_call(env: Any, actions: torch.Tensor, k: int) -> Callable[[], Any]:
    """Capture k env steps as one CUDA graph; replaying it advances every sub-env by k steps."""
    graph = torch.cuda.CUDAGraph()  # the env's counter stream needs no generator registered
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graphs asks
        for _ in range(3):
            env.step(actions)
    torch.cuda.current_stream().wait_stream(stream)
    with torch.cuda.graph(graph):
        for _ in range(k):
            env.step(actions)
    return graph.replay


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--envs", default=",".join(TORCH_ENV_IDS))
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--modes", default="eager,graph")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--graph-steps", type=int, default=20, help="env steps per captured CUDA graph")
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    p.add_argument("--out", default="torch_env_speed.json")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    results = []
    for dev_name in args.devices.split(","):
        if dev_name.startswith("cuda") and not torch.cuda.is_available():
            print(f"skip {dev_name}: no CUDA device")
            continue
        device = torch.device(dev_name)
        for env_id in args.envs.split(","):
            for n in (int(float(s)) for s in args.sizes.split(",")):
                for mode in args.modes.split(","):
                    if mode == "graph" and device.type != "cuda":
                        continue
                    env = make_vec_env(env_id, n, seed=0, backend="torch", device=device, dtype=dtype)
                    actions = _actions(env, n, device)
                    try:
                        if mode == "eager":
                            rate = timed(lambda e=env, a=actions: e.step(a), 1, n, device, args.seconds)
                        else:
                            rate = timed(_graph_call(env, actions, args.graph_steps), args.graph_steps, n, device,
                                          args.seconds)
                    except (RuntimeError, torch.cuda.OutOfMemoryError) as e:  # one failed capture: say so, go on
                        print(f"{str(device):<7} {env_id:<26} N={n:>9,} {mode:<6} failed: {str(e).splitlines()[0]}")
                        continue
                    row = {"device": str(device), "env_id": env_id, "n_envs": n, "mode": mode,
                           "dtype": args.dtype, "steps_per_s": rate}
                    results.append(row)
                    print(f"{str(device):<7} {env_id:<26} N={n:>9,} {mode:<6} {rate:>16,.0f} steps/s", flush=True)
                    del env, actions
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
