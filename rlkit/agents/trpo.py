"""TRPO: trust-region policy optimisation by natural gradient, conjugate gradient and a KL line search.

Schulman et al. (2015), "Trust Region Policy Optimization", with GAE advantages (Schulman et al. 2016) and the
practical algorithm of its appendix C. For a rollout collected by pi_old = pi_{theta_old}:

    A_t   = GAE(gamma, lambda), normalised per batch;   R_t = A_t + V(s_t)  (the critic's target)
    L(th) = E[ pi_th(a|s) / pi_old(a|s) * A ]                              (surrogate, to maximise)
    KL(th)= E_s[ KL(pi_old(.|s) || pi_th(.|s)) ]                          (analytic, categorical / diag. Gaussian)
    g     = grad L(theta_old);   F = Hessian of KL at theta_old (+ cg_damping * I)  (Fisher, by double backprop)
    s     = F^-1 g                                                         (cg_max_steps of conjugate gradient)
    beta  = sqrt(2 * max_kl / s^T F s)                                     (largest step on the quadratic model)
    theta = theta_old + shrink^k * beta * s,  k = the first of 0..line_search_max_iter-1 with
            KL(theta) <= max_kl and L(theta) > L(theta_old);  theta_old exactly if no k qualifies
    phi  <- n_critic_updates epochs of minibatch Adam on E[(V_phi(s) - R)^2]

Deviations and choices:
  * All line-search candidates are evaluated and the first acceptable one is selected with tensor ops (no host
    sync, so a CUDA update never waits on the GPU); the parameters are written once with torch.where. The
    evaluated and the written parameters are the same bits, so the accepted KL is exactly the checked one.
  * s^T F s <= 0 or non-finite, a non-finite direction, or zero advantages make no update (never NaN).
  * The Fisher-vector product can use a random fraction of the batch (fvp_subsample; Schulman's thesis, p. 40).
  * The critic is separate from the policy (Stable-Baselines3's default MlpPolicy) and fitted after the policy
    step. The observation normaliser (optional) is updated from each rollout after the update on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rlkit.core import agent_io
from rlkit.core.buffers import Obs, Rollout, RolloutBuffer, obs_index, obs_len
from rlkit.core.config import (build_config, check_choice, check_cuda_graphs, check_hidden_sizes, check_nonnegative,
                               check_positive, check_sample_freq, check_unit_interval, ConfigError, preset_config)
from rlkit.core.config import check_encoder_fields
from rlkit.core.device import GraphedStep, configure_threads, seed_everything
from rlkit.core.envs import EnvLike, SpaceError
from rlkit.core.networks import (ACTIVATIONS, EncoderSpec, NetworkSpec, action_storage, make_actor, make_obs_encoder,
                                 make_v_critic, network_source, obs_storage)
from rlkit.core.optim import FlatAdam, FlatParameters, conjugate_gradient, flat_grad
from rlkit.core.returns import explained_variance, gae, normalize
from rlkit.core.seeds import ParamStack, SeedBatch, SeedNets, StackedFlatOptimizer, stack_rollouts


@dataclass
class TRPOConfig:
    # Collection
    n_envs: int = 2
    """Number of parallel environments."""
    vectorization: str = "auto"
    """sync steps the envs in this process, async in one worker process each (Gymnasium's AsyncVectorEnv, the same
    transitions); auto: async for an Atari id with n_envs > 1, else sync."""
    n_steps: int = 1024
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
    gae_lambda: float = 0.95
    """GAE lambda."""
    normalize_advantage: bool = True
    """Normalise advantages to mean 0, std 1 within each batch."""
    # Trust region
    max_kl: float = 0.01
    """Trust-region radius delta: the mean KL(pi_old || pi_new) an accepted step may reach (summed over action
    dimensions; sb3-contrib's target_kl averages over the D dimensions of a Box action, so its target_kl and
    cg_damping are D times smaller than the max_kl and cg_damping of the same update here: docs/algorithms/trpo.md)."""
    cg_max_steps: int = 15
    """Conjugate-gradient iterations (always this many; converged iterations are masked, not skipped)."""
    cg_damping: float = 0.1
    """Damping added to the Fisher matrix: F + cg_damping * I."""
    cg_residual_tol: float = 1e-10
    """Squared residual below which conjugate gradient stops changing x."""
    line_search_shrink: float = 0.8
    """Backtracking factor of the line search."""
    line_search_max_iter: int = 10
    """Step sizes tried by the line search: beta * shrink^k, k = 0..line_search_max_iter-1."""
    fvp_subsample: float = 1.0
    """Fraction of the batch used for Fisher-vector products (1.0: the whole batch)."""
    # Critic
    learning_rate: float = 1e-3
    """Adam step size of the critic."""
    n_critic_updates: int = 10
    """Epochs of minibatch Adam on the critic per rollout."""
    batch_size: int = 128
    """Critic minibatch size (a larger value than n_envs * n_steps means one full-batch step per epoch)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of the policy and of the (separate) critic."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu, elu or gelu."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (Box actions)."""
    use_sde: bool = False
    """Box actions: generalised state-dependent exploration (gSDE, rlkit.core.distributions.sde_*) instead of
    independent Gaussian noise per step; the noise matrices are redrawn at each rollout's start and every
    sde_sample_freq steps."""
    sde_sample_freq: int = -1
    """With use_sde: redraw the noise every this many steps within a rollout (-1: once per rollout)."""
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
        check_cuda_graphs(self)
        check_positive(self, "n_envs", "n_steps", "max_kl", "cg_max_steps", "line_search_max_iter",
                       "learning_rate", "n_critic_updates", "batch_size", "fvp_subsample", "clip_obs", "clip_reward")
        check_unit_interval(self, "gamma", "gae_lambda", "fvp_subsample")
        check_nonnegative(self, "cg_damping", "cg_residual_tol", "checkpoint_interval", "keep_checkpoints",
                          "torch_threads")
        if not 0.0 < self.line_search_shrink < 1.0:
            raise ConfigError(f"TRPOConfig.line_search_shrink must be in (0, 1), got {self.line_search_shrink!r}")
        check_hidden_sizes(self)
        check_encoder_fields(self)
        check_sample_freq(self)
        check_choice(self, "activation", tuple(ACTIVATIONS))
        check_choice(self, "vectorization", ("auto", "sync", "async"))


# ---- the pieces of a TRPO step, as plain functions ----------------------------------------------------------
def surrogate(logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """L = mean(pi / pi_old * A), the importance-sampled advantage (TRPO eq. 14)."""
    return (torch.exp(logp - logp_old) * adv).mean()


def fisher_vector_product(grad_kl: torch.Tensor, params: Sequence[torch.Tensor], v: torch.Tensor,
                          damping: float) -> torch.Tensor:
    """(F + damping I) v with F = Hessian of the mean KL: d/dtheta (grad_kl . v), one more backward pass.

    grad_kl must come from flat_grad(kl, params, create_graph=True) with the old policy DETACHED (otherwise
    KL(old || new) does not depend on theta through `old` the right way and F collapses to 0)."""
    return flat_grad(grad_kl.dot(v), params, retain_graph=True) + damping * v


def natural_step(g: torch.Tensor, fvp: Callable[[torch.Tensor], torch.Tensor], max_kl: float, cg_iters: int,
                 residual_tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Full step beta * s with s = F^-1 g, beta = sqrt(2 max_kl / s^T F s); (zeros, False) when s^T F s <= 0 or
    anything is non-finite. Returns (step, valid) as tensors: no host sync."""
    s = conjugate_gradient(fvp, g, cg_iters, residual_tol)
    sfs = s.dot(fvp(s))
    valid = torch.isfinite(sfs) & (sfs > 0) & torch.isfinite(s).all()
    beta = torch.sqrt(2.0 * max_kl / torch.where(valid, sfs, torch.ones_like(sfs)))
    return torch.where(valid, beta * s, torch.zeros_like(s)), valid


