"""Actor-critic agents: QAC (Q actor-critic) and A2C (advantage actor-critic).

Sutton & Barto (2018, sec. 13.5); Konda & Tsitsiklis (2000) for QAC; Mnih et al. (2016) for A2C, the synchronous
variant of A3C; advantages by GAE, Schulman et al. (2016). Both follow the same policy gradient and differ ONLY
in what weights grad log pi (see `policy_loss` and the two `update` methods):

    g = E[ grad_theta log pi_theta(a_t | s_t) * Psi_t ] + ent_coef * grad H[pi_theta(. | s_t)]
    QAC:  Psi_t = Q_w(s_t, a_t)                        critic Q_w: TD(0) / SARSA
          y_t   = r_t + gamma * Q_w(s_{t+1}, a_{t+1})  a_{t+1} = the action the policy actually takes next
          w    <- argmin_w E[(Q_w(s_t, a_t) - y_t)^2]  (one semi-gradient step per rollout, y_t detached)
    A2C:  Psi_t = A_t = GAE(gamma, lambda)             critic V_phi
          delta_t = r_t + gamma * V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma * lambda * A_{t+1}
          loss = -E[log pi * A] - ent_coef * E[H] + vf_coef * E[(V(s_t) - (A_t + V(s_t)))^2]

Termination and truncation, as everywhere in rlkit: nothing is bootstrapped after a termination; after a
truncation (time limit) the target continues from the TRUE final observation (QAC: Q_w(s_final, a') with
a' ~ pi(s_final) sampled for it, since that episode takes no further action; A2C: V(s_final)); GAE traces are
cut on both. Deviations:
  * QAC's last step of a rollout bootstraps from Q_w(s_T, a_T) where a_T ~ pi(s_T) is sampled at update time
    and then really executed as the first action of the next rollout (so the SARSA target stays exact).
  * QAC's Psi can be standardised per batch (normalize_q; subtracting the batch mean acts as a baseline).
  * Linear learning-rate decay (lr_schedule="linear", both agents) runs over each learn() call, like SB3.
  * A2C's observation normaliser is updated from each rollout AFTER the update on it, so a rollout is trained
    with the statistics it was collected with; evaluation never changes the statistics.
  * A2C's reward_scale multiplies rewards before GAE (a fixed stand-in for SB3's VecNormalize reward scaling).
Speed (CPU, small MLPs: time goes to per-op overhead): A2C keeps its parameters in one flat buffer, acts in NumPy
on zero-copy views of the same weights (core NumpyPolicy), and on the CPU runs its update in NumPy with the
gradient derived by hand (`_update_numpy`, tested against autograd; `numpy_update=False` uses autograd); entropy
and explained variance are computed only on the updates it logs. gSDE (`use_sde`) follows Raffin et al. (2022).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlkit.core import agent_io
from rlkit.core import distributions as D
from rlkit.core.buffers import RolloutBuffer
from rlkit.core.config import (build_config, check_choice, check_hidden_sizes, check_nonnegative, check_positive,
                               check_sample_freq, check_unit_interval)
from rlkit.core.device import configure_threads, resolve_device, seed_everything
from rlkit.core.envs import EnvLike, SpaceError
from rlkit.core.networks import (ACTIVATIONS, DiscreteQCritic, NumpyEncoder, NumpyMLP, NumpyPolicy, ObsEncoder,
                                 QCritic, action_dim, make_actor, mlp)
from rlkit.core.optim import FlatAdam, FlatParameters, FlatRMSprop
from rlkit.core.returns import explained_variance, gae, normalize
from rlkit.core.rollout import RolloutCollector


@dataclass
class QACConfig:
    # Collection
    n_envs: int = 8
    """Number of parallel environments."""
    n_steps: int = 8
    """Steps per environment per update; a batch holds n_envs * n_steps transitions."""
    # Loss
    gamma: float = 0.99
    """Discount factor."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the policy loss."""
    normalize_q: bool = True
    """Standardise Q(s, a) within each batch before it weights grad log pi (mean 0, std 1)."""
    q_baseline: bool = False
    """Subtract the state-dependent baseline b(s) = E_{a~pi}[Q_w(s, a)] from Q_w(s, a) before it weights
    grad log pi (Discrete: the exact sum over actions; Box: Q_w at one fresh sample). Any function of the state is
    an unbiased baseline (Sutton & Barto 2018, sec. 13.4); it removes the variation across states from Psi."""
    # Optimisation
    learning_rate: float = 7e-4
    """Adam step size of the actor."""
    q_learning_rate: float = 1e-3
    """Adam step size of the critic Q_w."""
    lr_schedule: str = "constant"
    """constant, or linear (both step sizes decay to 0 over each learn() call)."""
    max_grad_norm: float = 0.5
    """Clip each gradient (actor, critic) to this global norm (0 disables clipping)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the actor and the critic."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, elu or gelu."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions)."""
    # Logging and checkpoints
    checkpoint_interval: int = 0
    """Save a checkpoint every this many environment steps when a run directory is used (0: only at the end)."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (the final one is always kept)."""
    torch_threads: int = 1
    """torch intra-op threads (one is fastest for small networks; 0 leaves torch's default)."""

    def __post_init__(self) -> None:
        check_positive(self, "n_envs", "n_steps", "learning_rate", "q_learning_rate")
        check_unit_interval(self, "gamma")
        check_nonnegative(self, "ent_coef", "max_grad_norm", "checkpoint_interval", "keep_checkpoints",
                          "torch_threads")
        check_hidden_sizes(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "lr_schedule", ("constant", "linear"))


