"""Plumbing every agent needs at its edges, as plain functions: building its envs from whatever the user
passed, turning NumPy observations into actions and values, evaluation, checkpoint payloads, and the edges of
learn() (LearnRun: logging, callback, checkpoints). When to collect and update stays in each agent's own file.
"""
from __future__ import annotations

import math
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from rlkit.core.atari import evaluation_cap
from rlkit.core.checkpoint import (CheckpointError, check_agent_payload, load_checkpoint, rotate_checkpoints,
                                   save_checkpoint, write_file_atomic)
from rlkit.core.config import ConfigError, config_to_dict
from rlkit.core.device import (auto_device, resolve_cuda_graphs, resolve_device, rng_state, set_rng_state,
                               to_host)
from rlkit.core.envs import (ENV_BACKENDS, EnvLike, Spaces, TorchVecEnv, check_spaces, env_factory, is_known_env_id,
                             load_vec_env_state, make_vec_env, reports_game_scores, space_from_dict, space_signature,
                             space_to_dict, sub_env_seeds, to_env_actions, vec_env_state)
from rlkit.core.errors import NonFiniteError, first_non_finite
from rlkit.core.logger import Logger, scalar_metric
from rlkit.core.networks import has_image_obs, load_network_factory
from rlkit.core.normalize import ReturnNormalizer
from rlkit.core.rollout import RolloutCollector, check_finite_metrics, evaluate_policy, obs_shapes
from rlkit.core.rundir import RunDirLock, StopSignals, TrainingInterrupted, open_run_dir


@dataclass
class EnvSetup:
    """What an agent keeps about its environment (venv is None for an agent loaded without one; a TorchVecEnv
    for env_backend="torch", whose initial_obs is then a tensor on its device)."""
    venv: gym.vector.VectorEnv | TorchVecEnv | None
    initial_obs: np.ndarray | dict[str, np.ndarray] | torch.Tensor | None
    factory: Callable[[], gym.Env] | None  # builds one env for evaluation (None when nothing can rebuild it)
    env_id: str
    obs_space: gym.Space
    action_space: gym.Space
    n_envs: int
    game_scores: bool = False  # the training envs report whole-game scores in infos (Atari): the collector logs them
    seed: int | None = None  # the agent's seed: keys the collector's action-noise stream on a torch env


