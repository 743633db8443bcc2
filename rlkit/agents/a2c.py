"""A2C: synchronous advantage actor-critic with GAE advantages.

Mnih et al. (2016), "Asynchronous methods for deep reinforcement learning" (A2C is the synchronous variant of
A3C); advantages by GAE, Schulman et al. (2016). One joint gradient step per rollout of n_steps x n_envs:

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t);   A_t = delta_t + gamma * lambda * A_{t+1}     (GAE)
    L      = -E[log pi(a_t|s_t) * A_t] - ent_coef * E[H[pi(.|s_t)]]                          (policy)
           + vf_coef * E[(V(s_t) - R_t)^2],   R_t = A_t + V(s_t)                              (critic)

Termination and truncation, as everywhere in rlkit: nothing is bootstrapped after a termination; after a
truncation (time limit) the target continues from V(TRUE final observation); GAE traces are cut on both.
Choices and deviations (as Stable-Baselines3's A2C unless said):
  * RMSprop (alpha 0.99, eps 1e-5) over one flat parameter vector; gradient clipped to max_grad_norm.
  * Linear learning-rate decay (lr_schedule="linear") runs over the run's total budget (agent.total_budget).
  * The observation normaliser is updated from each rollout AFTER the update on it, so a rollout is trained
    with the statistics it was collected with; evaluation never changes the statistics.
  * reward_scale multiplies rewards before GAE (a fixed stand-in for reward normalisation).
  * gSDE (use_sde) follows Raffin et al. (2022); shared_trunk puts one hidden trunk under both heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlkit.core import agent_io
from rlkit.core.buffers import Rollout, RolloutBuffer, obs_cat
from rlkit.core.config import (build_config, check_choice, check_cuda_graphs, check_hidden_sizes, check_nonnegative,
                               check_positive, check_sample_freq, check_unit_interval, preset_config)
from rlkit.core.config import ConfigError, check_encoder_fields
from rlkit.core.device import GraphedStep, configure_threads, seed_everything
from rlkit.core.envs import EnvLike, SpaceError
from rlkit.core.losses import policy_gradient_loss
from rlkit.core.networks import (ACTIVATIONS, MLP, EncoderSpec, NetworkSpec, action_dim, action_storage, make_actor,
                                 make_obs_encoder, make_v_critic, network_source, obs_storage)
from rlkit.core.optim import FlatAdam, FlatParameters, FlatRMSprop, clip_grad_norm_, set_lr
from rlkit.core.returns import explained_variance, gae, normalize
from rlkit.core.seeds import ParamStack, SeedBatch, SeedNets, StackedFlatOptimizer, stack_rollouts


@dataclass
class A2CConfig:
    # Collection
    n_envs: int = 8
    """Number of parallel environments."""
    vectorization: str = "auto"
    """sync steps the envs in this process, async in one worker process each (Gymnasium's AsyncVectorEnv, the same
    transitions); auto: async for an Atari id with n_envs > 1, else sync."""
    n_steps: int = 5
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
    """constant, or linear (decays to 0 over the run's total budget)."""
    optimizer: str = "rmsprop"
    """rmsprop (torch RMSprop with rms_alpha/rms_eps, as Stable-Baselines3), rmsprop_tf (TensorFlow's RMSprop:
    the running average starts at 1 and eps sits inside the root, as SB3's RMSpropTFLike; what rl-zoo3 uses on
    Atari, where torch's large first steps wreck the CNN) or adam."""
    rms_alpha: float = 0.99
    """RMSprop smoothing constant."""
    rms_eps: float = 1e-5
    """RMSprop epsilon (also used as Adam's epsilon)."""
    max_grad_norm: float = 0.5
    """Clip the gradient to this global norm (0 disables clipping)."""
    shared_trunk: bool = False
    """One hidden trunk for actor and critic (True) or two separate ones (False, Stable-Baselines3's default)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of each trunk; [] puts the policy and value heads straight on the observation
    encoder's features (with image observations: Stable-Baselines3's CnnPolicy, heads on the CNN's 512)."""
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
    # Logging and checkpoints
    checkpoint_interval: int = 0
    """Save a checkpoint every this many environment steps when a run directory is used (0: only at the end)."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (the final one is always kept)."""
    torch_threads: int = 1
    """torch intra-op threads (one is fastest for small networks; 0 leaves torch's default)."""
    cuda_graphs: bool | str = "auto"
    """Replay each rollout and each update as one CUDA graph ("auto": on a CUDA device with env_backend="torch",
    without gSDE; docs/performance.md, "On-device training")."""

    def __post_init__(self) -> None:
        check_positive(self, "n_envs", "n_steps", "learning_rate", "rms_eps", "reward_scale", "clip_obs", "clip_reward")
        check_cuda_graphs(self)
        check_unit_interval(self, "gamma", "gae_lambda", "rms_alpha")
        check_nonnegative(self, "ent_coef", "vf_coef", "max_grad_norm", "checkpoint_interval", "keep_checkpoints",
                          "torch_threads")
        if self.shared_trunk and not self.hidden_sizes:
            raise ConfigError("A2CConfig.shared_trunk needs at least one hidden layer in hidden_sizes (the trunk); "
                              "hidden_sizes=[] puts both heads on the encoder's features already")
        check_hidden_sizes(self, allow_empty=True)  # [] puts the heads on the encoder's features
        check_encoder_fields(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "vectorization", ("auto", "sync", "async"))
        check_choice(self, "lr_schedule", ("constant", "linear"))
        check_choice(self, "optimizer", ("rmsprop", "rmsprop_tf", "adam"))
        check_sample_freq(self)


@torch.no_grad()
def a2c_advantages(critic: nn.Module, b: Rollout, values: torch.Tensor, last_values: torch.Tensor, cfg: A2CConfig,
                   final_pass: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns R_t = A_t + V(s_t), both [T, N], from values = V(s_t) [T, N] and V(s_T) [N];
    where truncated, the target continues from V(true final obs) (computed when final_pass)."""
    T, N = b.rewards.shape
    if final_pass:
        final_values = critic(b.flat(b.final_obs)).view(T, N)
    else:
        final_values = torch.zeros(T, N, device=values.device)
    rewards = b.rewards if cfg.reward_scale == 1.0 else b.rewards * cfg.reward_scale
    return gae(rewards, values, b.terminated, b.truncated, final_values, last_values, cfg.gamma, cfg.gae_lambda)


def a2c_loss(actor: nn.Module, critic: nn.Module, b: Rollout, cfg: A2CConfig, diagnostics: bool = True,
             final_pass: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The joint loss of one rollout and its diagnostics: only the modules' forward passes and torch ops, so the
    same code runs for one agent and, through torch.func, for many seeds at once (rlkit.core.seeds)."""
    T, N = b.rewards.shape
    obs, actions = b.flat(b.obs), b.flat(b.actions)
    v_all = critic(obs_cat([obs, b.last_obs]))  # V(s_t) for the batch and V(s_T) in one pass
    values = v_all[:T * N]
    adv, returns = a2c_advantages(critic, b, values.detach().view(T, N), v_all[T * N:].detach(), cfg, final_pass)
    adv, returns = adv.reshape(-1), returns.reshape(-1)
    if cfg.normalize_advantage:
        adv = normalize(adv)
    params = actor.dist_params(obs)
    logp = actor.log_prob_from_params(params, actions)
    entropy = actor.entropy_from_params(params) if cfg.ent_coef > 0 or diagnostics else None
    loss_pi, info = policy_gradient_loss(logp, entropy, adv, cfg.ent_coef)  # -E[log pi * A] - c_H E[H]
    loss_v = F.mse_loss(values, returns)  # E[(V(s_t) - R_t)^2]
    info["train/loss_v"] = loss_v.detach()
    if diagnostics:
        info["train/explained_variance"] = explained_variance(values.detach(), returns)
    return loss_pi + cfg.vf_coef * loss_v, info


class TrunkHead(nn.Module):
    """A linear head on an MLP trunk that another TrunkHead may share (A2C's shared_trunk): features(x) are the
    trunk's last hidden layer, forward(x) = head(features(x))."""

    def __init__(self, trunk: MLP, out_dim: int, gain: float, orthogonal: bool) -> None:
        super().__init__()
        self.trunk, self.head = trunk, nn.Linear(trunk.head.out_features, out_dim)
        if orthogonal:
            nn.init.orthogonal_(self.head.weight, gain=gain)
            nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk._act(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class A2C:
    """Synchronous advantage actor-critic with GAE. See the module docstring for the equations."""

    algo = "a2c"
    supported_actions = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")

    def __init__(self, env: EnvLike, config: A2CConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", policy: NetworkSpec = None, critic: NetworkSpec = None,
                 encoder: EncoderSpec = None, preset: bool = False, env_backend: str = "gymnasium",
                 env_kwargs: dict[str, Any] | None = None, **overrides: Any) -> None:
        """`policy` / `critic`: your own networks (nn.Module or factory f(in_dim, out_dim); the protocol is in
        rlkit.core.networks); default: MLPs of hidden_sizes. preset=True starts from the tuned preset for this env
        id (rlkit list --presets).
        env_backend="torch": train on rlkit.core.torch_envs' batched envs on the agent's device (evaluation
        stays on Gymnasium's env). env_kwargs go to gymnasium.make
        (and are saved in checkpoints). Other keywords are A2CConfig fields.
        `encoder`: your own observation encoder (nn.Module or factory f(observation_space) -> nn.Module; the
        protocol is in rlkit.core.networks.make_obs_encoder); default: flatten/one-hot, a Nature CNN for images."""
        self.config = cfg = build_config(A2CConfig, config, preset=preset_config(self.algo, env, preset), **overrides)
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
        if cfg.use_sde and es.action_space.__class__.__name__ != "Box":
            raise SpaceError(f"A2C: use_sde needs a Box action space, not {es.action_space}")
        if cfg.shared_trunk and (policy is not None or critic is not None):
            raise ValueError("A2C: shared_trunk builds both networks itself; pass policy=/critic= without it")

        # ONE encoder for actor and critic: the normalisation statistics and, for images, the CNN, trained by the
        # joint loss as Stable-Baselines3's A2C shares its feature extractor (docs/architecture.md).
        obs_enc = make_obs_encoder(es.obs_space, cfg, encoder, orthogonal=cfg.ortho_init)
        if cfg.shared_trunk:  # one trunk, two heads (gains 0.01 and 1, as Stable-Baselines3)
            hs, n_out = cfg.hidden_sizes, action_dim(es.action_space)
            trunk = MLP(obs_enc.out_dim, hs[:-1], hs[-1], cfg.activation, math.sqrt(2), cfg.ortho_init)
            policy = TrunkHead(trunk, n_out, 0.01, cfg.ortho_init)
            critic = TrunkHead(trunk, 1, 1.0, cfg.ortho_init)
            self.networks = {"policy": None, "critic": None, "encoder": network_source(encoder)}
        else:
            self.networks = {"policy": network_source(policy), "critic": network_source(critic),
                             "encoder": network_source(encoder)}
        self.actor = make_actor(es.obs_space, es.action_space, cfg.hidden_sizes, cfg.activation, cfg.log_std_init,
                                encoder=obs_enc, use_sde=cfg.use_sde, net=policy,
                                orthogonal=cfg.ortho_init).to(self.device)
        self.critic = make_v_critic(obs_enc, cfg.hidden_sizes, cfg.activation, net=critic,
                                    orthogonal=cfg.ortho_init).to(self.device)
        # CUDA graphs of the rollout and the update (cuda_graphs): the optimiser then keeps its scalars on the device
        self.cuda_graphs, self.cuda_graphs_reason = agent_io.cuda_graphs(self.algo, cfg, es, self.device)
        # One flat parameter/gradient buffer: the optimiser step and the clip are a few ops, not dozens.
        self.flat = FlatParameters([*self.actor.parameters(), *self.critic.parameters()])
        if cfg.optimizer in ("rmsprop", "rmsprop_tf"):
            self.optimizer: FlatRMSprop | FlatAdam = FlatRMSprop(self.flat.param, cfg.learning_rate, cfg.rms_alpha,
                                                                 cfg.rms_eps, capturable=self.cuda_graphs,
                                                                 tf_like=cfg.optimizer == "rmsprop_tf")
        else:
            self.optimizer = FlatAdam(self.flat.param, cfg.learning_rate, eps=cfg.rms_eps, capturable=self.cuda_graphs)

        if self.env is not None:  # an agent loaded without an env (act/value only) needs no rollout storage
            obs_shape, obs_dtype = obs_storage(es.obs_space)  # uint8 images stay uint8
            self.buffer = RolloutBuffer(cfg.n_steps, es.n_envs, obs_shape, *action_storage(es.action_space),
                                        self.device, obs_dtype)
            self.collector = agent_io.make_collector(es, self.device, cfg)
        self.actor.reset_noise(es.n_envs)  # gSDE only
        self.num_timesteps = 0
        self.n_updates = 0

    # ---- acting -------------------------------------------------------------------------------------------
    def _sde_before_step(self, t: int) -> None:
        """gSDE: redraw the noise every sde_sample_freq steps of a rollout (learn() draws it at each start)."""
        freq = self.config.sde_sample_freq
        if freq > 0 and t > 0 and t % freq == 0:
            self.actor.reset_noise(self.collector.n_envs)

    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        policy = self.actor.mode if deterministic else self.actor.sample_actions
        return agent_io.numpy_act(policy, obs, self.observation_space, self.action_space, self.device)

    def value(self, obs: Any) -> np.ndarray:
        """The critic's V(s) for one observation or a batch."""
        return agent_io.numpy_value(self.critic, obs, self.observation_space, self.device)

    # ---- one update -----------------------------------------------------------------------------------------
    def advantages(self, buf: RolloutBuffer, values: torch.Tensor, last_values: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages A_t and returns R_t = A_t + V(s_t), both [T, N], given values = V(s_t) [T, N] (and
        V(s_T) [N] when already computed). Bootstraps from V(s_T) and, where truncated, from V(true final obs)."""
        if last_values is None:
            with torch.no_grad():
                last_values = self.critic(buf.last_obs)
        return a2c_advantages(self.critic, buf.rollout(), values, last_values, self.config,
                              self._final_pass(buf.truncated))

    def _final_pass(self, truncated: torch.Tensor) -> bool:
        """Whether V(true final obs) must be computed: only where truncated matters, and on the CPU checking first
        is free (on CUDA it would be a host sync, so the pass always runs there)."""
        return self.device.type != "cpu" or bool(truncated.any())

    def update(self, buf: RolloutBuffer, diagnostics: bool = True) -> dict[str, torch.Tensor]:
        """One gradient step of the joint loss on a rollout. Returns tensor diagnostics (no host sync); with
        diagnostics=False only the losses (entropy and explained variance cost ops that learn() needs only on
        the updates it logs). Device work only, so learn() can replay it as a CUDA graph (learn() counts
        n_updates).

        Shapes: rollout tensors [T, N, ...]; the loss is on the T * N flattened samples.
        """
        cfg = self.config
        loss, info = a2c_loss(self.actor, self.critic, buf.rollout(), cfg, diagnostics, self._final_pass(buf.truncated))
        self.flat.zero_grad()
        loss.backward()
        if cfg.max_grad_norm > 0:
            self.flat.clip_grad_norm_(cfg.max_grad_norm)
        self.optimizer.step()
        return info

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 1000, *,
              total_budget: int | None = None, eval_freq: int = 0, n_eval_episodes: int = 10) -> "A2C":
        """Train for `total_steps` more environment steps (whole rollouts). With `run_dir`, write TensorBoard
        events, progress.csv, config.json and checkpoints/ there. Every `log_interval` environment steps (and
        after the last update) metrics are logged and `callback(agent, metrics)` runs; returning False stops."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval, callback, total_budget,
                                   eval_freq, n_eval_episodes)
        cfg = self.config
        batch = cfg.n_steps * self.collector.n_envs
        # cuda_graphs: after two eager iterations the rollout and the update each replay as one CUDA graph (the
        # diagnostics are then computed on every update); otherwise these are plain calls.
        graphs = self.cuda_graphs
        noise = agent_io.rollout_noise(self.actor, cfg)  # torch envs: the collector draws it from a counter stream
        collect = GraphedStep(lambda: self.collector.collect(self.buffer, self.actor.sample_actions,
                                                             self._sde_before_step if cfg.use_sde else None, noise),
                              graphs, "A2C rollout", generators=self.collector.generators)
        update = GraphedStep(lambda: self.update(self.buffer, diagnostics=graphs or run.log_due(self)), graphs,
                             "A2C update")
        try:
            while self.num_timesteps < run.target:
                if cfg.lr_schedule == "linear":  # lr_k = lr_0 * (fraction of the run's total budget ahead)
                    set_lr(self.optimizer, cfg.learning_rate * run.schedule_fraction(self))
                self.actor.reset_noise(self.collector.n_envs)  # gSDE: fresh exploration matrices every rollout
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

    @staticmethod
    def learn_seeds(batch: SeedBatch, total_steps: int, **learn_args: Any) -> None:
        """learn() for the K agents of a SeedBatch in lockstep (rlkit.core.seeds; the same arguments, run_dirs one
        per seed): the same loop, each seed with its own envs, noise, normaliser, logs and checkpoints; the K
        rollouts' losses, gradients, clips and RMSprop steps run as one batch (with cuda_graphs, as CUDA graphs)."""
        agents, cfg = batch.agents, batch.agents[0].config
        batch.refuse(cfg.use_sde, "use_sde (gSDE)")
        nets = SeedNets([{"actor": a.actor, "critic": a.critic} for a in agents],
                        {"theta": ParamStack.of_flats([a.flat for a in agents])})
        optimizer = StackedFlatOptimizer([a.optimizer for a in agents], nets.groups["theta"])
        rollouts = stack_rollouts([a.buffer for a in agents])  # [K, T, N, ...]: what each seed's collector writes
        runs = batch.begin_learn(total_steps, **learn_args)
        graphs = agents[0].cuda_graphs

        def update() -> dict[str, torch.Tensor]:
            """update() for every seed: its loss on its rollout, its gradient, its clip, the RMSprop step."""
            diagnostics, final_pass = graphs or runs.log_due(), agents[0]._final_pass(rollouts.truncated)
            loss, info = nets.call(lambda m, b: a2c_loss(m.actor, m.critic, b, cfg, diagnostics, final_pass),
                                   rollouts)
            nets.backward(loss, "theta")
            if cfg.max_grad_norm > 0:
                clip_grad_norm_(nets.groups["theta"].param.grad, cfg.max_grad_norm)  # each seed by its own norm
            optimizer.step()
            return info

        # graphs run on torch envs only, whose rollouts draw from counter streams: no generator to register
        collect = GraphedStep(lambda: batch.collect(nets, rollouts), graphs, "A2C rollout of the seeds")
        update_step = GraphedStep(update, graphs, "A2C update of the seeds")
        n = cfg.n_steps * agents[0].collector.n_envs
        try:
            while runs.active():
                if cfg.lr_schedule == "linear":
                    optimizer.set_lr(cfg.learning_rate * runs.schedule_fraction())
                collect()
                for a in agents:
                    a.num_timesteps += n
                info = update_step()
                batch.after_update(nets, rollouts)  # n_updates, and the observation statistics (normalize_obs)
                if not runs.end_of_iteration(info):
                    break
            runs.finish()
        finally:
            runs.close()

    # ---- evaluation and persistence -------------------------------------------------------------------------
    def evaluate(self, n_episodes: int = 10, deterministic: bool = True, env: Any = None) -> dict[str, float]:
        """Evaluate on a fresh env; the observation statistics are only read, never updated."""
        return agent_io.evaluate_agent(lambda o: self.act(o, deterministic), self._env_factory, n_episodes,
                                       self.seed, env)

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "collector": self.collector.state_dict() if self.env is not None else {}, "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])  # copies into the flat views: the optimiser keeps its tensor
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.env is not None:
            self.collector.load_state_dict(state["collector"])
        self.n_updates = int(state["n_updates"])

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "A2C":
        """Rebuild from a checkpoint; without env, act() and value() work and learn() asks for one."""
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)
