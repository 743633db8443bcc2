"""Environment construction and checks: the only core module (with rollout and networks) that touches gymnasium.

Every vector env rlkit builds uses AutoresetMode.SAME_STEP: a step that ends an episode returns the reset
observation, and the true final observation rides in info["final_obs"]. So every step is a real transition
and nothing is stored for a phantom reset step (the NEXT_STEP default's reward-0 step after each episode end).
"""
from __future__ import annotations

import atexit
import importlib
import math
import multiprocessing
import os
import pickle
import signal
import struct
import sys
import time
import traceback
import weakref
from copy import deepcopy
from typing import Any, Callable, NamedTuple, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.utils import EzPickle
from gymnasium.spaces.utils import is_space_dtype_shape_equiv
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import (concatenate, create_shared_memory, iterate, read_from_shared_memory,
                                    write_to_shared_memory)

from rlkit.core.atari import (PREPROCESSING_KEY, RecordGameScore, atari_factory, atari_install_hint, is_atari_id,
                              register_atari)
from rlkit.core.config import PRESET_FAMILIES
from rlkit.core.device import resolve_device
from rlkit.core.torch_envs import PHYSICS, TorchVecEnv

EnvLike = Union[str, Callable[[], gym.Env], gym.Env, VectorEnv, TorchVecEnv, "Spaces"]


MAX_N_ENVS = 65_536
# A torch vector env is a few tensors of [N, d]: millions of sub-envs fit (the GPU benchmarks use 1M).
MAX_TORCH_N_ENVS = 1 << 26
ENV_BACKENDS = ("gymnasium", "torch")
VECTORIZATIONS = ("auto", "sync", "async")
PRESET_FAMILIES["atari"] = is_atari_id  # a preset keyed "atari" applies to every Atari id (rlkit.core.config)


class SpaceError(TypeError):
    """An observation or action space an algorithm cannot use (names the algorithm, the space, what works)."""


def check_spaces(algo: str, obs_space: gym.Space, action_space: gym.Space, supported_actions: tuple[str, ...],
                 require_bounded_actions: bool = False) -> None:
    """Raise SpaceError (never assert: asserts vanish under python -O) if `algo` cannot use these spaces."""
    if isinstance(obs_space, gym.spaces.Dict):
        check_dict_obs_space(algo, obs_space)
    elif not isinstance(obs_space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise SpaceError(f"{algo} cannot use observation space {obs_space}; "
                         "supported observation spaces: Box, Discrete, Dict of Box and Discrete")
    else:
        _check_obs_part(algo, obs_space, obs_space, "")
    kind = type(action_space).__name__
    shown = " ".join(str(action_space).split())  # one line: NumPy prints a 2-D nvec over several
    if kind not in supported_actions:
        raise SpaceError(
            f"{algo} does not support action space {shown} ({kind}); "
            f"supported action spaces: {', '.join(supported_actions)}"
        )
    if isinstance(action_space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)) \
            and int(np.prod(action_space.shape)) < 1:
        raise SpaceError(f"{algo} cannot use action space {shown}: it has no action dimensions")
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1 or int(action_space.shape[0]) < 1:
            # policies output a flat action vector; anything else breaks broadcasting after the run started
            raise SpaceError(f"{algo} cannot use action space {action_space}: Box actions must be one-dimensional "
                             f"(shape (k,)), got shape {tuple(action_space.shape)}; wrap the env with a "
                             "gymnasium.ActionWrapper that reshapes a flat action")
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


def _check_obs_part(algo: str, whole: gym.Space, space: gym.Space, where: str) -> None:
    """The checks of one Box or Discrete observation (the whole space, or one key of a Dict: `where` names it)."""
    if isinstance(space, gym.spaces.Discrete) and int(space.start) != 0:
        # observations are one-hot encoded by index; an offset start would index past the end
        raise SpaceError(f"{algo} cannot use observation space {whole}: Discrete observations{where} must start at 0 "
                         f"(start={int(space.start)}); wrap the env to subtract the offset")
    if isinstance(space, gym.spaces.Box) and any(int(d) == 0 for d in space.shape):
        raise SpaceError(f"{algo} cannot use observation space {whole}: it has a zero-sized dimension{where}")


def check_dict_obs_space(algo: str, space: gym.spaces.Dict) -> None:
    """A Dict observation holds Box (vector or image) and Discrete spaces under non-empty string keys without '.'
    (they name modules and checkpoint entries); nested Dict/Tuple spaces are refused with one line."""
    if not space.spaces:
        raise SpaceError(f"{algo} cannot use observation space {space}: the Dict has no keys")
    for key, sub in space.spaces.items():
        if not isinstance(key, str) or not key or "." in key:
            raise SpaceError(f"{algo} cannot use observation space {space}: Dict keys must be non-empty strings "
                             f"without '.', got {key!r}")
        if not isinstance(sub, (gym.spaces.Box, gym.spaces.Discrete)):
            raise SpaceError(f"{algo} cannot use observation space {space}: key {key!r} holds a "
                             f"{type(sub).__name__}; a Dict observation may hold only Box and Discrete spaces "
                             "(nested Dict/Tuple spaces are not supported: flatten them, e.g. with "
                             "gymnasium.wrappers.FlattenObservation)")
        _check_obs_part(algo, space, sub, f" (key {key!r})")


def space_signature(obs_space: gym.Space, action_space: gym.Space) -> str:
    """A string that identifies the spaces, stored in checkpoints to refuse loading into a different env."""
    def one(s: gym.Space) -> str:
        if isinstance(s, gym.spaces.Discrete):
            return f"Discrete({int(s.n)})"
        if isinstance(s, gym.spaces.Box):
            return f"Box{tuple(s.shape)}"
        if isinstance(s, gym.spaces.Dict):
            return "Dict(" + ", ".join(f"{k}={one(s.spaces[k])}" for k in sorted(s.spaces)) + ")"
        if isinstance(s, gym.spaces.MultiDiscrete):
            start = "" if not np.any(s.start) else f", start={np.asarray(s.start).tolist()}"
            return f"MultiDiscrete({np.asarray(s.nvec).tolist()}{start})"
        if isinstance(s, gym.spaces.MultiBinary):
            return f"MultiBinary{tuple(s.shape)}"
        return repr(s)
    return f"obs={one(obs_space)} act={one(action_space)}"


