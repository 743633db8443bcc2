"""Step vector envs for every agent (RolloutCollector.step: the ONE place where Gymnasium's termination,
truncation and autoreset semantics, non-finite checks and episode statistics are handled), collect on-policy
rollouts into a RolloutBuffer, and evaluate a policy.

The vector env uses AutoresetMode.SAME_STEP (see rlkit.core.envs): when sub-env i ends an episode at step t,
the returned observation is already the reset one and the true final observation is info["final_obs"][i].
We store it in buffer.final_obs[t, i] when the episode was truncated (a time limit: the agent bootstraps from
V(final_obs)); after termination nothing is bootstrapped, so nothing is stored.

A TorchVecEnv (rlkit/core/torch_envs.py, env backend "torch") takes the collector's tensor path with the same
semantics: observations, actions, rewards and flags stay tensors on the device, final observations are written
into buffer.final_obs by masking, and the step counter, episode statistics and non-finite checks live in device
tensors read in one host transfer only by sync() (episode_stats(), state_dict(); LearnRun reads them together with
the metrics it logs), so no step waits for the host and a whole rollout can be replayed as a CUDA graph. Its
random numbers come from counter-based streams (rlkit.core.streams), drawn once per rollout for all its steps:
the env's reset draws, and the policy's action noise from the collector's own stream, keyed from the agent's
seed (collect(..., noise=)), so that the seeds of a batch draw as one and each as it would alone
(rlkit.core.seeds). Their counters are saved in state_dict(): a resumed run continues both streams.
"""
from __future__ import annotations

import warnings
from collections import deque
from typing import Any, Callable, NamedTuple, Sequence

import gymnasium as gym
import numpy as np
import torch

from rlkit.core.buffers import RolloutBuffer, obs_map
from rlkit.core.device import to_host
from rlkit.core.envs import EnvWorkers, WorkerVecEnv, to_env_actions
from rlkit.core.networks import action_dim, obs_storage
from rlkit.core.normalize import ReturnNormalizer
from rlkit.core.errors import NonFiniteError  # defined in layer 0 for checkpoint.py; public here
from rlkit.core.streams import ACTION_NOISE, CounterStream
from rlkit.core.torch_envs import TorchVecEnv

Policy = Callable[..., torch.Tensor]  # observation batch (and noise, with collect(noise=)) -> action batch
Noise = tuple[str, torch.dtype]  # what a policy's sample_actions(obs, noise) takes: ("uniform" | "normal", dtype)

# Per-episode step cap of evaluate_policy for an env without a TimeLimit (an episode that never ends would
# otherwise hang the final evaluation).
DEFAULT_EVAL_MAX_EPISODE_STEPS = 100_000


def check_finite_env(obs: np.ndarray, rewards: np.ndarray, step: int, final_obs: Any = None,
                     done: np.ndarray | None = None) -> None:
    """Raise NonFiniteError if the env handed over NaN/inf: rewards, observations, and (SAME_STEP autoreset) the
    true final observations info["final_obs"][i] of the sub-envs i that ended (`done`), which are bootstrapped
    from on truncation and would otherwise reach the critic unchecked."""
    if not np.isfinite(rewards).all():
        bad = np.flatnonzero(~np.isfinite(rewards))
        raise NonFiniteError(f"environment returned a non-finite reward {rewards[bad[0]]} "
                             f"(sub-env {bad[0]}) at environment step {step}")
    if isinstance(obs, dict):  # a Dict observation: every key
        for key, part in obs.items():
            _check_finite_obs(part, step, f" (key {key!r})")
    elif obs.dtype.kind == "f" and not np.isfinite(obs).all():  # uint8 images cannot be non-finite
        _check_finite_obs(obs, step, "")
    if final_obs is None:
        return
    ended = range(len(final_obs)) if done is None else np.flatnonzero(done)
    for i in ended:
        fo = final_obs[i]
        if fo is None:
            continue
        for key, part in (fo.items() if isinstance(fo, dict) else ((None, fo),)):
            part = np.asarray(part)
            if part.dtype.kind in "fc" and not np.isfinite(part).all():
                raise NonFiniteError(f"environment returned a non-finite final observation{_key_note(key)} "
                                     f"(info['final_obs'], sub-env {int(i)}) at environment step {step}")


def _key_note(key: str | None) -> str:
    return "" if key is None else f" (key {key!r})"


def _check_finite_obs(obs: np.ndarray, step: int, where: str) -> None:
    if obs.dtype.kind == "f" and not np.isfinite(obs).all():
        env_i = int(np.argwhere(~np.isfinite(obs.reshape(obs.shape[0], -1)))[0, 0])
        raise NonFiniteError(f"environment returned a non-finite observation{where} (sub-env {env_i}) "
                             f"at environment step {step}")


def check_finite_metrics(algo: str, values: dict[str, float], step: int) -> None:
    """Stop training with a clear error when a loss went NaN/inf (before anything is checkpointed)."""
    bad = [k for k, v in values.items() if k.startswith("train/loss") and not np.isfinite(v)]
    if bad:
        raise NonFiniteError(f"{algo}: non-finite {', '.join(bad)} at environment step {step}; "
                             "training stopped (the last saved checkpoint is untouched)")


def obs_shapes(obs: Any) -> Any:
    """The shape of an observation batch, or {key: shape} for a dict of them."""
    return obs_map(lambda x: tuple(np.shape(x)), obs)
def record_first_bad(record: torch.Tensor, bad: torch.Tensor, steps: torch.Tensor, sub_env: torch.Tensor,
                     none: int) -> None:
    """The tensor path's first-non-finite record, in place and on the device: record <- min(record, the key
    steps + i of the first sub-env i flagged in `bad` [N]); `none` where nothing is flagged. With a leading seed
    dimension (record and steps [K], bad [K, N]; rlkit.core.seeds) each seed keeps its own record."""
    keys = torch.where(bad, steps.unsqueeze(-1) + sub_env, none)
    torch.minimum(record, keys.amin(-1), out=record)