@torch.no_grad()
def line_search(theta: torch.Tensor, step: torch.Tensor, valid: torch.Tensor,
                evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], surr_old: torch.Tensor,
                max_kl: float, shrink: float, max_iter: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Backtracking line search with device-side selection.

    Evaluates `evaluate(theta + shrink^k * step) -> (mean KL, surrogate)` for every k < max_iter, accepts the
    first k with KL <= max_kl and surrogate > surr_old, and returns (new flat parameters, diagnostics). If no k
    qualifies (or `valid` is False) the returned vector IS `theta`'s values, bit for bit."""
    coefs = shrink ** torch.arange(max_iter, dtype=theta.dtype, device=theta.device)
    kls, surrs = [], []
    for k in range(max_iter):
        kl, surr = evaluate(theta + coefs[k] * step)
        kls.append(kl)
        surrs.append(surr)
    kls_t, surrs_t = torch.stack(kls), torch.stack(surrs)
    ok = (kls_t.double() <= max_kl) & (surrs_t > surr_old) & torch.isfinite(kls_t) & torch.isfinite(surrs_t) & valid
    first = ok & (ok.cumsum(0) == 1)  # one-hot of the first acceptable k (all False if none)
    accepted = ok.any()
    coef = (coefs * first).sum()  # exactly coefs[k]: a sum of one value and zeros
    new_theta = torch.where(accepted, theta + coef * step, theta)
    zero = torch.zeros_like(surr_old)
    info = {"train/line_search_accepted": accepted.to(theta.dtype),
            "train/line_search_steps": torch.where(accepted, torch.argmax(first.to(torch.int64)) + 1,
                                                   torch.full_like(first[0], max_iter, dtype=torch.int64)),
            "train/kl": torch.where(accepted, (kls_t * first).sum(), zero),
            "train/surrogate_improvement": torch.where(accepted, (surrs_t * first).sum() - surr_old, zero)}
    return new_theta, info


