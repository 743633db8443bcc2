"""Speed: rlkit TRPO against sb3-contrib TRPO on Pendulum-v1, side by side in one process.

Identical settings: 2 envs (Gymnasium SyncVectorEnv for rlkit, SB3's DummyVecEnv for sb3-contrib), n_steps 1024,
separate 64-64 tanh networks for policy and value (sb3-contrib's default MlpPolicy), gamma 0.9, gae_lambda 0.95,
normalised advantages, max_kl (target_kl) 0.01, 15 conjugate-gradient iterations, damping 0.1, line search
0.8 x 10, critic Adam lr 1e-3 with 15 epochs of minibatches of 128, no observation normalisation, one torch
thread, CPU. Runs alternate (rlkit, sb3-contrib, rlkit, ...) so background load hits both alike. Prints the
environment steps per second of each run, the medians and the ratio.

    python experiments/speed_trpo_vs_sb3.py --steps 40960 --reps 3

sb3-contrib is a benchmark-only extra (pip install -e ".[bench]"); rlkit never imports it.
"""
from __future__ import annotations

import argparse
import time

import torch

from side_by_side import alternate  # experiments/side_by_side.py

SETTINGS = dict(n_steps=1024, gamma=0.9, gae_lambda=0.95, cg_max_steps=15, cg_damping=0.1, n_critic_updates=15,
                batch_size=128, learning_rate=1e-3)


def run_rlkit(steps: int, seed: int) -> float:
    from rlkit import TRPO

    agent = TRPO("Pendulum-v1", seed=seed, device="cpu", n_envs=2, hidden_sizes=(64, 64), activation="tanh",
                 max_kl=0.01, line_search_shrink=0.8, line_search_max_iter=10, normalize_advantage=True,
                 normalize_obs=False, fvp_subsample=1.0, **SETTINGS)
    t0 = time.perf_counter()
    agent.learn(steps, progress=False)
    return agent.num_timesteps / (time.perf_counter() - t0)


def run_sb3(steps: int, seed: int) -> float:
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("Pendulum-v1", n_envs=2, seed=seed)
    model = SB3TRPO("MlpPolicy", env, target_kl=0.01, line_search_shrinking_factor=0.8, line_search_max_iter=10,
                    normalize_advantage=True, sub_sampling_factor=1, seed=seed, device="cpu", verbose=0,
                    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh),
                    **SETTINGS)
    t0 = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40_960)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    alternate(run_rlkit, run_sb3, "sb3-contrib", a.steps, a.reps, warmup_steps=4096)

if __name__ == "__main__":
    main()
