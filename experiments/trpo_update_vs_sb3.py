"""One TRPO update, rlkit against sb3-contrib, on the same rollout with the same weights.

sb3-contrib TRPO (MlpPolicy, VecNormalize) trains on a MuJoCo env with rl-zoo3's settings. Before each of its
updates this script takes sb3-contrib's rollout buffer (normalised observations, actions, normalised rewards,
episode ends), its policy and value weights and its Adam state, and gives the same to a fresh rlkit TRPO
(normalize_obs off: the observations are already normalised). sb3-contrib adds the time-limit bootstrap
gamma * V(terminal obs) to the reward; rlkit gets the reward without it, the truncated flags and the terminal
observations (as VecNormalize normalised them), so its own truncation path runs. Then sb3-contrib's train() and
rlkit's TRPO.update() (GAE, one trust-region step, n_critic_updates epochs of the critic on the same minibatches:
sb3-contrib's shuffles, carried over) run, and the script prints, per update:

  * the policy step theta_new - theta_old of each: cosine, norms, the largest difference;
  * the line search: how many candidates sb3-contrib tried and rlkit's accepted index, the KL each reached;
  * the critic after n_critic_updates epochs: the largest difference.

sb3-contrib's KL of a diagonal Gaussian is the mean over the batch AND the action dimensions (its kl_divergence
is not summed over them), rlkit's the mean over the batch of the sum: sb3-contrib's KL is rlkit's / D, its Fisher
F / D. So sb3-contrib with (target_kl, cg_damping) is rlkit with (D * target_kl, D * cg_damping): --scale
action-dims (the default) gives rlkit those and the two updates agree to float round-off; --scale none gives rlkit
the same numbers, as its MuJoCo presets had before, and the steps differ (cosine about 0.93 on Hopper, 0.85 on
Walker2d; rlkit's step reaches a third (Hopper) or a fifth (Walker2d) of sb3-contrib's KL). sb3-contrib's line
search measures KL(new || old), rlkit's KL(old || new): the printed KLs are each side's own (sb3-contrib's per
action dimension). sb3-contrib starts conjugate gradient from 1e-4 * N(0, 1) noise; --cg-noise keeps that, else
the script starts it from 0 as rlkit does.

    python experiments/trpo_update_vs_sb3.py --env Hopper-v5 --updates 3
    python experiments/trpo_update_vs_sb3.py --env Hopper-v5 --updates 3 --scale none
    python experiments/trpo_update_vs_sb3.py --env Hopper-v5 --updates 2 --max-episode-steps 40  # truncations

sb3-contrib is a benchmark-only extra (pip install -e ".[bench]"); rlkit never imports it.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from rlkit import TRPO

PRESET = dict(n_steps=1024, batch_size=128, gamma=0.99, gae_lambda=0.95, cg_max_steps=25, cg_damping=0.1,
              n_critic_updates=20, learning_rate=1e-3)


def copy_weights(sb3_policy: Any, agent: TRPO, adam: Any) -> None:
    """sb3-contrib's MlpPolicy (separate 64-64 pi and vf nets) -> rlkit's actor and critic, and its Adam state
    (critic parameters only: the actor's never step) -> rlkit's FlatAdam."""
    p = sb3_policy
    pairs = [(agent.actor.net.hidden[0], p.mlp_extractor.policy_net[0]),
             (agent.actor.net.hidden[1], p.mlp_extractor.policy_net[2]), (agent.actor.net.head, p.action_net),
             (agent.critic.net.hidden[0], p.mlp_extractor.value_net[0]),
             (agent.critic.net.hidden[1], p.mlp_extractor.value_net[2]), (agent.critic.net.head, p.value_net)]
    with torch.no_grad():
        for ours, theirs in pairs:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        agent.actor.log_std.copy_(p.log_std)
    vf_params = []
    for _, m in pairs[3:]:
        vf_params += [m.weight, m.bias]
    states = [adam.state.get(q, {}) for q in vf_params]
    if states[0]:
        agent.vf_optimizer.exp_avg.copy_(torch.cat([s["exp_avg"].reshape(-1) for s in states]))
        agent.vf_optimizer.exp_avg_sq.copy_(torch.cat([s["exp_avg_sq"].reshape(-1) for s in states]))
        agent.vf_optimizer.steps = int(states[0]["step"])


def sb3_policy_vector(p: Any) -> torch.Tensor:
    """sb3-contrib's actor parameters flat, in the order both libraries use (log_std, hidden layers, head)."""
    parts = [p.mlp_extractor.policy_net[0], p.mlp_extractor.policy_net[2], p.action_net]
    return torch.cat([p.log_std.detach()] + [t.detach().reshape(-1) for m in parts for t in (m.weight, m.bias)])


def sb3_critic_vector(p: Any) -> torch.Tensor:
    parts = [p.mlp_extractor.value_net[0], p.mlp_extractor.value_net[2], p.value_net]
    return torch.cat([t.detach().reshape(-1) for m in parts for t in (m.weight, m.bias)])


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--updates", type=int, default=4, help="sb3-contrib updates to compare (each on its rollout)")
    ap.add_argument("--target-kl", type=float, default=0.01)
    ap.add_argument("--max-episode-steps", type=int, default=0,
                    help="time limit (0: the env's own); a short one makes truncations to test the bootstrap")
    ap.add_argument("--scale", choices=("action-dims", "none"), default="action-dims",
                    help="rlkit's max_kl and cg_damping: sb3-contrib's times the action dimensions (the same update) "
                         "or the same numbers (the rlkit presets before this comparison)")
    ap.add_argument("--cg-noise", action="store_true", help="keep sb3-contrib's random start of conjugate gradient")
    args = ap.parse_args()

    import sb3_contrib.trpo.trpo as sb3_trpo
    from sb3_contrib import TRPO as SB3TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

    torch.set_num_threads(1)
    env_kwargs = {"max_episode_steps": args.max_episode_steps} if args.max_episode_steps else None

    class Recorder(VecEnvWrapper):
        """Below VecNormalize: keeps each step's info dicts, into which VecNormalize then writes the terminal
        observation normalised with that step's statistics."""

        def __init__(self, venv: Any) -> None:
            super().__init__(venv)
            self.log: list[tuple[np.ndarray, list[dict[str, Any]]]] = []

        def reset(self) -> Any:
            return self.venv.reset()

        def step_wait(self) -> Any:
            obs, rew, dones, infos = self.venv.step_wait()
            self.log.append((dones.copy(), list(infos)))
            return obs, rew, dones, infos

    rec = Recorder(make_vec_env(args.env, n_envs=2, seed=args.seed, env_kwargs=env_kwargs))
    venv = VecNormalize(rec, gamma=PRESET["gamma"])
    model = SB3TRPO("MlpPolicy", venv, seed=args.seed, device="cpu", target_kl=args.target_kl, **PRESET)
    d = int(np.prod(venv.action_space.shape)) if args.scale == "action-dims" else 1
    cfg_kw = dict(PRESET, n_envs=2, max_kl=d * args.target_kl, cg_damping=d * PRESET["cg_damping"],
                  normalize_obs=False, normalize_reward=False, line_search_shrink=0.8, line_search_max_iter=10,
                  normalize_advantage=True, fvp_subsample=1.0)
    print(f"{args.env}: sb3-contrib target_kl {args.target_kl}, cg_damping {PRESET['cg_damping']}; rlkit max_kl "
          f"{cfg_kw['max_kl']:g}, cg_damping {cfg_kw['cg_damping']:g}")

    orig_train, orig_cg, orig_kl = model.train, sb3_trpo.conjugate_gradient_solver, sb3_trpo.kl_divergence
    captured: dict[str, Any] = {}
    n_done = [0]

    def cg(*a: Any, **k: Any) -> torch.Tensor:
        randn = torch.randn_like
        if not args.cg_noise:
            torch.randn_like = torch.zeros_like  # x0 = 0, as rlkit
        try:
            s = orig_cg(*a, **k)
        finally:
            torch.randn_like = randn
        return s

    def kl(*a: Any) -> torch.Tensor:
        out = orig_kl(*a)
        captured["kls"].append(float(out.detach().mean()))
        return out

    def train() -> None:
        buf, pol = model.rollout_buffer, model.policy
        T, N = buf.buffer_size, buf.n_envs
        data = {k: np.array(getattr(buf, k)) for k in ("observations", "actions", "rewards", "episode_starts")}
        last_obs, last_starts = np.array(model._last_obs), np.array(model._last_episode_starts)
        steps_log = rec.log[-T:]
        theta0, phi0 = sb3_policy_vector(pol).clone(), sb3_critic_vector(pol).clone()

        # ---- rlkit, from the same weights and Adam state, on the same rollout ----
        agent = TRPO(args.env, seed=args.seed, device="cpu", env_kwargs=env_kwargs, **cfg_kw)
        copy_weights(pol, agent, pol.optimizer)
        assert torch.equal(agent.pi_flat.param.detach(), theta0) and torch.equal(agent.vf_flat.param.detach(), phi0)
        cfg = agent.config
        obs = torch.as_tensor(data["observations"])  # [T, N, d], normalised by VecNormalize
        dones = np.concatenate([data["episode_starts"][1:], last_starts[None]], 0).astype(bool)
        trunc = np.zeros((T, N), bool)
        final = torch.zeros_like(obs)
        for t, (d, infos) in enumerate(steps_log):
            for i, info in enumerate(infos):
                if d[i] and info.get("TimeLimit.truncated") and info.get("terminal_observation") is not None:
                    trunc[t, i] = True
                    final[t, i] = torch.as_tensor(info["terminal_observation"])  # as VecNormalize normalised it
        with torch.no_grad():  # sb3-contrib's reward = r + gamma * V(terminal obs) where truncated: take it out
            v_final = pol.predict_values(final.reshape(T * N, -1)).view(T, N)
        rewards = torch.as_tensor(data["rewards"]) - torch.where(torch.as_tensor(trunc), cfg.gamma * v_final, 0.0)
        rb = agent.buffer
        rb.obs.copy_(obs)
        rb.actions.copy_(torch.as_tensor(data["actions"]))
        rb.rewards.copy_(rewards)
        rb.terminated.copy_(torch.as_tensor(dones & ~trunc))
        rb.truncated.copy_(torch.as_tensor(trunc))
        rb.final_obs.copy_(final)
        rb.last_obs.copy_(torch.as_tensor(last_obs))

        # ---- sb3-contrib's update (get() flattens its buffer env-major: index = env * T + t) ----
        perms: list[np.ndarray] = []
        perm0 = np.random.permutation

        def perm(n: Any) -> np.ndarray:
            p = perm0(n)
            perms.append(p.copy())
            return p

        captured["kls"] = []
        np.random.permutation = perm
        try:
            orig_train()
        finally:
            np.random.permutation = perm0
        step_sb3 = sb3_policy_vector(pol) - theta0
        n_tries_sb3 = len(captured["kls"]) - 1  # the first call builds the KL for the Fisher
        sb3_ok = bool(step_sb3.abs().max() > 0)

        # ---- rlkit's update: the critic's epochs use sb3-contrib's shuffles (its first one, drawn by the policy
        # step's get(batch_size=None), does not matter), mapped to rlkit's time-major index t * N + env ----
        assert len(perms) == cfg.n_critic_updates + 1, len(perms)
        mapped = iter(torch.as_tensor((p % T) * N + p // T) for p in perms[1:])
        randperm0 = torch.randperm
        torch.randperm = lambda n, **k: next(mapped)  # noqa: E731
        try:
            info = agent.update(rb)
        finally:
            torch.randperm = randperm0
        step_rl = agent.pi_flat.param.detach() - theta0
        cos = float(step_rl.dot(step_sb3) / (step_rl.norm() * step_sb3.norm())) if sb3_ok else float("nan")
        print(f"update {n_done[0] + 1}: {int(trunc.sum())} truncations in the rollout")
        print(f"          policy step: cos {cos:.8f}  |step| rlkit {float(step_rl.norm()):.5f} sb3 "
              f"{float(step_sb3.norm()):.5f}  max |difference| {float((step_rl - step_sb3).abs().max()):.2e} "
              f"(rel {rel(step_rl, step_sb3) if sb3_ok else float('nan'):.2e})")
        print(f"          line search: sb3 tried {n_tries_sb3} (accepted {sb3_ok}, KL(new||old) per dimension "
              f"{captured['kls'][-1]:.5f});  rlkit accepted step {int(info['train/line_search_steps'])} "
              f"(accepted {bool(info['train/line_search_accepted'])}, KL(old||new) {float(info['train/kl']):.5f})")
        phi_rl, phi_sb3 = agent.vf_flat.param.detach(), sb3_critic_vector(pol)
        print(f"          critic after {cfg.n_critic_updates} epochs: max |d phi| "
              f"{float((phi_rl - phi_sb3).abs().max()):.2e}  rel {rel(phi_rl - phi0, phi_sb3 - phi0):.2e} of its "
              "change", flush=True)
        n_done[0] += 1

    model.train = train
    sb3_trpo.conjugate_gradient_solver, sb3_trpo.kl_divergence = cg, kl
    n_steps = model.n_steps * 2
    model.learn(n_steps * args.updates)
    print(f"compared {n_done[0]} updates on {args.env} (seed {args.seed}, target_kl {args.target_kl})")


if __name__ == "__main__":
    main()
