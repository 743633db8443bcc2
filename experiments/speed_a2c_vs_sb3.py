"""Speed: rlkit A2C against Stable-Baselines3 A2C on CartPole-v1, side by side in one process.

Identical settings: 8 envs (Gymnasium SyncVectorEnv for both), n_steps 5, separate 64-64 tanh trunks for policy
and value, RMSprop(lr 7e-4, alpha 0.99, eps 1e-5), gamma 0.99, gae_lambda 1.0 (n-step returns), vf_coef 0.5,
ent_coef 0, max_grad_norm 0.5, no observation normalisation, one torch thread, CPU. Runs alternate
(rlkit, SB3, rlkit, SB3, ...) so background load hits both alike. Both log every 100 updates (SB3's A2C default
log_interval). Prints environment steps per second of each run, the medians and the ratio.

    python experiments/speed_a2c_vs_sb3.py --steps 100000 --reps 3

Stable-Baselines3 is a benchmark-only extra (pip install -e ".[bench]"); rlkit never imports it.
"""
from __future__ import annotations

import argparse
import time

import torch

from side_by_side import alternate  # experiments/side_by_side.py


def run_rlkit(steps: int, seed: int) -> float:
    from rlkit import A2C

    agent = A2C("CartPole-v1", seed=seed, device="cpu", n_envs=8, n_steps=5, hidden_sizes=(64, 64),
                activation="tanh", shared_trunk=False, optimizer="rmsprop", learning_rate=7e-4, rms_alpha=0.99,
                rms_eps=1e-5, gamma=0.99, gae_lambda=1.0, vf_coef=0.5, ent_coef=0.0, max_grad_norm=0.5,
                normalize_obs=False, normalize_advantage=False)
    t0 = time.perf_counter()
    agent.learn(steps, progress=False, log_interval=4000)  # 100 updates of 40 steps: SB3's log_interval
    return agent.num_timesteps / (time.perf_counter() - t0)


def run_sb3(steps: int, seed: int) -> float:
    from stable_baselines3 import A2C as SB3A2C
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)  # DummyVecEnv of 8, as SB3 users run it
    model = SB3A2C("MlpPolicy", env, n_steps=5, learning_rate=7e-4, gamma=0.99, gae_lambda=1.0, vf_coef=0.5,
                   ent_coef=0.0, max_grad_norm=0.5, rms_prop_eps=1e-5, use_rms_prop=True,
                   normalize_advantage=False, seed=seed, device="cpu", verbose=0,
                   policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=torch.nn.Tanh))
    t0 = time.perf_counter()
    model.learn(steps, log_interval=100)
    return model.num_timesteps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="only profile one rlkit run (cProfile, top 25 by own time)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.profile:
        import cProfile
        import pstats

        run_rlkit(4000, 0)
        cProfile.runctx("run_rlkit(a.steps, 0)", globals(), {"a": a, "run_rlkit": run_rlkit}, "/tmp/a2c_speed.prof")
        pstats.Stats("/tmp/a2c_speed.prof").sort_stats("cumulative").print_stats(25)
        return
    alternate(run_rlkit, run_sb3, "SB3", a.steps, a.reps, warmup_steps=4000)

if __name__ == "__main__":
    main()