def record_episodes(ep_return: torch.Tensor, ep_length: torch.Tensor, ring_return: torch.Tensor,
                    ring_length: torch.Tensor, episodes: torch.Tensor, rewards: torch.Tensor, done: torch.Tensor,
                    window: int) -> None:
    """The tensor path's episode statistics, in place: add the step to the running episodes [N], and move those
    that end into the ring of the last `window` finished ones ([window + 1]: the spare slot takes the writes to
    drop), counting them in `episodes` []. With a leading seed dimension (ep_return [K, N], ring_return
    [K, window + 1], episodes [K]; rlkit.core.seeds) every seed keeps its own records."""
    ep_return += rewards
    ep_length += 1
    # Episodes ending now go to the ring in sub-env order (as the NumPy path appends them); when more than `window`
    # end at once only the last `window` are kept, the others write to the spare slot.
    d = done.long()
    rank = d.cumsum(-1) - 1
    count = rank[..., -1:] + 1
    keep = done & (rank >= count - window)
    slot = torch.where(keep, (episodes.unsqueeze(-1) + rank) % window, window)
    ring_return.scatter_(-1, slot, ep_return)
    ring_length.scatter_(-1, slot, ep_length)
    episodes += count.squeeze(-1)
    ep_return.masked_fill_(done, 0.0)
    ep_length.masked_fill_(done, 0)


class StepResult(NamedTuple):
    """One vector step as the collector saw it; arrays with a leading env dimension [N, ...] (tensors on the
    device for a TorchVecEnv).

    next_obs is the TRUE next observation: where an episode ended it is the final one from info["final_obs"],
    not the reset observation the SAME_STEP vector env returned (that one becomes the collector's `obs_np`)."""
    obs: np.ndarray
    next_obs: np.ndarray
    rewards: np.ndarray  # as the env returned them (what episode statistics add up)
    terminated: np.ndarray
    truncated: np.ndarray
    train_rewards: np.ndarray  # what the agent trains on: the rewards, or their running normalisation


