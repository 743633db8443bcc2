"""Preallocated storage on the training device.

RolloutBuffer: one on-policy rollout of T steps from N envs ([T, N, ...] tensors).
ReplayBuffer: see below (ring storage for off-policy agents).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch


class Rollout(NamedTuple):
    """A RolloutBuffer's tensors as a plain tuple (RolloutBuffer.rollout()), so a loss written against it also runs
    under torch.func.vmap with a leading seed dimension (rlkit.core.seeds). Shapes as in RolloutBuffer."""
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: torch.Tensor
    last_obs: torch.Tensor

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [T * N, ...]."""
        return x.reshape(-1, *x.shape[2:])


class RolloutBuffer:
    """T x N transitions, allocated once on the device and overwritten by every rollout.

    Shapes:
      obs [T, N, *obs_shape]      observation the action was taken in
      actions [T, N, *act_shape]  the policy's (unclipped) action
      rewards, terminated, truncated [T, N]
      final_obs [T, N, *obs_shape] the TRUE final observation where truncated[t, n] (zeros elsewhere)
      last_obs [N, *obs_shape]     the observation after the last step (for bootstrapping)
    """

    def __init__(
        self,
        n_steps: int,
        n_envs: int,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        action_dtype: torch.dtype,
        device: torch.device,
        obs_dtype: torch.dtype = torch.float32,
        check_memory: bool = True,
    ) -> None:
        if n_steps < 1 or n_envs < 1:
            raise ValueError(f"RolloutBuffer needs n_steps >= 1 and n_envs >= 1, got {n_steps}, {n_envs}")
        T, N = n_steps, n_envs
        # Check before allocating: torch.zeros of an absurd n_steps would try to take the whole machine.
        self.nbytes = rollout_buffer_nbytes(T, N, obs_shape, action_shape, action_dtype, obs_dtype)
        if check_memory:
            free = free_memory_bytes(device)
            if self.nbytes > free:
                raise MemoryError(
                    f"RolloutBuffer of n_steps={T:,} x n_envs={N:,} needs {self.nbytes / GiB:.2f} GiB on {device} "
                    f"but only {free / GiB:.2f} GiB is free; lower n_steps or n_envs")
        self.n_steps, self.n_envs, self.device = T, N, device
        self.obs = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((T, N, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.final_obs = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
        self.last_obs = torch.zeros((N, *obs_shape), dtype=obs_dtype, device=device)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """[T, N, ...] -> [T * N, ...]."""
        return x.reshape(self.n_steps * self.n_envs, *x.shape[2:])

    def rollout(self) -> Rollout:
        """The tensors as a Rollout (no copies)."""
        return Rollout(self.obs, self.actions, self.rewards, self.terminated, self.truncated, self.final_obs,
                       self.last_obs)


def rollout_buffer_nbytes(n_steps: int, n_envs: int, obs_shape: Sequence[int], action_shape: Sequence[int],
                          action_dtype: torch.dtype, obs_dtype: torch.dtype = torch.float32) -> int:
    """Bytes a RolloutBuffer of these sizes allocates (Python ints: no overflow for absurd sizes)."""
    def numel(shape: Sequence[int]) -> int:
        n = 1
        for d in shape:
            n *= int(d)
        return n

    def itemsize(dtype: torch.dtype) -> int:
        return torch.empty((), dtype=dtype).element_size()

    T, N, o = int(n_steps), int(n_envs), numel(obs_shape)
    per_step = (2 * o * itemsize(obs_dtype) + numel(action_shape) * itemsize(action_dtype)
                + 4 + 2 * 1)  # obs + final_obs, actions, rewards (float32), two bool flags
    return T * N * per_step + N * o * itemsize(obs_dtype)


# ---- ReplayBuffer (off-policy agents) -----------------------------------------------------------------------
import os  # noqa: E402  (kept next to the class that needs them; RolloutBuffer above needs neither)
from typing import Any, NamedTuple  # noqa: E402

import numpy as np  # noqa: E402

GiB = 1024**3


class ReplayBatch(NamedTuple):
    """A sampled minibatch, all on the buffer's device. Shapes: obs, next_obs [B, *obs_shape];
    actions [B, *action_shape]; rewards, terminated [B] (terminated as float 0/1)."""
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


def free_memory_bytes(device: torch.device) -> int:
    """Free memory where a buffer on `device` would live: free GPU memory, or the host's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class ReplayBuffer:
    """Ring storage of transitions (s, a, r, s', terminated), preallocated on the device at construction.

    One float32 row per transition, [obs | action | reward | next_obs | terminated], so that add() is one copy
    and sample() is one gather. `next_obs` must be the TRUE next observation (the final one where an episode
    ended, not the reset one); `terminated` is kept alone because a truncated transition still bootstraps.
    The whole capacity is allocated and written once up front, so a buffer that does not fit fails here,
    naming the GiB, and never in the middle of training.

    `size_t` mirrors the fill level on the device: sample() draws indices as floor(U[0,1) * size_t), so a
    CUDA graph captured with a partly filled buffer stays valid as it fills (no host value is baked in).
    """

    def __init__(self, capacity: int, obs_shape: Sequence[int], action_shape: Sequence[int],
                 device: torch.device, check_memory: bool = True) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"ReplayBuffer capacity must be a positive integer, got {capacity!r}")
        self.capacity, self.device = capacity, device
        self.obs_shape, self.action_shape = tuple(obs_shape), tuple(action_shape)
        o, a = int(np.prod(self.obs_shape)), int(np.prod(self.action_shape))
        self.width = 2 * o + a + 2
        self._cols = {"obs": slice(0, o), "actions": slice(o, o + a), "rewards": o + a,
                      "next_obs": slice(o + a + 1, 2 * o + a + 1), "terminated": 2 * o + a + 1}
        self.nbytes = capacity * self.width * 4
        if check_memory:
            free = free_memory_bytes(device)
            if self.nbytes > free:
                raise MemoryError(
                    f"ReplayBuffer of capacity {capacity:,} needs {self.nbytes / GiB:.2f} GiB on {device} "
                    f"({self.width * 4} bytes per transition) but only {free / GiB:.2f} GiB is free; "
                    "lower buffer_size")
        # empty + zero_ touches every page now (zeros() may get lazily-committed pages from the OS).
        self.data = torch.empty((capacity, self.width), dtype=torch.float32, device=device).zero_()
        self.size_t = torch.zeros((), dtype=torch.float64, device=device)
        self.pos = 0
        self.size = 0
        self._pinned: torch.Tensor | None = None
        self._event: Any = None

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Any, actions: Any, rewards: Any, next_obs: Any, terminated: Any) -> None:
        """Store a batch of N transitions (one per env; NumPy arrays or tensors with leading dim N).
        Inputs are copied, so stored values never carry an autograd graph."""
        if isinstance(obs, torch.Tensor):
            n = obs.shape[0]
            parts = [obs, actions, rewards, next_obs, terminated]
            rows = torch.cat([torch.as_tensor(x).detach().reshape(n, -1).to(self.device, torch.float32)
                              for x in parts], dim=1)
        else:
            n = np.shape(obs)[0]
            rows = self._host_rows(n)
            c = self._cols
            rows[:, c["obs"]] = np.asarray(obs).reshape(n, -1)
            rows[:, c["actions"]] = np.asarray(actions).reshape(n, -1)
            rows[:, c["rewards"]] = np.asarray(rewards).reshape(n)
            rows[:, c["next_obs"]] = np.asarray(next_obs).reshape(n, -1)
            rows[:, c["terminated"]] = np.asarray(terminated).reshape(n)
            rows = torch.from_numpy(rows) if self._pinned is None else self._pinned
        if rows.shape[1] != self.width:
            raise ValueError(f"transition has {rows.shape[1]} values, the buffer's rows hold {self.width}")
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions at once to a ReplayBuffer of capacity {self.capacity}")
        first = min(n, self.capacity - self.pos)  # up to two slice copies: before and after the wrap
        blocking = not (rows.device.type == "cpu" and rows.is_pinned())
        self.data[self.pos:self.pos + first].copy_(rows[:first], non_blocking=not blocking)
        if first < n:
            self.data[:n - first].copy_(rows[first:], non_blocking=not blocking)
        if self._event is not None and not blocking:
            self._event.record()
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.size_t.fill_(self.size)

    def _host_rows(self, n: int) -> np.ndarray:
        """A host array of n rows: pinned on CUDA (non-blocking copy; wait until the last one finished)."""
        if self.device.type != "cuda":
            return np.empty((n, self.width), dtype=np.float32)
        if self._pinned is None or self._pinned.shape[0] != n:
            self._pinned = torch.empty((n, self.width), dtype=torch.float32, pin_memory=True)
            self._event = torch.cuda.Event()
        self._event.synchronize()
        return self._pinned.numpy()

    def sample_indices(self, batch_size: int, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """batch_size uniform indices into the filled slots, drawn on the device without a host sync (from the
        float64 U[0, 1) draws `uniform` [batch_size] when given, else from torch's generator)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        u = torch.rand(batch_size, dtype=torch.float64, device=self.device) if uniform is None else uniform
        return (u * self.size_t).long()  # float64: floor(u * size) < size for any size below 2**52

    def sample(self, batch_size: int) -> ReplayBatch:
        return self.gather(self.sample_indices(batch_size))

    def gather(self, idx: torch.Tensor) -> ReplayBatch:
        rows = self.data.index_select(0, idx)
        c, b = self._cols, idx.shape[0]
        return ReplayBatch(rows[:, c["obs"]].reshape(b, *self.obs_shape),
                           rows[:, c["actions"]].reshape(b, *self.action_shape),
                           rows[:, c["rewards"]], rows[:, c["next_obs"]].reshape(b, *self.obs_shape),
                           rows[:, c["terminated"]])

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data[:self.size].cpu(), "pos": self.pos, "size": self.size,
                "capacity": self.capacity, "width": self.width}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or int(state["width"]) != self.width:
            raise ValueError(f"saved ReplayBuffer has capacity {state['capacity']} x width {state['width']}, "
                             f"this one {self.capacity} x {self.width}")
        size = int(state["size"])
        self.data[:size].copy_(state["data"])
        self.pos, self.size = int(state["pos"]), size
        self.size_t.fill_(size)