def setup_env(
    algo: str,
    env: EnvLike | Spaces,
    cfg: Any,
    seed: int | None,
    supported_actions: tuple[str, ...],
    require_bounded_actions: bool = False,
    vectorization: str | None = None,
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
    cannot step tensors (tensor_steps=False) refuses them with one line.

    `vectorization` (auto | sync | async; default: cfg.vectorization when the config has the field, else auto)
    is make_vec_env's. An Atari id gets rlkit's Atari preprocessing: the vector env is the training stack, the
    factory (evaluation) builds the evaluation env (rlkit.core.atari)."""
    n_envs = cfg.n_envs
    if vectorization is None:
        vectorization = getattr(cfg, "vectorization", "auto")
    if env_backend not in ENV_BACKENDS:
        raise ValueError(f"{algo}: env_backend must be one of {', '.join(ENV_BACKENDS)}, got {env_backend!r}")
    if isinstance(env, Spaces):
        check_spaces(algo, env.observation_space, env.action_space, supported_actions, require_bounded_actions)
        try:
            known = is_known_env_id(env.env_id)
        except ValueError:  # a module:EnvId whose module is not importable here: act()/value() still work
            known = False
        factory = env_factory(env.env_id, env_kwargs)[0] if known else None
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
                        tenv.single_action_space, tenv.num_envs, seed=seed)
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
    initial_obs = dict(initial_obs) if isinstance(initial_obs, dict) else np.asarray(initial_obs)  # Dict: by key
    return EnvSetup(venv, initial_obs, factory, env_id, obs_space, act_space, venv.num_envs,
                    game_scores=reports_game_scores(env, env_kwargs))


def make_collector(es: EnvSetup, device: torch.device, cfg: Any) -> RolloutCollector:
    """The agent's collector on its vector env, normalising rewards when cfg.normalize_reward (running std of the
    discounted return with cfg.gamma, clipped to cfg.clip_reward)."""
    normalizer = ReturnNormalizer(es.n_envs, cfg.gamma, cfg.clip_reward) if cfg.normalize_reward else None
    if normalizer is not None and isinstance(es.venv, TorchVecEnv):
        raise ValueError("normalize_reward is not available with env_backend='torch' yet (the normaliser works on "
                         "the NumPy rewards of Gymnasium's envs); use the Gymnasium backend or scale rewards")
    return RolloutCollector(es.venv, device, es.initial_obs, reward_normalizer=normalizer, game_scores=es.game_scores,
                            seed=es.seed)


def rollout_noise(actor: Any, cfg: Any) -> tuple[str, torch.dtype] | None:
    """What collect(noise=) draws for an on-policy actor on a torch env: (its noise_kind, its parameters' dtype),
    or None when its sample_actions takes no noise from outside (gSDE, or an actor without noise_kind)."""
    kind = getattr(actor, "noise_kind", None)
    if kind is None or getattr(cfg, "use_sde", False):
        return None
    return kind, next(actor.parameters()).dtype


def cuda_graphs(algo: str, cfg: Any, es: EnvSetup, device: torch.device) -> tuple[bool, str]:
    """(on, why) for an on-policy agent's cfg.cuda_graphs (core.device.resolve_cuda_graphs): on for a CUDA device
    whose torch env steps on it, except with gSDE (use_sde: its noise matrices are drawn outside the rollout)."""
    env_on_device = isinstance(es.venv, TorchVecEnv) and es.venv.device == device
    obstacle = "gSDE (use_sde) draws its noise outside the rollout" if getattr(cfg, "use_sde", False) else None
    return resolve_cuda_graphs(cfg.cuda_graphs, device, env_on_device, obstacle, who=algo)


def choose_device(device: str | torch.device, algo: str, es: EnvSetup, batch_size: int) -> tuple[torch.device, str]:
    """(the device, why): "auto" by core.device.auto_device's rule from the env's facts, else the one asked for."""
    if not (isinstance(device, str) and device.strip().lower() == "auto"):
        return resolve_device(device), "requested"
    image = has_image_obs(es.obs_space)
    env_on_gpu = isinstance(es.venv, TorchVecEnv) and es.venv.device.type == "cuda"
    return auto_device(algo, image, int(batch_size), env_on_gpu=env_on_gpu)


def require_env(agent: Any, what: str) -> None:
    """ValueError when an agent that was loaded without an environment is asked to train."""
    if agent.env is None:
        raise ValueError(f"{agent.algo} was loaded without an environment (env_id {agent.env_id!r}); {what} needs "
                         f"one: pass env= to load() (a Gymnasium id, a callable, an Env or a VectorEnv)")


def obs_batch(obs: Any, obs_space: gym.Space, device: torch.device, where: str = "") -> tuple[Any, bool]:
    """One observation or a batch of them -> (tensor [B, *obs_shape] on `device`, was it a single one).

    The tensor has the storage dtype (rlkit.core.networks.obs_storage): float32, or uint8 for a uint8 Box (an
    image crosses to the device as bytes; the encoder scales it there). A Dict space takes a dict with exactly its
    keys and gives a dict of tensors; every key must hold one observation, or every key a batch of the same size.
    Raises ValueError naming the expected shape (and the key: `where`) instead of letting a raw torch error
    surface. For a Discrete(n) space observations are integer indices in [start, start + n): a scalar is one
    observation, a 1-D integer array a batch; a float array (e.g. a one-hot vector) is refused, never silently
    read as a batch."""
    if isinstance(obs_space, gym.spaces.Dict):
        return _dict_obs_batch(obs, obs_space, device)
    try:
        arr = np.asarray(obs)
    except Exception as e:  # noqa: BLE001 - ragged lists and the like: say what was expected
        raise ValueError(f"observation{where} {obs!r:.80} is not an array ({e})") from None
    dtype = torch.float32
    if isinstance(obs_space, gym.spaces.Discrete):
        n, start = int(obs_space.n), int(obs_space.start)
        if arr.ndim > 1 or arr.dtype.kind not in "iub" and not (arr.ndim == 0 and arr.dtype.kind == "f"):
            raise ValueError(f"a {obs_space} observation{where} is an integer index in [{start}, {start + n}), given "
                             f"as a scalar or a 1-D integer array (a batch), got a {arr.dtype} array of shape "
                             f"{arr.shape}" + (" (a one-hot vector? pass its index)" if arr.ndim == 1 else ""))
        if arr.ndim == 0 and arr.dtype.kind == "f" and not (np.isfinite(arr) and float(arr).is_integer()):
            raise ValueError(f"a {obs_space} observation{where} is an integer index, got {arr.item()!r}")
        if arr.size and (arr.min() < start or arr.max() >= start + n):
            raise ValueError(f"a {obs_space} observation{where} must lie in [{start}, {start + n}), got "
                             f"{arr.min() if arr.min() < start else arr.max()}")
        single = arr.ndim == 0
        arr = arr.astype(np.int64) - start
    else:
        shape = tuple(obs_space.shape or ())
        single = arr.shape == shape
        if not single and (arr.ndim != len(shape) + 1 or arr.shape[1:] != shape):
            batch = f"(batch, {', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"
            raise ValueError(f"observation{where} of shape {arr.shape} does not fit {obs_space}: expected shape "
                             f"{shape} (one observation) or {batch} "
                             "(a batch)")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"observation{where} must be numeric, got dtype {arr.dtype}")
        if obs_space.dtype == np.uint8:  # kept as bytes up to the device (images: scaled there)
            dtype = torch.uint8
            if arr.dtype != np.uint8 and arr.size and not (np.all(arr == np.round(arr)) and arr.min() >= 0
                                                            and arr.max() <= 255):
                raise ValueError(f"observation{where} of {obs_space} must hold integers in [0, 255] (uint8 pixel "
                                 f"values, not scaled ones), got values in [{arr.min()}, {arr.max()}]")
    batch = arr[None] if single else arr
    return torch.as_tensor(batch, dtype=dtype, device=device), single


def _dict_obs_batch(obs: Any, obs_space: gym.spaces.Dict, device: torch.device) -> tuple[dict[str, Any], bool]:
    """obs_batch for a Dict space: each key by its own space; all single observations or all one batch size."""
    keys = sorted(obs_space.spaces)
    if not isinstance(obs, dict):
        raise ValueError(f"a Dict observation is a dict with keys {keys}, got {type(obs).__name__}")
    if sorted(map(str, obs)) != keys:
        raise ValueError(f"a Dict observation has keys {keys}, got {sorted(map(str, obs))}")
    parts = {k: obs_batch(obs[k], obs_space.spaces[k], device, f" (key {k!r})") for k in keys}
    single = {p[1] for p in parts.values()}
    sizes = {p[0].shape[0] for p in parts.values()}
    if len(single) > 1 or len(sizes) > 1:
        raise ValueError(f"the keys of a Dict observation must all hold one observation or all a batch of the same "
                         f"size, got {({k: tuple(p[0].shape) for k, p in parts.items()})}")
    return {k: p[0] for k, p in parts.items()}, single.pop()


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
    """Evaluate on a fresh env (from the agent's factory unless `env` is given), seeded from the run seed. An Atari
    env plays whole games (from an Atari id: no life-loss terminals, raw rewards) up to the game's frame limit;
    games cut there are counted in a RuntimeWarning."""
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
    cap = evaluation_cap(eval_env)  # an Atari game: capped by its frame limit, a game cut there is reported
    try:
        if cap is not None:
            return evaluate_policy(act, eval_env, n_episodes, seed=eval_seed, max_steps_per_episode=cap[0],
                                   truncation_note=cap[1])
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
        # the run's total environment-step budget: schedules (linear lr decay) run over it, across resumes
        "total_budget": int(getattr(agent, "total_budget", None) or 0),
        "env_kwargs": dict(getattr(agent, "env_kwargs", None) or {}),
        "best_eval": dict(getattr(agent, "best_eval", None) or {}),
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
                       n_envs: int | None = None, restore_rng: bool = True, restore_env: bool = False,
                       config_overrides: dict[str, Any] | None = None, env_backend: str | None = None,
                       **networks: Any) -> Any:
    """Rebuild an agent of class `cls` from a checkpoint, on `env`, or without an env when env is None (then
    act() and value() work, learn() asks for an env, evaluate() uses the recorded env id if Gymnasium knows it).

    The live objects are built first and the state is loaded into them; a checkpoint for other spaces is
    refused with both signatures in the message. `networks` (policy=, critic=) rebuild custom networks;
    `env_backend` ("gymnasium" or "torch") is passed to the agent's constructor when given.
    `config_overrides` change config fields (the CLI's --resume --override). With `restore_env=True` the vector
    env continues the episodes it was in when the checkpoint was written, from the env-state file a run writes
    beside each checkpoint (a pickle: only pass it for run directories you trust); without it, or when there is
    none, the envs start fresh episodes. Either way `agent.resume_note` says which."""
    resolve_device(device)  # a missing GPU is named as such, not blamed on rebuilding the env ("auto" stays auto)
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
    cfg.update(config_overrides or {})
    if n_envs is not None:
        cfg["n_envs"] = n_envs
    nets = _networks_for_load(path, payload, networks)
    budget, env_kwargs, best = _run_record(payload, path)
    try:
        backend = {} if env_backend is None else {"env_backend": env_backend}
        # the recorded env's keyword arguments apply when it is rebuilt from its recorded id
        kw = {"env_kwargs": env_kwargs} if env_kwargs and (env == payload["env_id"] or isinstance(env, Spaces)) \
            else {}
        agent = cls(env, config=cfg, seed=payload["seed"], device=device, **backend, **nets, **kw)
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
    agent.total_budget, agent.best_eval = budget, best
    if restore_rng:
        try:
            set_rng_state(payload["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"checkpoint {path} has an unusable rng state: {type(e).__name__}: {e}") from None
    agent.resume_note = None
    if agent.env is not None:
        restored, agent.resume_note = (restore_env_state(agent, Path(path), payload) if restore_env
                                       else (False, "the envs start fresh episodes (env state not requested)"))
        hook = getattr(agent, "envs_restored", None)
        if hook is not None:
            hook(restored)
    return agent


# ---- env state beside run checkpoints (a pickle, read only on request) ----------------------------------------
def env_state_path(checkpoint: str | os.PathLike) -> Path:
    """checkpoints/step_N.pt -> checkpoints/step_N.envstate."""
    return Path(checkpoint).with_suffix(".envstate")


def env_state_blob(agent: Any) -> tuple[bytes | None, str]:
    """(the pickled env state, "") or (None, why the envs cannot be saved): the sub-envs with their simulator
    state and RNGs, the collector's current observations and episode counters, and the step they belong to."""
    data, why = vec_env_state(agent.env) if agent.env is not None else (None, "no env")
    if data is None:
        return None, why
    return pickle.dumps({"num_timesteps": int(agent.num_timesteps), "venv": data,
                         "collector": agent.collector.episode_state()}), ""


def restore_env_state(agent: Any, checkpoint: Path, payload: dict[str, Any]) -> tuple[bool, str]:
    """(True, what was restored) or (False, why the envs start fresh episodes instead)."""
    f = env_state_path(checkpoint)
    why = payload.get("env_state_note") or ""
    if not f.is_file():
        return False, (f"the envs start fresh episodes: no saved env state beside {checkpoint}"
                       + (f" ({why})" if why else ""))
    try:
        state = pickle.loads(f.read_bytes())  # noqa: S301 - opted in (restore_env=True / --resume)
        if state["num_timesteps"] != agent.num_timesteps:
            raise ValueError(f"it is from step {state['num_timesteps']}, the checkpoint from {agent.num_timesteps}")
        if obs_shapes(state["collector"]["obs"]) != obs_shapes(agent.collector.obs_np):
            raise ValueError(f"it holds observations of shape {obs_shapes(state['collector']['obs'])}, the "
                             f"agent's {agent.collector.n_envs} envs give {obs_shapes(agent.collector.obs_np)}")
        load_vec_env_state(agent.env, state["venv"])
        agent.collector.load_episode_state(state["collector"])
    except Exception as e:  # noqa: BLE001 - checked before anything changed: the fresh envs stay as they are
        return False, f"the envs start fresh episodes: env state {f} is unusable ({type(e).__name__}: {e})"
    return True, f"the envs continue their episodes from {f.name}"


def _run_record(payload: dict[str, Any], path: Any) -> tuple[int | None, dict[str, Any], dict[str, Any] | None]:
    """(total_budget, env_kwargs, best_eval) of a checkpoint, checked (older checkpoints lack them: defaults)."""
    budget, env_kwargs = payload.get("total_budget", 0), payload.get("env_kwargs", {})
    best = payload.get("best_eval", {})
    if type(budget) is not int or budget < 0:
        raise CheckpointError(f"checkpoint {path}: total_budget must be a non-negative int, got {budget!r:.60}")
    if not isinstance(env_kwargs, dict) or not all(isinstance(k, str) for k in env_kwargs):
        raise CheckpointError(f"checkpoint {path}: env_kwargs must be a dict with string keys")
    if not isinstance(best, dict) or (best and not (
            set(best) == {"return", "step"} and type(best["step"]) is int and isinstance(best["return"], float)
            and math.isfinite(best["return"]))):
        raise CheckpointError(f"checkpoint {path}: best_eval must be {{'return': float, 'step': int}} or empty")
    return budget or None, env_kwargs, (dict(best) if best else None)


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
    save_run_checkpoint(agent, path)
    rotate_checkpoints(directory, keep)
    rotate_checkpoints(directory, keep, pattern="step_*.envstate")
    return path


def save_run_checkpoint(agent: Any, path: Path) -> Path:
    """A run's checkpoint, then the env state file beside it (`<name>.envstate`, when the envs can be saved;
    else any stale one is removed and the checkpoint records why). The env state holds its step, so one left
    from an earlier checkpoint of the same name, or missing after a crash between the two writes, is detected
    on resume and the envs start fresh episodes."""
    payload = checkpoint_payload(agent)
    check_finite_state(agent, f"writing {path}", payload["state"])
    blob, payload["env_state_note"] = env_state_blob(agent)
    save_checkpoint(path, payload)
    if blob is None:
        env_state_path(path).unlink(missing_ok=True)
    else:
        write_file_atomic(env_state_path(path), blob)
    return path


_NONE = torch.iinfo(torch.int64).max  # LearnRun.loss_watch: no non-finite loss seen


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
    total_budget: int = 0
    eval_freq: int = 0
    n_eval_episodes: int = 10
    next_eval: int | None = None
    loss_watch: torch.Tensor | None = None  # torch envs: environment step of the first non-finite loss (device)

    def schedule_fraction(self, agent: Any) -> float:
        """The fraction of the run's total budget still ahead (1 at step 0, 0 at the budget): linear schedules
        are a function of (num_timesteps, total_budget) only, so a run split over several learn() calls or
        resumed from a checkpoint follows the same schedule as one learn() call."""
        return max(self.total_budget - agent.num_timesteps, 0) / max(self.total_budget, 1)

    def eval_due(self, agent: Any) -> bool:
        return self.next_eval is not None and agent.num_timesteps >= self.next_eval

    def evaluate(self, agent: Any) -> dict[str, float]:
        """Deterministic evaluation on a separate env (the agent's factory; observation statistics only read),
        with the global RNG put back afterwards so evaluating never changes the training run; best.pt is
        written (atomically) when the mean return improves."""
        saved = rng_state()
        try:
            stats = agent.evaluate(n_episodes=self.n_eval_episodes, deterministic=True)
        finally:
            set_rng_state(saved)
        step = agent.num_timesteps
        while self.next_eval is not None and self.next_eval <= step:
            self.next_eval += self.eval_freq
        best = getattr(agent, "best_eval", None)
        if best is None or stats["mean_return"] > best["return"]:
            agent.best_eval = {"return": float(stats["mean_return"]), "step": int(step)}
            if self.ckpt_dir is not None:
                check_finite_state(agent, f"writing {self.ckpt_dir / 'best.pt'}")
                save_agent(agent, self.ckpt_dir / "best.pt")
        return {"eval/mean_return": stats["mean_return"], "eval/std_return": stats["std_return"],
                "eval/mean_length": stats["mean_length"]}

    def log_due(self, agent: Any) -> bool:
        """Every log_interval environment steps, after the last update, and when a stop signal arrived."""
        return (agent.num_timesteps >= self.next_log or agent.num_timesteps >= self.target
                or (self.signals is not None and self.signals.received is not None))

    def due(self, agent: Any) -> bool:
        """Whether end_of_iteration() has anything to do now (log, evaluate, checkpoint, or a stop signal); when
        not, skipping the call changes nothing (rlkit.core.seeds skips it for all its seeds at once)."""
        return (self.log_due(agent) or self.eval_due(agent)
                or (self.ckpt_dir is not None and self.next_ckpt is not None and agent.num_timesteps >= self.next_ckpt))

    def end_of_iteration(self, agent: Any, metrics: dict[str, Any]) -> bool:
        """After an update: log (and call back) when due, then checkpoint when due. False means stop."""
        go_on = True
        self.watch_losses(agent, metrics)
        evaluated = self.eval_due(agent)
        if evaluated:
            metrics = {**metrics, **self.evaluate(agent)}
        if evaluated or self.log_due(agent):
            go_on = self.log(agent, metrics)
        self.checkpoint_if_due(agent)
        return go_on

    def watch_losses(self, agent: Any, metrics: dict[str, Any]) -> None:
        """Torch envs (nothing is read back between logs): remember on the device the environment step of the first
        update whose loss was NaN/inf, so the next log can name it. A few device ops, no host read."""
        if self.loss_watch is None:
            return
        losses = [v for k, v in metrics.items() if k.startswith("train/loss") and isinstance(v, torch.Tensor)]
        if losses:
            total = torch.stack([(v if v.dim() == 0 else v.sum()).detach().float() for v in losses]).sum()  # NaN stays
            first = torch.where(torch.isfinite(total), _NONE, agent.num_timesteps)
            torch.minimum(self.loss_watch, first, out=self.loss_watch)

    def log(self, agent: Any, metrics: dict[str, Any]) -> bool:
        """Record metrics at the agent's step, stop with NonFiniteError on a non-finite value, call the callback;
        False means stop (the callback returned False).

        Everything still on a device (the update's tensor metrics; with a torch env, the collector's step counter,
        episode statistics and non-finite records, and the first non-finite loss) is read here in ONE host
        transfer: with the torch env backend this is the only host synchronisation between two logs."""
        collector = agent.collector
        logged = {k: scalar_metric(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        host = to_host({"metrics": logged, "collector": collector.device_snapshot(), "loss_watch": self.loss_watch})
        steps = agent.num_timesteps
        collector.apply_snapshot(host["collector"])  # a NaN/inf from the env (or an action) stops the run here
        metrics = {**host["metrics"], "time/sps": (steps - self.start) / max(time.perf_counter() - self.t0, 1e-9),
                   **collector.episode_stats(refresh=False)}
        values = self.logger.record(metrics, steps)
        first_bad = host["loss_watch"]
        if first_bad is not None and first_bad != _NONE:
            bad = [k for k, v in values.items() if k.startswith("train/loss") and not math.isfinite(v)]
            raise NonFiniteError(f"{agent.algo}: non-finite {', '.join(bad) or 'loss'} first in the update at "
                                 f"environment step {first_bad} (found at the log of step {steps}); training stopped "
                                 "(the last saved checkpoint is untouched)")
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
            save_run_checkpoint(agent, self.ckpt_dir / "final.pt")

    def close(self) -> None:
        """Flush and close the logs, put the previous signal handlers back, release the run directory."""
        try:
            self.logger.close()
        finally:
            if self.signals is not None:
                self.signals.uninstall()
            if self.lock is not None:
                self.lock.release()


def _check_count(name: str, value: Any, low: int, what: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be {'a positive' if low else 'a non-negative'} integer{what}, got {value!r}")


def begin_learn(agent: Any, total_steps: int, run_dir: str | Path | None, progress: bool, log_interval: int,
                callback: Callable[[Any, dict[str, float]], Any] | None = None, total_budget: int | None = None,
                eval_freq: int = 0, n_eval_episodes: int = 10) -> LearnRun:
    """Check learn()'s arguments and open its run: TensorBoard/CSV/console only with a run directory, which is
    locked for this run (RunDirError if another run holds it, or if a new agent would write into a directory
    that holds an earlier run) and cleaned of temp files a killed save left. SIGINT/SIGTERM then stop the
    run at the next checkpoint_if_due() with a checkpoint (TrainingInterrupted).

    The run's total budget (agent.total_budget, saved in checkpoints; schedules run over it): `total_budget`
    when given, else the one the agent has, else this call's end (num_timesteps + total_steps); a call that goes
    past the stored budget extends it to its end. Every `eval_freq` environment steps (0: never) the agent is
    evaluated for `n_eval_episodes` deterministic episodes (eval/* metrics; checkpoints/best.pt)."""
    require_env(agent, "learn()")
    if not isinstance(total_steps, (int, np.integer)) or isinstance(total_steps, bool) or total_steps < 0:
        raise ValueError(f"total_steps must be a non-negative integer, got {total_steps!r}")
    if not isinstance(log_interval, (int, np.integer)) or isinstance(log_interval, bool) or log_interval < 1:
        raise ValueError(f"log_interval must be a positive integer (environment steps), got {log_interval!r}")
    if total_budget is not None:
        _check_count("total_budget", total_budget, 1, " (environment steps of the whole run)")
    _check_count("eval_freq", eval_freq, 0, " (environment steps; 0: no evaluation during training)")
    _check_count("n_eval_episodes", n_eval_episodes, 1, "")
    if eval_freq and getattr(agent, "_env_factory", None) is None:
        raise ValueError(f"eval_freq needs an env to evaluate on, and this {agent.algo} agent cannot build one (it was "
                         "built from an unregistered VectorEnv or Env instance); pass an env id or a callable")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable as callback(agent, metrics), got {type(callback).__name__}")
    cfg = agent.config
    start = agent.num_timesteps
    target = start + int(total_steps)
    if total_budget is not None and int(total_budget) < target:
        raise ValueError(f"total_budget {int(total_budget):,} is below the step this call trains to "
                         f"({start:,} + {int(total_steps):,} = {target:,})")
    budget = int(total_budget) if total_budget is not None else max(getattr(agent, "total_budget", None) or 0,
                                                                      target)
    rd = Path(run_dir) if run_dir is not None else None
    # An agent that has trained (or was loaded from a checkpoint) continues its run; a new one starts a run.
    lock = open_run_dir(rd, resuming=start > 0) if rd is not None else None
    signals = None
    try:
        logger = Logger(rd, cfg, total_steps=target, start_step=start, progress=progress,
                        console=rd is not None, tensorboard=rd is not None, csv_file=rd is not None,
                        hparams={"algo": agent.algo, "env_id": agent.env_id, "seed": agent.seed})
        signals = StopSignals().install()
        note = getattr(agent, "resume_note", None)
        if rd is not None and start > 0 and note:  # the run's log says how this segment continued
            with (rd / "run.log").open("a") as f:
                f.write(f"step {start}: resumed; {note}\n")
            print(f"rlkit: resumed at step {start:,}; {note}", file=sys.stderr)
            agent.resume_note = None
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    agent.total_budget = budget
    interval = cfg.checkpoint_interval
    # checkpoints and evaluations at multiples of their intervals, so a resumed run keeps the same ones
    return LearnRun(logger, start, target, int(log_interval), callback, rd / "checkpoints" if rd is not None else None,
                    (start // interval + 1) * interval if interval else None, interval, cfg.keep_checkpoints,
                    next_log=(start // int(log_interval) + 1) * int(log_interval), t0=time.perf_counter(),
                    run_dir=rd, lock=lock, signals=signals, total_budget=budget, eval_freq=int(eval_freq),
                    n_eval_episodes=int(n_eval_episodes),
                    next_eval=(start // int(eval_freq) + 1) * int(eval_freq) if eval_freq else None,
                    loss_watch=(torch.full((), _NONE, dtype=torch.int64, device=agent.device)
                                if getattr(agent.collector, "tensor_env", False) else None))