class RolloutCollector:
    """Steps a SAME_STEP vector env, keeping the current observation and episode statistics.

    `step(env_actions)` is the ONE place where a vector step is taken: autoreset, true final observations,
    terminated/truncated, non-finite checks and episode statistics. On-policy agents call `collect()` (T steps of
    `policy(obs) -> actions` into a RolloutBuffer); DDPG calls `step()` directly. Completed episodes
    are kept in `episode_returns` / `episode_lengths` (the last 100).

    With `game_scores` (decided once, for envs that report whole games: rlkit's Atari training envs) the
    statistics are the scores the env reports in the infos of the reset after each game, info["game_score"] and
    info["game_length"] (rlkit.core.atari.RecordGameScore: every life, unclipped rewards), not the sums of the
    rewards the agent trains on, which end at each lost life and are clipped.
    """

    EPISODE_WINDOW = 100  # episode_stats() averages the last this many finished episodes
    _NONE = torch.iinfo(torch.int64).max  # the tensor path's first-non-finite records: nothing seen yet

    def __init__(self, env: gym.vector.VectorEnv | TorchVecEnv, device: torch.device, initial_obs: Any,
                 check_finite: bool = True, reward_normalizer: ReturnNormalizer | None = None,
                 game_scores: bool = False, seed: int | None = None) -> None:
        self.env = env
        self.game_scores = game_scores
        self.reward_normalizer = reward_normalizer
        self.device = device
        self.action_space = env.single_action_space
        self.n_envs = env.num_envs
        self.check_finite = check_finite
        # Discrete(n) starting at 0: the policy's int64 actions are already what the env takes
        self._actions_as_is = isinstance(self.action_space, gym.spaces.Discrete) and int(self.action_space.start) == 0
        self.tensor_env = isinstance(env, TorchVecEnv)  # a torch env: the tensor path below, no NumPy arrays
        # Observations stay in their storage dtype (rlkit.core.networks.obs_storage): uint8 images cross to the device
        # as uint8; a Dict observation is a dict of arrays (decided once here, not per step).
        _, dtype = obs_storage(env.single_observation_space)
        self._dict_obs = isinstance(dtype, dict)
        self._obs_dtype: Any = obs_map(lambda d: torch.empty((), dtype=d).numpy().dtype, dtype)
        self.obs_np = None if self.tensor_env else self._as_obs(initial_obs)
        self._stage_for: RolloutBuffer | None = None  # the buffer self._stage (host arrays) was made for
        self._stage: tuple[np.ndarray, ...] = ()
        self._ep_return = np.zeros(self.n_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.n_envs, dtype=np.int64)
        self.episode_returns: deque[float] = deque(maxlen=100)
        self.episode_lengths: deque[int] = deque(maxlen=100)
        self.episodes_done = 0
        self.steps_done = 0  # environment steps, summed over sub-envs
        if self.tensor_env:
            self._init_tensor_path(initial_obs, seed)

    def _as_obs(self, obs: Any) -> Any:
        """An observation batch as NumPy arrays of the storage dtype (a dict of them for a Dict space)."""
        if self._dict_obs:
            return {k: np.asarray(obs[k], dtype=d) for k, d in self._obs_dtype.items()}
        return np.asarray(obs, dtype=self._obs_dtype)

    @property
    def obs(self) -> Any:
        """The current observation batch on the device (in its storage dtype: uint8 images cross as uint8)."""
        if self.tensor_env:
            return self._obs_t
        if self._dict_obs:
            return {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in self.obs_np.items()}
        return torch.from_numpy(self.obs_np).to(self.device, non_blocking=True)

    def step(self, env_actions: Any) -> StepResult:
        """Step every sub-env once with actions the env accepts; check what came back; keep episode statistics."""
        if self.tensor_env:
            return self._step_tensor(env_actions)
        return self._record_step(*self.env.step(env_actions))

    def _record_step(self, next_obs: Any, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                     info: dict[str, Any]) -> StepResult:
        """step()'s bookkeeping of what the vector env returned (Lockstep.step calls it after its own env.step)."""
        next_obs = self._as_obs(next_obs) if self._dict_obs else np.asarray(next_obs, dtype=self._obs_dtype)
        done = terminated | truncated
        final_obs = info.get("final_obs")
        if self.check_finite:
            check_finite_env(next_obs, rewards, self.steps_done, final_obs, done)
        self.steps_done += self.n_envs
        self._ep_return += rewards
        self._ep_length += 1
        return self._advance(next_obs, rewards, terminated, truncated, done, bool(done.any()), final_obs, info)

    def _advance(self, next_obs: Any, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                 done: np.ndarray, ended: bool, final_obs: Any, info: dict[str, Any]) -> StepResult:
        """The rest of a checked step's bookkeeping, once the step and its rewards are counted (next_obs in the storage
        dtype; `ended`: whether any episode ended): the records of ended episodes, the true next observation, the
        current observation, the rewards to train on. Lockstep.step calls it for the steps of shared env workers,
        which it checks and counts for all collectors at once."""
        true_next = next_obs
        if ended:
            if final_obs is None:
                raise RuntimeError("vector env ended an episode without info['final_obs']; "
                                   "it must use AutoresetMode.SAME_STEP")
            true_next = obs_map(np.copy, next_obs)
            for i in np.flatnonzero(done):
                if self._dict_obs:
                    for k, part in true_next.items():
                        part[i] = final_obs[i][k]
                else:
                    true_next[i] = final_obs[i]
                if not self.game_scores:
                    self.episode_returns.append(float(self._ep_return[i]))
                    self.episode_lengths.append(int(self._ep_length[i]))
            if self.game_scores:
                self._record_games(info)
            else:
                self.episodes_done += int(done.sum())
            self._ep_return[done] = 0.0
            self._ep_length[done] = 0
        obs, self.obs_np = self.obs_np, next_obs
        train_rewards = rewards if self.reward_normalizer is None else self.reward_normalizer(rewards, done)
        return StepResult(obs, true_next, rewards, terminated, truncated, train_rewards)

    def _record_games(self, info: dict[str, Any]) -> None:
        """Append the whole-game scores the envs reported in this step's infos (sub-envs in order)."""
        reported = info.get("_game_score")
        if reported is None:
            return
        for i in np.flatnonzero(reported):
            self.episode_returns.append(float(info["game_score"][i]))
            self.episode_lengths.append(int(info["game_length"][i]))
            self.episodes_done += 1

    def _staging(self, buffer: RolloutBuffer) -> tuple[np.ndarray, ...]:
        """NumPy arrays for obs, actions, rewards, terminated, truncated: zero-copy views of a CPU
        buffer, or host arrays (allocated once per buffer) that collect() copies to the device at the end."""
        tensors = (buffer.obs, buffer.actions, buffer.rewards, buffer.terminated, buffer.truncated)
        if buffer.device.type == "cpu":
            return tuple(obs_map(lambda x: x.numpy(), x) for x in tensors)
        if self._stage_for is not buffer:
            self._stage_for, self._stage = buffer, tuple(
                obs_map(lambda x: np.empty(tuple(x.shape), dtype=x.cpu().numpy().dtype), x) for x in tensors)
        return self._stage

    def collect(self, buffer: RolloutBuffer, policy: Policy, before_step: Callable[[int], None] | None = None,
                noise: Noise | None = None) -> RolloutBuffer:
        """Fill `buffer` with buffer.n_steps vector steps of `policy` (called under torch.inference_mode() on the
        device's observation batch). Observations, actions, log-probs, rewards and flags are written to NumPy arrays
        (views of a CPU buffer; on another device, host arrays moved once at the end: one transfer per tensor
        instead of one per step); where an episode was truncated, final_obs[t] holds the true final observation.
        `before_step(t)`, when given, runs before the policy acts at step t (gSDE redraws its noise there).
        `noise` (kind, dtype): on a torch env, the collector draws the policy's noise [N, action_dim] from its own
        counter stream (action_noise_stream) and calls policy(obs, noise); on Gymnasium envs, and without it, the
        policy draws its own (policy(obs), torch's global generator)."""
        T, N = buffer.n_steps, buffer.n_envs
        if N != self.n_envs:
            raise ValueError(f"buffer has {N} envs, the vector env has {self.n_envs}")
        if self.tensor_env:
            return self._collect_tensor(buffer, policy, before_step, noise)
        stage = self._begin_collect(buffer)
        for t in range(T):
            if before_step is not None:
                before_step(t)
            with torch.inference_mode():  # lighter than no_grad: the actions only go to NumPy and the buffer
                actions = policy(self.obs)
            self._collect_step(buffer, stage, t, actions)
        self._end_collect(buffer, stage)
        return buffer

    def _begin_collect(self, buffer: RolloutBuffer) -> tuple[Any, ...]:
        obs_map(torch.Tensor.zero_, buffer.final_obs)
        return self._staging(buffer)

    def _collect_step(self, buffer: RolloutBuffer, stage: tuple[Any, ...], t: int, actions: torch.Tensor) -> None:
        """Step t of collect(): step the envs with the policy's actions and write the step into the buffer."""
        obs_stage, act_stage, rewards, terminated, truncated = stage
        actions_np = actions.cpu().numpy()
        act_stage[t] = actions_np
        res = self.step(actions_np if self._actions_as_is else to_env_actions(actions_np, self.action_space))
        if self._dict_obs:
            for k, part in res.obs.items():
                obs_stage[k][t] = part
        else:
            obs_stage[t] = res.obs
        rewards[t], terminated[t], truncated[t] = res.train_rewards, res.terminated, res.truncated
        if res.truncated.any():
            idx = np.flatnonzero(res.truncated)
            if self._dict_obs:
                for k, part in res.next_obs.items():
                    buffer.final_obs[k][t, idx] = torch.from_numpy(part[idx]).to(buffer.device)
            else:
                buffer.final_obs[t, idx] = torch.from_numpy(res.next_obs[idx]).to(buffer.device)

    def _end_collect(self, buffer: RolloutBuffer, stage: tuple[Any, ...]) -> None:
        if buffer.device.type != "cpu":
            for x, host in zip((buffer.obs, buffer.actions, buffer.rewards, buffer.terminated, buffer.truncated),
                               stage):
                obs_map(lambda dst, src: dst.copy_(torch.from_numpy(src), non_blocking=False), x, host)
        obs_map(lambda dst, src: dst.copy_(torch.from_numpy(src)), buffer.last_obs, self.obs_np)

    # ---- the tensor path (a TorchVecEnv: everything stays on the device) --------------------------------------
    # Nothing here reads a value back to the host, and every tensor the loop touches is updated in place, so a
    # rollout can run inside a CUDA graph (core.device.GraphedStep). steps_done, the episode statistics and the
    # non-finite checks are kept on the device and read in ONE host transfer by sync() (episode_stats() and
    # state_dict() call it: when logging and checkpointing).
    def _init_tensor_path(self, initial_obs: Any, seed: int | None) -> None:
        env, dev, K = self.env, self.device, self.EPISODE_WINDOW
        # the policy's noise with collect(noise=): one draw of [T, N, action_dim] per rollout, keyed from the seed
        self.action_noise_stream = CounterStream.seeded(seed, ACTION_NOISE, dev)
        self.noise_shape = (self.n_envs, action_dim(self.action_space))
        self._obs_t = torch.as_tensor(initial_obs, dtype=torch.float32).to(dev).clone()
        self._low = self._high = None  # Box bounds as tensors on the env's device (the clip of to_env_actions)
        if isinstance(self.action_space, gym.spaces.Box):
            self._low = torch.as_tensor(self.action_space.low, device=env.device)
            self._high = torch.as_tensor(self.action_space.high, device=env.device)
        # Running episodes, and a ring of the last K finished ones (slot K takes the writes to drop): fixed
        # shapes, filled by scatter, read only by sync().
        self._ep_return_t = torch.zeros(self.n_envs, dtype=torch.float64, device=dev)
        self._ep_length_t = torch.zeros(self.n_envs, dtype=torch.int64, device=dev)
        self._ring_return = torch.zeros(K + 1, dtype=torch.float64, device=dev)
        self._ring_length = torch.zeros(K + 1, dtype=torch.int64, device=dev)
        self._episodes_t = torch.zeros((), dtype=torch.int64, device=dev)  # finished episodes, ever
        self._episodes_base = 0  # episodes finished before load_state_dict() refilled the ring
        self._steps_t = torch.zeros((), dtype=torch.int64, device=dev)  # steps_done, on the device
        self._steps_base = 0  # steps_done when _steps_t was last set from the host
        # The first non-finite env output and the first non-finite action, each as one key: the environment
        # step of that vector step + the sub-env index (min over keys = the first in time, then in sub-env order).
        self._env_bad = torch.full((), self._NONE, dtype=torch.int64, device=dev)
        self._act_bad = torch.full((), self._NONE, dtype=torch.int64, device=dev)
        self._sub_env = torch.arange(self.n_envs, device=dev)

    @property
    def generators(self) -> list[torch.Generator]:
        """The torch generators a rollout draws from besides torch's default one, for a CUDA graph to register:
        none (a torch env's resets and the action noise are counter streams, which need no registering)."""
        return []

    def _env_actions_tensor(self, actions: torch.Tensor) -> torch.Tensor:
        """Policy output -> what the env takes, on the env's device (the tensor twin of to_env_actions)."""
        a = actions.to(self.env.device)
        if self._low is not None:
            return torch.clamp(a, self._low, self._high)
        start = int(self.action_space.start)
        return a.long() if start == 0 else a.long() + start

    def _first_bad(self, record: torch.Tensor, bad: torch.Tensor) -> None:
        """record <- min(record, key of the first sub-env flagged in `bad` [N]) without leaving the device."""
        record_first_bad(record, bad, self._steps_t, self._sub_env, self._NONE)

    def _step_tensor(self, env_actions: torch.Tensor, actions: torch.Tensor | None = None,
                     keep_obs: bool = True, resets: torch.Tensor | None = None) -> StepResult:
        """step() for a TorchVecEnv: the same bookkeeping as tensor ops, no host sync. `actions` (the policy's, when
        given) are checked for NaN/inf too, so a non-finite action is blamed on the agent, not the env. With
        keep_obs=False the returned obs is the collector's own observation tensor, overwritten by this step.
        `resets`: the env's reset draws for this step, when taken in advance (TorchVecEnv.draw_resets)."""
        K, N = self.EPISODE_WINDOW, self.n_envs
        out = self.env.step(env_actions, resets)
        dev = self.device
        rewards, terminated, truncated = out.reward.to(dev), out.terminated.to(dev), out.truncated.to(dev)
        next_obs, true_next = out.obs.to(dev), out.final_obs.to(dev)
        done = terminated | truncated
        if self.check_finite:  # remembered on the device; raised by sync() (when logging or checkpointing)
            self._first_bad(self._env_bad, ~(torch.isfinite(rewards) & torch.isfinite(true_next.view(N, -1)).all(1)))
            if actions is not None and actions.is_floating_point():
                self._first_bad(self._act_bad, ~torch.isfinite(actions.view(N, -1)).all(1))
        record_episodes(self._ep_return_t, self._ep_length_t, self._ring_return, self._ring_length, self._episodes_t,
                        rewards, done, K)
        self._steps_t += N
        obs = self._obs_t.clone() if keep_obs else self._obs_t
        self._obs_t.copy_(next_obs)  # in place: a CUDA graph of the rollout keeps reading the same tensor
        return StepResult(obs, true_next, rewards, terminated, truncated, rewards)

    def _collect_tensor(self, buffer: RolloutBuffer, policy: Policy, before_step: Callable[[int], None] | None,
                        noise: Noise | None) -> RolloutBuffer:
        """collect() for a TorchVecEnv: every write is a device tensor copy; final_obs by masking. No host read:
        non-finite values are raised by the next sync(). The rollout's random numbers are drawn up front, one
        call per stream for its T steps (exactly the T per-step draws: counter-based streams)."""
        T = buffer.n_steps
        shape = (self.n_envs,) + (1,) * (buffer.final_obs.dim() - 2)
        resets = self.env.draw_resets(T)  # [T, N, d]
        noises = None if noise is None else self.action_noise_stream.draw(noise[0], self.noise_shape, noise[1], T)
        for t in range(T):
            if before_step is not None:
                before_step(t)
            with torch.no_grad():
                actions = policy(self._obs_t) if noises is None else policy(self._obs_t, noises[t])
            buffer.obs[t] = self._obs_t
            buffer.actions[t] = actions
            res = self._step_tensor(self._env_actions_tensor(actions), actions, keep_obs=False, resets=resets[t])
            buffer.rewards[t], buffer.terminated[t], buffer.truncated[t] = res.rewards, res.terminated, res.truncated
            buffer.final_obs[t] = torch.where(res.truncated.view(shape), res.next_obs, 0.0)
        buffer.last_obs.copy_(self._obs_t)
        return buffer

    def device_snapshot(self) -> dict[str, torch.Tensor]:
        """What sync() reads from the device, as tensors (empty for a NumPy env): the ring of finished episodes,
        the episode and step counters and the first-non-finite records. LearnRun reads it in the same host
        transfer as the metrics it logs (core.device.to_host) and hands the result to apply_snapshot()."""
        if not self.tensor_env:
            return {}
        K = self.EPISODE_WINDOW
        return {"ring_return": self._ring_return[:K], "ring_length": self._ring_length[:K],
                "episodes": self._episodes_t, "steps": self._steps_t, "env_bad": self._env_bad,
                "act_bad": self._act_bad}

    def apply_snapshot(self, snap: dict[str, Any]) -> None:
        """Take a host copy of device_snapshot(): episode_returns/episode_lengths/episodes_done/steps_done are
        refreshed, then a non-finite value seen on the device raises NonFiniteError naming the environment step
        and sub-env where it first appeared, blaming the agent for a non-finite action and the env otherwise."""
        if not snap:
            return
        K = self.EPISODE_WINDOW
        total = int(snap["episodes"])
        n = min(total, K)
        order = [(total - n + j) % K for j in range(n)]
        self.episode_returns.clear()
        self.episode_returns.extend(float(snap["ring_return"][i]) for i in order)
        self.episode_lengths.clear()
        self.episode_lengths.extend(int(snap["ring_length"][i]) for i in order)
        self.episodes_done = self._episodes_base + total
        self.steps_done = int(snap["steps"])
        if not self.check_finite:
            return
        env_key, act_key = int(snap["env_bad"]), int(snap["act_bad"])
        if min(env_key, act_key) == self._NONE:
            return
        vector_steps, i = divmod(min(env_key, act_key) - self._steps_base, self.n_envs)
        step = self._steps_base + vector_steps * self.n_envs
        when = (f"(sub-env {i}) at environment step {step} (reported by the first host read after it, at "
                f"environment step {self.steps_done})")
        if act_key <= env_key:
            raise NonFiniteError(f"the policy returned a non-finite action {when}: the agent's parameters or "
                                 "observation statistics hold NaN/inf")
        raise NonFiniteError(f"environment returned a non-finite reward or observation {when}")

    def sync(self) -> None:
        """Torch envs: refresh steps_done and the episode statistics from the device in one host read, raising
        NonFiniteError for a NaN/inf seen since the start (apply_snapshot). A no-op for NumPy envs."""
        if self.tensor_env:
            self.apply_snapshot(to_host(self.device_snapshot()))

    def episode_stats(self, refresh: bool = True) -> dict[str, float]:
        """Mean return/length over the last (up to) 100 finished episodes; empty before the first one ends.
        Torch envs: read from the device first (sync()) unless refresh=False (a snapshot was just applied)."""
        if self.tensor_env and refresh:
            self.sync()
        if not self.episode_returns:
            return {}
        return {"rollout/episode_return": float(np.mean(self.episode_returns)),
                "rollout/episode_length": float(np.mean(self.episode_lengths))}

    def state_dict(self) -> dict[str, Any]:
        self.sync()
        state = {"episode_returns": list(self.episode_returns), "episode_lengths": list(self.episode_lengths),
                 "episodes_done": self.episodes_done, "steps_done": self.steps_done}
        if self.tensor_env:  # where the counter streams are (host reads, with the sync above: at checkpoints)
            state["streams"] = {"action_noise": int(self.action_noise_stream.counter),
                                "env_resets": int(self.env.stream.counter)}
        if self.reward_normalizer is not None:
            state["reward_normalizer"] = self.reward_normalizer.state_dict()
        return state

    def episode_state(self) -> dict[str, Any]:
        """What ties the collector to the envs' current episodes: saved with the env state (agent_io), never in
        the weights-only checkpoint, since it is only valid together with the envs it came from."""
        return {"obs": obs_map(np.copy, self.obs_np), "ep_return": self._ep_return.copy(),
                "ep_length": self._ep_length.copy()}

    def load_episode_state(self, state: dict[str, Any]) -> None:
        obs = self._as_obs(state["obs"])
        if obs_shapes(obs) != obs_shapes(self.obs_np):
            raise ValueError(f"saved observation batch has shape {obs_shapes(obs)}, expected "
                             f"{obs_shapes(self.obs_np)}")
        self.obs_np = obs_map(np.copy, obs)
        self._ep_return[:] = state["ep_return"]
        self._ep_length[:] = state["ep_length"]

    def share_episode_sums(self, returns: np.ndarray, lengths: np.ndarray) -> None:
        """Keep the running return and length of each sub-env's episode in `returns` and `lengths` ([N] float64 and
        int64, e.g. rows of a Lockstep's [K, N] arrays, which add to all K collectors' at once), their current values
        copied in. Only this replaces the two arrays (both together); every other write to them is in place."""
        if returns.shape != self._ep_return.shape or returns.dtype != np.float64 \
                or lengths.shape != self._ep_length.shape or lengths.dtype != np.int64:
            raise ValueError(f"episode sums must be float64 and int64 arrays of shape {self._ep_return.shape}, got "
                             f"{returns.dtype} {returns.shape} and {lengths.dtype} {lengths.shape}")
        returns[:] = self._ep_return
        lengths[:] = self._ep_length
        self._ep_return, self._ep_length = returns, lengths

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episode_returns.clear()
        self.episode_returns.extend(state["episode_returns"])
        self.episode_lengths.clear()
        self.episode_lengths.extend(state["episode_lengths"])
        self.episodes_done = int(state["episodes_done"])
        self.steps_done = int(state["steps_done"])
        if self.reward_normalizer is not None:
            if "reward_normalizer" not in state:
                raise ValueError("the checkpoint has no reward normaliser state, this agent normalises rewards")
            self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        if self.tensor_env:  # the ring restarts from the saved episodes (oldest first, as the deque holds them)
            n = len(self.episode_returns)
            self._ring_return.zero_()
            self._ring_length.zero_()
            self._ring_return[:n] = torch.tensor(list(self.episode_returns), dtype=torch.float64)
            self._ring_length[:n] = torch.tensor(list(self.episode_lengths), dtype=torch.int64)
            self._episodes_t.fill_(n)
            self._episodes_base = self.episodes_done - n
            self._steps_t.fill_(self.steps_done)
            self._steps_base = self.steps_done
            self._env_bad.fill_(self._NONE)
            self._act_bad.fill_(self._NONE)
            streams = state.get("streams")  # absent in checkpoints from before the counter streams: they restart
            if streams is not None:
                self.action_noise_stream.counter.fill_(int(streams["action_noise"]))
                self.env.stream.counter.fill_(int(streams["env_resets"]))


