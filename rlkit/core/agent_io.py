"""Plumbing every agent needs at its edges, as plain functions: building its envs from whatever the user
passed, turning NumPy observations into actions and values, evaluation, checkpoint payloads, and the edges of
learn() (LearnRun: logging, callback, checkpoints). When to collect and update stays in each agent's own file.
"""
from __future__ import annotations

import os
import time
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
from rlkit.core.envs import (ENV_BACKENDS, EnvLike, Spaces, TorchVecEnv, check_spaces, env_factory, make_vec_env,
                             space_from_dict, space_signature, space_to_dict, sub_env_seeds, to_env_actions)
from rlkit.core.errors import NonFiniteError, first_non_finite
from rlkit.core.logger import Logger
from rlkit.core.networks import load_network_factory
from rlkit.core.normalize import ReturnNormalizer
from rlkit.core.rollout import RolloutCollector, check_finite_metrics, evaluate_policy
from rlkit.core.rundir import RunDirLock, StopSignals, TrainingInterrupted, open_run_dir


@dataclass
class EnvSetup:
    """What an agent keeps about its environment (venv is None for an agent loaded without one; a TorchVecEnv
    for env_backend="torch", whose initial_obs is then a tensor on its device)."""
    venv: gym.vector.VectorEnv | TorchVecEnv | None
    initial_obs: np.ndarray | torch.Tensor | None
    factory: Callable[[], gym.Env] | None  # builds one env for evaluation (None when nothing can rebuild it)
    env_id: str
    obs_space: gym.Space
    action_space: gym.Space
    n_envs: int


def setup_env(
    algo: str,
    env: EnvLike | Spaces,
    cfg: Any,
    seed: int | None,
    supported_actions: tuple[str, ...],
    require_bounded_actions: bool = False,
    vectorization: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
    env_backend: str = "gymnasium",
    device: torch.device | str = "auto",
    tensor_steps: bool = True,
) -> EnvSetup:
    """Build (or adopt) the vector env, check its spaces for `algo` BEFORE anything else is allocated.

    `Spaces` (what a checkpoint records) gives an agent without an env: act() and value() work; evaluate() builds
    an env from the recorded id when Gymnasium knows it; learn() asks for an env. A ready VectorEnv sets
    cfg.n_envs to its own number of envs, so the recorded config describes the run.

    env_backend="torch" (or a ready TorchVecEnv as `env`) trains on rlkit/core/torch_envs.py's batched envs on
    `device` (the agent's); evaluation still runs Gymnasium's env of the same id (the factory). An agent that
    cannot step tensors (tensor_steps=False) refuses them with one line."""
    n_envs = cfg.n_envs
    if env_backend not in ENV_BACKENDS:
        raise ValueError(f"{algo}: env_backend must be one of {', '.join(ENV_BACKENDS)}, got {env_backend!r}")
    if isinstance(env, Spaces):
        check_spaces(algo, env.observation_space, env.action_space, supported_actions, require_bounded_actions)
        factory = env_factory(env.env_id)[0] if env.env_id in gym.registry else None
        return EnvSetup(None, None, factory, env.env_id, env.observation_space, env.action_space, n_envs)
    if env_backend == "torch" or isinstance(env, TorchVecEnv):
        if not tensor_steps:
            raise ValueError(f"{algo} does not support env_backend='torch' (it steps the env with NumPy actions); "
                             "use the Gymnasium backend")
        tenv = env if isinstance(env, TorchVecEnv) else make_vec_env(env, n_envs, seed, backend="torch", device=device)
        check_spaces(algo, tenv.single_observation_space, tenv.single_action_space, supported_actions,
                     require_bounded_actions)
        initial_obs = tenv.reset(seed)  # the agent's seed, as a ready Gymnasium VectorEnv is reseeded
        cfg.n_envs = tenv.num_envs
        return EnvSetup(tenv, initial_obs, env_factory(tenv.env_id)[0], tenv.env_id, tenv.single_observation_space,
                        tenv.single_action_space, tenv.num_envs)
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
    cfg.n_envs = venv.num_envs
    return EnvSetup(venv, np.asarray(initial_obs), factory, env_id, obs_space, act_space, venv.num_envs)


def make_collector(es: EnvSetup, device: torch.device, cfg: Any) -> RolloutCollector:
    """The agent's collector on its vector env, normalising rewards when cfg.normalize_reward (running std of the
    discounted return with cfg.gamma, clipped to cfg.clip_reward)."""
    normalizer = ReturnNormalizer(es.n_envs, cfg.gamma, cfg.clip_reward) if cfg.normalize_reward else None
    if normalizer is not None and isinstance(es.venv, TorchVecEnv):
        raise ValueError("normalize_reward is not available with env_backend='torch' yet (the normaliser works on "
                         "the NumPy rewards of Gymnasium's envs); use the Gymnasium backend or scale rewards")
    return RolloutCollector(es.venv, device, es.initial_obs, reward_normalizer=normalizer)


