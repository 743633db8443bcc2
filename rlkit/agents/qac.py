"""QAC: Q actor-critic, the policy gradient weighted by an on-policy SARSA critic Q_w(s, a).

Sutton & Barto (2018, sec. 13.5); Konda & Tsitsiklis (2000). It differs from A2C (rlkit/agents/a2c.py) ONLY in
what weights grad log pi:

    g   = E[ grad_theta log pi_theta(a_t | s_t) * Psi_t ] + ent_coef * grad H[pi_theta(. | s_t)]
    Psi_t = Q_w(s_t, a_t)                                                (optionally minus b(s_t), standardised)
    y_t   = r_t + gamma * Q_w(s_{t+1}, a_{t+1})   a_{t+1} = the action the policy actually takes next (SARSA)
    w    <- one semi-gradient Adam step on E[(Q_w(s_t, a_t) - y_t)^2] per rollout (y_t detached)

Termination and truncation: nothing is bootstrapped after a termination; after a truncation (time limit) the
target continues from Q_w(s_final, a') with s_final the TRUE final observation and a' ~ pi(s_final) sampled for
it, since that episode takes no further action. Deviations:
  * The last step of a rollout bootstraps from Q_w(s_T, a_T) where a_T ~ pi(s_T) is sampled at update time
    and then really executed as the first action of the next rollout (so the SARSA target stays exact).
  * Psi can be standardised per batch (normalize_q; subtracting the batch mean acts as a baseline).
  * MultiDiscrete / MultiBinary actions: Q_w(s, a) = sum_d Q_d(s, a_d) (rlkit.core.networks.FactorisedQCritic),
    additive like the product policy's score, so it keeps what the policy gradient uses of Q and E_pi[Q_w] is exact
    (docs/algorithms/actor_critic.md).
  * Linear learning-rate decay (lr_schedule="linear") runs over the run's total budget (agent.total_budget), like SB3.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rlkit.core import agent_io
from rlkit.core.buffers import RolloutBuffer, obs_map, obs_where
from rlkit.core.config import (build_config, check_choice, check_cuda_graphs, check_hidden_sizes, check_nonnegative,
                               check_positive, check_unit_interval, preset_config)
from rlkit.core.config import check_encoder_fields
from rlkit.core.device import GraphedStep, configure_threads, seed_everything
from rlkit.core.envs import EnvLike
from rlkit.core.losses import policy_gradient_loss
from rlkit.core.networks import (ACTIVATIONS, EncoderSpec, NetworkSpec, action_storage, make_actor, make_obs_encoder,
                                 make_q_critic, network_source, obs_storage)
from rlkit.core.optim import load_optimizer_state, optimizer_state_dict, set_lr
from rlkit.core.returns import explained_variance, normalize


@dataclass
class QACConfig:
    # Collection
    n_envs: int = 8
    """Number of parallel environments."""
    vectorization: str = "auto"
    """sync steps the envs in this process, async in one worker process each (Gymnasium's AsyncVectorEnv, the same
    transitions); auto: async for an Atari id with n_envs > 1, else sync."""
    n_steps: int = 8
    """Steps per environment per update; a batch holds n_envs * n_steps transitions."""
    normalize_obs: bool = False
    """Normalise observations by a running mean/std (clipped to +-clip_obs; saved in checkpoints, frozen during
    evaluation). Vector parts only: image pixels are scaled to [0, 1], never normalised."""
    normalize_reward: bool = False
    """Train on rewards scaled by the running std of the discounted return (rlkit.core.normalize; as SB3's
    VecNormalize); the logged episode returns stay raw."""
    clip_obs: float = 10.0
    """Clip normalised observations to [-clip_obs, clip_obs]."""
    clip_reward: float = 10.0
    """Clip normalised rewards to [-clip_reward, clip_reward]."""
    # Observation encoding
    image_obs: bool | None = None
    """Encode images with a CNN. An image is a uint8 Box of rank 3 (HxWxC or CxHxW) with bounds 0..255, alone or
    as a key of a Dict (None: detect them so, as Stable-Baselines3 does; False: no observation is an image, every
    Box is flattened into the MLP; True: every uint8 Box of rank 3 is one, whatever its bounds)."""
    image_channels_first: bool | None = None
    """Layout of image observations: None detects it (channels first when the first dimension is the smallest, as
    Stable-Baselines3); True: CxHxW; False: HxWxC (permuted to CxHxW on the device)."""
    cnn_features_dim: int = 512
    """Width of the default image encoder's output (the Nature-DQN CNN's final Linear + ReLU)."""
    # Loss
    gamma: float = 0.99
    """Discount factor."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the policy loss."""
    normalize_q: bool = True
    """Standardise Q(s, a) within each batch before it weights grad log pi (mean 0, std 1)."""
    q_baseline: bool = False
    """Subtract the state-dependent baseline b(s) = E_{a~pi}[Q_w(s, a)] from Q_w(s, a) before it weights
    grad log pi (Discrete, MultiDiscrete, MultiBinary: the exact sum over actions; Box: Q_w at one fresh sample).
    Any function of the state is an unbiased baseline (Sutton & Barto 2018, sec. 13.4); it removes the variation
    across states from Psi."""
    # Optimisation
    learning_rate: float = 7e-4
    """Adam step size of the actor."""
    q_learning_rate: float = 1e-3
    """Adam step size of the critic Q_w."""
    lr_schedule: str = "constant"
    """constant, or linear (both step sizes decay to 0 over the run's total budget)."""
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
    cuda_graphs: bool | str = "auto"
    """Replay each rollout and each update as one CUDA graph ("auto": on a CUDA device with env_backend="torch";
    docs/performance.md, "On-device training")."""

    def __post_init__(self) -> None:
        check_cuda_graphs(self)
        check_positive(self, "n_envs", "n_steps", "learning_rate", "q_learning_rate", "clip_obs", "clip_reward")
        check_unit_interval(self, "gamma")
        check_nonnegative(self, "ent_coef", "max_grad_norm", "checkpoint_interval", "keep_checkpoints",
                          "torch_threads")
        check_hidden_sizes(self)
        check_encoder_fields(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "vectorization", ("auto", "sync", "async"))
        check_choice(self, "lr_schedule", ("constant", "linear"))