@dataclass
class A2CConfig:
    # Collection
    n_envs: int = 8
    """Number of parallel environments."""
    n_steps: int = 5
    """Steps per environment per update; a batch holds n_envs * n_steps transitions."""
    normalize_obs: bool = False
    """Normalise observations by a running mean/std (saved in checkpoints, frozen during evaluation)."""
    # Loss
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: n-step returns minus V, as Stable-Baselines3's default; 0.0: one-step TD error)."""
    normalize_advantage: bool = False
    """Normalise advantages to mean 0, std 1 within each batch."""
    reward_scale: float = 1.0
    """Multiply rewards by this before computing returns (a fixed stand-in for reward normalisation)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss in the joint loss."""
    # Optimisation
    learning_rate: float = 7e-4
    """Step size (the initial one under linear decay)."""
    lr_schedule: str = "constant"
    """constant, or linear (decays to 0 over each learn() call)."""
    optimizer: str = "rmsprop"
    """rmsprop (torch RMSprop with rms_alpha/rms_eps, as Stable-Baselines3) or adam."""
    rms_alpha: float = 0.99
    """RMSprop smoothing constant."""
    rms_eps: float = 1e-5
    """RMSprop epsilon (also used as Adam's epsilon)."""
    max_grad_norm: float = 0.5
    """Clip the gradient to this global norm (0 disables clipping)."""
    shared_trunk: bool = False
    """One hidden trunk for actor and critic (True) or two separate ones (False, Stable-Baselines3's default)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of each trunk."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, elu or gelu."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions)."""
    use_sde: bool = False
    """Box actions: generalised state-dependent exploration (gSDE, Raffin et al. 2022) instead of independent
    Gaussian noise per step: a = mu(s) + z(s)^T E with z(s) the policy trunk's features (detached) and a noise
    matrix E ~ N(0, exp(log_std)^2) per env, redrawn at the start of every rollout (and every sde_sample_freq
    steps); log_std is then a [features, action_dim] parameter."""
    sde_sample_freq: int = -1
    """With use_sde: redraw the noise matrices every this many steps within a rollout (-1: once per rollout)."""
    ortho_init: bool = True
    """Orthogonal initialisation of the layers (False: PyTorch's default Linear initialisation)."""
    numpy_update: bool = True
    """On the CPU with tanh/relu trunks, run the update in NumPy with the gradient derived by hand (the same loss
    and, up to float rounding, the same gradient as autograd; ~5x fewer microseconds per update on small batches).
    False, another device or another activation: torch autograd."""
    # Logging and checkpoints
    checkpoint_interval: int = 0
    """Save a checkpoint every this many environment steps when a run directory is used (0: only at the end)."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (the final one is always kept)."""
    torch_threads: int = 1
    """torch intra-op threads (one is fastest for small networks; 0 leaves torch's default)."""

    def __post_init__(self) -> None:
        check_positive(self, "n_envs", "n_steps", "learning_rate", "rms_eps", "reward_scale")
        check_unit_interval(self, "gamma", "gae_lambda", "rms_alpha")
        check_nonnegative(self, "ent_coef", "vf_coef", "max_grad_norm", "checkpoint_interval", "keep_checkpoints",
                          "torch_threads")
        check_hidden_sizes(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "lr_schedule", ("constant", "linear"))
        check_choice(self, "optimizer", ("rmsprop", "adam"))
        check_sample_freq(self)