class SameStepSyncVectorEnv(gym.vector.SyncVectorEnv):
    """gymnasium.vector.SyncVectorEnv(env_fns, autoreset_mode=SAME_STEP) with a leaner step() that returns the same
    observations, rewards, flags and infos (tests/core/test_envs_rollout.py steps the two side by side).

    Why: with sub-envs as cheap as CartPole, SyncVectorEnv.step's generic bookkeeping (a branch on the autoreset
    mode per sub-env, a merge of every empty info dict, a generic concatenate and a deep copy of the observation
    batch) costs about a third of the call. Here a Box observation is written straight into its row of the batch,
    empty infos are skipped and the batch is copied with ndarray.copy(). Everything else (reset, call, get_attr,
    close, ...) is Gymnasium's. Inheriting from it (and not only from the VectorEnv interface) is the one
    deliberate exception to rlkit's inheritance rule (docs/architecture.md): it keeps this class to one method.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], copy: bool = True) -> None:
        super().__init__(env_fns, copy=copy, autoreset_mode=AutoresetMode.SAME_STEP)
        self._box_obs = isinstance(self.single_observation_space, gym.spaces.Box)
        self._int_actions = isinstance(self.single_action_space, gym.spaces.Discrete)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        infos: dict[str, Any] = {}
        # Discrete actions go to each env as Python ints (members of the space like NumPy integers, but
        # Discrete.contains, which many envs assert, checks an int in a fraction of the time)
        per_env = actions.tolist() if self._int_actions else iterate(self.action_space, actions)
        for i, (env, action) in enumerate(zip(self.envs, per_env)):
            obs, self._rewards[i], term, trunc, info = env.step(action)
            self._terminations[i], self._truncations[i] = term, trunc
            if term or trunc:  # SAME_STEP: the true final observation rides in info, the reset one is returned
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                obs, info = env.reset()
            if info:
                infos = self._add_info(infos, info, i)
            self._env_obs[i] = obs
            if self._box_obs:
                self._observations[i] = obs
        if not self._box_obs:
            self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        self._autoreset_envs = self._terminations | self._truncations
        if self.copy:
            obs_batch = self._observations.copy() if self._box_obs else deepcopy(self._observations)
        else:
            obs_batch = self._observations
        return obs_batch, self._rewards.copy(), self._terminations.copy(), self._truncations.copy(), infos


class SameStepAsyncVectorEnv(gym.vector.AsyncVectorEnv):
    """gymnasium.vector.AsyncVectorEnv(env_fns, autoreset_mode=SAME_STEP) whose step sends less between processes;
    it returns the same observations, rewards, flags and infos (tests/core/test_async_envs.py steps the two side by
    side). Everything but step_async/step_wait (reset, call, get_attr, close, errors) is Gymnasium's, with its
    messages; its worker is _lean_worker (Gymnasium's `worker=` extension point).

    Why: with 16 Atari workers the main process is the bottleneck, and Gymnasium's step costs it, per sub-env and
    step, a pickled ("step", action) message, a pickled 5-tuple back, and a merge of the info dict into the batch
    (_add_info). Here a Discrete action goes as 9 raw bytes, the reply is reward and flags in 10 raw bytes, and the
    info dict is pickled (and merged) only when it is not empty; the observations come through Gymnasium's shared
    memory as before. The same deliberate exception to rlkit's inheritance rule as SameStepSyncVectorEnv.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        super().__init__(env_fns, shared_memory=True, copy=True, autoreset_mode=AutoresetMode.SAME_STEP,
                         worker=_lean_worker)
        self._int_actions = isinstance(self.single_action_space, gym.spaces.Discrete)
        self._box_actions = isinstance(self.single_action_space, gym.spaces.Box)
        self._box_obs = isinstance(self.single_observation_space, gym.spaces.Box)

    def step_async(self, actions: Any) -> None:
        self._assert_is_running()
        if self._state != AsyncState.DEFAULT:
            raise AlreadyPendingCallError(f"Calling `step_async` while waiting for a pending call to "
                                          f"`{self._state.value}` to complete.", str(self._state.value))
        # every message is built (and the batch checked) before any is sent: a bad batch raises with the workers
        # untouched, instead of leaving some of them a step ahead (or step_wait waiting forever on the others)
        if self._int_actions:
            a = np.asarray(actions)
            if a.shape != (self.num_envs,) or a.dtype.kind not in "iu":
                raise ValueError(f"SameStepAsyncVectorEnv.step takes {self.num_envs} integer actions (one per sub-env, "
                                 f"Discrete), got an array of shape {a.shape} and dtype {a.dtype}")
            msgs = [_INT_ACTION.pack(_STEP_INT, action) for action in a.tolist()]
        elif self._box_actions and isinstance(actions, np.ndarray) and actions.dtype.kind in "biuf" and (
                actions.shape[1:] == self.single_action_space.shape and np.dtype(actions.dtype.char) == actions.dtype):
            # each row's raw bytes behind its dtype's character: the worker gets an array equal to the row, as the
            # pickled one (a NumPy array of another layout, or not an array, is pickled below)
            if len(actions) != self.num_envs:
                raise ValueError(f"SameStepAsyncVectorEnv.step takes {self.num_envs} actions (one per sub-env), got "
                                 f"{len(actions)}")
            head = _STEP_BOX + actions.dtype.char.encode()
            msgs = [head + row.tobytes() for row in actions]
        else:
            msgs = [_STEP_PICKLED + pickle.dumps(action, pickle.HIGHEST_PROTOCOL)
                    for action in iterate(self.action_space, actions)]
            if len(msgs) != self.num_envs:
                raise ValueError(f"SameStepAsyncVectorEnv.step takes {self.num_envs} actions (one per sub-env), got "
                                 f"{len(msgs)}")
        for pipe, msg in zip(self.parent_pipes, msgs):
            pipe.send_bytes(msg)
        self._state = AsyncState.WAITING_STEP

    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._assert_is_running()
        if self._state != AsyncState.WAITING_STEP:
            raise NoAsyncCallError("Calling `step_wait` without any prior call to `step_async`.",
                                   AsyncState.WAITING_STEP.value)
        if not self._poll_pipe_envs(timeout):
            self._state = AsyncState.DEFAULT
            raise multiprocessing.TimeoutError(f"The call to `step_wait` has timed out after {timeout} second(s).")
        n = self.num_envs
        rewards, terminated, truncated = np.empty(n, np.float64), np.empty(n, np.bool_), np.empty(n, np.bool_)
        infos: dict[str, Any] = {}
        successes = [True] * n
        for i, pipe in enumerate(self.parent_pipes):
            reply = pipe.recv_bytes()
            if len(reply) < _RESULT.size:  # the worker failed: its error is on the error queue
                successes[i] = False
                continue
            rewards[i], terminated[i], truncated[i] = _RESULT.unpack_from(reply)
            if len(reply) > _RESULT.size:
                infos = self._add_info(infos, pickle.loads(memoryview(reply)[_RESULT.size:]), i)
        self._raise_if_errors(successes)
        self._state = AsyncState.DEFAULT
        obs = self.observations
        return (obs.copy() if self._box_obs else deepcopy(obs)), rewards, terminated, truncated, infos


# _lean_worker's step messages: a Discrete action as one byte and an int64, a Box action (a row of a NumPy array) as
# one byte, its dtype's character and its raw bytes, or one byte and a pickled action; the reply: reward (float64),
# terminated, truncated, then the pickled info dict when it is not empty; b"" on failure.
_STEP_INT, _STEP_PICKLED, _STEP_BOX = 1, b"\x02", b"\x03"
_INT_ACTION = struct.Struct("<Bq")
_RESULT = struct.Struct("<d??")


def _lean_worker(index: int, env_fn: Callable[[], gym.Env], pipe: Any, parent_pipe: Any, shared_memory: Any,
                 error_queue: Any, autoreset_mode: AutoresetMode, semaphore: Any) -> None:
    """SameStepAsyncVectorEnv's worker: Gymnasium's _async_worker with SAME_STEP autoreset and shared memory,
    stepping on the compact messages above; every other command arrives and is answered as Gymnasium sends it."""
    env = env_fn()
    _one_intra_op_thread()
    obs_space, act_space = env.observation_space, env.action_space
    parent_pipe.close()
    stepping = False  # what a failure is answered with: b"" to a step (what step_wait reads), else Gymnasium's reply
    try:
        while True:
            msg = pipe.recv_bytes()
            head = msg[0]
            stepping = head == _STEP_INT or msg[:1] in (_STEP_PICKLED, _STEP_BOX)
            if stepping:
                if head == _STEP_INT:
                    action = _INT_ACTION.unpack(msg)[1]
                elif msg[:1] == _STEP_BOX:  # a writable copy, as unpickling gives
                    action = np.frombuffer(msg, dtype=chr(msg[1]), offset=2).reshape(act_space.shape).copy()
                else:
                    action = pickle.loads(msg[1:])
                if semaphore is not None:
                    semaphore.acquire()
                try:
                    obs, reward, terminated, truncated, info, _ = _same_step(env, action)
                    write_to_shared_memory(obs_space, index, obs, shared_memory)
                finally:
                    if semaphore is not None:
                        semaphore.release()
                reply = _RESULT.pack(float(reward), bool(terminated), bool(truncated))
                pipe.send_bytes(reply + pickle.dumps(info, pickle.HIGHEST_PROTOCOL) if info else reply)
                continue
            command, data = pickle.loads(msg)
            if command == "reset":
                if semaphore is not None:
                    semaphore.acquire()
                try:
                    obs, info = env.reset(**data)
                    write_to_shared_memory(obs_space, index, obs, shared_memory)
                finally:
                    if semaphore is not None:
                        semaphore.release()
                pipe.send(((None, info), True))
            elif command == "reset-noop":
                pipe.send(((None, {}), True))
            elif command == "close":
                pipe.send((None, True))
                break
            elif command == "_call":
                pipe.send((_call_env(env, *data), True))
            elif command == "_setattr":
                env.set_wrapper_attr(*data)
                pipe.send((None, True))
            elif command == "_check_spaces":
                mode, single_obs_space, single_act_space = data
                same = (single_obs_space == obs_space if mode == "same"
                        else is_space_dtype_shape_equiv(single_obs_space, obs_space))
                pipe.send(((same, single_act_space == act_space), True))
            else:
                raise RuntimeError(f"Received unknown command `{command}`.")
    except (KeyboardInterrupt, Exception):
        error_type, error_message, _ = sys.exc_info()
        error_queue.put((index, error_type, error_message, traceback.format_exc()))
        if stepping:
            pipe.send_bytes(b"")
        else:
            pipe.send((None, False))
    finally:
        env.close()


