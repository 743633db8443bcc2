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

from rlkit.core.checkpoint import (CheckpointError, check_agent_payload, load_checkpoint, rotate_checkpoints,
                                   save_checkpoint)
from rlkit.core.config import ConfigError, config_to_dict
from rlkit.core.device import resolve_device, rng_state, set_rng_state
from rlkit.core.errors import NonFiniteError, first_non_finite
from rlkit.core.envs import (EnvLike, check_spaces, env_factory, make_vec_env, space_signature, sub_env_seeds,
                             to_env_actions)
from rlkit.core.logger import Logger, default_run_dir
from rlkit.core.rollout import check_finite_metrics, evaluate_policy
from rlkit.core.rundir import RunDirLock, StopSignals, TrainingInterrupted, open_run_dir


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


def obs_batch(obs: Any, obs_space: gym.Space, device: torch.device) -> tuple[torch.Tensor, bool]:
    """One observation or a batch of them -> (float32 tensor [B, *obs_shape] on `device`, was it a single one).

    Raises ValueError naming the expected shape instead of letting a raw torch error surface. For a Discrete(n)
    space observations are integer indices in [start, start + n): a scalar is one observation, a 1-D integer
    array a batch; a float array (e.g. a one-hot vector) is refused, never silently read as a batch."""
    try:
        arr = np.asarray(obs)
    except Exception as e:  # noqa: BLE001 - ragged lists and the like: say what was expected
        raise ValueError(f"observation {obs!r:.80} is not an array ({e})") from None
    if isinstance(obs_space, gym.spaces.Discrete):
        n, start = int(obs_space.n), int(obs_space.start)
        if arr.ndim > 1 or arr.dtype.kind not in "iub" and not (arr.ndim == 0 and arr.dtype.kind == "f"):
            raise ValueError(f"a {obs_space} observation is an integer index in [{start}, {start + n}), given as a "
                             f"scalar or a 1-D integer array (a batch), got a {arr.dtype} array of shape {arr.shape}"
                             + (" (a one-hot vector? pass its index)" if arr.ndim == 1 else ""))
        if arr.ndim == 0 and arr.dtype.kind == "f" and not (np.isfinite(arr) and float(arr).is_integer()):
            raise ValueError(f"a {obs_space} observation is an integer index, got {arr.item()!r}")
        if arr.size and (arr.min() < start or arr.max() >= start + n):
            raise ValueError(f"a {obs_space} observation must lie in [{start}, {start + n}), got "
                             f"{arr.min() if arr.min() < start else arr.max()}")
        single = arr.ndim == 0
        arr = arr.astype(np.int64) - start
    else:
        shape = tuple(obs_space.shape or ())
        single = arr.shape == shape
        if not single and (arr.ndim != len(shape) + 1 or arr.shape[1:] != shape):
            raise ValueError(f"observation of shape {arr.shape} does not fit {obs_space}: expected shape {shape} "
                             f"(one observation) or (batch, {', '.join(map(str, shape))}{',' if len(shape) == 1 else ''}) "
                             "(a batch)")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"observation must be numeric, got dtype {arr.dtype}")
    batch = arr[None] if single else arr
    return torch.as_tensor(batch, dtype=torch.float32, device=device), single


