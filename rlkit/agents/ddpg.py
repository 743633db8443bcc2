"""DDPG: deep deterministic policy gradient, with target networks and a replay buffer.

Lillicrap et al. (2016), "Continuous control with deep reinforcement learning"; the defaults follow
Stable-Baselines3 (itself following Fujimoto et al.'s "OurDDPG": no batch norm, no L2, [400, 300] MLPs).

    a_t  = clip(mu(s_t) + eps_t, low, high),  eps ~ N(0, sigma^2) or Ornstein-Uhlenbeck      (exploration)
    y    = r + gamma * (1 - terminated) * Q'(s', mu'(s'))                                      (Bellman target)
    L_Q  = mean (Q(s, a) - y)^2                                                                (critic)
    L_mu = -mean Q(s, mu(s))                                                                   (actor)
    theta' <- (1 - tau) theta' + tau theta        for both target networks                      (Polyak)

Deviations from the paper, all shared with SB3:
  * Actions live in [-1, 1] inside the agent (the actor's tanh output; what the buffer stores and the critic
    reads) and are rescaled to [low, high] only for the env. Noise is added in that space, so `noise_std` is a
    fraction of the half range, and the sum is clipped to [-1, 1]: executed actions never leave the Box.
  * The first `learning_starts` steps use uniform random actions (seeded: torch's generator on the device).
  * Truncated episodes bootstrap from the TRUE final observation; only `terminated` cuts the target.
  * Optional TD3-style `policy_delay`: the actor and both targets move every k-th critic update.
  * The update of step t is launched before env step t (overlap_env_step=True, the default), so on a GPU it
    runs while the CPU steps the env (1.6x the steps/s on an H200); it therefore samples the transitions stored
    before step t, and the newest one becomes eligible one update later than in SB3 (overlap_env_step=False
    restores SB3's order: store, then update). Same number of updates, same equations.
On CUDA the whole update (sampling included) is one captured CUDA graph, replayed once per gradient step; the
eager path does exactly the same operations (use_cuda_graph=False, and always on CPU).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from rlkit.core import agent_io
from rlkit.core.buffers import ReplayBatch, ReplayBuffer, StackedReplayBuffers, obs_index, obs_len, obs_stager
from rlkit.core.config import (ConfigError, build_config, check_choice, check_hidden_sizes, check_nonnegative,
                               check_positive, check_unit_interval, preset_config)
from rlkit.core.config import check_encoder_fields, check_optional_bool
from rlkit.core.device import GraphedStep, HostFetch, HostStager, capture_cuda_graph, configure_threads, seed_everything
from rlkit.core.envs import EnvLike, to_env_actions
from rlkit.core.networks import (ACTIVATIONS, MLP, DeterministicActor, EncoderSpec, NetworkSpec, QCritic, build_network,
                                 make_obs_encoder, make_q_critic, network_source, obs_storage, tie_statistics)
from rlkit.core.optim import load_optimizer_state, polyak_update
from rlkit.core.rollout import Lockstep
from rlkit.core.seeds import ParamStack, SeedBatch, SeedNets, StackedAdam, stack_tensors_


@dataclass
class DDPGConfig:
    # Collection
    n_envs: int = 1
    """Number of parallel environments (each vector step adds n_envs transitions)."""
    vectorization: str = "auto"
    """sync steps the envs in this process, async in one worker process each (Gymnasium's AsyncVectorEnv, the same
    transitions); auto: async for an Atari id with n_envs > 1, else sync, and in a SeedBatch the seeds' sync envs
    move into shared worker processes, several envs in each (SeedBatch.share_env_workers; the same transitions)."""
    worker_spin: bool | None = None
    """Whether the shared env workers of a SeedBatch (and the main process waiting for them) poll their semaphores
    for a moment before sleeping (rlkit.core.envs.EnvWorkers): faster steps, a busy core per process while it
    waits. None: when the workers fit on the cores that the machine's load leaves idle."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions (allocated up front on the training device)."""
    learning_starts: int = 100
    """Environment steps of uniform random actions before the first update."""
    train_freq: int = 1
    """Update every this many vector steps (train_freq_unit "step") or finished episodes ("episode")."""
    train_freq_unit: str = "step"
    """step: update every train_freq vector steps (launched before the env step with overlap_env_step); episode:
    Stable-Baselines3's train_freq=(n, "episode"), rl-zoo3's setting on Pendulum, LunarLanderContinuous and
    BipedalWalker: update after the env step that finishes the train_freq-th episode since the last interval
    ended, so with one env the policy stays fixed within an episode. With several envs (SB3 allows only one here)
    the episodes of all envs count, and episodes beyond train_freq that end on that same step are not carried over.
    Episode updates cannot run in a SeedBatch (the seeds' episodes end at different steps)."""
    gradient_steps: int = 1
    """Gradient steps per update; -1: as many as the environment steps of the interval, since the previous one ended
    (n_envs per vector step; Stable-Baselines3's -1). 0 and other negative values are refused."""
    save_replay_buffer: bool = False
    """Store the replay buffer in checkpoints, so a resumed run continues exactly."""
    overlap_env_step: bool = True
    """Launch each step's update before stepping the envs, so a GPU computes it while the CPU steps them; the
    update then samples the transitions stored before this step (False: store first, then update, as SB3). Step
    updates only: episode updates (train_freq_unit) always come after the store."""
    # Exploration
    noise_type: str = "normal"
    """Exploration noise: normal, ornstein_uhlenbeck or none."""
    noise_std: float = 0.1
    """Noise scale as a fraction of the action half range (high - low) / 2."""
    ou_theta: float = 0.15
    """Ornstein-Uhlenbeck mean reversion rate."""
    ou_dt: float = 1e-2
    """Ornstein-Uhlenbeck time step."""
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
    tau: float = 0.005
    """Polyak coefficient of the target networks (1 copies, 0 freezes them)."""
    policy_delay: int = 1
    """Update the actor and the targets every this many critic updates (1 = DDPG, 2 = TD3's delay)."""
    # Optimisation
    learning_rate: float = 1e-3
    """Adam step size of the actor and the critic."""
    batch_size: int = 256
    """Minibatch size sampled from the replay buffer."""
    hidden_sizes: tuple[int, ...] = (400, 300)
    """Widths of the hidden layers of the actor and the critic."""
    activation: str = "relu"
    """Hidden activation: tanh, relu, elu or gelu."""
    use_cuda_graph: bool = True
    """On CUDA, capture the update and the noisy action as CUDA graphs (False: eager, the same operations)."""
    # Logging and checkpoints
    checkpoint_interval: int = 0
    """Save a checkpoint every this many environment steps when a run directory is used (0: only at the end)."""
    keep_checkpoints: int = 3
    """Periodic checkpoints kept (the final one is always kept)."""
    torch_threads: int = 1
    """torch intra-op threads (one is fastest for small networks; 0 leaves torch's default)."""

    def __post_init__(self) -> None:
        check_positive(self, "n_envs", "buffer_size", "train_freq", "policy_delay",
                       "learning_rate", "batch_size", "ou_dt", "clip_obs", "clip_reward")
        check_unit_interval(self, "gamma", "tau")
        check_nonnegative(self, "learning_starts", "noise_std", "ou_theta", "checkpoint_interval",
                          "keep_checkpoints", "torch_threads")
        check_hidden_sizes(self)
        check_encoder_fields(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "vectorization", ("auto", "sync", "async"))
        check_optional_bool(self, "worker_spin", none="when cores are idle")
        check_choice(self, "noise_type", ("normal", "ornstein_uhlenbeck", "none"))
        check_choice(self, "train_freq_unit", ("step", "episode"))
        g = self.gradient_steps
        if isinstance(g, bool) or not isinstance(g, int) or not (g > 0 or g == -1):
            raise ConfigError(f"DDPGConfig.gradient_steps must be > 0, or -1 (as many as the environment steps since "
                              f"the last update), got {g!r}")


