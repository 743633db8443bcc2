"""REINFORCE: Monte-Carlo policy gradient with reward-to-go and an optional learned baseline.

Williams (1992), "Simple statistical gradient-following algorithms for connectionist RL"; the reward-to-go and
baseline form follows Sutton & Barto (2018, sec. 13.4) and Spinning Up's VPG.

    G_t   = r_t + gamma * G_{t+1}                     (reward-to-go, reset at every episode end)
    A_t   = G_t - V_phi(s_t)                          (or A_t = G_t without a baseline)
    g     = E[ grad_theta log pi_theta(a_t | s_t) * A_t ]  (+ ent_coef * grad H[pi_theta(.|s_t)])
    phi  <- argmin_phi E[(V_phi(s_t) - G_t)^2]        (vf_iters full-batch Adam steps per rollout)

Deviations from the textbook, each because batches are fixed T x N slices of vector envs, not whole episodes:
  * An episode still running at the end of a rollout continues from V_phi(s_T) (the baseline's estimate), and
    one cut by a time limit continues from V_phi(true final observation); a termination contributes 0.
    Without a baseline both are 0, i.e. the return is cut there (biased on truncation; documented).
  * Advantages are normalised per batch (mean 0, std 1) by default; a batch of one is left as is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rlkit.core import agent_io
from rlkit.core.buffers import Rollout, RolloutBuffer
from rlkit.core.config import (build_config, check_choice, check_cuda_graphs, check_hidden_sizes, check_nonnegative,
                               check_positive, check_unit_interval, preset_config)
from rlkit.core.config import check_encoder_fields
from rlkit.core.device import GraphedStep, configure_threads, seed_everything
from rlkit.core.envs import EnvLike
from rlkit.core.losses import policy_gradient_loss
from rlkit.core.networks import (ACTIVATIONS, EncoderSpec, NetworkSpec, action_storage, make_actor, make_obs_encoder,
                                 make_v_critic, network_source, obs_storage)
from rlkit.core.optim import clip_grad_norm_, load_optimizer_state, optimizer_state_dict
from rlkit.core.returns import explained_variance, normalize, reward_to_go
from rlkit.core.seeds import ParamStack, SeedBatch, SeedNets, stack_rollouts


@dataclass
class REINFORCEConfig:
    # Collection
    n_envs: int = 8
    """Number of parallel environments."""
    vectorization: str = "auto"
    """sync steps the envs in this process, async in one worker process each (Gymnasium's AsyncVectorEnv, the same
    transitions); auto: async for an Atari id with n_envs > 1, else sync."""
    n_steps: int = 128
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
    use_baseline: bool = True
    """Subtract a learned state-value baseline V(s) from the reward-to-go (and bootstrap cut episodes with it)."""
    normalize_advantage: bool = True
    """Normalise advantages to mean 0, std 1 within each batch."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the policy loss."""
    # Optimisation
    learning_rate: float = 1e-3
    """Adam step size of the policy."""
    vf_learning_rate: float = 1e-3
    """Adam step size of the baseline."""
    vf_iters: int = 5
    """Full-batch baseline regression steps per rollout."""
    max_grad_norm: float = 0.5
    """Clip the policy gradient to this global norm (0 disables clipping)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the policy and the baseline."""
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
        check_positive(self, "n_envs", "n_steps", "learning_rate", "vf_learning_rate", "vf_iters", "clip_obs",
                       "clip_reward")
        check_unit_interval(self, "gamma")
        check_nonnegative(self, "ent_coef", "max_grad_norm", "checkpoint_interval", "keep_checkpoints",
                          "torch_threads")
        check_hidden_sizes(self)
        check_encoder_fields(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "vectorization", ("auto", "sync", "async"))


