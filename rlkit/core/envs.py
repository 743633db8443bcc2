"""Environment construction and checks: the only core module (with rollout and networks) that touches gymnasium.

Every vector env rlkit builds uses AutoresetMode.SAME_STEP: a step that ends an episode returns the reset
observation, and the true final observation rides in info["final_obs"]. So every step is a real transition
and nothing is stored for a phantom reset step (the NEXT_STEP default's reward-0 step after each episode end).
"""
from __future__ import annotations

from typing import Any, Callable, Union

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

EnvLike = Union[str, Callable[[], gym.Env], gym.Env, VectorEnv]


class SpaceError(TypeError):
    """An observation or action space an algorithm cannot use (names the algorithm, the space, what works)."""


def _describe(space: gym.Space) -> str:
    return f"{type(space).__name__}{'' if not hasattr(space, 'shape') or space.shape is None else tuple(space.shape)}"


def check_spaces(algo: str, obs_space: gym.Space, action_space: gym.Space, supported_actions: tuple[str, ...],
                 require_bounded_actions: bool = False) -> None:
    """Raise SpaceError (never assert: asserts vanish under python -O) if `algo` cannot use these spaces."""
    if not isinstance(obs_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise SpaceError(f"{algo} cannot use observation space {obs_space}; supported observation spaces: Box, Discrete")
    kind = type(action_space).__name__
    if kind not in supported_actions:
        raise SpaceError(
            f"{algo} does not support action space {action_space} ({kind}); "
            f"supported action spaces: {', '.join(supported_actions)}"
        )
    if isinstance(action_space, gym.spaces.Box):
        low, high = action_space.low, action_space.high
        if np.any(np.isnan(low)) or np.any(np.isnan(high)):
            raise SpaceError(f"{algo}: action space {action_space} has a NaN bound")
        if np.any(low >= high):
            raise SpaceError(f"{algo}: action space {action_space} has low >= high in some dimension")
        if require_bounded_actions and not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise SpaceError(
                f"{algo} needs a bounded Box action space (it scales tanh to the bounds), "
                f"but {action_space} has an infinite bound"
            )


def space_signature(obs_space: gym.Space, action_space: gym.Space) -> str:
    """A string that identifies the spaces, stored in checkpoints to refuse loading into a different env."""
    def one(s: gym.Space) -> str:
        if isinstance(s, gym.spaces.Discrete):
            return f"Discrete({int(s.n)})"
        if isinstance(s, gym.spaces.Box):
            return f"Box{tuple(s.shape)}"
        return repr(s)
    return f"obs={one(obs_space)} act={one(action_space)}"


def env_factory(env: EnvLike, env_kwargs: dict[str, Any] | None = None) -> tuple[Callable[[], gym.Env] | None, str]:
    """Return (a callable that builds one env, an id to name runs) for an id, a callable or an Env instance.

    A ready VectorEnv gives no factory (None) unless it carries a spec to rebuild from.
    """
    kwargs = env_kwargs or {}
    if isinstance(env, str):
        if env not in gym.registry:
            close = [k for k in gym.registry if env.lower().split("-")[0] in k.lower()][:5]
            hint = f"; did you mean one of {close}?" if close else ""
            raise ValueError(f"unknown Gymnasium environment id {env!r}{hint}")
        return (lambda: gym.make(env, **kwargs)), env
    if isinstance(env, VectorEnv):
        spec = getattr(env, "spec", None)
        if spec is not None and spec.id in gym.registry:
            return (lambda: gym.make(spec.id, **kwargs)), spec.id
        return None, type(env).__name__
    if isinstance(env, gym.Env):
        spec = env.spec
        if spec is not None and spec.id in gym.registry:
            return (lambda: gym.make(spec, **kwargs)), spec.id
        return None, type(env.unwrapped).__name__
    if callable(env):
        name = getattr(env, "__name__", type(env).__name__)
        return env, name
    raise TypeError(
        f"env must be a Gymnasium id, a callable returning a gymnasium.Env, a gymnasium.Env or a VectorEnv; "
        f"got {type(env).__name__}"
    )


def sub_env_seeds(seed: int | None, n: int, stream: int = 0) -> list[int] | None:
    """Seeds for n sub-envs from numpy's SeedSequence, so runs with adjacent seeds never share sub-env seeds
    (the `seed + i` scheme makes run 0's env 1 equal run 1's env 0). `stream` separates train/eval envs."""
    if seed is None:
        return None
    ss = np.random.SeedSequence([int(seed), int(stream)])
    return [int(s) for s in ss.generate_state(n, dtype=np.uint32)]


def make_vec_env(
    env: EnvLike,
    n_envs: int = 1,
    seed: int | None = None,
    vectorization: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
    algo: str | None = None,
    supported_actions: tuple[str, ...] = ("Discrete", "Box"),
) -> VectorEnv:
    """A SAME_STEP-autoreset vector env of `n_envs` copies (sync or async), reset and seeded.

    `env` may be a Gymnasium id, a callable returning an Env, an Env instance (n_envs must be 1 unless it has a
    registered spec) or a ready VectorEnv (which must already use AutoresetMode.SAME_STEP). With `algo`, its
    spaces are checked against `supported_actions` first (SpaceError naming the algorithm and the space).
    """
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    if isinstance(env, VectorEnv):
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"rlkit needs a vector env with autoreset_mode=SAME_STEP (the true final observation in "
                f"info['final_obs']); this one uses {getattr(mode, 'name', mode)}. Pass the env id or a factory "
                f"instead, or build it with gymnasium.vector.SyncVectorEnv(fns, autoreset_mode="
                f"gymnasium.vector.AutoresetMode.SAME_STEP)"
            )
        venv = env
    else:
        if isinstance(env, gym.Env) and not isinstance(env, VectorEnv):
            factory, _ = env_factory(env, env_kwargs)
            if factory is None:
                if n_envs != 1:
                    raise ValueError("an unregistered gymnasium.Env instance can only be used with n_envs=1; "
                                     "pass a callable that builds the env to use several")
                instance = env
                factory = lambda: instance  # noqa: E731
        else:
            factory, _ = env_factory(env, env_kwargs)
        if vectorization == "sync":
            venv = gym.vector.SyncVectorEnv([factory] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        elif vectorization == "async":
            venv = gym.vector.AsyncVectorEnv([factory] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    if algo is not None:
        try:
            check_spaces(algo, venv.single_observation_space, venv.single_action_space, supported_actions)
        except SpaceError:
            venv.close()
            raise
    seed_vec_env(venv, seed)
    return venv


def seed_vec_env(venv: VectorEnv, seed: int | None) -> Any:
    """Reset with SeedSequence-derived seeds and seed the action spaces too (env.reset(seed=) does not)."""
    seeds = sub_env_seeds(seed, venv.num_envs)
    obs, _ = venv.reset(seed=seeds)
    if seed is not None:
        venv.action_space.seed(int(np.random.SeedSequence([int(seed), 7]).generate_state(1)[0]))
        venv.single_action_space.seed(int(np.random.SeedSequence([int(seed), 8]).generate_state(1)[0]))
    return obs


def make_eval_env(factory: Callable[[], gym.Env]) -> gym.Env:
    return factory()


def to_env_actions(actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """Policy output -> what the env accepts: Discrete as int64, Box clipped to its bounds in its dtype."""
    if isinstance(action_space, gym.spaces.Discrete):
        return actions.astype(np.int64, copy=False) + int(action_space.start)
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(actions, action_space.low, action_space.high).astype(action_space.dtype, copy=False)
    raise SpaceError(f"action space {action_space} is not supported")


def from_env_actions(actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """Env-side actions -> policy-side (Discrete with a start offset shifted back to 0..K-1)."""
    if isinstance(action_space, gym.spaces.Discrete):
        return np.asarray(actions, dtype=np.int64) - int(action_space.start)
    return np.asarray(actions, dtype=np.float32)