def critic_loss(critic: QCritic, critic_target: QCritic, actor_target: DeterministicActor, b: ReplayBatch,
                gamma: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean (Q(s,a) - y)^2 with y = r + gamma (1 - terminated) Q'(s', mu'(s')); no gradient reaches the actor."""
    with torch.no_grad():
        q_next = critic_target(b.next_obs, actor_target.unit(b.next_obs))
        y = torch.addcmul(b.rewards, 1.0 - b.terminated, q_next, value=gamma)
    q = critic(b.obs, b.actions)
    loss = F.mse_loss(q, y)
    return loss, {"train/loss_q": loss.detach(), "train/q": q.detach().mean()}


def actor_loss(actor: DeterministicActor, critic: QCritic, obs: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-mean Q(s, mu(s))."""
    loss = -critic(obs, actor.unit(obs)).mean()
    return loss, {"train/loss_pi": loss.detach()}


@torch.no_grad()
def noisy_unit_action(mu: torch.Tensor, ou: torch.Tensor, eps: torch.Tensor | None, cfg: DDPGConfig) -> torch.Tensor:
    """clip(mu + noise, -1, 1) with noise = noise_std * eps (normal) or the Ornstein-Uhlenbeck state `ou`, stepped
    in place by eps ~ N(0, 1) (the shape of mu). Elementwise: the same call serves a batch of seeds [K, N, A]."""
    if cfg.noise_type == "normal":
        mu = mu + cfg.noise_std * eps
    elif cfg.noise_type == "ornstein_uhlenbeck":
        # x <- x + theta (0 - x) dt + sigma sqrt(dt) N(0, 1)   (SB3's OrnsteinUhlenbeckActionNoise)
        ou.add_(cfg.ou_theta * cfg.ou_dt * -ou + cfg.noise_std * cfg.ou_dt ** 0.5 * eps)
        mu = mu + ou
    return mu.clamp_(-1.0, 1.0)