def numpy_act(
    policy: Callable[[torch.Tensor], torch.Tensor],
    obs: Any,
    obs_space: gym.Space,
    action_space: gym.Space,
    device: torch.device,
) -> np.ndarray:
    """NumPy in, NumPy out, single observation or a batch; the result always lies inside `action_space`."""
    x, single = obs_batch(obs, obs_space, device)
    with torch.no_grad():
        out = policy(x)
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
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    n_episodes = int(n_episodes)  # NumPy integers are accepted as learn() accepts them
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
    device = resolve_device(device)  # a missing GPU is named as such, not blamed on rebuilding the env
    payload = load_checkpoint(path, algo=cls.algo)
    check_agent_payload(payload, path)
    target_env = env if env is not None else payload["env_id"]
    cfg = dict(payload["config"])
    if n_envs is not None:
        cfg["n_envs"] = n_envs
    try:
        agent = cls(target_env, config=cfg, seed=payload["seed"], device=device)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {e}") from None
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
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit a {cls.__name__} with this config: "
                              f"{type(e).__name__}: {e}") from None
    agent.num_timesteps = int(payload["num_timesteps"])
    if restore_rng:
        try:
            set_rng_state(payload["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"checkpoint {path} has an unusable rng state: {type(e).__name__}: {e}") from None
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


def check_finite_state(agent: Any, where: str, state: dict[str, Any] | None = None) -> None:
    """NonFiniteError naming the agent, the step and the first tensor holding NaN/inf in its state (the
    parameters, optimiser moments, normaliser statistics...)."""
    bad = first_non_finite(agent.state_dict() if state is None else state)
    if bad is not None:
        raise NonFiniteError(f"{agent.algo}: {bad} holds NaN/inf at environment step {agent.num_timesteps:,}; "
                             f"training stopped before {where} (earlier checkpoints are untouched)")


def periodic_checkpoint(agent: Any, directory: Path, keep: int) -> Path:
    """Save checkpoints/step_<N>.pt and prune older ones (pruning only after the save succeeded)."""
    path = directory / f"step_{agent.num_timesteps}.pt"
    payload = checkpoint_payload(agent)
    check_finite_state(agent, f"writing {path}", payload["state"])
    save_checkpoint(path, payload)
    rotate_checkpoints(directory, keep)
    return path


@dataclass
class LearnRun:
    """The edges of one learn() call that every agent shares: the logger, the metric checks and the callback,
    periodic and final checkpoints, the run directory's lock and the stop signals. When to collect, update and
    log stays in each agent's loop."""

    logger: Logger
    target: int
    ckpt_dir: Path | None
    next_ckpt: int | None
    interval: int
    keep: int
    run_dir: Path | None = None
    lock: RunDirLock | None = None
    signals: StopSignals | None = None

    def log(self, agent: Any, metrics: dict[str, Any], callback: Callable[[dict[str, float]], Any] | None) -> bool:
        """Record metrics at the agent's step, stop with NonFiniteError on a non-finite loss, call the callback;
        False means stop (the callback returned False)."""
        values = self.logger.record(metrics, agent.num_timesteps)
        check_finite_metrics(agent.algo, values, agent.num_timesteps)
        return not (callback is not None and callback(values) is False)

    def checkpoint_if_due(self, agent: Any) -> None:
        """Called once per iteration: a periodic checkpoint when due; after SIGINT/SIGTERM a checkpoint now, the
        logs flushed, then TrainingInterrupted (the iteration that was running has finished)."""
        stop = self.signals.received if self.signals is not None else None
        due = self.ckpt_dir is not None and self.next_ckpt is not None and agent.num_timesteps >= self.next_ckpt
        path = None
        if self.ckpt_dir is not None and (due or stop is not None):
            path = periodic_checkpoint(agent, self.ckpt_dir, self.keep)
        if due:
            while self.next_ckpt <= agent.num_timesteps:  # type: ignore[operator]
                self.next_ckpt += self.interval  # type: ignore[operator]
        if stop is not None:
            self.logger.flush()
            raise TrainingInterrupted(stop, agent.num_timesteps, path, self.run_dir)

    def finish(self, agent: Any) -> None:
        """The final checkpoint (when there is a run directory)."""
        if self.ckpt_dir is not None:
            check_finite_state(agent, f"writing {self.ckpt_dir / 'final.pt'}")
            agent.save(self.ckpt_dir / "final.pt")

    def close(self) -> None:
        """Flush and close the logs, put the previous signal handlers back, release the run directory."""
        try:
            self.logger.close()
        finally:
            if self.signals is not None:
                self.signals.uninstall()
            if self.lock is not None:
                self.lock.release()


def begin_learn(agent: Any, total_steps: int, run_dir: str | Path | None, progress: bool,
                log_interval: int) -> LearnRun:
    """Check learn()'s arguments and open its run: TensorBoard/CSV/console only with a run directory, which is
    locked for this run (RunDirError if another run holds it, or if a new agent would write into a directory
    that holds an earlier run) and cleaned of temp files a killed save left. SIGINT/SIGTERM then stop the
    run at the next checkpoint_if_due() with a checkpoint (TrainingInterrupted)."""
    if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) or total_steps < 0:
        raise ValueError(f"total_steps must be a non-negative integer, got {total_steps!r}")
    if not isinstance(log_interval, int) or isinstance(log_interval, bool) or log_interval < 1:
        raise ValueError(f"log_interval must be a positive integer, got {log_interval!r}")
    cfg = agent.config
    target = agent.num_timesteps + int(total_steps)
    rd = Path(run_dir) if run_dir is not None else None
    # An agent that has trained (or was loaded from a checkpoint) continues its run; a new one starts a run.
    lock = open_run_dir(rd, resuming=agent.num_timesteps > 0) if rd is not None else None
    signals = None
    try:
        logger = Logger(rd, cfg, total_steps=target, start_step=agent.num_timesteps, progress=progress,
                        console=rd is not None, tensorboard=rd is not None, csv_file=rd is not None,
                        hparams={"algo": agent.algo, "env_id": agent.env_id, "seed": agent.seed})
        signals = StopSignals().install()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    interval = cfg.checkpoint_interval
    return LearnRun(logger, target, rd / "checkpoints" if rd is not None else None,
                    agent.num_timesteps + interval if interval else None, interval, cfg.keep_checkpoints,
                    rd, lock, signals)

