"""Many seeds in one process (rlkit.core.seeds.SeedBatch) against one seed alone, in the same process and device.

  ddpg  DDPG on --ddpg-env: the environment steps per second of ONE seed trained alone, and the aggregate steps per
        second (K x steps / wall time) of --ddpg-seeds seeds trained as one batch; the ratio is the speed-up of
        training the K seeds in one process over training them one after another (target on an H200 with
        HalfCheetah-v5, 8 seeds: >= 5x).
  a2c   A2C on the GPU-native torch CartPole (env_backend="torch"): the wall time of ONE seed and of --a2c-seeds
        seeds as one batch, for the same number of environment steps per seed; the ratio is what K seeds cost
        over one (target on an H200, 256 seeds: <= 3x). Every seed draws what its lone run draws: its action
        noise and env resets come from counter-based streams (rlkit.core.streams), one draw for all seeds and
        all steps of a rollout. (SeedBatch(exact=False) changes nothing here: A2C on torch envs takes no draw
        from the per-seed generators it would share; it used to be measured as a second, "shared", batch.)

Each measurement trains with learn() (construction, and the DDPG random warm-up steps, excluded from the timing;
everything learn() does included). DDPG runs --ddpg-repeats rounds: the lone seed, then each batch, each learner
continuing its own training, and prints each round's ratio and their median. For A2C the first three iterations
(two eager, then the capture of the CUDA graphs) are taken before the clock starts too, and a second ratio
includes them and the construction.
One torch thread. Prints one line per measurement and a summary.

  PYTHONPATH=$PWD python experiments/seed_batching.py --device cpu --ddpg-env Pendulum-v1 --ddpg-seeds 4 \\
      --ddpg-steps 600 --a2c-seeds 8 --a2c-steps 2000
  PYTHONPATH=$PWD python experiments/seed_batching.py --device cuda --ddpg-env HalfCheetah-v5 --ddpg-seeds 8 \\
      --ddpg-steps 5000 --a2c-seeds 256 --a2c-steps 20000
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from rlkit import A2C, DDPG, SeedBatch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed_learn(learner: Any, steps: int, device: str) -> float:
    _sync(device)
    t0 = time.perf_counter()
    learner.learn(steps, progress=False, log_interval=10**9)
    _sync(device)
    return time.perf_counter() - t0


def ddpg(args: argparse.Namespace) -> dict[str, float]:
    hidden = tuple(int(w) for w in args.ddpg_hidden_sizes.split(","))
    cfg = dict(hidden_sizes=hidden, batch_size=256, buffer_size=max(args.ddpg_steps, 1000),
               learning_starts=args.ddpg_learning_starts, device=args.device, vectorization=args.ddpg_vectorization)
    warm = args.ddpg_learning_starts  # the random warm-up steps are taken before the clock starts
    alone = DDPG(args.ddpg_env, seed=0, **cfg)
    alone.learn(warm, progress=False)
    spins = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}[args.ddpg_spin]
    labels = {None: "auto", True: "on", False: "off"}
    batches = {}
    for spin in spins:
        batches[spin] = SeedBatch(DDPG, args.ddpg_env, list(range(args.ddpg_seeds)), **cfg, worker_spin=spin)
        batches[spin].learn(warm, progress=False)
    ratios: dict[Any, list[float]] = {spin: [] for spin in spins}
    ones: list[float] = []
    out: dict[str, float] = {}
    for r in range(args.ddpg_repeats):  # each round: the lone seed, then each batch, all continuing their training
        t1 = _timed_learn(alone, args.ddpg_steps, args.device)
        one = args.ddpg_steps / t1
        ones.append(one)
        for spin, batch in batches.items():
            tk = _timed_learn(batch, args.ddpg_steps, args.device)
            agg = args.ddpg_seeds * args.ddpg_steps / tk
            ratios[spin].append(agg / one)
            print(f"ddpg {args.ddpg_env} on {args.device} (hidden {hidden}, {args.ddpg_vectorization} envs, worker "
                  f"spin {labels[spin]}), round {r + 1} of {args.ddpg_repeats}: 1 seed {one:,.0f} steps/s "
                  f"({1e3 * t1 / args.ddpg_steps:.3f} ms per step); {args.ddpg_seeds} seeds in one process "
                  f"{agg:,.0f} steps/s in all ({1e3 * tk / args.ddpg_steps:.3f} ms per lockstep step; "
                  f"{agg / one:.2f}x)")
            out[f"ddpg_batch_sps_spin_{labels[spin]}_round{r + 1}"] = agg
    out["ddpg_one_sps_median"] = statistics.median(ones)
    for spin, rs in ratios.items():
        out[f"ddpg_speedup_spin_{labels[spin]}_median"] = statistics.median(rs)
        print(f"ddpg worker spin {labels[spin]}: speed-up of {args.ddpg_seeds} seeds over one, median of "
              f"{len(rs)} rounds {statistics.median(rs):.2f}x (rounds: {', '.join(f'{x:.2f}x' for x in rs)})")
    for learner in (alone, *(a for b in batches.values() for a in b.agents)):
        learner.env.close()
    return out


def a2c(args: argparse.Namespace) -> dict[str, float]:
    cfg = dict(n_envs=args.a2c_envs, n_steps=5, env_backend="torch", device=args.device)
    per_iter = cfg["n_envs"] * cfg["n_steps"]
    learners, times = {}, {}
    for who, build in (("one", lambda: A2C("CartPole-v1", seed=0, **cfg)),
                       ("batch", lambda: SeedBatch(A2C, "CartPole-v1", list(range(args.a2c_seeds)), **cfg))):
        _sync(args.device)
        t0 = time.perf_counter()
        learners[who] = learner = build()
        learner.learn(3 * per_iter, progress=False)  # 2 eager iterations, then the graphs' capture (on CUDA)
        _sync(args.device)
        times[f"{who}_start"] = time.perf_counter() - t0
        times[who] = _timed_learn(learner, args.a2c_steps, args.device)
    t1, tk = times["one"], times["batch"]
    s1, sk = t1 + times["one_start"], tk + times["batch_start"]
    print(f"a2c CartPole-v1 (torch env, {args.a2c_envs} envs per seed) on {args.device}, {args.a2c_steps:,} steps per "
          f"seed: 1 seed {t1:.2f} s; {args.a2c_seeds} seeds in one process (exact streams) {tk:.2f} s "
          f"({tk / t1:.2f}x the wall time). With construction, 2 eager iterations and the graphs' capture: "
          f"{s1:.2f} s and {sk:.2f} s ({sk / s1:.2f}x)")
    return {"a2c_one_s": t1, "a2c_batch_exact_s": tk, "a2c_time_ratio_exact": tk / t1,
            "a2c_one_s_with_start": s1, "a2c_batch_s_with_start": sk, "a2c_time_ratio_with_start": sk / s1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--which", default="ddpg,a2c")
    p.add_argument("--ddpg-env", default="Pendulum-v1")
    p.add_argument("--ddpg-seeds", type=int, default=8)
    p.add_argument("--ddpg-steps", type=int, default=2000)
    p.add_argument("--ddpg-learning-starts", type=int, default=100)
    p.add_argument("--ddpg-hidden-sizes", default="400,300", help="comma-separated layer widths (small ones: the "
                   "host side dominates, as on a GPU)")
    p.add_argument("--ddpg-vectorization", default="auto", choices=("auto", "sync", "async"),
                   help="auto: a lone seed's envs in this process, a batch's in shared worker processes (several "
                   "envs each, all seeds stepped as one); sync: in this process; async: one worker process per env")
    p.add_argument("--ddpg-spin", default="auto", choices=("auto", "on", "off", "both"),
                   help="the shared env workers' polling (DDPGConfig.worker_spin); both: a batch with, one without")
    p.add_argument("--ddpg-repeats", type=int, default=3, help="rounds of (the lone seed, then each batch), every "
                   "learner continuing its training; a ratio per round and their median (the lone seed's speed "
                   "varies from run to run)")
    p.add_argument("--a2c-seeds", type=int, default=256)
    p.add_argument("--a2c-envs", type=int, default=8)
    p.add_argument("--a2c-steps", type=int, default=20000)
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    torch.set_num_threads(1)
    out: dict[str, Any] = {"device": args.device}
    which = set(args.which.split(","))
    if "ddpg" in which:
        out.update(ddpg(args))
    if "a2c" in which:
        out.update(a2c(args))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