class DDPG:
    """Deep deterministic policy gradient. See the module docstring for the equations."""

    algo = "ddpg"
    supported_actions = ("Box",)

    def __init__(self, env: EnvLike, config: DDPGConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", policy: NetworkSpec = None, critic: NetworkSpec = None,
                 encoder: EncoderSpec = None, preset: bool = False, env_backend: str = "gymnasium",
                 env_kwargs: dict[str, Any] | None = None, **overrides: Any) -> None:
        """`policy` / `critic`: your own networks (nn.Module or factory f(in_dim, out_dim); the protocol is in
        rlkit.core.networks: the policy's output goes through tanh, the critic reads [features, unit action]);
        default: MLPs of hidden_sizes. preset=True starts from the tuned preset for this env id (rlkit list
        --presets). env_backend="torch" is refused (DDPG steps its envs
        with NumPy actions). env_kwargs go to gymnasium.make
        (and are saved in checkpoints). Other keywords are DDPGConfig fields.
        `encoder`: your own observation encoder (nn.Module or factory f(observation_space) -> nn.Module; the
        protocol is in rlkit.core.networks.make_obs_encoder); default: flatten/one-hot, a Nature CNN for images."""
        self.config = cfg = build_config(DDPGConfig, config, preset=preset_config(self.algo, env, preset), **overrides)
        configure_threads(cfg.torch_threads)
        self.seed = seed
        if seed is not None:
            seed_everything(seed)
        es = agent_io.setup_env(self.algo, env, cfg, seed, self.supported_actions, require_bounded_actions=True,
                                env_kwargs=env_kwargs, env_backend=env_backend, device=device, tensor_steps=False)
        self.env_kwargs = dict(env_kwargs or {})
        # device="auto": the faster device for this work, by the rule in rlkit.core.device.auto_device
        self.device, self.device_reason = agent_io.choose_device(device, self.algo, es, cfg.batch_size)
        self.env, self.env_id, self._env_factory = es.venv, es.env_id, es.factory
        self.observation_space, self.action_space = es.obs_space, es.action_space
        self.n_envs = es.n_envs
        obs_shape, obs_dtype = obs_storage(es.obs_space)  # uint8 images stay uint8 (kept apart from float rows)
        self.act_dim = int(np.prod(es.action_space.shape))
        if self.env is not None:  # the buffer first: a capacity that does not fit fails before any network exists
            try:
                self.buffer = ReplayBuffer(cfg.buffer_size, obs_shape, (self.act_dim,), self.device,
                                           obs_dtype=obs_dtype)
            except MemoryError:
                self.env.close()
                raise

        self.networks = {"policy": network_source(policy), "critic": network_source(critic),
                         "encoder": network_source(encoder)}
        # One set of observation statistics for actor, critic and targets; a CNN (images) for the actor and one
        # for the critic (their own losses and optimisers, as Stable-Baselines3's off-policy agents), copied by
        # the targets and Polyak-averaged with them.
        enc = make_obs_encoder(es.obs_space, cfg, encoder, orthogonal=False)
        critic_enc = make_obs_encoder(es.obs_space, cfg, encoder, share_statistics=enc, orthogonal=False)
        f = enc.out_dim
        net = build_network(policy, f, self.act_dim, lambda: MLP(f, cfg.hidden_sizes, self.act_dim,
                                                                  cfg.activation, orthogonal=False), "policy")
        self.actor = DeterministicActor(enc, net, es.action_space).to(self.device)
        self.critic = make_q_critic(critic_enc, es.action_space, cfg.hidden_sizes, cfg.activation,
                                    net=critic, orthogonal=False).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_target.encoder = tie_statistics(self.actor_target.encoder, self.actor.encoder)
        self.critic_target.encoder = tie_statistics(self.critic_target.encoder, self.critic.encoder)
        cuda = self.device.type == "cuda"
        # capturable=True keeps Adam's step count on the device, which a CUDA graph needs; fused: one kernel.
        opt_kw: dict[str, Any] = {"lr": cfg.learning_rate, "capturable": cuda, "fused": True if cuda else None}
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), **opt_kw)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), **opt_kw)
        self._online = [*self.actor.parameters(), *self.critic.parameters()]
        self._targets = [*self.actor_target.parameters(), *self.critic_target.parameters()]
        self._use_graph = cuda and cfg.use_cuda_graph
        self._graphs: dict[bool, tuple[Any, dict[str, torch.Tensor]]] = {}
        self._act_graph: tuple[Any, torch.Tensor] | None = None

        self._scale = (es.action_space.high.astype(np.float64).reshape(-1) - es.action_space.low.reshape(-1)) / 2
        self._bias = (es.action_space.high.astype(np.float64).reshape(-1) + es.action_space.low.reshape(-1)) / 2
        if self.env is not None:
            self.collector = agent_io.make_collector(es, self.device, cfg)
            self._obs_stage = obs_stager(obs_shape, obs_dtype, self.n_envs, self.device)
            self._obs_t = self._obs_stage(self.collector.obs_np)
        self._ou = torch.zeros(self.n_envs, self.act_dim, device=self.device)  # OU state per env
        self.num_timesteps = 0
        self.n_updates = 0
        self._vec_steps = 0
        # environment steps and finished episodes since the last update (train_freq, gradient_steps=-1)
        self._since_update = {"steps": 0, "episodes": 0}

    # ---- acting -------------------------------------------------------------------------------------------
    def _to_env(self, unit: np.ndarray) -> np.ndarray:
        """[-1, 1] actions -> the env's Box (clipped again in float64 against rounding, in the space's dtype)."""
        env_a = (self._bias + np.clip(unit, -1.0, 1.0) * self._scale).reshape(-1, *self.action_space.shape)
        return to_env_actions(env_a, self.action_space)

    def _explore(self) -> torch.Tensor:
        """Noisy unit action clip(mu(s) + eps, -1, 1) for the current observations (replayed as a CUDA graph
        on CUDA); uniform random actions before learning_starts."""
        if self.num_timesteps < self.config.learning_starts:
            return torch.rand(self.n_envs, self.act_dim, device=self.device) * 2.0 - 1.0
        if not self._use_graph:
            return self._noisy_action(self._obs_t)
        if self._act_graph is None:
            ou = self._ou.clone()
            self._act_graph = capture_cuda_graph(lambda: self._noisy_action(self._obs_t))
            self._ou.copy_(ou)  # undo the warm-up's OU steps
        self._act_graph[0].replay()
        return self._act_graph[1]

    @torch.no_grad()
    def _noisy_action(self, obs: torch.Tensor) -> torch.Tensor:
        mu = self.actor.unit(obs)
        eps = None if self.config.noise_type == "none" else torch.randn_like(mu)
        return noisy_unit_action(mu, self._ou, eps, self.config)

    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        """Env actions for one observation or a batch; not deterministic adds Gaussian noise (noise_std)."""
        std = 0.0 if deterministic else (self.config.noise_std if self.config.noise_type != "none" else 0.0)

        def policy(o: torch.Tensor) -> torch.Tensor:
            unit = self.actor.unit(o)
            unit = (unit + std * torch.randn_like(unit)).clamp(-1.0, 1.0) if std else unit
            return torch.from_numpy(self._to_env(unit.cpu().numpy()))
        return agent_io.numpy_act(policy, obs, self.observation_space, self.action_space, self.device)

    def value(self, obs: Any, action: Any) -> np.ndarray:
        """Q(s, a) for one (observation, env action) pair or a batch."""
        o, single = agent_io.obs_batch(obs, self.observation_space, self.device)
        a, b = np.asarray(action, dtype=np.float64), obs_len(o)
        if a.shape != ((self.act_dim,) if single else (b, self.act_dim)):
            raise ValueError(f"action of shape {a.shape} does not fit {b} observation(s) of "
                             f"{self.action_space}: expected ({'' if single else f'{b}, '}{self.act_dim},)")
        unit = (a.reshape(-1, self.act_dim) - self._bias) / self._scale  # the Box -> [-1, 1], as the critic reads it
        with torch.no_grad():
            q = self.critic(o, torch.as_tensor(unit, dtype=torch.float32, device=self.device)).cpu().numpy()
        return q[0] if single else q

    # ---- one gradient step ----------------------------------------------------------------------------------
    def _gradient_step(self, actor_step: bool) -> dict[str, torch.Tensor]:
        """Sample, critic step, and (when actor_step) actor step + Polyak. Only device ops: graph-capturable."""
        cfg = self.config
        batch = self.buffer.sample(cfg.batch_size)
        loss_q, info = critic_loss(self.critic, self.critic_target, self.actor_target, batch, cfg.gamma)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_optimizer.step()
        if actor_step:
            loss_pi, info_pi = actor_loss(self.actor, self.critic, batch.obs)
            params = list(self.actor.parameters())
            # Gradients for the actor only: the critic's weights get none, and the critic step is already done.
            for p, g in zip(params, torch.autograd.grad(loss_pi, params)):
                p.grad = g
            self.actor_optimizer.step()
            polyak_update(self._targets, self._online, cfg.tau)
            info.update(info_pi)
        return info

    def update(self) -> dict[str, torch.Tensor]:
        """One gradient step (a CUDA-graph replay on CUDA). Returns tensor diagnostics (no host sync)."""
        actor_step = (self.n_updates + 1) % self.config.policy_delay == 0
        if self._use_graph:
            if actor_step not in self._graphs:
                self._graphs[actor_step] = self._capture(actor_step)
            graph, info = self._graphs[actor_step]
            graph.replay()
        else:
            info = self._gradient_step(actor_step)
        self.n_updates += 1
        return info

    def _capture(self, actor_step: bool) -> tuple[Any, dict[str, torch.Tensor]]:
        """Capture _gradient_step as a CUDA graph, then undo the warm-up steps (parameters, Adam moments and
        the CUDA RNG come back in place), so the first replay is the update an eager call would have made."""
        tensors = [*self._online, *self._targets]
        saved = [t.detach().clone() for t in tensors]
        opt_saved = [{p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
                     for opt in (self.actor_optimizer, self.critic_optimizer)]
        graph, info = capture_cuda_graph(lambda: self._gradient_step(actor_step))
        with torch.no_grad():
            torch._foreach_copy_(tensors, saved)
            for opt, snap in zip((self.actor_optimizer, self.critic_optimizer), opt_saved):
                for p, s in opt.state.items():
                    for k, v in s.items():  # fresh state was created by the warm-up: Adam starts from zeros
                        v.copy_(snap[p][k]) if p in snap else v.zero_()
        return graph, info

    def _env_step(self, unit: np.ndarray) -> None:
        """Step the envs with unit actions [N, A]; store the transitions (step.next_obs: the TRUE next observation),
        update the observation statistics, restart the OU noise of ended episodes, count the steps."""
        step = self.collector.step(self._to_env(unit))
        self.buffer.add(step.obs, unit, step.train_rewards, step.next_obs, step.terminated)
        if self.config.normalize_obs:  # the buffer keeps raw observations; the networks normalise when they read
            self.actor.encoder.update_stats(self._obs_t)  # step.obs, already on the device (staged for the act)
        done = step.terminated | step.truncated
        if done.any():
            self._ou[torch.from_numpy(done).to(self.device)] = 0.0  # OU state restarts with each episode
        self._obs_t = self._obs_stage(self.collector.obs_np)
        self.num_timesteps += self.n_envs
        self._vec_steps += 1
        if self.config.train_freq_unit == "episode":  # (by steps, the interval is train_freq vector steps)
            self._since_update["steps"] += self.n_envs
            self._since_update["episodes"] += int(done.sum())

    def _updates_due(self, before_env_step: bool) -> int:
        """How many gradient steps to take now (0: none), at the point of the vector step this call stands for:
        before the env step (train_freq_unit "step" with overlap_env_step) or after it. An episode interval that
        ends here is counted as done: its steps and episodes start again from zero (also while learning_starts
        holds the updates back, as Stable-Baselines3 does)."""
        cfg, since = self.config, self._since_update
        if cfg.train_freq_unit == "episode":
            if before_env_step or since["episodes"] < cfg.train_freq:
                return 0
            steps = since["steps"]
            since["steps"] = since["episodes"] = 0
        else:
            if before_env_step != cfg.overlap_env_step or (self._vec_steps + before_env_step) % cfg.train_freq:
                return 0
            steps = cfg.train_freq * self.n_envs
        ready = self.num_timesteps + self.n_envs * before_env_step > cfg.learning_starts and len(self.buffer) > 0
        return (cfg.gradient_steps if cfg.gradient_steps > 0 else steps) if ready else 0

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 1000, *,
              total_budget: int | None = None, eval_freq: int = 0, n_eval_episodes: int = 10) -> "DDPG":
        """Train for `total_steps` more environment steps. Each vector step: act (the one host sync: actions
        to the CPU env), step the envs through the collector (true final observations, checks, episode
        statistics), store the transitions; every train_freq steps, gradient_steps updates (launched before the
        env step with overlap_env_step, after the store without), or with train_freq_unit "episode" after the
        store once train_freq episodes have finished. Every `log_interval` environment steps (and at
        the end) metrics are logged and `callback(agent, metrics)` runs (False stops); with `run_dir`, TensorBoard
        events, progress.csv, config.json and checkpoints/ go there."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval, callback, total_budget,
                                   eval_freq, n_eval_episodes)
        info: dict[str, Any] = {}
        actions = HostFetch(self.device)
        try:
            while self.num_timesteps < run.target:
                actions.fetch(self._explore())  # the one host sync per step: get() below
                for _ in range(self._updates_due(before_env_step=True)):  # on a GPU while the CPU steps the envs
                    info = self.update()  # (queued behind the act, so get() waits for the act alone)
                self._env_step(actions.get())  # step the envs, store the transitions
                for _ in range(self._updates_due(before_env_step=False)):
                    info = self.update()
                if not run.end_of_iteration(self, info):
                    break
            run.finish(self)
        finally:
            run.close()
        return self

    def seed_batch_refusal(self) -> str | None:
        """Why this agent's setting cannot train in a SeedBatch (None: it can); SeedBatch asks its first agent."""
        if self.config.train_freq_unit == "episode":
            return ("DDPG with train_freq_unit='episode' cannot train seeds in lockstep: each seed updates when its "
                    "own episodes end; train them in separate processes (--seeds-per-process 1)")
        return None

    @staticmethod
    def learn_seeds(batch: SeedBatch, total_steps: int, **learn_args: Any) -> None:
        """learn() for the K agents of a SeedBatch in lockstep (rlkit.core.seeds; the same arguments, run_dirs one
        per seed): one batched actor forward per vector step (each seed's own noise), each seed stepping its own
        envs into its own replay buffer; each gradient step samples every seed's minibatch from its own stream,
        then both losses, gradients and the Polyak updates of all seeds run as one batch, and one Adam step
        serves all seeds (StackedAdam: each agent's optimiser keeps its own moments, views of the batch's). On
        CUDA the act and the update are CUDA graphs; their random numbers are drawn just before each replay, eagerly,
        from each seed's generator (K small kernels: a graph with the K generators registered would refill their
        seeds and offsets on every replay, which costs more on the host than the draws)."""
        agents, cfg = batch.agents, batch.agents[0].config
        # Seed 0's _updates_due() serves every seed: it reads only the config, the step counts and the buffer's fill
        # level, which the seeds share from here on (they step in lockstep)
        if len({(a._vec_steps, len(a.buffer)) for a in agents}) > 1:
            raise ValueError("the seeds' agents differ in vector steps taken or in replay buffer size; a SeedBatch "
                             "trains them in lockstep")
        nets = SeedNets([{"actor": a.actor, "critic": a.critic, "actor_target": a.actor_target,
                          "critic_target": a.critic_target} for a in agents],
                        {name: ParamStack.of_modules([getattr(a, name) for a in agents])
                         for name in ("actor", "critic", "actor_target", "critic_target")})
        ou = stack_tensors_([a._ou for a in agents])  # [K, N, A]: each agent's OU state a view of its row
        first, N, K = agents[0], agents[0].n_envs, len(agents)
        for a in agents:  # parameters and buffers move into stacked storage: a graph a lone learn() captured is stale
            a._graphs.clear()
            a._act_graph = None
        if cfg.vectorization == "auto":  # the seeds' envs step in shared worker processes, several sub-envs in each
            batch.share_env_workers(spin=cfg.worker_spin)
        lockstep = Lockstep([a.collector for a in agents])  # steps the seeds' envs (in shared workers: as one)
        # The host side of a vector step, once for all K seeds (each seed keeps its own envs, collector and buffer):
        # the K observation batches staged in one copy (`obs`, the act graph's input, refilled in place every step),
        # the K buffers written as one (StackedReplayBuffers: one host array, one copy), the actions scaled at once.
        obs_shape, obs_dtype = obs_storage(first.observation_space)
        stage = HostStager((K, N, *obs_shape), batch.device, obs_dtype)
        obs = stage(lockstep.current_obs())
        replay = None if first.buffer.split_obs else StackedReplayBuffers([a.buffer for a in agents])
        optimizers = {name: StackedAdam([getattr(a, f"{name}_optimizer") for a in agents], nets.groups[name])
                      for name in ("actor", "critic")}
        eps, u = torch.zeros_like(ou), torch.zeros(K, cfg.batch_size, dtype=torch.float64, device=batch.device)
        draw_noise, draw_u = batch.streams.filler(eps, "normal"), batch.streams.filler(u, "uniform")  # rows cut once

        @torch.no_grad()
        def noisy_action() -> torch.Tensor:
            """_noisy_action() for every seed [K, N, A], with the noise `eps` each seed drew (explore())."""
            mu = nets.call(lambda m, o: m.actor.unit(o), obs, uses=("actor",))
            return noisy_unit_action(mu, ou, None if cfg.noise_type == "none" else eps, cfg)

        # On CUDA (use_cuda_graph) the act and the two kinds of update are CUDA graphs. They draw nothing: `eps` and
        # `u` are filled before each replay from the seeds' generators (see the docstring), none registered.
        graphs = first._use_graph
        act = GraphedStep(noisy_action, graphs, "DDPG act of the seeds")
        updates = {k: GraphedStep(lambda k=k: DDPG._gradient_step_seeds(batch, nets, replay, optimizers, u, k),
                                  graphs, "DDPG update of the seeds") for k in (False, True)}

        # every seed's encoder.update_stats() with its rows of `obs`, in one vmapped call
        stats = GraphedStep(lambda: nets.update_obs_stats(obs), graphs, "DDPG observation statistics of the seeds")

        def env_step(unit: np.ndarray, while_waiting: Callable[[], Any] | None = None) -> None:
            """_env_step() for every seed (unit actions [K, N, A]), the host work done once for all K where it can
            be: actions scaled at once, the envs stepped by `lockstep` (rollout.Lockstep: worker processes of all seeds
            at the same time; `while_waiting` runs once they have the actions), the K buffers written as one,
            statistics and OU restarts of all seeds in one call each, the next observations staged in one copy."""
            env_a = first._to_env(unit.reshape(K * N, -1)).reshape(K, N, *first.action_space.shape)
            step = lockstep.step(env_a, while_waiting)  # every array [K, N, ...]
            if replay is None:  # observations kept apart (images): each seed's own buffer
                for k, a in enumerate(agents):
                    a.buffer.add(obs_index(step.obs, k), unit[k], step.train_rewards[k], obs_index(step.next_obs, k),
                                 step.terminated[k])
            else:
                replay.add(step.obs, unit, step.train_rewards, step.next_obs, step.terminated)
            if cfg.normalize_obs:  # `obs` still holds every seed's step.obs
                stats()
            done = step.terminated | step.truncated
            if done.any():
                ou[torch.from_numpy(done).to(batch.device)] = 0.0  # OU state restarts with each episode
            stage(lockstep.current_obs())  # refills `obs` in place
            for a in agents:
                a.num_timesteps += N
                a._vec_steps += 1

        def explore() -> torch.Tensor:
            """_explore() for every seed [K, N, A]: uniform before learning_starts, else the noisy actor."""
            if first.num_timesteps < cfg.learning_starts:
                return batch.streams.rand((N, first.act_dim)) * 2.0 - 1.0
            if cfg.noise_type != "none":
                draw_noise()  # each seed's randn_like(mu) of _noisy_action(), into `eps`
            return act()

        def update() -> dict[str, torch.Tensor]:
            """update() for every seed: diagnostics [K]."""
            draw_u()  # each seed's ReplayBuffer.sample_indices draw, into `u`
            info = updates[(first.n_updates + 1) % cfg.policy_delay == 0]()
            for a in agents:
                a.n_updates += 1
            return info

        last: dict[str, Any] = {"info": {}}  # the diagnostics of the last update

        def run_updates(n: int) -> None:
            for _ in range(n):
                last["info"] = update()

        actions = HostFetch(batch.device)
        runs = batch.begin_learn(total_steps, **learn_args)
        try:
            while runs.active():
                actions.fetch(explore())  # [K, N, A]: the one host sync per step, get() below
                n = first._updates_due(before_env_step=True)  # (overlap_env_step)
                if actions.is_async:  # a GPU runs the update right behind the act, while the host steps the envs
                    run_updates(n)
                    env_step(actions.get())
                else:  # a CPU runs it while the env workers step
                    env_step(actions.get(), (lambda: run_updates(n)) if n else None)
                run_updates(first._updates_due(before_env_step=False))
                if not runs.end_of_iteration(last["info"]):
                    break
            runs.finish()
        finally:
            for a in agents:  # each agent acts alone again from its own staged observations
                a._obs_t = a._obs_stage(a.collector.obs_np)
            runs.close()

    @staticmethod
    def _gradient_step_seeds(batch: SeedBatch, nets: SeedNets, replay: StackedReplayBuffers | None,
                             optimizers: dict[str, StackedAdam], u: torch.Tensor, actor_step: bool
                             ) -> dict[str, torch.Tensor]:
        """_gradient_step() for every seed at once, minibatch k from the draws u[k] (one gather from the stacked
        buffers), each group's Adam step one step of all seeds; only device ops."""
        agents, cfg = batch.agents, batch.agents[0].config
        if replay is not None:
            b = replay.sample(u)  # [K, B, ...]
        else:  # observations kept apart (images): each seed's own buffer
            samples = [a.buffer.gather(a.buffer.sample_indices(cfg.batch_size, u[k])) for k, a in enumerate(agents)]
            b = ReplayBatch(*(torch.stack(field) for field in zip(*samples)))  # [K, B, ...]
        loss_q, info = nets.call(lambda m, b: critic_loss(m.critic, m.critic_target, m.actor_target, b, cfg.gamma), b,
                                 uses=("critic", "critic_target", "actor_target"))
        nets.backward(loss_q, "critic")
        optimizers["critic"].step()
        if actor_step:
            loss_pi, info_pi = nets.call(lambda m, o: actor_loss(m.actor, m.critic, o), b.obs, uses=("actor", "critic"))
            nets.backward(loss_pi, "actor")  # the actor's gradient only, through the critic just stepped
            optimizers["actor"].step()
            g = nets.groups
            polyak_update([g["actor_target"].param, g["critic_target"].param],
                          [g["actor"].param, g["critic"].param], cfg.tau)
            info.update(info_pi)
        return info

    # ---- evaluation and persistence -------------------------------------------------------------------------
    def evaluate(self, n_episodes: int = 10, deterministic: bool = True, env: Any = None) -> dict[str, float]:
        return agent_io.evaluate_agent(lambda o: self.act(o, deterministic), self._env_factory, n_episodes,
                                       self.seed, env)

    def state_dict(self) -> dict[str, Any]:
        state = {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                 "actor_target": self.actor_target.state_dict(), "critic_target": self.critic_target.state_dict(),
                 "actor_optimizer": self.actor_optimizer.state_dict(),
                 "critic_optimizer": self.critic_optimizer.state_dict(),
                 "noise": {"ou": self._ou.cpu()},
                 "collector": self.collector.state_dict() if self.env is not None else {},
                 "n_updates": self.n_updates, "vec_steps": self._vec_steps, "since_update": dict(self._since_update)}
        if self.config.save_replay_buffer and self.env is not None:
            state["replay_buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        # this agent's own capturable/fused settings (a CPU checkpoint resumed on CUDA gets its CUDA-graph Adam)
        load_optimizer_state(self.actor_optimizer, state["actor_optimizer"])
        load_optimizer_state(self.critic_optimizer, state["critic_optimizer"])
        self._ou.copy_(state["noise"]["ou"])
        if self.env is not None:
            self.collector.load_state_dict(state["collector"])
            if "replay_buffer" in state:
                self.buffer.load_state_dict(state["replay_buffer"])
        self.n_updates, self._vec_steps = int(state["n_updates"]), int(state["vec_steps"])
        since = state.get("since_update", {})  # (absent from checkpoints of rlkit before train_freq_unit: zeros)
        self._since_update = {"steps": int(since.get("steps", 0)), "episodes": int(since.get("episodes", 0))}
        self._graphs.clear()  # loading replaced Adam's state tensors: recapture on the next update

    def envs_restored(self, restored: bool) -> None:
        """Called after loading: act from the collector's (restored or fresh) observations. A checkpoint of a run
        under way without its replay buffer resumes from an empty one, which resume_note (the resume line of the
        run's log) says."""
        self._obs_t = self._obs_stage(self.collector.obs_np)
        if self.num_timesteps > 0 and len(self.buffer) == 0:
            note = (f"the replay buffer was not saved (save_replay_buffer=False): training goes on from step "
                    f"{self.num_timesteps} with an empty one, which refills")
            self.resume_note = f"{self.resume_note}; {note}" if getattr(self, "resume_note", None) else note

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "DDPG":
        """Rebuild from a checkpoint; without env, act() and value() work and learn() asks for one."""
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)