def require_env(agent: Any, what: str) -> None:
    """ValueError when an agent that was loaded without an environment is asked to train."""
    if agent.env is None:
        raise ValueError(f"{agent.algo} was loaded without an environment (env_id {agent.env_id!r}); {what} needs "
                         f"one: pass env= to load() (a Gymnasium id, a callable, an Env or a VectorEnv)")


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
            batch = f"(batch, {', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"
            raise ValueError(f"observation of shape {arr.shape} does not fit {obs_space}: expected shape {shape} "
                             f"(one observation) or {batch} "
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


def numpy_value(fn: Callable[[torch.Tensor], torch.Tensor], obs: Any, obs_space: gym.Space,
                device: torch.device) -> np.ndarray:
    """A critic's value for one observation (a scalar array) or a batch ([B])."""
    x, single = obs_batch(obs, obs_space, device)
    with torch.no_grad():
        v = fn(x).cpu().numpy()
    return v[0] if single else v


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
            raise ValueError("this agent has no environment to evaluate on (it was built from an unregistered "
                             "VectorEnv or loaded without an env); pass env= (a gymnasium.Env) to evaluate()")
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


def checkpoint_payload(agent: Any) -> dict[str, Any]:
    """Everything needed to rebuild and resume `agent` (which has algo, config, env_id, seed, spaces, networks and
    state_dict()): the config as a dict, so five save/load cycles cannot drift a hyperparameter; the spaces, so
    the agent loads without its env; the sources of custom networks, so they can be rebuilt."""
    return {
        "algo": agent.algo,
        "config": config_to_dict(agent.config),
        "env_id": agent.env_id,
        "seed": agent.seed,
        "spaces": space_signature(agent.observation_space, agent.action_space),
        "observation_space": space_to_dict(agent.observation_space),
        "action_space": space_to_dict(agent.action_space),
        "networks": dict(agent.networks),
        "num_timesteps": int(agent.num_timesteps),
        "rng": rng_state(),
        "state": agent.state_dict(),
    }


def save_agent(agent: Any, path: str | os.PathLike) -> Path:
    return save_checkpoint(path, checkpoint_payload(agent))


def _networks_for_load(path: Any, payload: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The policy=/critic= arguments that rebuild the checkpoint's networks: what the caller passed, else the
    recorded factory; a custom network that cannot be rebuilt by name must be passed."""
    recorded = payload.get("networks", {})
    if not isinstance(recorded, dict) or not all(isinstance(v, (str, type(None))) for v in recorded.values()):
        raise CheckpointError(f"checkpoint {path} has a malformed 'networks' record: {recorded!r:.120}")
    out = {}
    for role, source in recorded.items():
        if given.get(role) is not None:
            out[role] = given[role]
        elif source is None:
            out[role] = None
        elif source.startswith("!"):
            raise CheckpointError(f"checkpoint {path} was trained with a custom {role} network ({source[1:]}); "
                                  f"pass {role}= to load() to rebuild it")
        else:
            try:
                out[role] = load_network_factory(source)
            except (ImportError, AttributeError, ValueError) as e:
                raise CheckpointError(f"checkpoint {path}: cannot import the {role} network factory {source} ({e}); "
                                      f"pass {role}= to load()") from None
    return out


def load_agent_payload(cls: Any, path: str | os.PathLike, env: EnvLike | None, device: str | torch.device,
                       n_envs: int | None = None, restore_rng: bool = True, env_backend: str | None = None,
                       **networks: Any) -> Any:
    """Rebuild an agent of class `cls` from a checkpoint, on `env`, or without an env when env is None (then
    act() and value() work, learn() asks for an env, evaluate() uses the recorded env id if Gymnasium knows it).

    The live objects are built first and the state is loaded into them; a checkpoint for other spaces is
    refused with both signatures in the message. `networks` (policy=, critic=) rebuild custom networks;
    `env_backend` ("gymnasium" or "torch") is passed to the agent's constructor when given."""
    device = resolve_device(device)  # a missing GPU is named as such, not blamed on rebuilding the env
    payload = load_checkpoint(path, algo=cls.algo)
    check_agent_payload(payload, path)
    if env is None:
        try:
            env = Spaces(space_from_dict(payload["observation_space"]), space_from_dict(payload["action_space"]),
                         payload["env_id"])
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} records no usable spaces ({type(e).__name__}: {e}); "
                                  "pass env= to load() it") from None
    cfg = dict(payload["config"])
    if n_envs is not None:
        cfg["n_envs"] = n_envs
    nets = _networks_for_load(path, payload, networks)
    try:
        backend = {} if env_backend is None else {"env_backend": env_backend}
        agent = cls(env, config=cfg, seed=payload["seed"], device=device, **backend, **nets)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {e}") from None
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
    """The edges of one learn() call, the same for every agent: metrics are logged every `log_interval`
    environment steps and after the last update (time/sps = environment steps of this call per second of it,
    episode statistics from the agent's collector), then `callback(agent, metrics)` runs (False stops
    training), then a checkpoint is written when one is due; the run directory's lock and the stop signals.
    When to collect and update stays in each agent."""

    logger: Logger
    start: int
    target: int
    log_interval: int
    callback: Callable[[Any, dict[str, float]], Any] | None
    ckpt_dir: Path | None
    next_ckpt: int | None
    ckpt_interval: int
    keep: int
    next_log: int = 0
    t0: float = 0.0
    run_dir: Path | None = None
    lock: RunDirLock | None = None
    signals: StopSignals | None = None

    def log_due(self, agent: Any) -> bool:
        """Every log_interval environment steps, after the last update, and when a stop signal arrived."""
        return (agent.num_timesteps >= self.next_log or agent.num_timesteps >= self.target
                or (self.signals is not None and self.signals.received is not None))

    def end_of_iteration(self, agent: Any, metrics: dict[str, Any]) -> bool:
        """After an update: log (and call back) when due, then checkpoint when due. False means stop."""
        go_on = True
        if self.log_due(agent):
            go_on = self.log(agent, metrics)
        self.checkpoint_if_due(agent)
        return go_on

    def log(self, agent: Any, metrics: dict[str, Any]) -> bool:
        """Record metrics at the agent's step, stop with NonFiniteError on a non-finite loss, call the callback;
        False means stop (the callback returned False)."""
        steps = agent.num_timesteps
        metrics = {**metrics, "time/sps": (steps - self.start) / max(time.perf_counter() - self.t0, 1e-9),
                   **agent.collector.episode_stats()}
        values = self.logger.record(metrics, steps)
        check_finite_metrics(agent.algo, values, steps)
        self.next_log = (steps // self.log_interval + 1) * self.log_interval
        return not (self.callback is not None and self.callback(agent, values) is False)

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
                self.next_ckpt += self.ckpt_interval  # type: ignore[operator]
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


def begin_learn(agent: Any, total_steps: int, run_dir: str | Path | None, progress: bool, log_interval: int,
                callback: Callable[[Any, dict[str, float]], Any] | None = None) -> LearnRun:
    """Check learn()'s arguments and open its run: TensorBoard/CSV/console only with a run directory, which is
    locked for this run (RunDirError if another run holds it, or if a new agent would write into a directory
    that holds an earlier run) and cleaned of temp files a killed save left. SIGINT/SIGTERM then stop the
    run at the next checkpoint_if_due() with a checkpoint (TrainingInterrupted)."""
    require_env(agent, "learn()")
    if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) or total_steps < 0:
        raise ValueError(f"total_steps must be a non-negative integer, got {total_steps!r}")
    if not isinstance(log_interval, (int, np.integer)) or isinstance(log_interval, bool) or log_interval < 1:
        raise ValueError(f"log_interval must be a positive integer (environment steps), got {log_interval!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(agent, metrics), got {type(callback).__name__}")
    cfg = agent.config
    start = agent.num_timesteps
    target = start + int(total_steps)
    rd = Path(run_dir) if run_dir is not None else None
    # An agent that has trained (or was loaded from a checkpoint) continues its run; a new one starts a run.
    lock = open_run_dir(rd, resuming=start > 0) if rd is not None else None
    signals = None
    try:
        logger = Logger(rd, cfg, total_steps=target, start_step=start, progress=progress,
                        console=rd is not None, tensorboard=rd is not None, csv_file=rd is not None,
                        hparams={"algo": agent.algo, "env_id": agent.env_id, "seed": agent.seed})
        signals = StopSignals().install()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    interval = cfg.checkpoint_interval
    return LearnRun(logger, start, target, int(log_interval), callback, rd / "checkpoints" if rd is not None else None,
                    start + interval if interval else None, interval, cfg.keep_checkpoints,
                    next_log=(start // int(log_interval) + 1) * int(log_interval), t0=time.perf_counter(),
                    run_dir=rd, lock=lock, signals=signals)