class QAC:
    """Q actor-critic: the policy gradient weighted by an on-policy SARSA critic Q_w(s, a)."""

    algo = "qac"
    supported_actions = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")

    def __init__(self, env: EnvLike, config: QACConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", policy: NetworkSpec = None, critic: NetworkSpec = None,
                 encoder: EncoderSpec = None, preset: bool = False, env_backend: str = "gymnasium",
                 env_kwargs: dict[str, Any] | None = None, **overrides: Any) -> None:
        """`policy` / `critic`: your own networks (nn.Module or factory f(in_dim, out_dim); the protocol is in
        rlkit.core.networks: the critic is Q(s, .) [B, n] for Discrete(n), Q on [features, action] for a Box,
        per-dimension outputs [B, sum(nvec)] for MultiDiscrete(nvec) and [B, 2n] for MultiBinary(n));
        default: MLPs of hidden_sizes. preset=True starts from the tuned preset for this env id (rlkit list
        --presets).
        env_backend="torch": train on rlkit.core.torch_envs' batched envs on the agent's device (evaluation
        stays on Gymnasium's env). env_kwargs go to gymnasium.make
        (and are saved in checkpoints). Other keywords are QACConfig fields.
        `encoder`: your own observation encoder (nn.Module or factory f(observation_space) -> nn.Module; the
        protocol is in rlkit.core.networks.make_obs_encoder); default: flatten/one-hot, a Nature CNN for images."""
        self.config = cfg = build_config(QACConfig, config, preset=preset_config(self.algo, env, preset), **overrides)
        configure_threads(cfg.torch_threads)
        self.seed = seed
        if seed is not None:
            seed_everything(seed)
        es = agent_io.setup_env(self.algo, env, cfg, seed, self.supported_actions, env_kwargs=env_kwargs,
                                env_backend=env_backend, device=device)
        self.env_kwargs = dict(env_kwargs or {})
        # device="auto": the faster device for this work, by the rule in rlkit.core.device.auto_device
        self.device, self.device_reason = agent_io.choose_device(device, self.algo, es, cfg.n_steps * es.n_envs)
        self.env, self.env_id, self._env_factory = es.venv, es.env_id, es.factory
        self.observation_space, self.action_space = es.obs_space, es.action_space
        # Discrete, MultiDiscrete, MultiBinary: finitely many actions per dimension, a critic output for each
        self.discrete = es.action_space.__class__.__name__ != "Box"

        self.networks = {"policy": network_source(policy), "critic": network_source(critic),
                         "encoder": network_source(encoder)}
        # One set of observation statistics for both networks; a CNN (images) for each, since the actor and Q_w
        # have their own losses and optimisers (docs/architecture.md, "Observation encoders").
        actor_enc = make_obs_encoder(es.obs_space, cfg, encoder)
        critic_enc = make_obs_encoder(es.obs_space, cfg, encoder, share_statistics=actor_enc)
        self.actor = make_actor(es.obs_space, es.action_space, cfg.hidden_sizes, cfg.activation,
                                cfg.log_std_init, encoder=actor_enc, net=policy).to(self.device)
        # Discrete: one Q output per action; MultiDiscrete/MultiBinary: Q(s, a) = sum_d Q_d(s, a_d), one output per
        # (dimension, choice); Box: Q(s, a) on [features, action], the action clipped to the Box
        self.critic = make_q_critic(critic_enc, es.action_space, cfg.hidden_sizes, cfg.activation,
                                    net=critic).to(self.device)
        if not self.discrete:
            self._low = torch.as_tensor(es.action_space.low, dtype=torch.float32, device=self.device)
            self._high = torch.as_tensor(es.action_space.high, dtype=torch.float32, device=self.device)
        # CUDA graphs of the rollout and the update (cuda_graphs) need Adam's step count on the device (capturable)
        self.cuda_graphs, self.cuda_graphs_reason = agent_io.cuda_graphs(self.algo, cfg, es, self.device)
        graph_kw: dict[str, Any] = {"capturable": True, "fused": True} if self.cuda_graphs else {}
        self.pi_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.learning_rate, **graph_kw)
        self.q_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.q_learning_rate, **graph_kw)

        if self.env is not None:  # an agent loaded without an env (act/value only) needs no rollout storage
            obs_shape, obs_dtype = obs_storage(es.obs_space)  # uint8 images stay uint8
            self.buffer = RolloutBuffer(cfg.n_steps, es.n_envs, obs_shape, *action_storage(es.action_space),
                                        self.device, obs_dtype)
            self.collector = agent_io.make_collector(es, self.device, cfg)
            # a_T chosen in update(), executed first in the next rollout (when _has_next); written in place, so a
            # CUDA graph of the rollout reads the a_T that a graph of the update wrote
            self._next = torch.zeros_like(self.buffer.actions[0])
        self._has_next = False
        self.num_timesteps = 0
        self.n_updates = 0

    # ---- acting -------------------------------------------------------------------------------------------
    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        policy = self.actor.mode if deterministic else self.actor.sample_actions
        return agent_io.numpy_act(policy, obs, self.observation_space, self.action_space, self.device)

    def value(self, obs: Any) -> np.ndarray:
        """V(s) = E_{a~pi}[Q_w(s, a)]: exact for Discrete, MultiDiscrete and MultiBinary, one sample for Box."""
        return agent_io.numpy_value(self._q_baseline, obs, self.observation_space, self.device)

    def _q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic(obs, actions if self.discrete else torch.maximum(torch.minimum(actions, self._high),
                                                                           self._low))

    def _rollout_policy(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self._has_next:  # the a_T that the last update bootstrapped from: execute exactly it, once
            self._has_next = False
            return self._next
        return self.actor.sample_actions(obs) if noise is None else self.actor.sample_actions(obs, noise)

    # ---- one update -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _q_baseline(self, obs: torch.Tensor) -> torch.Tensor:
        """b(s) = E_{a~pi}[Q_w(s, a)]: exact over Discrete actions (and over MultiDiscrete/MultiBinary ones, where
        Q_w = sum_d Q_d(s, a_d) and E_pi[Q_w] = sum_d sum_k pi_d(k|s) Q_d(s, k)), one sample for Box. Shape [B]."""
        if self.discrete:
            return (self.actor.action_probs(obs) * self.critic.all_actions(obs)).sum(-1)
        return self._q(obs, self.actor.sample_actions(obs))

    def td_targets(self, buf: RolloutBuffer, a_T: torch.Tensor, a_final: torch.Tensor) -> torch.Tensor:
        """SARSA targets y_t = r_t + gamma * Q_w(s_{t+1}, a_{t+1}), [T, N], without gradient:
          s_{t+1}, a_{t+1} = obs[t+1], actions[t+1]  (the action actually taken next; a_T at t = T-1)
                           = final_obs[t], a_final[t] where truncated (a' ~ pi(true final observation))
          y_t = r_t                                   where terminated (nothing after a real end)
        """
        T, N = buf.n_steps, buf.n_envs
        trunc_a = buf.truncated.view(T, N, *([1] * (buf.actions.dim() - 2)))
        following = obs_map(lambda o, last: torch.cat([o[1:], last[None]]), buf.obs, buf.last_obs)  # as collected
        next_obs = obs_where(buf.truncated, buf.final_obs, following)
        next_act = torch.where(trunc_a, a_final, torch.cat([buf.actions[1:], a_T[None]]))
        with torch.no_grad():
            q_next = self._q(buf.flat(next_obs), buf.flat(next_act)).view(T, N)
        return buf.rewards + self.config.gamma * torch.where(buf.terminated, torch.zeros_like(q_next), q_next)

    def update(self, buf: RolloutBuffer) -> dict[str, torch.Tensor]:
        """One SARSA critic step and one policy-gradient step on a rollout. Returns tensor diagnostics.
        Device work only, so learn() can replay it as a CUDA graph (learn() counts n_updates)."""
        cfg = self.config
        with torch.no_grad():
            a_T = self.actor.sample_actions(buf.last_obs)  # a_T: executed first in the next rollout
            self._next.copy_(a_T)
            self._has_next = True
            a_final = self.actor.sample_actions(buf.flat(buf.final_obs)).view_as(buf.actions)  # used where truncated
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
        loss_pi, info = policy_gradient_loss(logp, entropy, psi, cfg.ent_coef)
        self.pi_optimizer.zero_grad(set_to_none=True)
        loss_pi.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
        self.pi_optimizer.step()
        info["train/loss_q"] = loss_q.detach()
        info["train/explained_variance"] = explained_variance(q.detach(), y.reshape(-1))
        return info

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 1000, *,
              total_budget: int | None = None, eval_freq: int = 0, n_eval_episodes: int = 10) -> "QAC":
        """Train for `total_steps` more environment steps (whole rollouts). With `run_dir`, write TensorBoard
        events, progress.csv, config.json and checkpoints/ there. Every `log_interval` environment steps (and
        after the last update) metrics are logged and `callback(agent, metrics)` runs; returning False stops."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval, callback, total_budget,
                                   eval_freq, n_eval_episodes)
        cfg = self.config
        batch = cfg.n_steps * self.collector.n_envs
        # cuda_graphs: after two eager iterations the rollout and the update each replay as one CUDA graph
        noise = agent_io.rollout_noise(self.actor, cfg)  # torch envs: drawn by the collector (counter stream)
        collect = GraphedStep(lambda: self.collector.collect(self.buffer, self._rollout_policy, noise=noise),
                              self.cuda_graphs, "QAC rollout", generators=self.collector.generators)
        update = GraphedStep(lambda: self.update(self.buffer), self.cuda_graphs, "QAC update")
        try:
            while self.num_timesteps < run.target:
                if cfg.lr_schedule == "linear":  # lr_k = lr_0 * (fraction of the run's total budget ahead)
                    frac = run.schedule_fraction(self)
                    set_lr(self.pi_optimizer, cfg.learning_rate * frac)
                    set_lr(self.q_optimizer, cfg.q_learning_rate * frac)
                collect()
                self.num_timesteps += batch
                info = update()
                self.n_updates += 1
                self.actor.encoder.update_stats(self.buffer.flat(self.buffer.obs))  # no-op unless normalize_obs
                if not run.end_of_iteration(self, info):
                    break
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
                "pi_optimizer": optimizer_state_dict(self.pi_optimizer),
                "q_optimizer": optimizer_state_dict(self.q_optimizer),
                "collector": self.collector.state_dict() if self.env is not None else {}, "n_updates": self.n_updates,
                # the a_T chosen for the envs' current s_T: executed first when a resume restores those envs
                "next": [self._next.cpu()] if self._has_next else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        load_optimizer_state(self.pi_optimizer, state["pi_optimizer"])
        load_optimizer_state(self.q_optimizer, state["q_optimizer"])
        if self.env is not None:
            self.collector.load_state_dict(state["collector"])
        self.n_updates = int(state["n_updates"])
        nxt = state.get("next") or []
        # a_T of other envs (another n_envs) cannot be executed: the envs start afresh then (envs_restored)
        self._has_next = self.env is not None and len(nxt) >= 1 and tuple(nxt[0].shape) == tuple(self._next.shape)
        if self._has_next:
            self._next.copy_(nxt[0])

    def envs_restored(self, restored: bool) -> None:
        """Called after loading: a_T belongs to the saved s_T, so it is dropped when the envs start afresh."""
        if not restored:
            self._has_next = False

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "QAC":
        """Rebuild from a checkpoint; without env, act() and value() work and learn() asks for one."""
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)