def policy_loss(logp: torch.Tensor, entropy: torch.Tensor | None, psi: torch.Tensor, ent_coef: float
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-E[log pi(a|s) * Psi] - ent_coef * E[H]; Psi = Q(s, a) for QAC, the advantage A for A2C (detached).
    With entropy None (not needed: ent_coef 0 and no logging) the term and its backward are skipped."""
    loss = -(logp * psi).mean()
    if entropy is None:
        return loss, {"train/loss_pi": loss.detach()}
    ent = entropy.mean()
    if ent_coef > 0:
        loss = loss - ent_coef * ent
    return loss, {"train/loss_pi": loss.detach(), "train/entropy": ent.detach()}


class QAC:
    """Q actor-critic: the policy gradient weighted by an on-policy SARSA critic Q_w(s, a)."""

    algo = "qac"
    supported_actions = ("Discrete", "Box")

    def __init__(self, env: EnvLike, config: QACConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", **overrides: Any) -> None:
        self.config = cfg = build_config(QACConfig, config, **overrides)
        self.device = resolve_device(device)
        configure_threads(cfg.torch_threads)
        self.seed = seed
        if seed is not None:
            seed_everything(seed)
        es = agent_io.setup_env(self.algo, env, cfg.n_envs, seed, self.supported_actions)
        self.env, self.env_id, self._env_factory = es.venv, es.env_id, es.factory
        self.observation_space, self.action_space = es.obs_space, es.action_space
        self.discrete = es.action_space.__class__.__name__ == "Discrete"

        self.actor = make_actor(es.obs_space, es.action_space, cfg.hidden_sizes, cfg.activation,
                                cfg.log_std_init).to(self.device)
        if self.discrete:  # one Q output per action
            self.critic = DiscreteQCritic(ObsEncoder(es.obs_space), int(es.action_space.n), cfg.hidden_sizes,
                                          cfg.activation).to(self.device)
        else:  # Q(s, a) on [features, action]; the action enters clipped to the Box, as the env executes it
            self.critic = QCritic(ObsEncoder(es.obs_space), action_dim(es.action_space), cfg.hidden_sizes,
                                  cfg.activation, orthogonal=True).to(self.device)
            self._low = torch.as_tensor(es.action_space.low, dtype=torch.float32, device=self.device)
            self._high = torch.as_tensor(es.action_space.high, dtype=torch.float32, device=self.device)
        self.pi_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.learning_rate)
        self.q_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.q_learning_rate)

        self.buffer = RolloutBuffer(cfg.n_steps, es.n_envs, es.obs_space.shape or (),
                                    () if self.discrete else es.action_space.shape,
                                    torch.int64 if self.discrete else torch.float32, self.device)
        self.collector = RolloutCollector(self.env, self.device, es.initial_obs)
        self._next = None  # (a_T, log pi(a_T|s_T)) chosen in update(), executed first in the next rollout
        self.num_timesteps = 0
        self.n_updates = 0

    # ---- acting -------------------------------------------------------------------------------------------
    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        policy = self.actor.mode if deterministic else (lambda o: self.actor.sample(o)[0])
        return agent_io.numpy_act(policy, obs, self.observation_space, self.action_space, self.device)

    def value(self, obs: Any) -> np.ndarray:
        """V(s) = E_{a~pi}[Q_w(s, a)]: exact for Discrete, one-sample estimate for Box."""
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        single = x.shape == torch.Size(self.observation_space.shape or ())
        x = x.unsqueeze(0) if single else x
        with torch.no_grad():
            v = self._q_baseline(x)
        v = v.cpu().numpy()
        return v[0] if single else v

    def _q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic(obs, actions if self.discrete else torch.maximum(torch.minimum(actions, self._high),
                                                                           self._low))

    def _rollout_policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._next is not None:  # the a_T that the last update bootstrapped from: execute exactly it
            nxt, self._next = self._next, None
            return nxt
        return self.actor.sample(obs)

    # ---- one update -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _q_baseline(self, obs: torch.Tensor) -> torch.Tensor:
        """b(s) = E_{a~pi}[Q_w(s, a)]: exact over Discrete actions, one sample for Box. Shape [B]."""
        if self.discrete:
            probs = torch.softmax(self.actor.dist_params(obs)[0], -1)
            return (probs * self.critic.all_actions(obs)).sum(-1)
        return self._q(obs, self.actor.sample(obs)[0])

    def td_targets(self, buf: RolloutBuffer, a_T: torch.Tensor, a_final: torch.Tensor) -> torch.Tensor:
        """SARSA targets y_t = r_t + gamma * Q_w(s_{t+1}, a_{t+1}), [T, N], without gradient:
          s_{t+1}, a_{t+1} = obs[t+1], actions[t+1]  (the action actually taken next; a_T at t = T-1)
                           = final_obs[t], a_final[t] where truncated (a' ~ pi(true final observation))
          y_t = r_t                                   where terminated (nothing after a real end)
        """
        T, N = buf.n_steps, buf.n_envs
        trunc_o = buf.truncated.view(T, N, *([1] * (buf.obs.dim() - 2)))
        trunc_a = buf.truncated.view(T, N, *([1] * (buf.actions.dim() - 2)))
        next_obs = torch.where(trunc_o, buf.final_obs, torch.cat([buf.obs[1:], buf.last_obs[None]]))
        next_act = torch.where(trunc_a, a_final, torch.cat([buf.actions[1:], a_T[None]]))
        with torch.no_grad():
            q_next = self._q(buf.flat(next_obs), buf.flat(next_act)).view(T, N)
        return buf.rewards + self.config.gamma * torch.where(buf.terminated, torch.zeros_like(q_next), q_next)

    def update(self, buf: RolloutBuffer) -> dict[str, torch.Tensor]:
        """One SARSA critic step and one policy-gradient step on a rollout. Returns tensor diagnostics."""
        cfg = self.config
        with torch.no_grad():
            a_T, logp_T = self.actor.sample(buf.last_obs)  # a_T: executed first in the next rollout
            self._next = (a_T, logp_T)
            a_final = self.actor.sample(buf.flat(buf.final_obs))[0].view_as(buf.actions)  # used where truncated
        y = self.td_targets(buf, a_T, a_final)
        obs, actions = buf.flat(buf.obs), buf.flat(buf.actions)
        q = self._q(obs, actions)
        loss_q = (q - y.reshape(-1)).pow(2).mean()
        self.q_optimizer.zero_grad(set_to_none=True)
        loss_q.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.q_optimizer.step()

        psi = q.detach()  # <- QAC: Q(s, a) weights grad log pi
        if cfg.q_baseline:
            psi = psi - self._q_baseline(obs)
        psi = normalize(psi) if cfg.normalize_q else psi
        logp, entropy = self.actor.log_prob_entropy(obs, actions)
        loss_pi, info = policy_loss(logp, entropy, psi, cfg.ent_coef)
        self.pi_optimizer.zero_grad(set_to_none=True)
        loss_pi.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
        self.pi_optimizer.step()
        info["train/loss_q"] = loss_q.detach()
        info["train/explained_variance"] = explained_variance(q.detach(), y.reshape(-1))
        self.n_updates += 1
        return info

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 10) -> "QAC":
        """Train for `total_steps` more environment steps (whole rollouts). With `run_dir`, write TensorBoard
        events, progress.csv, config.json and checkpoints/ there. Metrics are logged (and `callback(metrics)`
        called; returning False stops) every `log_interval` updates and after the last one."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval)
        cfg, target = self.config, run.target
        batch = cfg.n_steps * self.collector.n_envs
        try:
            t0, steps0 = time.perf_counter(), self.num_timesteps
            while self.num_timesteps < target:
                if cfg.lr_schedule == "linear":  # lr_k = lr_0 * (fraction of this call's steps remaining)
                    frac = (target - self.num_timesteps) / max(target - steps0, 1)
                    self.pi_optimizer.param_groups[0]["lr"] = cfg.learning_rate * frac
                    self.q_optimizer.param_groups[0]["lr"] = cfg.q_learning_rate * frac
                self.collector.collect(self.buffer, self._rollout_policy)
                self.num_timesteps += batch
                info = self.update(self.buffer)
                if self.n_updates % log_interval == 0 or self.num_timesteps >= target:
                    info["time/sps"] = (self.num_timesteps - steps0) / (time.perf_counter() - t0)
                    info.update(self.collector.episode_stats())
                    if not run.log(self, info, callback):
                        break
                run.checkpoint_if_due(self)
            run.finish(self)
        finally:
            run.close()
        return self

    # ---- evaluation and persistence -------------------------------------------------------------------------
    def evaluate(self, n_episodes: int = 10, deterministic: bool = True, env: Any = None) -> dict[str, float]:
        return agent_io.evaluate_agent(lambda o: self.act(o, deterministic), self._env_factory, n_episodes,
                                       self.seed, env)

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "pi_optimizer": self.pi_optimizer.state_dict(), "q_optimizer": self.q_optimizer.state_dict(),
                "collector": self.collector.state_dict(), "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.pi_optimizer.load_state_dict(state["pi_optimizer"])
        self.q_optimizer.load_state_dict(state["q_optimizer"])
        self.collector.load_state_dict(state["collector"])
        self.n_updates = int(state["n_updates"])
        self._next = None  # the loaded agent's env starts from a fresh reset, not from the saved s_T

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "QAC":
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)


class ActorCriticNet(nn.Module):
    """Encoder -> trunk(s) -> policy head (logits, or Gaussian means with a learned log_std) and value head.

    With shared_trunk one trunk feeds both heads; otherwise each head has its own (Stable-Baselines3's default).
    Orthogonal init: gain sqrt(2) inside the trunks, 0.01 on the policy head, 1 on the value head.
    The modules only hold the parameters (so state_dict() is the usual one); the forward passes call
    F.linear on cached (weight, bias) pairs: with 8-row batches, nn.Module call overhead costs more than the
    arithmetic.
    """

    def __init__(self, encoder: ObsEncoder, n_out: int, discrete: bool, cfg: A2CConfig) -> None:
        super().__init__()
        hs, act = cfg.hidden_sizes, cfg.activation
        self.encoder, self.discrete = encoder, discrete
        self.shared = cfg.shared_trunk
        ortho = cfg.ortho_init
        self.pi_trunk = mlp(encoder.dim, hs[:-1], hs[-1], act, output_gain=math.sqrt(2), orthogonal=ortho)
        self.v_trunk = None if cfg.shared_trunk else mlp(encoder.dim, hs[:-1], hs[-1], act, output_gain=math.sqrt(2),
                                                         orthogonal=ortho)
        self.pi_head = mlp(hs[-1], (), n_out, output_gain=0.01, orthogonal=ortho)
        self.v_head = mlp(hs[-1], (), 1, output_gain=1.0, orthogonal=ortho)
        # gSDE: log_std is per (trunk feature, action dim); sde_noise holds one exploration matrix per env.
        self.sde = cfg.use_sde and not discrete
        log_std_shape = (hs[-1], n_out) if self.sde else (n_out,)
        self.log_std = None if discrete else nn.Parameter(torch.full(log_std_shape, float(cfg.log_std_init)))
        self.sde_noise: torch.Tensor | None = None
        self.activation, self._act = act, _ACT_FN[act]
        self._pi = _linears(self.pi_trunk)
        self._v = self._pi if cfg.shared_trunk else _linears(self.v_trunk)
        self._pi_out, self._v_out = _linears(self.pi_head)[0], _linears(self.v_head)[0]

    def _trunk(self, x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        for w, b in layers:  # every trunk layer, the last included, is followed by the activation
            x = self._act(F.linear(x, w, b))
        return x

    def policy_out(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits (Discrete) or Gaussian means (Box): [B, n_out]."""
        return F.linear(self._trunk(self.encoder(obs), self._pi), *self._pi_out)

    def _head(self, h_pi: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The policy's parameters from trunk features: logits, Gaussian means, or with gSDE (means, per-sample
        log std), where std_j(s)^2 = sum_i z_i(s)^2 exp(log_std_ij)^2 (+1e-6, as SB3) and z = detached features."""
        out = F.linear(h_pi, *self._pi_out)
        return (out, D.sde_log_std(h_pi, self.log_std)) if self.sde else out

    def reset_noise(self, n: int) -> None:
        """gSDE: draw n exploration matrices E ~ N(0, exp(log_std)^2), one per env (torch's generator)."""
        self.sde_noise = D.sde_matrices(self.log_std, n)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): [B]."""
        return F.linear(self._trunk(self.encoder(obs), self._v), *self._v_out).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor | tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """(policy output, V) from one encoder pass (and one trunk pass when shared); the policy output is what
        _head returns."""
        x = self.encoder(obs)
        h_pi = self._trunk(x, self._pi)
        h_v = h_pi if self.shared else self._trunk(x, self._v)
        return self._head(h_pi), F.linear(h_v, *self._v_out).squeeze(-1)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The acting path: plain tensor ops, no distribution objects."""
        if self.sde:  # a = mu(s) + z(s)^T E_env (a batch of another size than the envs uses the first matrix)
            h = self._trunk(self.encoder(obs), self._pi)
            mean, log_std = self._head(h)
            if self.sde_noise is None:
                self.reset_noise(1)
            a = mean + D.sde_noise(h, self.sde_noise)
            return a, D.gaussian_log_prob(mean, log_std, a)
        out = self.policy_out(obs)
        if self.discrete:
            a = D.categorical_sample(out)
            return a, D.categorical_log_prob(out, a)
        a = D.gaussian_sample(out, self.log_std)
        return a, D.gaussian_log_prob(out, self.log_std, a)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.policy_out(obs)
        return out.argmax(-1) if self.discrete else out

    def log_prob_entropy(self, out: torch.Tensor, actions: torch.Tensor, entropy: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log pi(a|s) and (when asked) the entropy, from the policy output."""
        if self.discrete:  # one log_softmax for both
            log_p = torch.log_softmax(out, -1)
            ent = -(log_p.exp() * log_p).sum(-1) if entropy else None
            return log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1), ent
        mean, log_std = out if self.sde else (out, self.log_std)
        ent = D.gaussian_entropy(mean, log_std) if entropy else None
        return D.gaussian_log_prob(mean, log_std, actions), ent


    # ---- the same network in NumPy, differentiated by hand (A2CConfig.numpy_update) ----------------------------
    def numpy_views(self) -> None:
        """Build the NumPy forward/backward on views of the parameters (CPU; after FlatParameters made the .grad)."""
        act = self.activation
        self._np_encode = NumpyEncoder(self.encoder)
        self._np_pi = NumpyMLP(self._pi, act, out_activation=True)
        self._np_v = self._np_pi if self.shared else NumpyMLP(self._v, act, out_activation=True)
        self._np_pi_head, self._np_v_head = NumpyMLP([self._pi_out], act), NumpyMLP([self._v_out], act)

    def forward_numpy(self, obs: np.ndarray, n_policy: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        """(policy output for the first n_policy rows, V for every row, the layer outputs backward_numpy needs)."""
        x = self._np_encode(obs)
        hs_v = self._np_v.forward(x)
        hs_pi = hs_v if self.shared else self._np_pi.forward(x[:n_policy])
        head_pi = self._np_pi_head.forward(hs_pi[-1][:n_policy])
        head_v = self._np_v_head.forward(hs_v[-1])
        return head_pi[-1], head_v[-1][:, 0], (hs_pi, hs_v, head_pi, head_v)

    def backward_numpy(self, cache: tuple, g_out: np.ndarray, g_v: np.ndarray, g_log_std: np.ndarray | None) -> None:
        """Write d loss / d parameter into every .grad, given d loss / d policy output [B, n_out] and d loss / d V [B]
        for forward_numpy's first B rows, and d loss / d log_std (Box). A shared trunk gets both heads' sum."""
        hs_pi, hs_v, head_pi, head_v = cache
        g_h_pi = self._np_pi_head.backward(head_pi, g_out, input_grad=True)
        g_h_v = self._np_v_head.backward(head_v, g_v[:, None], input_grad=True)
        if self.shared:
            self._np_pi.backward(hs_pi, g_h_pi + g_h_v)
        else:
            self._np_pi.backward(hs_pi, g_h_pi)
            self._np_v.backward(hs_v, g_h_v)
        if g_log_std is not None:
            self.log_std.grad.numpy()[:] = g_log_std

    def pg_grad_numpy(self, out: np.ndarray, actions: np.ndarray, weights: np.ndarray, ent_coef: float,
                      entropy: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
        """policy_loss() differentiated by hand: (d loss / d out, d loss / d log_std or None, log pi(a|s), entropy
        or None) for loss = -mean(log pi(a|s) * weights) - ent_coef * mean(H)."""
        if self.discrete:
            g_out, logp, ent = D.categorical_pg_grad_np(out, actions, weights, ent_coef, entropy)
            return g_out, None, logp, ent
        return D.gaussian_pg_grad_np(out, self.log_std.detach().numpy(), actions, weights, ent_coef, entropy)


_ACT_FN: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "relu": torch.relu,
                                                             "elu": F.elu, "gelu": F.gelu}


def _linears(seq: nn.Sequential) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight, m.bias) for m in seq if isinstance(m, nn.Linear)]


class A2C:
    """Synchronous advantage actor-critic with GAE. See the module docstring for the equations."""

    algo = "a2c"
    supported_actions = ("Discrete", "Box")

    def __init__(self, env: EnvLike, config: A2CConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", **overrides: Any) -> None:
        self.config = cfg = build_config(A2CConfig, config, **overrides)
        self.device = resolve_device(device)
        configure_threads(cfg.torch_threads)
        self.seed = seed
        if seed is not None:
            seed_everything(seed)
        es = agent_io.setup_env(self.algo, env, cfg.n_envs, seed, self.supported_actions)
        self.env, self.env_id, self._env_factory = es.venv, es.env_id, es.factory
        self.observation_space, self.action_space = es.obs_space, es.action_space
        discrete = es.action_space.__class__.__name__ == "Discrete"

        encoder = ObsEncoder(es.obs_space, normalize=cfg.normalize_obs)
        self.net = ActorCriticNet(encoder, action_dim(es.action_space), discrete, cfg).to(self.device)
        # One flat parameter/gradient buffer: the optimiser step and the clip are a few ops, not dozens.
        self.flat = FlatParameters(self.net.parameters())
        if cfg.optimizer == "rmsprop":
            self.optimizer: FlatRMSprop | FlatAdam = FlatRMSprop(self.flat.param, cfg.learning_rate,
                                                                         cfg.rms_alpha, cfg.rms_eps)
        else:
            self.optimizer = FlatAdam(self.flat.param, cfg.learning_rate, eps=cfg.rms_eps)

        self.buffer = RolloutBuffer(cfg.n_steps, es.n_envs, es.obs_space.shape or (),
                                    () if discrete else es.action_space.shape,
                                    torch.int64 if discrete else torch.float32, self.device)
        self.collector = RolloutCollector(self.env, self.device, es.initial_obs)
        self._zeros_tn = torch.zeros(cfg.n_steps, es.n_envs, device=self.device)
        # Acting during training: NumPy on CPU (tanh/relu), the torch path elsewhere. Same weights, same RNG.
        if cfg.use_sde and discrete:
            raise SpaceError(f"A2C: use_sde needs a Box action space, not {es.action_space}")
        if self.net.sde:
            self.net.reset_noise(es.n_envs)
        cpu_numpy = self.device.type == "cpu" and cfg.activation in ("tanh", "relu")
        self._rollout_policy = (NumpyPolicy(self.net.encoder, [*self.net._pi, self.net._pi_out], cfg.activation,
                                            None if self.net.discrete else self.net.log_std,
                                            (lambda: self.net.sde_noise) if self.net.sde else None)
                                if cpu_numpy else self.net.sample)
        self._numpy_update = cfg.numpy_update and cpu_numpy and not self.net.sde
        if self._numpy_update:
            self.net.numpy_views()
        self.num_timesteps = 0
        self.n_updates = 0

    # ---- acting -------------------------------------------------------------------------------------------
    def _sde_before_step(self, t: int) -> None:
        """gSDE: redraw the noise every sde_sample_freq steps of a rollout (learn() draws it at each start)."""
        freq = self.config.sde_sample_freq
        if freq > 0 and t > 0 and t % freq == 0:
            self.net.reset_noise(self.collector.n_envs)

    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        policy = self.net.mode if deterministic else (lambda o: self.net.sample(o)[0])
        return agent_io.numpy_act(policy, obs, self.observation_space, self.action_space, self.device)

    def value(self, obs: Any) -> np.ndarray:
        """The critic's V(s) for one observation or a batch."""
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
            single = x.shape == torch.Size(self.observation_space.shape or ())
            x = x.unsqueeze(0) if single else x
            v = self.net.value(x).cpu().numpy()
        return v[0] if single else v

    # ---- one update -----------------------------------------------------------------------------------------
    def advantages(self, buf: RolloutBuffer, values: torch.Tensor, last_values: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and returns (= A + V), both [T, N], given values = V(obs) [T, N] (and V(last_obs) [N] when
        already computed); bootstraps from V(last_obs) and, where truncated, V(final_obs) (rlkit.core.returns.gae
        cuts traces and applies them)."""
        T, N = buf.n_steps, buf.n_envs
        with torch.no_grad():
            if last_values is None:
                last_values = self.net.value(buf.last_obs)
            # V(true final obs) only matters where truncated; on CPU checking first is free (on CUDA it would
            # be a host sync, so the pass always runs there).
            if self.device.type != "cpu" or buf.truncated.numpy().any():
                final_values = self.net.value(buf.flat(buf.final_obs)).view(T, N)
            else:
                final_values = self._zeros_tn
        rewards, terminated, truncated = buf.rewards, buf.terminated, buf.truncated
        if isinstance(values, np.ndarray):  # the NumPy update: zero-copy views of the (CPU) buffer
            rewards, terminated, truncated, final_values = (x.numpy() for x in (rewards, terminated, truncated,
                                                                                final_values))
        scale = self.config.reward_scale
        return gae(rewards if scale == 1.0 else rewards * scale, values, terminated, truncated, final_values,
                   last_values, self.config.gamma, self.config.gae_lambda)

    def update(self, buf: RolloutBuffer, diagnostics: bool = True) -> dict[str, torch.Tensor]:
        """One gradient step of the joint loss on a rollout. Returns tensor diagnostics (no host sync); with
        diagnostics=False only the losses (entropy and explained variance cost ops that learn() needs only on
        the updates it logs).

        Shapes: rollout tensors [T, N, ...]; the loss is on the T * N flattened samples.
        """
        if self._numpy_update:
            return self._update_numpy(buf, diagnostics)
        cfg = self.config
        T, N = buf.n_steps, buf.n_envs
        out, values = self.net(buf.flat(buf.obs))
        adv, returns = self.advantages(buf, values.detach().view(T, N))
        adv, returns = adv.reshape(-1), returns.reshape(-1)
        if cfg.normalize_advantage:
            adv = normalize(adv)
        logp, entropy = self.net.log_prob_entropy(out, buf.flat(buf.actions), cfg.ent_coef > 0 or diagnostics)
        loss_pi, info = policy_loss(logp, entropy, adv, cfg.ent_coef)  # <- A2C: the advantage weights grad log pi
        loss_v = (values - returns).pow(2).mean()
        loss = loss_pi + cfg.vf_coef * loss_v
        self.flat.zero_grad()
        loss.backward()
        return self._step(info, loss_v.detach(), values.detach(), returns, diagnostics)

    def _update_numpy(self, buf: RolloutBuffer, diagnostics: bool) -> dict[str, torch.Tensor]:
        """update() in NumPy with the gradient derived by hand: the same loss, and the same gradient up to float
        rounding (tests compare the two). V(last_obs) rides in the same forward pass as the batch."""
        cfg = self.config
        T, N = buf.n_steps, buf.n_envs
        obs = buf.flat(buf.obs).numpy()
        out, v_all, cache = self.net.forward_numpy(np.concatenate((obs, buf.last_obs.numpy())), T * N)
        values = v_all[: T * N]
        adv, returns = self.advantages(buf, values.reshape(T, N), v_all[T * N:])
        adv, returns = adv.reshape(-1), returns.reshape(-1)
        if cfg.normalize_advantage:
            adv = normalize(adv)
        # d loss / d outputs: the advantage weights grad log pi (policy_loss); d vf_coef * mean((V - R)^2) / dV.
        g_out, g_log_std, logp, entropy = self.net.pg_grad_numpy(out, buf.flat(buf.actions).numpy(), adv,
                                                                 cfg.ent_coef, entropy=diagnostics)
        err = values - returns
        self.net.backward_numpy(cache, g_out, err * np.float32(2.0 * cfg.vf_coef / (T * N)), g_log_std)
        if cfg.max_grad_norm > 0:
            self.flat.clip_grad_norm_numpy_(cfg.max_grad_norm)
        self.optimizer.step_numpy()
        self.n_updates += 1
        # policy_loss()'s diagnostics, as NumPy scalars (float() and .item() work as on tensors)
        info = {"train/loss_pi": -(logp * adv).mean(), "train/loss_v": (err * err).mean()}
        if entropy is not None:
            info["train/entropy"] = entropy.mean()
            info["train/loss_pi"] -= cfg.ent_coef * info["train/entropy"]
        if diagnostics:
            info["train/explained_variance"] = explained_variance(torch.from_numpy(values), torch.from_numpy(returns))
        return info

    def _step(self, info: dict[str, torch.Tensor], loss_v: torch.Tensor, values: torch.Tensor,
              returns: torch.Tensor, diagnostics: bool) -> dict[str, torch.Tensor]:
        """Clip the flat gradient, take the optimiser step, finish the diagnostics."""
        if self.config.max_grad_norm > 0:
            self.flat.clip_grad_norm_(self.config.max_grad_norm)
        self.optimizer.step()
        info["train/loss_v"] = loss_v
        if diagnostics:
            info["train/explained_variance"] = explained_variance(values, returns)
        self.n_updates += 1
        return info

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 100) -> "A2C":
        """Train for `total_steps` more environment steps (whole rollouts). With `run_dir`, write TensorBoard
        events, progress.csv, config.json and checkpoints/ there. Metrics are logged (and `callback(metrics)`
        called; returning False stops) every `log_interval` updates and after the last one: reading tensors
        into floats is a host sync, so it is not done every update."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval)
        cfg, start, target = self.config, self.num_timesteps, run.target
        batch = cfg.n_steps * self.collector.n_envs
        try:
            t0 = time.perf_counter()
            while self.num_timesteps < target:
                if cfg.lr_schedule == "linear":  # lr_k = lr_0 * (fraction of this call's steps remaining)
                    frac = (target - self.num_timesteps) / max(target - start, 1)
                    self.optimizer.param_groups[0]["lr"] = cfg.learning_rate * frac
                if self.net.sde:  # gSDE: fresh exploration matrices for every rollout
                    self.net.reset_noise(self.collector.n_envs)
                self.collector.collect(self.buffer, self._rollout_policy,
                                       self._sde_before_step if self.net.sde else None)
                self.num_timesteps += batch
                log_now = (self.n_updates + 1) % log_interval == 0 or self.num_timesteps >= target
                info = self.update(self.buffer, diagnostics=log_now)
                if cfg.normalize_obs:  # statistics move only here, from the rollout just trained on
                    self.net.encoder.update_stats(self.buffer.flat(self.buffer.obs))
                if log_now:
                    info["time/sps"] = (self.num_timesteps - start) / (time.perf_counter() - t0)
                    info.update(self.collector.episode_stats())
                    if not run.log(self, info, callback):
                        break
                run.checkpoint_if_due(self)
            run.finish(self)
        finally:
            run.close()
        return self

    # ---- evaluation and persistence -------------------------------------------------------------------------
    def evaluate(self, n_episodes: int = 10, deterministic: bool = True, env: Any = None) -> dict[str, float]:
        """Evaluate on a fresh env; the observation statistics are only read, never updated."""
        return agent_io.evaluate_agent(lambda o: self.act(o, deterministic), self._env_factory, n_episodes,
                                       self.seed, env)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "collector": self.collector.state_dict(), "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])  # copies into the flat views: the optimiser keeps its tensor
        self.optimizer.load_state_dict(state["optimizer"])
        self.collector.load_state_dict(state["collector"])
        self.n_updates = int(state["n_updates"])

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "A2C":
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)