@torch.no_grad()
def reinforce_targets(critic: torch.nn.Module, b: Rollout, cfg: REINFORCEConfig
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(advantages, reward-to-go G_t, baseline values V(s_t) or None), each flat [T * N]. With a baseline, cut
    episodes continue from V(s_T) and, where truncated, from V(true final obs); advantages normalised when
    cfg.normalize_advantage."""
    T, N = b.rewards.shape
    values = None
    if cfg.use_baseline:
        values = critic(b.flat(b.obs)).view(T, N)
        final_values = critic(b.flat(b.final_obs)).view(T, N)
        last_values = critic(b.last_obs)
        returns = reward_to_go(b.rewards, b.terminated, b.truncated, cfg.gamma, final_values, last_values)
        adv = returns - values
    else:
        returns = reward_to_go(b.rewards, b.terminated, b.truncated, cfg.gamma)
        adv = returns
    adv = adv.reshape(-1)
    if cfg.normalize_advantage:
        adv = normalize(adv)
    return adv, returns.reshape(-1), None if values is None else values.reshape(-1)


def policy_loss(actor: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor,
                cfg: REINFORCEConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-E[log pi(a|s) * A] - ent_coef * E[H] on a flat batch."""
    logp, entropy = actor.log_prob_entropy(obs, actions)
    return policy_gradient_loss(logp, entropy, adv, cfg.ent_coef)


def baseline_loss(critic: torch.nn.Module, obs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[(V(s_t) - G_t)^2]."""
    return (critic(obs) - target).pow(2).mean()


class REINFORCE:
    """Policy gradient with reward-to-go. See the module docstring for the equations."""

    algo = "reinforce"
    supported_actions = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")

    def __init__(self, env: EnvLike, config: REINFORCEConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", policy: NetworkSpec = None, critic: NetworkSpec = None,
                 encoder: EncoderSpec = None, preset: bool = False, env_backend: str = "gymnasium",
                 env_kwargs: dict[str, Any] | None = None, **overrides: Any) -> None:
        """`policy` / `critic`: your own networks (nn.Module or factory f(in_dim, out_dim); the protocol is in
        rlkit.core.networks); default: MLPs of hidden_sizes. preset=True starts from the tuned preset for this env
        id (rlkit list --presets).
        env_backend="torch": train on rlkit.core.torch_envs' batched envs on the agent's device (evaluation
        stays on Gymnasium's env). env_kwargs go to gymnasium.make
        (and are saved in checkpoints). Other keywords are REINFORCEConfig fields.
        `encoder`: your own observation encoder (nn.Module or factory f(observation_space) -> nn.Module; the
        protocol is in rlkit.core.networks.make_obs_encoder); default: flatten/one-hot, a Nature CNN for images."""
        self.config = cfg = build_config(REINFORCEConfig, config, preset=preset_config(self.algo, env, preset),
                                         **overrides)
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

        self.networks = {"policy": network_source(policy), "critic": network_source(critic),
                         "encoder": network_source(encoder)}
        # One set of observation statistics for both networks; a CNN (images) for each, since the policy and the
        # baseline have their own losses and optimisers (docs/architecture.md, "Observation encoders").
        actor_enc = make_obs_encoder(es.obs_space, cfg, encoder)
        critic_enc = make_obs_encoder(es.obs_space, cfg, encoder, share_statistics=actor_enc)
        self.actor = make_actor(es.obs_space, es.action_space, cfg.hidden_sizes, cfg.activation,
                                cfg.log_std_init, encoder=actor_enc, net=policy).to(self.device)
        self.critic = make_v_critic(critic_enc, cfg.hidden_sizes, cfg.activation, net=critic).to(self.device)
        # CUDA graphs of the rollout and the update (cuda_graphs) need Adam's step count on the device (capturable)
        self.cuda_graphs, self.cuda_graphs_reason = agent_io.cuda_graphs(self.algo, cfg, es, self.device)
        graph_kw: dict[str, Any] = {"capturable": True, "fused": True} if self.cuda_graphs else {}
        self.pi_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.learning_rate, **graph_kw)
        self.vf_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.vf_learning_rate, **graph_kw)

        if self.env is not None:  # an agent loaded without an env (act/value only) needs no rollout storage
            obs_shape, obs_dtype = obs_storage(es.obs_space)  # uint8 images stay uint8
            self.buffer = RolloutBuffer(cfg.n_steps, es.n_envs, obs_shape, *action_storage(es.action_space),
                                        self.device, obs_dtype)
            self.collector = agent_io.make_collector(es, self.device, cfg)
        self.num_timesteps = 0
        self.n_updates = 0

    # ---- acting -------------------------------------------------------------------------------------------
    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        policy = self.actor.mode if deterministic else self.actor.sample_actions
        return agent_io.numpy_act(policy, obs, self.observation_space, self.action_space, self.device)

    def value(self, obs: Any) -> np.ndarray:
        """The baseline's V(s) for one observation or a batch."""
        return agent_io.numpy_value(self.critic, obs, self.observation_space, self.device)

    # ---- one update -----------------------------------------------------------------------------------------
    def update(self, buf: RolloutBuffer) -> dict[str, torch.Tensor]:
        """One policy-gradient step and vf_iters baseline steps on a full rollout. Returns tensor diagnostics.
        Device work only, so learn() can replay it as a CUDA graph (learn() counts n_updates)."""
        cfg = self.config
        obs, actions = buf.flat(buf.obs), buf.flat(buf.actions)
        adv, returns, values = reinforce_targets(self.critic, buf.rollout(), cfg)
        loss_pi, info = policy_loss(self.actor, obs, actions, adv, cfg)  # Psi = A_t
        self.pi_optimizer.zero_grad(set_to_none=True)
        loss_pi.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
        self.pi_optimizer.step()

        if cfg.use_baseline:
            for _ in range(cfg.vf_iters):
                loss_v = baseline_loss(self.critic, obs, returns)
                self.vf_optimizer.zero_grad(set_to_none=True)
                loss_v.backward()
                self.vf_optimizer.step()
            info["train/loss_v"] = loss_v.detach()
            info["train/explained_variance"] = explained_variance(values, returns)
        return info

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 1000, *,
              total_budget: int | None = None, eval_freq: int = 0, n_eval_episodes: int = 10) -> "REINFORCE":
        """Train for `total_steps` more environment steps (whole rollouts). With `run_dir`, write TensorBoard
        events, progress.csv, config.json and checkpoints/ there. Every `log_interval` environment steps (and
        after the last update) metrics are logged and `callback(agent, metrics)` runs; returning False stops."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval, callback, total_budget,
                                   eval_freq, n_eval_episodes)
        batch = self.config.n_steps * self.collector.n_envs
        # cuda_graphs: after two eager iterations the rollout and the update each replay as one CUDA graph
        noise = agent_io.rollout_noise(self.actor, self.config)  # torch envs: drawn by the collector (counter stream)
        collect = GraphedStep(lambda: self.collector.collect(self.buffer, self.actor.sample_actions, noise=noise),
                              self.cuda_graphs, "REINFORCE rollout", generators=self.collector.generators)
        update = GraphedStep(lambda: self.update(self.buffer), self.cuda_graphs, "REINFORCE update")
        try:
            while self.num_timesteps < run.target:
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
        per seed): each seed collects with its own envs and noise; the returns, the policy-gradient losses and
        gradients (clipped per seed) and the baseline fits of all seeds run as one batch (with cuda_graphs, as CUDA
        graphs); each agent's own Adam steps its own parameters (views of the batch's)."""
        agents, cfg = batch.agents, batch.agents[0].config
        nets = SeedNets([{"actor": a.actor, "critic": a.critic} for a in agents],
                        {"pi": ParamStack.of_modules([a.actor for a in agents]),
                         "vf": ParamStack.of_modules([a.critic for a in agents])})
        rollouts = stack_rollouts([a.buffer for a in agents])  # [K, T, N, ...]: what each seed's collector writes
        obs, actions = rollouts.obs.flatten(1, 2), rollouts.actions.flatten(1, 2)  # [K, T * N, ...] views

        def update() -> dict[str, torch.Tensor]:
            """update() for every seed at once; diagnostics [K]."""
            adv, returns, *values = nets.call(
                lambda m, b: tuple(x for x in reinforce_targets(m.critic, b, cfg) if x is not None), rollouts,
                uses=("critic",))
            loss_pi, info = nets.call(lambda m, o, u, w: policy_loss(m.actor, o, u, w, cfg), obs, actions, adv,
                                      uses=("actor",))
            nets.backward(loss_pi, "pi")
            if cfg.max_grad_norm > 0:
                clip_grad_norm_(nets.groups["pi"].param.grad, cfg.max_grad_norm)  # each seed by its own norm
            for a in agents:
                a.pi_optimizer.step()
            if cfg.use_baseline:
                for _ in range(cfg.vf_iters):
                    loss_v = nets.call(lambda m, o, y: baseline_loss(m.critic, o, y), obs, returns, uses=("critic",))
                    nets.backward(loss_v, "vf")
                    for a in agents:
                        a.vf_optimizer.step()
                info["train/loss_v"] = loss_v.detach()
                info["train/explained_variance"] = torch.func.vmap(explained_variance)(values[0], returns)
            return info

        graphs = agents[0].cuda_graphs
        # graphs run on torch envs only, whose rollouts draw from counter streams: no generator to register
        collect = GraphedStep(lambda: batch.collect(nets, rollouts), graphs, "REINFORCE rollout of the seeds")
        update_step = GraphedStep(update, graphs, "REINFORCE update of the seeds")
        runs = batch.begin_learn(total_steps, **learn_args)
        n = cfg.n_steps * agents[0].collector.n_envs
        try:
            while runs.active():
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
        return agent_io.evaluate_agent(lambda o: self.act(o, deterministic), self._env_factory, n_episodes,
                                       self.seed, env)

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "pi_optimizer": optimizer_state_dict(self.pi_optimizer),
                "vf_optimizer": optimizer_state_dict(self.vf_optimizer),
                "collector": self.collector.state_dict() if self.env is not None else {}, "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        load_optimizer_state(self.pi_optimizer, state["pi_optimizer"])
        load_optimizer_state(self.vf_optimizer, state["vf_optimizer"])
        if self.env is not None:
            self.collector.load_state_dict(state["collector"])
        self.n_updates = int(state["n_updates"])

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "REINFORCE":
        """Rebuild from a checkpoint; without env, act() and value() work and learn() asks for one."""
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)

