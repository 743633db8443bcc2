"""Plumbing every agent needs at its edges, as plain functions: building its envs from whatever the user
passed, turning NumPy observations into actions, evaluation, the run directory and checkpoint payloads.
No training control flow lives here: each agent's learn() loop stays in the agent's own file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from rlkit.core.checkpoint import CheckpointError, load_checkpoint, rotate_checkpoints, save_checkpoint
from rlkit.core.config import config_to_dict
from rlkit.core.device import rng_state, set_rng_state
from rlkit.core.envs import (EnvLike, check_spaces, env_factory, make_vec_env, space_signature, sub_env_seeds,
                             to_env_actions)
from rlkit.core.logger import Logger, default_run_dir
from rlkit.core.rollout import check_finite_metrics, evaluate_policy


@dataclass
class EnvSetup:
    """What an agent keeps about its environment."""
    venv: gym.vector.VectorEnv
    initial_obs: np.ndarray
    factory: Callable[[], gym.Env] | None  # builds one env for evaluation (None for a foreign VectorEnv)
    env_id: str
    obs_space: gym.Space
    action_space: gym.Space
    n_envs: int


def setup_env(
    algo: str,
    env: EnvLike,
    n_envs: int,
    seed: int | None,
    supported_actions: tuple[str, ...],
    require_bounded_actions: bool = False,
    vectorization: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
) -> EnvSetup:
    """Build (or adopt) the vector env, check its spaces for `algo` BEFORE anything else is allocated."""
    factory, env_id = env_factory(env, env_kwargs) if not isinstance(env, gym.vector.VectorEnv) else env_factory(env)
    if isinstance(env, gym.vector.VectorEnv):
        obs_space, act_space = env.single_observation_space, env.single_action_space
    else:
        probe = factory() if factory is not None else env
        obs_space, act_space = probe.observation_space, probe.action_space
        if probe is not env:
            probe.close()
    check_spaces(algo, obs_space, act_space, supported_actions, require_bounded_actions)
    venv = make_vec_env(env, n_envs=n_envs, seed=seed, vectorization=vectorization, env_kwargs=env_kwargs)
    # make_vec_env reset it already; reset once more with the same seeds to fetch the observation.
    initial_obs, _ = venv.reset(seed=sub_env_seeds(seed, venv.num_envs))
    return EnvSetup(venv, np.asarray(initial_obs), factory, env_id, obs_space, act_space, venv.num_envs)


def numpy_act(
    policy: Callable[[torch.Tensor], torch.Tensor],
    obs: Any,
    obs_space: gym.Space,
    action_space: gym.Space,
    device: torch.device,
) -> np.ndarray:
    """NumPy in, NumPy out, single observation or a batch; the result always lies inside `action_space`."""
    arr = np.asarray(obs)
    single_shape = obs_space.shape if isinstance(obs_space, gym.spaces.Box) else ()
    single = arr.shape == tuple(single_shape)
    if not single and arr.shape[1:] != tuple(single_shape):
        raise ValueError(f"observation of shape {arr.shape} does not match the space {obs_space} (or a batch of it)")
    batch = arr[None] if single else arr
    with torch.no_grad():
        out = policy(torch.as_tensor(batch, dtype=torch.float32, device=device))
    actions = to_env_actions(out.cpu().numpy(), action_space)
    return actions[0] if single else actions


def evaluate_agent(
    act: Callable[[np.ndarray], np.ndarray],
    factory: Callable[[], gym.Env] | None,
    n_episodes: int,
    seed: int | None,
    env: gym.Env | None = None,
) -> dict[str, float]:
    """Evaluate on a fresh env (from the agent's factory unless `env` is given), seeded from the run seed."""
    if env is None:
        if factory is None:
            raise ValueError("this agent was built from a VectorEnv without a registered spec; "
                             "pass env= (a gymnasium.Env) to evaluate()")
        eval_env = factory()
    else:
        eval_env = env
    eval_seed = None if seed is None else sub_env_seeds(seed, 1, stream=1)[0]
    try:
        return evaluate_policy(act, eval_env, n_episodes, seed=eval_seed)
    finally:
        if env is None:
            eval_env.close()


def resolve_run_dir(run_dir: str | os.PathLike | None, env_id: str, algo: str, seed: int | None) -> Path:
    return Path(run_dir) if run_dir is not None else default_run_dir(env_id, algo, seed)


def checkpoint_payload(agent: Any) -> dict[str, Any]:
    """Everything needed to rebuild and resume `agent` (which has algo, config, env_id, seed, spaces and
    state_dict()): the config as a dict, so five save/load cycles cannot drift a hyperparameter."""
    return {
        "algo": agent.algo,
        "config": config_to_dict(agent.config),
        "env_id": agent.env_id,
        "seed": agent.seed,
        "spaces": space_signature(agent.observation_space, agent.action_space),
        "num_timesteps": int(agent.num_timesteps),
        "rng": rng_state(),
        "state": agent.state_dict(),
    }


def save_agent(agent: Any, path: str | os.PathLike) -> Path:
    return save_checkpoint(path, checkpoint_payload(agent))


def load_agent_payload(cls: Any, path: str | os.PathLike, env: EnvLike | None, device: str | torch.device,
                       n_envs: int | None = None, restore_rng: bool = True) -> Any:
    """Rebuild an agent of class `cls` from a checkpoint, on `env` (default: the env id it was trained on).

    The live objects are built first and the state is loaded into them; a checkpoint for other spaces is
    refused with both signatures in the message."""
    payload = load_checkpoint(path, algo=cls.algo)
    target_env = env if env is not None else payload["env_id"]
    cfg = dict(payload["config"])
    if n_envs is not None:
        cfg["n_envs"] = n_envs
    try:
        agent = cls(target_env, config=cfg, seed=payload["seed"], device=device)
    except ValueError as e:
        if env is None:
            raise CheckpointError(f"checkpoint {path}: cannot rebuild env {payload['env_id']!r} ({e}); pass env=") from e
        raise
    sig = space_signature(agent.observation_space, agent.action_space)
    if sig != payload["spaces"]:
        raise CheckpointError(f"checkpoint {path} was trained on spaces {payload['spaces']}, "
                              f"the given env has {sig}")
    try:
        load_state_or_rollback(agent, payload["state"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit a {cls.__name__} with this config: {e}") from None
    agent.num_timesteps = int(payload["num_timesteps"])
    if restore_rng:
        set_rng_state(payload["rng"])
    return agent


def load_state_or_rollback(agent: Any, state: dict[str, Any]) -> None:
    """agent.load_state_dict(state), all or nothing: module loading copies tensor by tensor, so a state that
    fails half-way would leave a mixed agent; on any error the previous state is put back, then re-raised."""
    import copy

    snapshot = copy.deepcopy(agent.state_dict())
    try:
        agent.load_state_dict(state)
    except BaseException:
        agent.load_state_dict(snapshot)
        raise


def periodic_checkpoint(agent: Any, directory: Path, keep: int) -> Path:
    """Save checkpoints/step_<N>.pt and prune older ones (pruning only after the save succeeded)."""
    path = save_agent(agent, directory / f"step_{agent.num_timesteps}.pt")
    rotate_checkpoints(directory, keep)
    return path


@dataclass
class LearnRun:
    """The edges of one learn() call that every agent shares: the logger, the metric checks and the callback,
    periodic and final checkpoints. When to collect, update and log stays in each agent's loop."""

    logger: Logger
    target: int
    ckpt_dir: Path | None
    next_ckpt: int | None
    interval: int
    keep: int

    def log(self, agent: Any, metrics: dict[str, Any], callback: Callable[[dict[str, float]], Any] | None) -> bool:
        """Record metrics at the agent's step, stop with NonFiniteError on a non-finite loss, call the callback;
        False means stop (the callback returned False)."""
        values = self.logger.record(metrics, agent.num_timesteps)
        check_finite_metrics(agent.algo, values, agent.num_timesteps)
        return not (callback is not None and callback(values) is False)

    def checkpoint_if_due(self, agent: Any) -> None:
        if self.ckpt_dir is not None and self.next_ckpt is not None and agent.num_timesteps >= self.next_ckpt:
            periodic_checkpoint(agent, self.ckpt_dir, self.keep)
            self.next_ckpt += self.interval

    def finish(self, agent: Any) -> None:
        """The final checkpoint (when there is a run directory)."""
        if self.ckpt_dir is not None:
            agent.save(self.ckpt_dir / "final.pt")

    def close(self) -> None:
        self.logger.close()


def begin_learn(agent: Any, total_steps: int, run_dir: str | Path | None, progress: bool,
                log_interval: int) -> LearnRun:
    """Check learn()'s arguments and open its run: TensorBoard/CSV/console only with a run directory."""
    if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) or total_steps < 0:
        raise ValueError(f"total_steps must be a non-negative integer, got {total_steps!r}")
    if not isinstance(log_interval, int) or isinstance(log_interval, bool) or log_interval < 1:
        raise ValueError(f"log_interval must be a positive integer, got {log_interval!r}")
    cfg = agent.config
    target = agent.num_timesteps + int(total_steps)
    rd = Path(run_dir) if run_dir is not None else None
    logger = Logger(rd, cfg, total_steps=target, start_step=agent.num_timesteps, progress=progress,
                    console=rd is not None, tensorboard=rd is not None, csv_file=rd is not None,
                    hparams={"algo": agent.algo, "env_id": agent.env_id, "seed": agent.seed})
    interval = cfg.checkpoint_interval
    return LearnRun(logger, target, rd / "checkpoints" if rd is not None else None,
                    agent.num_timesteps + interval if interval else None, interval, cfg.keep_checkpoints)