@torch.no_grad()
def trpo_targets(critic: torch.nn.Module, b: Rollout, cfg: TRPOConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages, critic targets R = A + V, values V(s_t)), each flat [T * N]: GAE bootstrapped from V(s_T) and,
    where truncated, from V(true final obs); advantages normalised when cfg.normalize_advantage."""
    T, N = b.rewards.shape
    values = critic(b.flat(b.obs)).view(T, N)
    final_values = critic(b.flat(b.final_obs)).view(T, N)
    last_values = critic(b.last_obs)
    adv, returns = gae(b.rewards, values, b.terminated, b.truncated, final_values, last_values, cfg.gamma,
                       cfg.gae_lambda)
    adv, returns = adv.reshape(-1), returns.reshape(-1)
    if cfg.normalize_advantage:
        adv = normalize(adv)
    return adv, returns, values.reshape(-1)


def functional_policy_step(dist: Callable[[torch.Tensor, Obs], tuple[torch.Tensor, ...]], actor: Any,
                           theta: torch.Tensor, obs: Obs, actions: torch.Tensor, adv: torch.Tensor,
                           fisher_idx: torch.Tensor | None, cfg: TRPOConfig
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TRPO.policy_step on flat policy parameters theta, differentiated with torch.func so that it also runs under
    vmap for many seeds at once (rlkit.core.seeds): dist(theta, obs) gives the policy's distribution parameters,
    `actor` its log-prob/KL/entropy functions, fisher_idx the Fisher subsample (None: the whole batch). The same
    surrogate, KL, conjugate gradient and line search; returns (new theta, diagnostics)."""
    old = tuple(p.detach() for p in dist(theta, obs))
    logp_old = actor.log_prob_from_params(old, actions)

    def surr_fn(th: torch.Tensor) -> torch.Tensor:
        return surrogate(actor.log_prob_from_params(dist(th, obs), actions), logp_old, adv)

    g, surr_old = torch.func.grad_and_value(surr_fn)(theta)
    obs_f = obs if fisher_idx is None else obs_index(obs, fisher_idx)
    old_f = old if fisher_idx is None else tuple(p.detach() for p in dist(theta, obs_f))
    _, fisher = torch.func.vjp(torch.func.grad(lambda th: actor.kl(old_f, dist(th, obs_f)).mean()), theta)
    step, valid = natural_step(g, lambda v: fisher(v)[0] + cfg.cg_damping * v,  # (F + damping I) v
                               cfg.max_kl, cfg.cg_max_steps, cfg.cg_residual_tol)

    def evaluate(th: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = dist(th, obs)
        return actor.kl(old, p).mean(), surrogate(actor.log_prob_from_params(p, actions), logp_old, adv)

    new_theta, info = line_search(theta.detach(), step, valid, evaluate, surr_old.detach(), cfg.max_kl,
                                  cfg.line_search_shrink, cfg.line_search_max_iter)
    info["train/loss_pi"] = -(surr_old.detach() + info["train/surrogate_improvement"])
    info["train/entropy"] = actor.entropy_from_params(old).mean()
    return new_theta, info


class TRPO:
    """Trust-region policy optimisation with GAE. See the module docstring for the equations."""

    algo = "trpo"
    supported_actions = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")

    def __init__(self, env: EnvLike, config: TRPOConfig | dict | None = None, *, seed: int | None = None,
                 device: str | torch.device = "auto", policy: NetworkSpec = None, critic: NetworkSpec = None,
                 encoder: EncoderSpec = None, preset: bool = False, env_backend: str = "gymnasium",
                 env_kwargs: dict[str, Any] | None = None, **overrides: Any) -> None:
        """`policy` / `critic`: your own networks (nn.Module or factory f(in_dim, out_dim); the protocol is in
        rlkit.core.networks); default: MLPs of hidden_sizes. preset=True starts from the tuned preset for this env
        id (rlkit list --presets).
        env_backend="torch": train on rlkit.core.torch_envs' batched envs on the agent's device (evaluation
        stays on Gymnasium's env). env_kwargs go to gymnasium.make
        (and are saved in checkpoints). Other keywords are TRPOConfig fields.
        `encoder`: your own observation encoder (nn.Module or factory f(observation_space) -> nn.Module; the
        protocol is in rlkit.core.networks.make_obs_encoder); default: flatten/one-hot, a Nature CNN for images."""
        self.config = cfg = build_config(TRPOConfig, config, preset=preset_config(self.algo, env, preset), **overrides)
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
            raise SpaceError(f"TRPO: use_sde needs a Box action space, not {es.action_space}")
        self.networks = {"policy": network_source(policy), "critic": network_source(critic),
                         "encoder": network_source(encoder)}
        # One set of observation statistics for both networks; a CNN (images) for each: the trust-region step
        # moves the actor's flat parameters (its CNN included), the critic's CNN is fitted by Adam.
        actor_enc = make_obs_encoder(es.obs_space, cfg, encoder)
        critic_enc = make_obs_encoder(es.obs_space, cfg, encoder, share_statistics=actor_enc)
        self.actor = make_actor(es.obs_space, es.action_space, cfg.hidden_sizes, cfg.activation, cfg.log_std_init,
                                encoder=actor_enc, use_sde=cfg.use_sde, net=policy).to(self.device)
        self.critic = make_v_critic(critic_enc, cfg.hidden_sizes, cfg.activation, net=critic).to(self.device)
        # Flat parameter vectors: theta is read and written in one op; Adam steps one tensor.
        self.pi_flat = FlatParameters(self.actor.parameters())
        self.vf_flat = FlatParameters(self.critic.parameters())
        # CUDA graphs of the rollout and the update (cuda_graphs): the optimiser then keeps its scalars on the device
        self.cuda_graphs, self.cuda_graphs_reason = agent_io.cuda_graphs(self.algo, cfg, es, self.device)
        self.vf_optimizer = FlatAdam(self.vf_flat.param, cfg.learning_rate, eps=1e-5, capturable=self.cuda_graphs)

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
    def update(self, buf: RolloutBuffer) -> dict[str, torch.Tensor]:
        """GAE, one trust-region policy step, then the critic fit. Returns tensor diagnostics (no host sync).
        Device work only, so learn() can replay it as a CUDA graph (learn() counts n_updates).

        Shapes: rollout tensors [T, N, ...]; the losses use the T * N flattened samples."""
        obs, actions = buf.flat(buf.obs), buf.flat(buf.actions)
        adv, returns, values = trpo_targets(self.critic, buf.rollout(), self.config)
        info = self.policy_step(obs, actions, adv)
        info["train/loss_v"] = self.fit_critic(obs, returns)
        info["train/explained_variance"] = explained_variance(values, returns)
        return info

    def policy_step(self, obs: Obs, actions: torch.Tensor, adv: torch.Tensor) -> dict[str, torch.Tensor]:
        """One TRPO step of the actor on a flat batch (obs [B, ...] or a dict of those, actions [B, ...],
        advantages [B])."""
        cfg = self.config
        params = self.pi_flat.params
        new = self.actor.dist_params(obs)
        # pi_old: a constant, so the KL's Hessian is the Fisher matrix. Cloned: a Gaussian's log_std is a view of
        # the parameters, which the line search overwrites with each candidate.
        old = tuple(p.detach().clone() for p in new)
        logp_old = self.actor.log_prob_from_params(old, actions)
        surr = surrogate(self.actor.log_prob_from_params(new, actions), logp_old, adv)
        g = flat_grad(surr, params, retain_graph=True)
        old_full = old
        if cfg.fvp_subsample < 1.0:  # Fisher on a random subset of the batch (same old policy, detached)
            n = obs_len(obs)
            m = max(1, int(round(cfg.fvp_subsample * n)))
            new = self.actor.dist_params(obs_index(obs, torch.randperm(n, device=adv.device)[:m]))
            old = tuple(p.detach() for p in new)
        grad_kl = flat_grad(self.actor.kl(old, new).mean(), params, create_graph=True)
        step, valid = natural_step(g, lambda v: fisher_vector_product(grad_kl, params, v, cfg.cg_damping),
                                   cfg.max_kl, cfg.cg_max_steps, cfg.cg_residual_tol)

        theta_old = self.pi_flat.param.detach().clone()
        surr_old = surr.detach()

        def evaluate(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.pi_flat.param.data.copy_(theta)
            p = self.actor.dist_params(obs)
            return (self.actor.kl(old_full, p).mean(),
                    surrogate(self.actor.log_prob_from_params(p, actions), logp_old, adv))

        new_theta, info = line_search(theta_old, step, valid, evaluate, surr_old, cfg.max_kl,
                                      cfg.line_search_shrink, cfg.line_search_max_iter)
        self.pi_flat.param.data.copy_(new_theta)
        info["train/loss_pi"] = -(surr_old + info["train/surrogate_improvement"])
        info["train/entropy"] = self.actor.entropy_from_params(old_full).mean()
        return info

    def fit_critic(self, obs: Obs, returns: torch.Tensor) -> torch.Tensor:
        """n_critic_updates epochs of minibatch Adam on mean (V(s) - R)^2; returns the mean loss of the last epoch.
        Each epoch shuffles once and slices contiguous minibatches."""
        cfg = self.config
        n, bs = obs_len(obs), cfg.batch_size
        total = torch.zeros((), device=returns.device)
        for epoch in range(cfg.n_critic_updates):
            perm = torch.randperm(n, device=returns.device)
            x_all, y_all = obs_index(obs, perm), returns[perm]
            for start in range(0, n, bs):
                x = obs_index(x_all, slice(start, start + bs))
                loss = F.mse_loss(self.critic(x), y_all[start:start + bs])  # mean (V - R)^2
                self.vf_flat.zero_grad()
                loss.backward()
                self.vf_optimizer.step()
                if epoch == cfg.n_critic_updates - 1:  # the loss is only logged for the last epoch
                    total = total + loss.detach() * min(bs, n - start)
        return total / n

    # ---- the loop -------------------------------------------------------------------------------------------
    def learn(self, total_steps: int, callback: Callable[[Any, dict[str, float]], bool | None] | None = None,
              run_dir: str | Path | None = None, progress: bool = True, log_interval: int = 1000, *,
              total_budget: int | None = None, eval_freq: int = 0, n_eval_episodes: int = 10) -> "TRPO":
        """Train for `total_steps` more environment steps (whole rollouts). With `run_dir`, write TensorBoard
        events, progress.csv, config.json and checkpoints/ there. Every `log_interval` environment steps (and
        after the last update) metrics are logged and `callback(agent, metrics)` runs; returning False stops."""
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval, callback, total_budget,
                                   eval_freq, n_eval_episodes)
        cfg = self.config
        batch = cfg.n_steps * self.collector.n_envs
        # cuda_graphs: after two eager iterations the rollout and the update each replay as one CUDA graph
        noise = agent_io.rollout_noise(self.actor, cfg)  # torch envs: the collector draws it from a counter stream
        collect = GraphedStep(lambda: self.collector.collect(self.buffer, self.actor.sample_actions,
                                                             self._sde_before_step if cfg.use_sde else None, noise),
                              self.cuda_graphs, "TRPO rollout", generators=self.collector.generators)
        update = GraphedStep(lambda: self.update(self.buffer), self.cuda_graphs, "TRPO update")
        try:
            while self.num_timesteps < run.target:
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
        per seed): each seed collects with its own envs and noise; the GAE, the trust-region step (conjugate
        gradient and line search per seed: functional_policy_step under vmap) and the critic fit of all seeds run
        as one batch (with cuda_graphs, as CUDA graphs)."""
        agents, cfg = batch.agents, batch.agents[0].config
        batch.refuse(cfg.use_sde, "use_sde (gSDE)")
        nets = SeedNets([{"actor": a.actor, "critic": a.critic} for a in agents],
                        {"pi": ParamStack.of_flats([a.pi_flat for a in agents]),
                         "vf": ParamStack.of_flats([a.vf_flat for a in agents])})
        vf_optimizer = StackedFlatOptimizer([a.vf_optimizer for a in agents], nets.groups["vf"])
        rollouts = stack_rollouts([a.buffer for a in agents])  # [K, T, N, ...]: what each seed's collector writes
        graphs = agents[0].cuda_graphs
        # graphs run on torch envs only, whose rollouts draw from counter streams: no generator to register
        collect = GraphedStep(lambda: batch.collect(nets, rollouts), graphs, "TRPO rollout of the seeds")
        update = GraphedStep(lambda: TRPO._update_seeds(batch, nets, vf_optimizer, rollouts), graphs,
                             "TRPO update of the seeds", generators=batch.generators())
        runs = batch.begin_learn(total_steps, **learn_args)
        n = cfg.n_steps * agents[0].collector.n_envs
        try:
            while runs.active():
                collect()
                for a in agents:
                    a.num_timesteps += n
                info = update()
                batch.after_update(nets, rollouts)  # n_updates, and the observation statistics (normalize_obs)
                if not runs.end_of_iteration(info):
                    break
            runs.finish()
        finally:
            runs.close()

    @staticmethod
    def _update_seeds(batch: SeedBatch, nets: SeedNets, vf_optimizer: StackedFlatOptimizer, rollouts: Rollout
                      ) -> dict[str, torch.Tensor]:
        """update() for all seeds at once: diagnostics [K]. Every random draw (the Fisher subsample, the critic's
        shuffles) comes from each seed's own stream in its lone run's order."""
        cfg, actor = batch.agents[0].config, batch.agents[0].actor
        adv, returns, values = nets.call(lambda m, b: trpo_targets(m.critic, b, cfg), rollouts, uses=("critic",))
        obs, actions = rollouts.obs.flatten(1, 2), rollouts.actions.flatten(1, 2)  # [K, B, ...]
        n = obs.shape[1]
        fisher_idx = None
        if cfg.fvp_subsample < 1.0:
            fisher_idx = batch.streams.randperm(n)[:, :max(1, int(round(cfg.fvp_subsample * n)))]

        def step(apply: Callable[..., Any], theta: torch.Tensor, *data: torch.Tensor | None) -> Any:
            def dist(th: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return apply(lambda m, x: m.actor.dist_params(x), x, pi=th)
            return functional_policy_step(dist, actor, theta, *data, cfg)

        theta = nets.groups["pi"].param
        new_theta, info = nets.vmap(step, theta.detach(), obs, actions, adv, fisher_idx, uses=("actor",))
        theta.data.copy_(new_theta)
        # the critic: n_critic_updates epochs of minibatch Adam, each epoch one shuffle per seed (as fit_critic)
        bs, rows = cfg.batch_size, torch.arange(len(batch.agents), device=obs.device)[:, None]
        total = torch.zeros(len(batch.agents), device=obs.device)
        for epoch in range(cfg.n_critic_updates):
            perm = batch.streams.randperm(n)
            x_all, y_all = obs[rows, perm], returns[rows, perm]
            for start in range(0, n, bs):
                loss = nets.call(lambda m, x, y: F.mse_loss(m.critic(x), y), x_all[:, start:start + bs],
                                 y_all[:, start:start + bs], uses=("critic",))
                nets.backward(loss, "vf")
                vf_optimizer.step()
                if epoch == cfg.n_critic_updates - 1:
                    total = total + loss.detach() * min(bs, n - start)
        info["train/loss_v"] = total / n
        info["train/explained_variance"] = torch.func.vmap(explained_variance)(values, returns)
        return info

    # ---- evaluation and persistence -------------------------------------------------------------------------
    def evaluate(self, n_episodes: int = 10, deterministic: bool = True, env: Any = None) -> dict[str, float]:
        """Evaluate on a fresh env; the observation statistics are only read, never updated."""
        return agent_io.evaluate_agent(lambda o: self.act(o, deterministic), self._env_factory, n_episodes,
                                       self.seed, env)

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "vf_optimizer": self.vf_optimizer.state_dict(),
                "collector": self.collector.state_dict() if self.env is not None else {},
                "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])  # copies into the flat views: the optimiser keeps its tensor
        self.critic.load_state_dict(state["critic"])
        self.vf_optimizer.load_state_dict(state["vf_optimizer"])
        if self.env is not None:
            self.collector.load_state_dict(state["collector"])
        self.n_updates = int(state["n_updates"])

    def save(self, path: str | Path) -> Path:
        return agent_io.save_agent(self, path)

    @classmethod
    def load(cls, path: str | Path, env: EnvLike | None = None, device: str | torch.device = "auto",
             **kwargs: Any) -> "TRPO":
        """Rebuild from a checkpoint; without env, act() and value() work and learn() asks for one."""
        return agent_io.load_agent_payload(cls, path, env, device, **kwargs)