def _same_step(env: gym.Env, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any], Any]:
    """One SAME_STEP autoreset step of one sub-env, as Gymnasium's AsyncVectorEnv worker takes it: (obs, reward,
    terminated, truncated, info, final_obs). Where the episode ended, obs and info are the reset's, info also holds
    final_obs and final_info, and final_obs is the true final observation (else None)."""
    obs, reward, terminated, truncated, info = env.step(action)
    if not (terminated or truncated):
        return obs, reward, terminated, truncated, info, None
    final_obs, final_info = obs, info
    obs, info = env.reset()
    return obs, reward, terminated, truncated, {"final_info": final_info, "final_obs": final_obs, **info}, final_obs


def _call_env(env: gym.Env, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """A worker's answer to VectorEnv.call(name, *args, **kwargs) (and get_attr) for one sub-env, as Gymnasium's."""
    if name in ("reset", "step", "close", "_setattr", "_check_spaces"):
        raise ValueError(f"Trying to call function `{name}` with `call`, use `{name}` directly instead.")
    attr = env.get_wrapper_attr(name)
    return attr(*args, **kwargs) if callable(attr) else attr


def _one_intra_op_thread() -> None:
    """In a worker process: one thread for OpenCV (the Atari preprocessing's resize), whose default pool of one
    thread per core, in each of N workers already running in parallel, only oversubscribes the cores."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)


# ---- several sub-envs per worker process: the vector envs of many agents (K seeds) stepped as one ----------------
# EnvWorkers' protocol. Shared memory holds the command (`control`: what, lo, hi), each worker's reply status and the
# step's data; a per-worker semaphore wakes a worker, one shared semaphore counts the workers done (an uncontended
# semaphore is a userspace atomic: about a third of a pipe round trip's CPU time in the main process). Pickled
# commands (reset, call, ...) and answers that carry data (infos, results, failures) go through the worker's pipe.
_STEP, _STEP_INFOS, _COMMAND = 1, 2, 3  # control[0]
_DONE, _ANSWER, _FAILED, _BUSY = 0, 1, 2, 3  # a worker's status: nothing to read, an answer or a failure in its pipe


def usable_cores() -> int:
    """The CPU cores this process may run on: its CPU affinity, or fewer where a cgroup (v2) CPU quota allows less
    (a container given 2 CPUs of a 64-core host)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = max(1, min(cores, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def idle_cores() -> float:
    """The usable cores that the machine's load (the 1-minute load average, this process included) leaves idle."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on a Unix
        return 0.0
    return usable_cores() + 1 - load  # this process is counted in the load and is one of the processes asked about


def fork_available() -> bool:
    """Whether worker processes can be forked (EnvWorkers moves live sub-envs into workers by forking)."""
    return "fork" in multiprocessing.get_all_start_methods()


def env_worker_count(n_envs: int) -> int:
    """How many worker processes EnvWorkers starts for n_envs sub-envs by default: one per core, at most one per
    sub-env. (The main process needs no core of its own: it waits while the workers step, and they wait while it
    acts and stores.)"""
    return max(1, min(n_envs, usable_cores()))


SPIN_SECONDS = 0.002
"""How long EnvWorkers' processes poll a semaphore before they sleep on it, when cores are spare (spin=None):
a process woken from sleep takes tens of microseconds (more from a deep idle state) to run again, one that polls
sees the post at once. A DDPG lockstep step is about a millisecond, so polling workers stay awake while training."""


def _poll(sem: Any, seconds: float) -> bool:
    """Take the semaphore if it is posted within `seconds`, polling without sleeping (a non-blocking acquire is an
    atomic in user space); False when the time ran out untaken."""
    end = time.perf_counter() + seconds
    while not sem.acquire(False):
        if time.perf_counter() > end:
            return False
    return True


class _Shared(NamedTuple):
    """What EnvWorkers and its workers share (created before the fork)."""
    obs: Any  # Gymnasium's shared memory for M observations
    final_obs: Any  # ... for the true final observations of the episodes that ended in the last step
    actions: Any  # room for M actions of up to 8 bytes an element, in the dtype the step's caller gave (control[3])
    results: Any  # rewards (float64 [M]), terminated, truncated (bool [M] each)
    control: Any  # int64 [4]: what (_STEP, _STEP_INFOS, _COMMAND), lo, hi, the actions' dtype (its character)
    status: Any  # uint8 [W]: each worker's reply status
    wake: list[Any]  # a semaphore per worker
    done: Any  # released by each worker when it has finished


class EnvWorkers:
    """The sub-envs of several SameStepSyncVectorEnvs (the K seeds' of a SeedBatch, rlkit.core.seeds) moved into
    `n_workers` worker processes, several sub-envs per process, and stepped as ONE batch of M = sum of their
    num_envs slots.

    How they move: the workers are forked from this process after the vector envs were built, so each holds the very
    sub-env objects of its slots (simulator state, RNGs, wrappers' counters, as they were): nothing is rebuilt or
    reseeded, and each sub-env steps exactly as it would have here. This process keeps its copies untouched and
    never steps them again; use the views (`views`, one WorkerVecEnv per vector env, in their order) instead.

    A step of all M sub-envs costs this process one copy of the actions into shared memory (in the dtype they come
    in) and one semaphore per worker each way: every worker steps its slots in order with SAME_STEP autoreset (the true
    final observation of an ended episode goes to `final_obs`) and writes the observations (Gymnasium's shared
    memory), rewards and flags into shared arrays. Infos come back (pickled, only the non-empty ones) when asked
    for: WorkerVecEnv.step returns Gymnasium's; rollout.Lockstep asks for none (the collectors read nothing
    from them but the final observations).

    Waiting: with `spin` (default: when the workers and this process fit on the cores the machine's load leaves idle,
    idle_cores(), one each) the workers and this process poll their semaphore for up to SPIN_SECONDS before they
    sleep on it, which saves the wake-up latency of a sleeping process on every step (each polling process keeps a
    core busy while it waits, so polling beside other busy processes would take their time).

    A failing sub-env raises its exception in this process, one line naming the sub-env (the worker's traceback
    attached as a note where Python supports notes), and the workers are shut down; so are they when one dies.
    Needs the "fork" start method (Linux, macOS)."""

    def __init__(self, venvs: Sequence["SameStepSyncVectorEnv"], n_workers: int | None = None,
                 spin: bool | None = None) -> None:
        if not venvs:
            raise ValueError("EnvWorkers needs at least one vector env")
        first = venvs[0]
        for v in venvs:
            if not isinstance(v, SameStepSyncVectorEnv) or v.closed:
                raise TypeError(f"EnvWorkers moves the sub-envs of open SameStepSyncVectorEnvs, got a "
                                f"{'closed ' if getattr(v, 'closed', False) else ''}{type(v).__name__}")
            if (v.single_observation_space, v.single_action_space) != (first.single_observation_space,
                                                                        first.single_action_space):
                raise ValueError("EnvWorkers needs vector envs of the same observation and action spaces")
        if not fork_available():
            raise RuntimeError("EnvWorkers needs the 'fork' start method, which this platform does not have")
        envs = [e for v in venvs for e in v.envs]
        m = len(envs)
        w = env_worker_count(m) if n_workers is None else n_workers
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= m:
            raise ValueError(f"n_workers must be an integer from 1 to the number of sub-envs ({m}), got {w!r}")
        self.num_envs, self.n_workers = m, w
        if spin is None:
            spin = w + 1 <= idle_cores()
        elif not isinstance(spin, bool):
            raise ValueError(f"spin must be True, False or None, got {spin!r}")
        self.spin_s = SPIN_SECONDS if spin else 0.0
        self.single_observation_space = obs_space = first.single_observation_space
        self.single_action_space = act_space = first.single_action_space
        ctx = multiprocessing.get_context("fork")
        if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete,
                                      gym.spaces.MultiBinary)):
            raise SpaceError(f"EnvWorkers steps actions of one array (Box, Discrete, MultiDiscrete, MultiBinary), not "
                             f"{act_space}")
        self._action_shape = tuple(act_space.shape)
        self._shm = sh = _Shared(create_shared_memory(obs_space, n=m, ctx=ctx),
                                 create_shared_memory(obs_space, n=m, ctx=ctx),
                                 ctx.RawArray("B", 8 * m * max(1, math.prod(self._action_shape))),
                                 ctx.RawArray("B", 10 * m), ctx.RawArray("q", 4), ctx.RawArray("B", w),
                                 [ctx.Semaphore(0) for _ in range(w)], ctx.Semaphore(0))
        self._actions: dict[str, np.ndarray] = {}  # views of sh.actions, by dtype character
        self.obs = read_from_shared_memory(obs_space, sh.obs, n=m)
        self.final_obs = read_from_shared_memory(obs_space, sh.final_obs, n=m)
        self.rewards, self.terminated, self.truncated = _results(sh.results, m)
        self._control = np.frombuffer(sh.control, dtype=np.int64)
        self._status = np.frombuffer(sh.status, dtype=np.uint8)
        # worker i holds the slots bounds[i]..bounds[i + 1] - 1 (contiguous: a vector env's sub-envs stay together)
        self.bounds = [m * i // w for i in range(w + 1)]
        self.closed, self._failed = False, ""
        self._pending: list[int] | None = None
        self._unfinished = 0  # pending workers not yet done
        self._pipes: list[Any] = []
        self._processes: list[Any] = []
        self._held = list(venvs)  # this process's copies: kept (never stepped, never closed) while the workers live
        # Ctrl-C and SIGTERM are blocked while forking (delivered here afterwards): a worker is born with them
        # blocked, ignores SIGINT (it reaches the whole process group; training checkpoints and stops) before it
        # unblocks them, so none can end a worker still starting up
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            with gym.vector.utils.clear_mpi_env_vars():
                for i in range(w):
                    parent, child = ctx.Pipe()
                    lo, hi = self.bounds[i], self.bounds[i + 1]
                    process = ctx.Process(target=_pool_worker, name=f"rlkit-env-worker-{i}", daemon=True,
                                          args=(i, range(lo, hi), envs[lo:hi], child, [*self._pipes, parent], sh,
                                                obs_space, act_space, os.getpid(), self.spin_s))
                    process.start()
                    child.close()
                    self._pipes.append(parent)
                    self._processes.append(process)
        except BaseException:
            self.close(terminate=True)
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.views = []
        lo = 0
        for v in venvs:
            self.views.append(WorkerVecEnv(self, lo, lo + v.num_envs, v))
            lo += v.num_envs
        self._open_views = len(self.views)
        atexit.register(_close_at_exit, weakref.ref(self))

    # ---- stepping ----------------------------------------------------------------------------------------------
    def _start(self, what: int, lo: int, hi: int, command: bytes = b"") -> None:
        """Start `what` on the workers of slots lo..hi-1 (a pickled command first goes down their pipes)."""
        if self.closed:
            raise ClosedEnvironmentError(f"the env workers are closed{self._failed}")
        if self._pending is not None:
            raise AlreadyPendingCallError("a call of the env workers is still pending (step_wait first)", "step")
        workers = [i for i in range(self.n_workers) if self.bounds[i] < hi and self.bounds[i + 1] > lo]
        self._control[:3] = (what, lo, hi)
        self._status[workers] = _BUSY
        self._pending, self._unfinished = workers, len(workers)
        for i in workers:
            if command:
                try:
                    self._pipes[i].send_bytes(command)
                except OSError:  # a worker that died: the others are killed, this one named
                    self._raise(None, None, f"env worker process {i} ended unexpectedly (exit code "
                                            f"{self._processes[i].exitcode})", "")
            self._shm.wake[i].release()

    def step_async(self, actions: Any, lo: int = 0, hi: int | None = None, infos: bool = False) -> None:
        """Send the slots lo..hi-1 their actions ([hi - lo, ...], any numeric dtype: each sub-env gets its row in that
        dtype, as from Gymnasium's vector envs) and start their step; step_wait() waits for it."""
        hi = self.num_envs if hi is None else hi
        a = np.asarray(actions)
        if a.shape != (hi - lo, *self._action_shape) or a.dtype.kind not in "biuf" or a.dtype.itemsize > 8 \
                or np.dtype(a.dtype.char) != a.dtype:
            raise ValueError(f"the env workers' step takes actions of shape {(hi - lo, *self._action_shape)} for "
                             f"{hi - lo} sub-env(s) of {self.single_action_space}, got an array of shape {a.shape} "
                             f"and dtype {a.dtype}")
        if self._pending is None and not self.closed:
            _action_rows(self._actions, self._shm.actions, a.dtype.char, self.num_envs, self._action_shape)[lo:hi] = a
            self._control[3] = ord(a.dtype.char)
        self._start(_STEP_INFOS if infos else _STEP, lo, hi)

    def step_wait(self) -> list[tuple[int, dict[str, Any]]]:
        """Wait for the pending step: its observations, rewards, flags and the final observations of the episodes
        that ended are in the shared arrays (obs, rewards, terminated, truncated, final_obs); returns the
        (slot, info) pairs of the non-empty infos when step_async asked for them (SAME_STEP: final_obs, final_info
        in the info of an ended episode), else []."""
        return [pair for answer in self._wait() if answer for pair in answer]

    def _command(self, lo: int, hi: int, command: str, data: Any) -> list[tuple[int, Any]]:
        """A pickled command to the workers of slots lo..hi-1; their (slot, answer) pairs, in slot order."""
        self._start(_COMMAND, lo, hi, pickle.dumps((command, data), pickle.HIGHEST_PROTOCOL))
        return [pair for answer in self._wait() for pair in answer]

    def _wait(self) -> list[Any]:
        """Wait until every pending worker is done; the answers in their pipes (None where there is none), or the first
        failure raised in one line (after the workers were shut down). A worker that died is found by polling."""
        if self._pending is None:
            raise NoAsyncCallError("step_wait without a pending step_async of the env workers", "step")
        pending, done, status = self._pending, self._shm.done, self._status
        while self._unfinished:  # counted down as they finish: an interrupted wait resumes where it stopped
            while not (self.spin_s and _poll(done, self.spin_s)) and not done.acquire(timeout=1.0):
                busy = [i for i in pending if status[i] == _BUSY]
                if not busy:  # all finished a second ago: a wait interrupted between acquire and count took one
                    self._unfinished = 1
                    break
                dead = [i for i in busy if not self._processes[i].is_alive()]
                if dead:
                    self._raise(None, None, f"env worker process {dead[0]} ended unexpectedly (exit code "
                                            f"{self._processes[dead[0]].exitcode})", "")
            self._unfinished -= 1
        self._pending = None
        if not status[pending].any():  # all _DONE: nothing to read
            return [None] * len(pending)
        out, failure = [], None
        for i in pending:
            try:
                answer = pickle.loads(self._pipes[i].recv_bytes()) if status[i] != _DONE else None
            except (EOFError, OSError):  # it died after saying it would answer
                self._raise(None, None, f"env worker process {i} ended unexpectedly (exit code "
                                        f"{self._processes[i].exitcode})", "")
            if status[i] == _FAILED:
                failure = failure or answer
            out.append(answer)
        if failure is not None:
            self._raise(*failure)
        return out

    def _raise(self, slot: int | None, exc_type: Any, message: str, trace: str) -> None:
        where = "" if slot is None else f" (sub-env {slot} of the env workers)"
        self._failed = f": {(message.splitlines() or [''])[0]}{where}"
        self.close(terminate=True)
        err: BaseException
        try:
            err = exc_type(f"{message}{where}") if isinstance(exc_type, type) else RuntimeError(f"{message}{where}")
        except Exception:  # noqa: BLE001 - an exception type that cannot be built from one message
            err = RuntimeError(f"{getattr(exc_type, '__name__', 'error')}: {message}{where}")
        if trace and hasattr(err, "add_note"):
            err.add_note(f"in the env worker process:\n{trace}")
        raise err

    def final_observation(self, slot: int) -> Any:
        """A copy of the true final observation of the episode that slot `slot` ended in the last step."""
        return _obs_rows(self.final_obs, slot, None)

    # ---- the rest of the VectorEnv interface, for the views -------------------------------------------------
    def reset(self, lo: int, hi: int, seeds: Sequence[int | None], options: dict[str, Any] | None
              ) -> list[tuple[int, dict[str, Any]]]:
        return self._command(lo, hi, "reset", (list(seeds), options))

    def call(self, lo: int, hi: int, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        return [value for _, value in self._command(lo, hi, "call", (name, tuple(args), kwargs))]

    def set_attr(self, lo: int, hi: int, name: str, values: Sequence[Any]) -> None:
        self._command(lo, hi, "setattr", (name, list(values)))

    def pickle_envs(self, lo: int, hi: int) -> list[tuple[bytes | None, str]]:
        """The sub-envs of slots lo..hi-1 pickled in their workers (vec_env_state), or (None, why not) each."""
        return [answer for _, answer in self._command(lo, hi, "pickle", None)]

    def replace_envs(self, lo: int, hi: int, pickled: Sequence[bytes]) -> None:
        """Put the pickled sub-envs in slots lo..hi-1 (load_vec_env_state); the ones they replace are closed."""
        self._command(lo, hi, "replace", list(pickled))

    def release(self, view: "WorkerVecEnv") -> None:
        """A view was closed: the workers end (closing their sub-envs) when every view is."""
        self._open_views -= 1
        if self._open_views <= 0:
            self.close()

    def close(self, terminate: bool = False) -> None:
        """End the workers: each closes its sub-envs (terminate: killed instead, e.g. after a failure)."""
        if self.closed:
            return
        if not terminate:
            try:
                if self._pending is not None:
                    self._wait()
                self._command(0, self.num_envs, "close", None)
            except Exception:  # noqa: BLE001 - a failure or a dead worker: the others are killed below
                terminate = True
        self.closed = True
        for process in self._processes:
            if terminate and process.is_alive():
                process.terminate()
            process.join(timeout=None if terminate else 10.0)
            if process.is_alive():  # a sub-env's close() that hangs: killed after 10 s, as a failed worker is
                process.terminate()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._held = []

    def __del__(self) -> None:
        """Dropped without close() (its views unreachable too): the workers are ended, as Gymnasium's AsyncVectorEnv
        ends its own."""
        if not getattr(self, "closed", True) and hasattr(self, "_processes"):
            self.close(terminate=True)


def _action_rows(views: dict[str, np.ndarray], raw: Any, char: str, m: int, shape: tuple[int, ...]) -> np.ndarray:
    """EnvWorkers' shared actions [M, *shape] in the dtype of character `char` (a view kept in `views`)."""
    rows = views.get(char)
    if rows is None:
        rows = views[char] = np.frombuffer(raw, dtype=char, count=m * math.prod(shape)).reshape(m, *shape)
    return rows


def _results(raw: Any, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rewards [M] and the terminated and truncated flags [M] in EnvWorkers' shared results array."""
    flags = np.frombuffer(raw, dtype=np.bool_, offset=8 * m).reshape(2, m)
    return np.frombuffer(raw, dtype=np.float64, count=m), flags[0], flags[1]


def _obs_rows(obs: Any, lo: int, hi: int | None) -> Any:
    """Copies of rows lo..hi-1 (or of the one row lo, hi None) of observations read from Gymnasium's shared memory
    (an array, or a dict / tuple of them)."""
    if isinstance(obs, dict):
        return type(obs)((k, _obs_rows(v, lo, hi)) for k, v in obs.items())
    if isinstance(obs, tuple):
        return tuple(_obs_rows(v, lo, hi) for v in obs)
    return obs[lo].copy() if hi is None else obs[lo:hi].copy()


def _pool_worker(index: int, slots: range, envs: list[gym.Env], pipe: Any, parent_pipes: list[Any], sh: _Shared,
                 obs_space: gym.Space, act_space: gym.Space, main_pid: int, spin_s: float = 0.0) -> None:
    """An EnvWorkers process (forked: `envs` are the sub-envs of `slots` as they were in the main process). It ends
    when told to, on a failure, or when the main process is gone (killed: nothing closed the workers)."""
    for p in parent_pipes:  # the main process's ends, inherited through fork
        p.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the main process handles it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked while EnvWorkers forked
    _one_intra_op_thread()
    m = len(sh.results) // 10
    actions: dict[str, np.ndarray] = {}
    shape = tuple(act_space.shape)
    obs = read_from_shared_memory(obs_space, sh.obs, n=m) if isinstance(obs_space, gym.spaces.Box) else None
    rewards, terminated, truncated = _results(sh.results, m)
    control, status = np.frombuffer(sh.control, dtype=np.int64), np.frombuffer(sh.status, dtype=np.uint8)
    wake, done = sh.wake[index], sh.done
    int_actions = isinstance(act_space, gym.spaces.Discrete)
    mine = list(zip(slots, envs))
    slot: int | None = None
    try:
        while True:
            while not (spin_s and _poll(wake, spin_s)) and not wake.acquire(timeout=1.0):
                if os.getppid() != main_pid:
                    return
            what, lo, hi, char = control.tolist()
            if what != _COMMAND:
                infos = []
                for slot, env in mine:
                    if lo <= slot < hi:
                        # a copy: an env may keep its action, and the shared row is overwritten by the next step
                        row = _action_rows(actions, sh.actions, chr(char), m, shape)[slot]
                        action = row.item() if int_actions else row.copy()
                        o, rewards[slot], terminated[slot], truncated[slot], info, final = _same_step(env, action)
                        if final is not None:
                            write_to_shared_memory(obs_space, slot, final, sh.final_obs)
                        if obs is not None:
                            obs[slot] = o
                        else:
                            write_to_shared_memory(obs_space, slot, o, sh.obs)
                        if info and what == _STEP_INFOS:
                            infos.append((slot, info))
                slot = None
                _answer(status, index, done, pipe, infos if infos else None)
                continue
            command, data = pickle.loads(pipe.recv_bytes())
            if command == "close":
                _answer(status, index, done, pipe, [])
                break
            answer = []
            for i, (slot, env) in enumerate(mine):
                if not lo <= slot < hi:
                    continue
                if command == "reset":
                    o, info = env.reset(seed=data[0][slot - lo], options=data[1])
                    write_to_shared_memory(obs_space, slot, o, sh.obs)
                    answer.append((slot, info))
                elif command == "call":
                    answer.append((slot, _call_env(env, *data)))
                elif command == "setattr":
                    env.set_wrapper_attr(data[0], data[1][slot - lo])
                    answer.append((slot, None))
                elif command == "pickle":
                    answer.append((slot, _pickled_env(env)))
                elif command == "replace":
                    env.close()
                    mine[i] = (slot, pickle.loads(data[slot - lo]))
                    answer.append((slot, None))
                else:
                    raise RuntimeError(f"Received unknown command `{command}`.")
            slot = None
            _answer(status, index, done, pipe, answer)
    except (KeyboardInterrupt, Exception) as e:
        trace = traceback.format_exc()
        try:
            payload = pickle.dumps((slot, type(e), str(e), trace))
        except Exception:  # noqa: BLE001 - an exception type that does not pickle (e.g. defined in a function)
            payload = pickle.dumps((slot, None, f"{type(e).__name__}: {e}", trace))
        status[index] = _FAILED
        done.release()
        try:
            pipe.send_bytes(payload)
        except OSError:
            pass
    finally:
        for _, env in mine:
            env.close()


def _answer(status: np.ndarray, index: int, done: Any, pipe: Any, answer: Any) -> None:
    """A worker's reply: its status, the done semaphore, then (when there is one) the answer down its pipe, which the
    main process reads after every worker is done (so a large answer never blocks a worker before it is)."""
    status[index] = _DONE if answer is None else _ANSWER
    done.release()
    if answer is not None:
        pipe.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))


class WorkerVecEnv(gym.vector.VectorEnv):
    """The sub-envs lo..hi-1 of an EnvWorkers as a Gymnasium VectorEnv (SAME_STEP autoreset): what the vector env it
    replaces (`origin`, a SameStepSyncVectorEnv) returned, step for step: the same observations, rewards, flags and
    infos (tests/core/test_async_envs.py steps it beside Gymnasium's AsyncVectorEnv). Its spaces are the origin's
    objects (their RNGs continue). Stepped alone it steps only its own slots; rollout.Lockstep steps all the
    views of one EnvWorkers as one batch. vec_env_state / load_vec_env_state save and restore its sub-envs as the
    origin's (pickled in the workers). Closing every view ends the workers.

    Like SameStepSyncVectorEnv it subclasses Gymnasium's interface class (here VectorEnv itself), the deliberate
    exception to rlkit's inheritance rule that keeps it a VectorEnv to every caller."""

    def __init__(self, pool: EnvWorkers, lo: int, hi: int, origin: "SameStepSyncVectorEnv") -> None:
        self.pool, self.lo, self.hi = pool, lo, hi
        self.num_envs = hi - lo
        self.metadata = origin.metadata
        self.render_mode = origin.render_mode
        self.spec = origin.spec
        self.single_observation_space = origin.single_observation_space
        self.observation_space = origin.observation_space
        self.single_action_space, self.action_space = origin.single_action_space, origin.action_space

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed = [None] * self.num_envs
        elif isinstance(seed, int):
            seed = [seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"If seeds are passed as a list the length must match num_envs={self.num_envs} but got "
                             f"length={len(seed)}.")
        infos: dict[str, Any] = {}
        for slot, info in self.pool.reset(self.lo, self.hi, seed, options):
            infos = self._add_info(infos, info, slot - self.lo)
        return _obs_rows(self.pool.obs, self.lo, self.hi), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: Any) -> None:
        self.pool.step_async(actions, self.lo, self.hi, infos=True)

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        infos: dict[str, Any] = {}
        for slot, info in self.pool.step_wait():
            infos = self._add_info(infos, info, slot - self.lo)
        p, lo, hi = self.pool, self.lo, self.hi
        return (_obs_rows(p.obs, lo, hi), p.rewards[lo:hi].copy(), p.terminated[lo:hi].copy(),
                p.truncated[lo:hi].copy(), infos)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return tuple(self.pool.call(self.lo, self.hi, name, args, kwargs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | object) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"Values must be a list or tuple with length equal to the number of environments. Got "
                             f"`{len(values)}` values for {self.num_envs} environments.")
        self.pool.set_attr(self.lo, self.hi, name, values)

    def close_extras(self, **kwargs: Any) -> None:
        self.pool.release(self)


def env_factory(env: EnvLike, env_kwargs: dict[str, Any] | None = None, training: bool = False
                ) -> tuple[Callable[[], gym.Env] | None, str]:
    """_env_factory, with the callable's failures (a missing dependency, bad env_kwargs, an error in a user's
    factory) turned into EnvBuildError naming the env (one line, exit status 2 from the CLI)."""
    factory, env_id = _env_factory(env, env_kwargs, training)
    return (None if factory is None else _naming_failures(factory, env_id)), env_id


def _env_factory(env: EnvLike, env_kwargs: dict[str, Any] | None = None, training: bool = False
                 ) -> tuple[Callable[[], gym.Env] | None, str]:
    """Return (a callable that builds one env, an id to name runs) for an id, a callable or an Env instance.

    An Atari id gets rlkit's Atari preprocessing (rlkit.core.atari) unless env_kwargs holds
    atari_preprocessing=False: with `training`, the training envs' stack (life-loss terminals, clipped rewards,
    game scores reported in infos; what make_vec_env builds), else the evaluation env (whole games, raw rewards).
    A ready VectorEnv gives no factory (None) unless it carries a spec to rebuild from.
    """
    kwargs = env_kwargs or {}
    if isinstance(env, str):
        name = env
        if ":" in env:  # "module:EnvId", as gymnasium.make: importing the module registers the id
            import_env_module(env)
            name = env.split(":", 1)[1]
            if name not in gym.registry and not (register_atari() and name in gym.registry):
                raise ValueError(f"importing {env.split(':', 1)[0]!r} did not register {name!r} "
                                 "with Gymnasium (gymnasium.register(id=..., entry_point=...) in that module)")
        elif env not in gym.registry and not (register_atari() and env in gym.registry):
            close = [k for k in gym.registry if env.lower().split("-")[0] in k.lower()][:5]
            hint = f"; did you mean one of {close}?" if close else ""
            raise ValueError(f"unknown Gymnasium environment id {env!r}{hint}{atari_install_hint(env)}")
        if is_atari_id(name):
            return atari_factory(env, kwargs, training), env
        if PREPROCESSING_KEY in kwargs:
            raise ValueError(f"env_kwargs {PREPROCESSING_KEY} applies to Atari ids only; {env!r} is not one")
        return (lambda: gym.make(env, **kwargs)), env
    if isinstance(env, (VectorEnv, gym.Env)):
        spec = _instance_spec(env)
        names = _wrapper_names(spec)
        if "AtariPreprocessing" in names and spec.id in gym.registry:
            # built by rlkit's Atari preprocessing: rebuilt from the id (the spec cannot rebuild its wrappers), as
            # the training stack only where the given env is one
            return atari_factory(spec.id, {**_made_kwargs(spec), **kwargs}, training and "RecordGameScore" in names
                                 ), spec.id
        if spec is not None and spec.id in gym.registry:
            return (lambda: gym.make(spec, **kwargs)), spec.id
        return None, type(env if isinstance(env, VectorEnv) else env.unwrapped).__name__
    if callable(env):
        name = getattr(env, "__name__", type(env).__name__)
        return env, name
    raise TypeError(
        f"env must be a Gymnasium id, a callable returning a gymnasium.Env, a gymnasium.Env or a VectorEnv; "
        f"got {type(env).__name__}"
    )


def _instance_spec(env: VectorEnv | gym.Env) -> Any:
    """The EnvSpec of an Env, or of a vector env's sub-envs (None when there is none)."""
    spec = getattr(env, "spec", None)
    if spec is None and isinstance(env, VectorEnv):  # a vector env of registered envs: the sub-envs carry it
        try:
            spec = env.get_attr("spec")[0]
        except Exception:  # noqa: BLE001 - foreign vector envs may not support get_attr
            spec = None
    return spec


def _wrapper_names(spec: Any) -> set[str]:
    return {w.name for w in getattr(spec, "additional_wrappers", ())}


def _made_kwargs(spec: Any) -> dict[str, Any]:
    """The gymnasium.make keyword arguments an env was built with, beyond its registration's."""
    registered = gym.registry[spec.id].kwargs if spec.id in gym.registry else {}
    return {k: v for k, v in spec.kwargs.items() if k != "frameskip" and registered.get(k, object()) != v}


def reports_game_scores(env: Any, env_kwargs: dict[str, Any] | None = None) -> bool:
    """Whether the training envs for `env` report whole-game scores in their infos (an Atari id with the
    preprocessing on, or envs built from one): the collector then logs those instead of summing the (clipped,
    per-life) rewards."""
    if isinstance(env, (VectorEnv, gym.Env)):
        one = env.envs[0] if isinstance(env, gym.vector.SyncVectorEnv) else env
        while isinstance(one, gym.Wrapper):
            if isinstance(one, RecordGameScore):
                return True
            one = one.env
        return "RecordGameScore" in _wrapper_names(_instance_spec(env))
    return (isinstance(env, str) and (env_kwargs or {}).get(PREPROCESSING_KEY, True) is not False
            and is_atari_id(env))


def import_env_module(env_id: str) -> None:
    """Import the module of a "module:EnvId" id (what gymnasium.make does), with one line on failure."""
    module = env_id.split(":", 1)[0]
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's module: name it
        raise ValueError(f"cannot import module {module!r} of environment {env_id!r}: {type(e).__name__}: {e}"
                         ) from None


def is_known_env_id(env_id: str) -> bool:
    """Whether gymnasium.make would accept `env_id` (a registered id, or module:EnvId whose module registers it);
    the module is imported for the second form, and ale-py (which registers the Atari ids) for an unknown id."""
    if ":" in env_id:
        import_env_module(env_id)
        env_id = env_id.split(":", 1)[1]
    return env_id in gym.registry or (register_atari() and env_id in gym.registry)


def vec_env_state(venv: VectorEnv) -> tuple[bytes | None, str]:
    """(the pickled sub-envs and the vector env's action-space RNGs, "") or (None, why not).

    Only rlkit's own SameStepSyncVectorEnv is saved (and the WorkerVecEnv that one became in EnvWorkers: its sub-envs
    are pickled in their worker processes): Gymnasium's classic-control and toy-text envs pickle with their
    simulator state, RNG and wrapper counters (TimeLimit's elapsed steps), so a restored run continues the same
    episodes. Box2D, MuJoCo and Atari envs are not: they pickle without their simulator's state (gymnasium's
    EzPickle keeps the constructor's arguments only), so a copy would be a new env under wrappers that count on
    the old one's episode; they resume with a fresh reset (_state_lost_in_pickle).
    Unpickling runs code: only load_vec_env_state (reached through an explicit restore_env=True / --resume) ever
    reads these bytes."""
    if isinstance(venv, gym.vector.AsyncVectorEnv):
        return None, "the sub-envs of an AsyncVectorEnv live in worker processes and are not saved"
    if isinstance(venv, WorkerVecEnv):  # the sub-envs moved from a SameStepSyncVectorEnv: pickled where they are
        pickled = venv.pool.pickle_envs(venv.lo, venv.hi)
        why = next((why for data, why in pickled if data is None), "")
        if why:
            return None, why
        return pickle.dumps({"envs": [_Pickled(data) for data, _ in pickled], "action_space": venv.action_space,
                             "single_action_space": venv.single_action_space}), ""
    if not isinstance(venv, SameStepSyncVectorEnv):
        return None, f"{type(venv).__name__} is not rlkit's SameStepSyncVectorEnv"
    why = _first_state_lost(venv.envs)
    if why:  # it pickles, but not its simulator's state
        return None, why
    try:
        data = pickle.dumps({"envs": venv.envs, "action_space": venv.action_space,
                             "single_action_space": venv.single_action_space})
    except Exception as e:  # noqa: BLE001 - whatever an env holds (a lock, a simulator handle) that cannot pickle
        return None, _unpicklable(e)
    return data, ""


_ALE_STATE = "the Atari emulator's state (ale-py) does not survive pickling"


def _state_lost_in_pickle(env: gym.Env) -> str:
    """Why a sub-env that pickles would come back without its simulator's state, or "". Gymnasium's Box2D and
    MuJoCo envs (and ale-py's) are EzPickle: they pickle their constructor's arguments only, so the copy is a new,
    never-reset env (BipedalWalker's step then fails; a MuJoCo env silently starts from its model's initial pose
    while TimeLimit's counter goes on). Any wrapper or env in the chain that pickles that way counts."""
    if hasattr(env.unwrapped, "ale"):
        return _ALE_STATE
    layer: Any = env
    seen: set[int] = set()  # an object whose `env` leads back to itself ends the walk
    while layer is not None and id(layer) not in seen:
        seen.add(id(layer))
        if isinstance(layer, EzPickle) and type(layer).__getstate__ is EzPickle.__getstate__:
            return (f"{type(layer).__name__} pickles only its constructor's arguments (gymnasium's EzPickle), not "
                    "its simulator's state")
        layer = getattr(layer, "env", None)
    return ""


def _first_state_lost(envs: Sequence[gym.Env]) -> str:
    """_state_lost_in_pickle of the first sub-env that would lose its state, or "" when none would."""
    return next((why for why in map(_state_lost_in_pickle, envs) if why), "")


def _close_quietly(envs: Sequence[Any]) -> None:
    """Close unpickled copies that will not run (a close that fails must not hide why they are refused)."""
    for env in envs:
        try:
            env.close()
        except Exception:  # noqa: BLE001, S110 - best effort: the caller raises the real reason next
            pass


def _unpicklable(e: Exception) -> str:
    return f"its sub-envs cannot be pickled ({type(e).__name__}: {str(e)[:80]})"


def _pickled_env(env: gym.Env) -> tuple[bytes | None, str]:
    """One sub-env pickled as vec_env_state saves it (in an EnvWorkers process), or (None, why not)."""
    why = _state_lost_in_pickle(env)
    if why:
        return None, why
    try:
        return pickle.dumps(env, pickle.HIGHEST_PROTOCOL), ""
    except Exception as e:  # noqa: BLE001 - whatever an env holds that cannot pickle
        return None, _unpicklable(e)


class _Pickled:
    """The bytes of a pickled object, which pickle as that object: unpickling them gives the object itself (so the
    sub-envs a worker pickled join vec_env_state's pickle without being unpickled here)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return pickle.loads, (self.data,)


def load_vec_env_state(venv: VectorEnv, data: bytes) -> None:
    """Put the sub-envs (and action-space RNGs) pickled by vec_env_state into `venv` (same count, same spaces); the
    sub-envs of a WorkerVecEnv go to its worker processes."""
    state = pickle.loads(data)  # noqa: S301 - opted in by the caller: the same trust as loading a pickle
    envs = state["envs"]
    if not isinstance(venv, (SameStepSyncVectorEnv, WorkerVecEnv)) or len(envs) != venv.num_envs:
        _close_quietly(envs)
        raise ValueError(f"saved env state holds {len(envs)} sub-envs, this vector env has {venv.num_envs}")
    why = _first_state_lost(envs)
    if why:  # an older rlkit saved such envs: their copies are new, never-reset envs
        _close_quietly(envs)
        raise ValueError(why)
    if isinstance(venv, WorkerVecEnv):
        pickled = [pickle.dumps(env, pickle.HIGHEST_PROTOCOL) for env in envs]
        for env in envs:  # the copies unpickled here are not the ones that will run: free their handles
            env.close()
        venv.pool.replace_envs(venv.lo, venv.hi, pickled)
    else:
        for env in venv.envs:
            env.close()
        venv.envs = envs
    venv.action_space, venv.single_action_space = state["action_space"], state["single_action_space"]


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
    vectorization: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    algo: str | None = None,
    supported_actions: tuple[str, ...] = ("Discrete", "Box"),
    backend: str = "gymnasium",
    device: torch.device | str = "auto",
    dtype: torch.dtype = torch.float32,
) -> VectorEnv | TorchVecEnv:
    """A SAME_STEP-autoreset vector env of `n_envs` copies (sync or async), reset and seeded.

    `env` may be a Gymnasium id, a callable returning an Env, an Env instance (n_envs must be 1 unless it has a
    registered spec) or a ready VectorEnv (which must already use AutoresetMode.SAME_STEP). With `algo`, its
    spaces are checked against `supported_actions` first (SpaceError naming the algorithm and the space).
    An Atari id gets the training envs' preprocessing (rlkit.core.atari; env_kwargs atari_preprocessing=False
    switches it off).

    vectorization: "sync" steps the sub-envs in this process (SameStepSyncVectorEnv); "async" in one worker
    process each (Gymnasium's AsyncVectorEnv, also SAME_STEP: the same observations, rewards, flags and final
    observations); "auto" is async for an Atari id with n_envs > 1 (an emulator step costs far more than the
    inter-process traffic), sync otherwise.

    backend="torch" builds a TorchVecEnv instead (rlkit/core/torch_envs.py: the classic-control ids in
    TORCH_ENV_IDS, all tensors on `device`, the state in `dtype`); `vectorization` and `env_kwargs` do not apply.
    """
    if backend not in ENV_BACKENDS:
        raise ValueError(f"env backend must be one of {', '.join(ENV_BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return make_torch_vec_env(env, n_envs, seed, device, dtype, algo, supported_actions)
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
    if n_envs > MAX_N_ENVS:  # a typo like n_envs=1e9 would otherwise build envs until memory runs out
        raise ValueError(f"n_envs must be at most {MAX_N_ENVS:,} (sub-environments in one process), got {n_envs:,}")
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"vectorization must be one of {', '.join(VECTORIZATIONS)}, got {vectorization!r}")
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
            factory, _ = env_factory(env, env_kwargs, training=True)
            if factory is None:
                if n_envs != 1:
                    raise ValueError("an unregistered gymnasium.Env instance can only be used with n_envs=1; "
                                     "pass a callable that builds the env to use several")
                instance = env
                factory = lambda: instance  # noqa: E731
        else:
            factory, _ = env_factory(env, env_kwargs, training=True)
        if vectorization == "auto":
            vectorization = "async" if n_envs > 1 and is_atari_id(env) else "sync"
        if vectorization == "sync":
            venv = SameStepSyncVectorEnv([factory] * n_envs)
        else:
            venv = make_async_vec_env(factory, n_envs)
    if algo is not None:
        try:
            check_spaces(algo, venv.single_observation_space, venv.single_action_space, supported_actions)
        except SpaceError:
            venv.close()
            raise
    seed_vec_env(venv, seed)
    return venv


class EnvBuildError(ValueError):
    """The env could not be built (a missing dependency, a broken install, an error in a user's factory): a
    problem with the env, not with rlkit, so the CLI reports it in one line with exit status 2."""


def _naming_failures(factory: Callable[[], gym.Env], name: str) -> Callable[[], gym.Env]:
    """factory, with any exception it raises (other than rlkit's own input errors) turned into EnvBuildError
    naming the env."""
    def build() -> gym.Env:
        try:
            return factory()
        except (EnvBuildError, SpaceError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - any failure inside the env's construction is the env's
            detail = (str(e).strip().splitlines() or [""])[0]
            raise EnvBuildError(f"cannot build env {name}: {type(e).__name__}: {detail}") from e
    return build


def make_async_vec_env(factory: Callable[[], gym.Env], n_envs: int) -> gym.vector.AsyncVectorEnv:
    """Gymnasium's AsyncVectorEnv (SAME_STEP autoreset; SameStepAsyncVectorEnv's leaner step) with one worker process
    per env. The workers ignore
    SIGINT: Ctrl-C reaches the whole process group, and training must finish its iteration and checkpoint with
    live envs (rlkit.core.rundir.StopSignals); the main process closes the workers when it exits."""
    venv = SameStepAsyncVectorEnv([_worker_env_fn(factory, os.getpid())] * n_envs)
    atexit.register(_close_at_exit, weakref.ref(venv))
    return venv


def _worker_env_fn(factory: Callable[[], gym.Env], main_pid: int) -> Callable[[], gym.Env]:
    def build() -> gym.Env:
        if os.getpid() != main_pid:  # AsyncVectorEnv also builds one env in the main process to read the spaces
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a handler inherited through fork
        return factory()
    return build


def _close_at_exit(ref: "weakref.ReferenceType[gym.vector.AsyncVectorEnv]") -> None:
    venv = ref()
    if venv is not None and not venv.closed:
        try:
            venv.close()
        except Exception:  # noqa: BLE001 - workers already gone at exit: nothing left to close
            pass


TORCH_ENV_IDS = tuple(PHYSICS)


def make_torch_vec_env(env: Any, n_envs: int, seed: int | None, device: torch.device | str = "auto",
                       dtype: torch.dtype = torch.float32, algo: str | None = None,
                       supported_actions: tuple[str, ...] = ("Discrete", "Box")) -> TorchVecEnv:
    """A TorchVecEnv of `n_envs` copies of a classic-control id, reset with `seed`, with Gymnasium's own spaces."""
    if isinstance(env, TorchVecEnv):
        return env
    if not isinstance(env, str) or env not in PHYSICS:
        raise ValueError(f"env backend 'torch' supports {', '.join(TORCH_ENV_IDS)}; got {env!r}")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or not 1 <= n_envs <= MAX_TORCH_N_ENVS:
        raise ValueError(f"n_envs must be an integer in [1, {MAX_TORCH_N_ENVS:,}] for env backend 'torch', "
                         f"got {n_envs!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"a torch env's state dtype must be torch.float32 or torch.float64, got {dtype}")
    probe = gym.make(env)  # the spaces are Gymnasium's own objects, so checkpoints and checks see no difference
    obs_space, act_space = probe.observation_space, probe.action_space
    probe.close()
    if algo is not None:
        check_spaces(algo, obs_space, act_space, supported_actions)
    return TorchVecEnv(PHYSICS[env](), n_envs, seed, resolve_device(device), dtype, obs_space, act_space)


def seed_vec_env(venv: VectorEnv, seed: int | None) -> Any:
    """Reset with SeedSequence-derived seeds and seed the action spaces too (env.reset(seed=) does not)."""
    seeds = sub_env_seeds(seed, venv.num_envs)
    obs, _ = venv.reset(seed=seeds)
    if seed is not None:
        venv.action_space.seed(int(np.random.SeedSequence([int(seed), 7]).generate_state(1)[0]))
        venv.single_action_space.seed(int(np.random.SeedSequence([int(seed), 8]).generate_state(1)[0]))
    return obs


def to_env_actions(actions: np.ndarray, action_space: gym.Space) -> np.ndarray:
    """Policy output -> what the env accepts: Discrete as int64, Box clipped to its bounds in its dtype; MultiDiscrete
    and MultiBinary from the policy's flat [B, D] indices from 0 to [B, *shape] in the space's dtype (int64 and int8
    by default), with MultiDiscrete's start added."""
    if isinstance(action_space, gym.spaces.Discrete):
        return actions.astype(np.int64, copy=False) + int(action_space.start)
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        out = actions.reshape(actions.shape[0], *action_space.shape).astype(action_space.dtype, copy=False)
        return out + action_space.start if np.any(action_space.start) else out
    if isinstance(action_space, gym.spaces.MultiBinary):
        return actions.reshape(actions.shape[0], *action_space.shape).astype(action_space.dtype, copy=False)
    if isinstance(action_space, gym.spaces.Box):  # np.minimum/np.maximum: np.clip's wrapper costs ~3 us more
        return np.minimum(np.maximum(actions, action_space.low), action_space.high).astype(action_space.dtype,
                                                                                            copy=False)
    raise SpaceError(f"action space {action_space} is not supported")


class Spaces(NamedTuple):
    """The spaces (and id) of an environment that is not there: what a checkpoint records, so an agent can be
    loaded for act() and value() without building its env."""
    observation_space: gym.Space
    action_space: gym.Space
    env_id: str


def space_to_dict(space: gym.Space) -> dict[str, Any]:
    """A Box, Discrete, MultiDiscrete, MultiBinary or Dict (of Box and Discrete) space as plain data (tensors,
    numbers, strings) that weights-only loading accepts; a Box keeps its dtype (a uint8 image stays an image)."""
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_to_dict(space.spaces[k]) for k in sorted(space.spaces)}}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": torch.as_tensor(np.asarray(space.nvec, dtype=np.int64)),
                "start": torch.as_tensor(np.asarray(space.start, dtype=np.int64)),
                "dtype": np.dtype(space.dtype).name}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "shape": [int(d) for d in space.shape]}
    if isinstance(space, gym.spaces.Box):  # infinite bounds as masks: a checkpoint holds only finite tensors
        low, high = np.array(space.low, dtype=np.float64), np.array(space.high, dtype=np.float64)
        return {"type": "Box", "low": torch.from_numpy(np.where(np.isinf(low), 0.0, low)),
                "high": torch.from_numpy(np.where(np.isinf(high), 0.0, high)),
                "low_inf": torch.from_numpy(np.isinf(low)), "high_inf": torch.from_numpy(np.isinf(high)),
                "shape": list(space.shape), "dtype": np.dtype(space.dtype).name}
    raise SpaceError(f"cannot record space {space}: supported spaces are Box, Discrete, MultiDiscrete, MultiBinary "
                     "and Dict")


def space_from_dict(d: dict[str, Any]) -> gym.Space:
    """The inverse of space_to_dict."""
    if d.get("type") == "Dict":
        return gym.spaces.Dict({str(k): space_from_dict(v) for k, v in sorted(d["spaces"].items())})
    if d.get("type") == "Discrete":
        return gym.spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if d.get("type") == "Box":
        dtype = np.dtype(d["dtype"])
        low = np.where(d["low_inf"].numpy(), -np.inf, d["low"].numpy())
        high = np.where(d["high_inf"].numpy(), np.inf, d["high"].numpy())
        return gym.spaces.Box(low.astype(dtype), high.astype(dtype), shape=tuple(d["shape"]), dtype=dtype)
    if d.get("type") == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(d["nvec"].numpy(), dtype=np.dtype(d["dtype"]), start=d["start"].numpy())
    if d.get("type") == "MultiBinary":
        shape = [int(x) for x in d["shape"]]
        return gym.spaces.MultiBinary(shape[0] if len(shape) == 1 else shape)
    raise SpaceError(f"unknown recorded space {d!r}")