def collect_lockstep(collectors: Sequence[RolloutCollector], buffers: Sequence[RolloutBuffer],
                     policy: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """collect() for K collectors of Gymnasium vector envs in lockstep (K seeds, rlkit.core.seeds): at every step
    `policy` maps the K observation batches stacked [K, N, ...] to actions [K, N, ...] in one call, then each
    collector steps its own envs and writes its own buffer exactly as its collect() would."""
    first = collectors[0]
    for c, b in zip(collectors, buffers):
        if c.tensor_env or b.n_envs != c.n_envs or b.n_steps != buffers[0].n_steps:
            raise ValueError("collect_lockstep needs collectors of Gymnasium vector envs with equally shaped buffers")
    stages = [c._begin_collect(b) for c, b in zip(collectors, buffers)]
    for t in range(buffers[0].n_steps):
        obs = torch.from_numpy(np.stack([c.obs_np for c in collectors])).to(first.device, non_blocking=True)
        with torch.no_grad():
            actions = policy(obs)  # one host -> device copy and one forward for all K observation batches
        for k, (c, b) in enumerate(zip(collectors, buffers)):
            c._collect_step(b, stages[k], t, actions[k])
    for c, b, stage in zip(collectors, buffers, stages):
        c._end_collect(b, stage)


def step_lockstep(collectors: Sequence[RolloutCollector], env_actions: Sequence[Any]) -> StepResult:
    """One Lockstep(collectors).step(env_actions): a single lockstep step of K collectors (a loop of steps builds its
    Lockstep once and calls its step())."""
    return Lockstep(collectors).step(env_actions)


class Lockstep:
    """K collectors of Gymnasium vector envs stepped in lockstep (K seeds, rlkit.core.seeds), built ONCE for them
    (after their envs are final: SeedBatch.share_env_workers first). step(env_actions) steps them, env_actions[k]
    for collector k, and returns ONE StepResult whose arrays have a leading seed dimension [K, N, ...] (row k: what
    collector k's step() returns); every collector records its step exactly as its step() would (each env steps
    once, in order, with its own RNG: seed k steps as alone).

    When the collectors' envs are the views of one EnvWorkers laid out seed by seed (rlkit.core.envs: the seeds'
    sub-envs in shared worker processes, SeedBatch.share_env_workers; decided here, once), all their sub-envs take
    ONE step of the workers, the results are checked for non-finite values in one go, and the running episode
    returns and lengths of all K collectors are added to in one go: they live in this object's [K, N] arrays
    `returns` and `lengths`, whose rows the collectors keep theirs in (RolloutCollector.share_episode_sums; a
    collector's own writes, load_episode_state() included, are in place, so they land in these rows). Otherwise
    vector envs whose sub-envs live in worker processes (AsyncVectorEnv: vectorization="async") are all sent their
    actions before any is waited for, so the K seeds' envs step at the same time, each in its own processes.

    Between two steps a collector may be stepped alone, load an episode state, or be taken over by another Lockstep:
    step() then finds that a collector's current observations or episode sums are no longer the rows it handed out
    (one identity test per collector) and takes them over again, their values as they are."""

    def __init__(self, collectors: Sequence[RolloutCollector]) -> None:
        self.collectors = list(collectors)
        if not self.collectors or any(c.tensor_env for c in self.collectors):
            raise ValueError("Lockstep needs one or more collectors of Gymnasium vector envs")
        c0, K = self.collectors[0], len(self.collectors)
        self.pool = _shared_workers(self.collectors)
        self._async = [isinstance(c.env, gym.vector.AsyncVectorEnv) for c in self.collectors]
        self._check_finite = any(c.check_finite for c in self.collectors)
        # a step of shared workers returns its arrays as the workers left them (no per-seed stacking) unless some
        # collector's rows are its own copies: a Dict observation, normalised rewards, the true final observations
        self._as_stacked = not c0._dict_obs and all(c.reward_normalizer is None for c in self.collectors)
        self._obs: np.ndarray | None = None  # the last step's next observations [K * N, ...] (shared workers) ...
        self._obs_rows: list[np.ndarray] = []  # ... whose rows are the collectors' current ones, until replaced
        if self.pool is not None:
            self.returns = np.zeros((K, c0.n_envs), dtype=np.float64)  # every seed's running episodes [K, N]
            self.lengths = np.zeros((K, c0.n_envs), dtype=np.int64)
            self._returns_rows: list[np.ndarray] = []  # the rows of `returns` the collectors keep theirs in
            self._take_over_episode_sums()

    def _take_over_episode_sums(self) -> None:
        """Have each collector keep its running episode returns and lengths in its rows of `returns` and `lengths`
        (their current values copied in)."""
        self._returns_rows = list(self.returns)
        for c, ret, length in zip(self.collectors, self._returns_rows, self.lengths):
            c.share_episode_sums(ret, length)

    def step(self, env_actions: Sequence[Any], while_waiting: Callable[[], Any] | None = None) -> StepResult:
        """Step every collector once (env_actions[k]: collector k's actions, or one array [K, N, ...]); the results
        stacked [K, N, ...]. `while_waiting` (work that does not depend on this step, e.g. DDPG's update on a CPU)
        runs once the actions are sent to worker processes and before their results are awaited (with no worker
        processes: before the step); the workers are awaited even if it raises."""
        if self.pool is not None:
            return self._step_shared_workers(env_actions, while_waiting)
        for c, a, sent in zip(self.collectors, env_actions, self._async):
            if sent:
                c.env.step_async(a)
        try:
            if while_waiting is not None:
                while_waiting()
        finally:
            results = [c._record_step(*c.env.step_wait()) if sent else None
                       for c, sent in zip(self.collectors, self._async)]
        return _stack_steps([r if sent else c.step(a)
                             for c, a, sent, r in zip(self.collectors, env_actions, self._async, results)])

    def _step_shared_workers(self, env_actions: Sequence[Any], while_waiting: Callable[[], Any] | None = None
                             ) -> StepResult:
        """step() for the K collectors of one EnvWorkers: one step of every slot (the infos left in the workers), the
        observations copied out of shared memory once, every reward and observation checked for non-finite values in
        one call (collector by collector only to name the first bad one), the running episodes of all seeds counted
        in one add, then each collector's bookkeeping (_advance) on its rows; final observations are read (and
        checked) only where an episode ended. A step that ended no episode, with raw rewards, returns the stacked
        arrays as they are and moves each collector's observations on without calling its _advance."""
        cols, pool = self.collectors, self.pool
        first, K = cols[0], len(cols)
        n = first.n_envs
        if any(c._ep_return is not ret for c, ret in zip(cols, self._returns_rows)):  # another Lockstep's since
            self._take_over_episode_sums()
        prev = self.current_obs() if self._as_stacked else None  # the seeds' current observations [K, N, ...]
        actions = env_actions.reshape(pool.num_envs, *env_actions.shape[2:]) if isinstance(env_actions, np.ndarray) \
            else np.concatenate([np.asarray(a) for a in env_actions])
        pool.step_async(actions)
        try:
            if while_waiting is not None:
                while_waiting()
        finally:
            pool.step_wait()
        if first._dict_obs:
            next_all: Any = {k: np.array(pool.obs[k], dtype=d) for k, d in first._obs_dtype.items()}
            rows: list[Any] = [{key: v[k * n:(k + 1) * n] for key, v in next_all.items()} for k in range(K)]
        else:
            next_all = np.array(pool.obs, dtype=first._obs_dtype)
            rows = list(next_all.reshape(K, n, *next_all.shape[1:]))
        rewards, terminated, truncated = pool.rewards.copy(), pool.terminated.copy(), pool.truncated.copy()
        done = terminated | truncated
        r, t, u, d = (x.reshape(K, n) for x in (rewards, terminated, truncated, done))
        if self._check_finite:
            try:
                check_finite_env(next_all, rewards, 0)
            except NonFiniteError:  # name the first bad seed's sub-env and step, as its own step() would
                for c, o, rk in zip(cols, rows, r):
                    if c.check_finite:
                        check_finite_env(o, rk, c.steps_done)
        ended = d.any(axis=1).tolist()
        any_ended = True in ended
        finals: list[Any] = [None] * K
        if any_ended:
            for k, c in enumerate(cols):
                if ended[k]:
                    finals[k] = [pool.final_observation(k * n + i) if d[k, i] else None for i in range(n)]
                    if c.check_finite:
                        check_finite_env(rows[k], r[k], c.steps_done, finals[k], d[k])
        self.returns += r  # every seed's running episodes (the collectors' are views of its rows): one add for all
        self.lengths += 1
        if self._as_stacked:
            self._obs, self._obs_rows = next_all, rows
            if not any_ended:
                # No episode ended and the rewards are raw (_as_stacked): all that each collector's _advance would do
                # is move its current observations on to its rows, done here without K calls and K StepResults.
                for c, o in zip(cols, rows):
                    c.steps_done += n
                    c.obs_np = o
                return StepResult(prev, next_all.reshape(K, n, *next_all.shape[1:]), r, t, u, r)
        out = []
        for k, c in enumerate(cols):
            c.steps_done += n
            out.append(c._advance(rows[k], r[k], t[k], u[k], d[k], ended[k], finals[k], {}))
        return _stack_steps(out)

    def current_obs(self) -> np.ndarray:
        """The collectors' current observations stacked [K, N, ...] (arrays, not Dict observations): where they are
        still the rows of the last step of shared workers, that step's array itself (no copy: read it, do not write
        into it), else a stack of them."""
        cols = self.collectors
        if self._obs is not None and all(c.obs_np is o for c, o in zip(cols, self._obs_rows)):
            return self._obs.reshape(len(cols), cols[0].n_envs, *self._obs.shape[1:])
        return np.stack([c.obs_np for c in cols])


def _stack_steps(steps: Sequence[StepResult]) -> StepResult:
    """K collectors' StepResults as one, every array stacked [K, ...] (a Dict observation key by key); the rewards
    are stacked once where every collector trains on them as they are (train_rewards is rewards: no normaliser)."""
    def stack(arrays: Sequence[Any]) -> Any:
        return obs_map(lambda *xs: np.stack(xs), *arrays)
    obs, next_obs, rewards, terminated, truncated, train_rewards = zip(*steps)
    raw = stack(rewards)
    train = raw if all(t is r for t, r in zip(train_rewards, rewards)) else stack(train_rewards)
    return StepResult(stack(obs), stack(next_obs), raw, stack(terminated), stack(truncated), train)


def _shared_workers(collectors: Sequence[RolloutCollector]) -> EnvWorkers | None:
    """The EnvWorkers whose views are the collectors' envs (of one size), in slot order and covering all its slots;
    None when they are not, or when a collector reads game scores from the infos (which a step of all the workers
    leaves there)."""
    pool, n = getattr(collectors[0].env, "pool", None), collectors[0].n_envs
    if not isinstance(pool, EnvWorkers) or pool.num_envs != n * len(collectors):
        return None
    for k, c in enumerate(collectors):
        if not isinstance(c.env, WorkerVecEnv) or c.env.pool is not pool or c.env.lo != k * n or c.n_envs != n \
                or c.game_scores:
            return None
    return pool


def evaluate_policy(
    act: Callable[[np.ndarray], np.ndarray],
    env: gym.Env,
    n_episodes: int,
    seed: int | None = None,
    max_steps_per_episode: int | None = None,
    truncation_note: str | None = None,
) -> dict[str, float]:
    """Run `n_episodes` full episodes of a single env with `act` (numpy obs -> env action).

    Episode k is reset with seed + k, so evaluating the same policy twice gives identical returns.
    Each episode is cut after `max_steps_per_episode` steps: by default the env's TimeLimit
    (env.spec.max_episode_steps), else DEFAULT_EVAL_MAX_EPISODE_STEPS; a cut episode counts with its partial
    return and a RuntimeWarning says so (an env that never ends would otherwise hang here). With
    `truncation_note` (the limit an env truncates at, e.g. an Atari game's frame limit), episodes the env
    truncated are counted in a RuntimeWarning too.
    Returns {"mean_return", "std_return", "mean_length", "n_episodes", "capped_episodes"}.
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    n_episodes = int(n_episodes)
    if max_steps_per_episode is None:
        spec_cap = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        max_steps_per_episode = int(spec_cap) if spec_cap else DEFAULT_EVAL_MAX_EPISODE_STEPS
    if isinstance(max_steps_per_episode, bool) or not isinstance(max_steps_per_episode, (int, np.integer)) \
            or max_steps_per_episode < 1:
        raise ValueError(f"max_steps_per_episode must be a positive integer, got {max_steps_per_episode!r}")
    returns, lengths, capped, truncated = [], [], 0, 0
    for k in range(n_episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + k)
        total, length = 0.0, 0
        while True:
            obs, r, term, trunc, _ = env.step(act(obs))
            total += float(r)
            length += 1
            if term or trunc:
                truncated += int(bool(trunc) and not term)
                break
            if length >= max_steps_per_episode:
                capped += 1
                break
        returns.append(total)
        lengths.append(length)
    if capped:
        warnings.warn(f"{capped} of {n_episodes} evaluation episodes did not end within {max_steps_per_episode:,} "
                      "steps and were cut (their returns are partial); the env has no TimeLimit shorter than that "
                      "(wrap it in gymnasium.wrappers.TimeLimit or pass max_steps_per_episode)",
                      RuntimeWarning, stacklevel=2)
    if truncation_note and truncated:
        warnings.warn(f"{truncated} of {n_episodes} evaluation episodes were truncated at {truncation_note} "
                      "(their returns are partial)", RuntimeWarning, stacklevel=2)
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
            "mean_length": float(np.mean(lengths)), "n_episodes": float(n_episodes),
            "capped_episodes": float(capped)}
