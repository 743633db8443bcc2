"""Preallocated storage on the training device.

RolloutBuffer: one on-policy rollout of T steps from N envs ([T, N, ...] tensors).
ReplayBuffer: see below (ring storage for off-policy agents).

An observation batch is one tensor, or, for a Dict observation space, a dict {key: tensor} (keys sorted); image
observations are stored as uint8 (a quarter of float32's bytes; the encoder scales them on the device). The obs_*
functions below apply an operation to either form, so agents index, concatenate and select observations the same
way for both; for a single tensor each is the plain torch operation.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch

from rlkit.core.device import HostStager, record_copy

Obs = Union[torch.Tensor, dict[str, torch.Tensor]]
ObsShape = Union[Sequence[int], Mapping[str, Sequence[int]]]
ObsDtype = Union[torch.dtype, Mapping[str, torch.dtype]]


def obs_map(fn: Callable[..., Any], *obs: Any) -> Any:
    """fn applied to one observation batch (or several of the same structure), key by key for a dict."""
    if isinstance(obs[0], Mapping):
        return {k: fn(*(o[k] for o in obs)) for k in obs[0]}
    return fn(*obs)


def obs_cat(batches: Sequence[Obs]) -> Obs:
    """Concatenate observation batches along the first dimension."""
    return obs_map(lambda *xs: torch.cat(xs), *batches)


def obs_index(obs: Obs, idx: Any) -> Obs:
    """obs[idx] (an index tensor, a slice) of every tensor."""
    return obs_map(lambda x: x[idx], obs)


def obs_where(mask: torch.Tensor, a: Obs, b: Obs) -> Obs:
    """a where mask else b; mask has the leading dimensions of the observations (e.g. [T, N])."""
    def where(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(*mask.shape, *([1] * (x.dim() - mask.dim()))), x, y)
    return obs_map(where, a, b)


def obs_len(obs: Any) -> int:
    """The batch size (first dimension) of an observation batch (tensors or NumPy arrays)."""
    first = next(iter(obs.values())) if isinstance(obs, Mapping) else obs
    return int(first.shape[0])


def obs_to_device(obs: Any, device: torch.device) -> Obs:
    """NumPy observation batch(es) -> tensors on `device` in the dtype they have (uint8 stays uint8)."""
    return obs_map(lambda x: torch.as_tensor(x).to(device), obs)


def obs_stager(obs_shape: ObsShape, obs_dtype: ObsDtype, n: int, device: torch.device) -> Callable[[Any], Obs]:
    """A HostStager for a batch of n observations (one per key of a dict): NumPy in, the same device tensors out."""
    if isinstance(obs_shape, Mapping):
        stagers = {k: HostStager((n, *obs_shape[k]), device, obs_dtype[k]) for k in obs_shape}  # type: ignore[index]
        return lambda obs: {k: s(obs[k]) for k, s in stagers.items()}
    return HostStager((n, *obs_shape), device, obs_dtype)  # type: ignore[arg-type]


def _obs_zeros(lead: tuple[int, ...], shape: ObsShape, dtype: ObsDtype, device: torch.device) -> Obs:
    if isinstance(shape, Mapping):
        return {k: torch.zeros((*lead, *shape[k]), dtype=dtype[k], device=device)  # type: ignore[index]
                for k in shape}
    return torch.zeros((*lead, *shape), dtype=dtype, device=device)  # type: ignore[arg-type]


def obs_nbytes(shape: ObsShape, dtype: ObsDtype) -> int:
    """Bytes of one observation stored in this shape and dtype (summed over the keys of a dict)."""
    def numel(s: Sequence[int]) -> int:
        n = 1
        for d in s:
            n *= int(d)
        return n

    if isinstance(shape, Mapping):
        return sum(numel(shape[k]) * _itemsize(dtype[k]) for k in shape)  # type: ignore[index]
    return numel(shape) * _itemsize(dtype)  # type: ignore[arg-type]


def _obs_empty(capacity: int, shape: ObsShape, dtype: ObsDtype, device: torch.device) -> Obs:
    if isinstance(shape, Mapping):
        return {k: torch.empty((capacity, *shape[k]), dtype=dtype[k], device=device)  # type: ignore[index]
                for k in shape}
    return torch.empty((capacity, *shape), dtype=dtype, device=device)  # type: ignore[arg-type]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class Rollout(NamedTuple):
    """A RolloutBuffer's tensors as a plain tuple (RolloutBuffer.rollout()), so a loss written against it also runs
    under torch.func.vmap with a leading seed dimension (rlkit.core.seeds). Shapes as in RolloutBuffer."""
    obs: Obs
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: Obs
    last_obs: Obs

    @staticmethod
    def flat(x: Any) -> Any:
        """[T, N, ...] -> [T * N, ...] (every tensor of a dict observation)."""
        return obs_map(lambda t: t.reshape(-1, *t.shape[2:]), x)


class RolloutBuffer:
    """T x N transitions, allocated once on the device and overwritten by every rollout.

    Shapes (observations: one tensor, or a dict {key: tensor} for a Dict space, each in its storage dtype):
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
        obs_shape: ObsShape,
        action_shape: Sequence[int],
        action_dtype: torch.dtype,
        device: torch.device,
        obs_dtype: ObsDtype = torch.float32,
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
        self.obs = _obs_zeros((T, N), obs_shape, obs_dtype, device)
        self.actions = torch.zeros((T, N, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.final_obs = _obs_zeros((T, N), obs_shape, obs_dtype, device)
        self.last_obs = _obs_zeros((N,), obs_shape, obs_dtype, device)

    def flat(self, x: Any) -> Any:
        """[T, N, ...] -> [T * N, ...] (every tensor of a dict observation)."""
        return obs_map(lambda t: t.reshape(self.n_steps * self.n_envs, *t.shape[2:]), x)

    def rollout(self) -> Rollout:
        """The tensors as a Rollout (no copies)."""
        return Rollout(self.obs, self.actions, self.rewards, self.terminated, self.truncated, self.final_obs,
                       self.last_obs)


def rollout_buffer_nbytes(n_steps: int, n_envs: int, obs_shape: ObsShape, action_shape: Sequence[int],
                          action_dtype: torch.dtype, obs_dtype: ObsDtype = torch.float32) -> int:
    """Bytes a RolloutBuffer of these sizes allocates (Python ints: no overflow for absurd sizes); observations
    count in their storage dtype (uint8 images: one byte per value)."""
    T, N, o = int(n_steps), int(n_envs), obs_nbytes(obs_shape, obs_dtype)
    per_step = (2 * o + obs_nbytes(action_shape, action_dtype)
                + 4 + 2 * 1)  # obs + final_obs, actions, rewards (float32), two bool flags
    return T * N * per_step + N * o


# ---- ReplayBuffer (off-policy agents) -----------------------------------------------------------------------
import os  # noqa: E402  (kept next to the class that needs it; RolloutBuffer above does not)
from typing import NamedTuple  # noqa: E402

GiB = 1024**3


class ReplayBatch(NamedTuple):
    """A sampled minibatch, all on the buffer's device. Shapes: obs, next_obs [B, *obs_shape] (a dict of those for
    a Dict space, each in its storage dtype); actions [B, *action_shape]; rewards, terminated [B] (terminated as
    float 0/1)."""
    obs: Obs
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: Obs
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
    and sample() is one gather. Observations that are not one float32 tensor (uint8 images, Dict observations)
    are kept apart in their own storage dtype instead: obs/next_obs tensors [capacity, *shape] per key (uint8
    images take a quarter of float32's memory), and the rows hold [action | reward | terminated].
    `next_obs` must be the TRUE next observation (the final one where an episode
    ended, not the reset one); `terminated` is kept alone because a truncated transition still bootstraps.
    The whole capacity is allocated and written once up front, so a buffer that does not fit fails here,
    naming the GiB, and never in the middle of training.

    `size_t` mirrors the fill level on the device: sample() draws indices as floor(U[0,1) * size_t), so a
    CUDA graph captured with a partly filled buffer stays valid as it fills (no host value is baked in).
    """

    def __init__(self, capacity: int, obs_shape: ObsShape, action_shape: Sequence[int],
                 device: torch.device, check_memory: bool = True, obs_dtype: ObsDtype = torch.float32) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"ReplayBuffer capacity must be a positive integer, got {capacity!r}")
        self.capacity, self.device = capacity, device
        self.action_shape = tuple(action_shape)
        # observations kept apart from the float32 rows: uint8 images, dicts
        self.split_obs = isinstance(obs_shape, Mapping) or obs_dtype != torch.float32
        a = int(np.prod(self.action_shape))
        if self.split_obs:
            self.obs_shape: Any = ({k: tuple(v) for k, v in obs_shape.items()} if isinstance(obs_shape, Mapping)
                                   else tuple(obs_shape))
            self.width = a + 2
            self._cols: dict[str, Any] = {"actions": slice(0, a), "rewards": a, "terminated": a + 1}
            obs_bytes = 2 * obs_nbytes(self.obs_shape, obs_dtype)
        else:
            self.obs_shape = tuple(obs_shape)  # type: ignore[arg-type]
            o = int(np.prod(self.obs_shape))
            self.width = 2 * o + a + 2
            self._cols = {"obs": slice(0, o), "actions": slice(o, o + a), "rewards": o + a,
                          "next_obs": slice(o + a + 1, 2 * o + a + 1), "terminated": 2 * o + a + 1}
            obs_bytes = 0
        per_transition = self.width * 4 + obs_bytes
        self.nbytes = capacity * per_transition
        if check_memory:
            free = free_memory_bytes(device)
            if self.nbytes > free:
                raise MemoryError(
                    f"ReplayBuffer of capacity {capacity:,} needs {self.nbytes / GiB:.2f} GiB on {device} "
                    f"({per_transition} bytes per transition) but only {free / GiB:.2f} GiB is free; "
                    "lower buffer_size")
        # empty + zero_ touches every page now (zeros() may get lazily-committed pages from the OS).
        self.data = torch.empty((capacity, self.width), dtype=torch.float32, device=device).zero_()
        if self.split_obs:
            self.obs_data: Any = obs_map(lambda t: t.zero_(), _obs_empty(capacity, self.obs_shape, obs_dtype, device))
            self.next_obs_data: Any = obs_map(lambda t: t.zero_(),
                                              _obs_empty(capacity, self.obs_shape, obs_dtype, device))
        self.size_t = torch.zeros((), dtype=torch.float64, device=device)
        self.pos = 0
        self.size = 0
        self._pinned: torch.Tensor | None = None
        self._event: Any = None
        self._stagers: dict[str, HostStager] = {}  # split layout: one per observation key, and the rows

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Any, actions: Any, rewards: Any, next_obs: Any, terminated: Any) -> None:
        """Store a batch of N transitions (one per env; NumPy arrays or tensors with leading dim N).
        Inputs are copied, so stored values never carry an autograd graph."""
        if self.split_obs:
            self._add_split(obs, actions, rewards, next_obs, terminated)
            return
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
            record_copy(self._event, self.device)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.size_t.fill_(self.size)

    def _add_split(self, obs: Any, actions: Any, rewards: Any, next_obs: Any, terminated: Any) -> None:
        """add() for observations kept apart: each observation tensor copied in its own dtype (NumPy input goes
        through a HostStager: pinned and non-blocking on CUDA, so an update already queued keeps running), then
        [action | reward | terminated] as float32 rows."""
        n = obs_len(obs)
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions at once to a ReplayBuffer of capacity {self.capacity}")
        first = min(n, self.capacity - self.pos)  # up to two slice copies: before and after the wrap

        def write(store: torch.Tensor, x: Any, name: str) -> None:
            if (x.numel() if isinstance(x, torch.Tensor) else np.size(x)) != n * store[0].numel():
                raise ValueError(f"{name} batch of shape {tuple(np.shape(x))} does not fit the buffer's "
                                 f"{n} x {tuple(store.shape[1:])}")
            if isinstance(x, torch.Tensor):
                t = x.detach().reshape(n, *store.shape[1:]).to(self.device, store.dtype)
            else:
                stager = self._stagers.get(name)
                if stager is None or stager.out.shape[0] != n:
                    stager = self._stagers[name] = HostStager((n, *store.shape[1:]), self.device, store.dtype)
                t = stager(x)
            store[self.pos:self.pos + first].copy_(t[:first])
            if first < n:
                store[:n - first].copy_(t[first:])

        for prefix, store, x in (("obs", self.obs_data, obs), ("next_obs", self.next_obs_data, next_obs)):
            if isinstance(store, dict):
                for k in store:
                    write(store[k], x[k], f"{prefix}[{k!r}]")
            else:
                write(store, x, prefix)
        if isinstance(actions, torch.Tensor):
            rows: Any = torch.cat([torch.as_tensor(v).detach().reshape(n, -1).float().to(self.device)
                                   for v in (actions, rewards, terminated)], dim=1)
        else:
            rows = np.concatenate([np.asarray(v, dtype=np.float32).reshape(n, -1)
                                   for v in (actions, rewards, terminated)], axis=1)
        write(self.data, rows, "rows")
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
        return _slot_indices(u, self.size_t)

    def sample(self, batch_size: int) -> ReplayBatch:
        return self.gather(self.sample_indices(batch_size))

    def gather(self, idx: torch.Tensor) -> ReplayBatch:
        rows = self.data.index_select(0, idx)
        if self.split_obs:
            c, b = self._cols, idx.shape[0]

            def take(store: torch.Tensor) -> torch.Tensor:
                return store.index_select(0, idx)
            return ReplayBatch(obs_map(take, self.obs_data), rows[:, c["actions"]].reshape(b, *self.action_shape),
                               rows[:, c["rewards"]], obs_map(take, self.next_obs_data), rows[:, c["terminated"]])
        return self.split_rows(rows)

    def split_rows(self, rows: torch.Tensor) -> ReplayBatch:
        """The fields of stored rows [..., width] of the one-row layout, each with the rows' leading shape."""
        if self.split_obs:
            raise ValueError("split_rows reads the one-row layout; this buffer keeps its observations apart")
        c, lead = self._cols, rows.shape[:-1]
        return ReplayBatch(rows[..., c["obs"]].reshape(*lead, *self.obs_shape),
                           rows[..., c["actions"]].reshape(*lead, *self.action_shape),
                           rows[..., c["rewards"]], rows[..., c["next_obs"]].reshape(*lead, *self.obs_shape),
                           rows[..., c["terminated"]])

    def state_dict(self) -> dict[str, Any]:
        # copies, also on the CPU: torch.save writes a view's whole storage, i.e. the full capacity (and, for a
        # buffer stacked by StackedReplayBuffers, every seed's buffer), not the `size` rows kept
        state = {"data": self.data[:self.size].to("cpu", copy=True), "pos": self.pos, "size": self.size,
                 "capacity": self.capacity, "width": self.width}
        if self.split_obs:
            state["obs"] = obs_map(lambda t: t[:self.size].to("cpu", copy=True), self.obs_data)
            state["next_obs"] = obs_map(lambda t: t[:self.size].to("cpu", copy=True), self.next_obs_data)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity or int(state["width"]) != self.width:
            raise ValueError(f"saved ReplayBuffer has capacity {state['capacity']} x width {state['width']}, "
                             f"this one {self.capacity} x {self.width}")
        size = int(state["size"])
        self.data[:size].copy_(state["data"])
        if self.split_obs:
            obs_map(lambda t, saved: t[:size].copy_(saved), self.obs_data, state["obs"])
            obs_map(lambda t, saved: t[:size].copy_(saved), self.next_obs_data, state["next_obs"])
        self.pos, self.size = int(state["pos"]), size
        self.size_t.fill_(size)


def _slot_indices(uniform: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Indices into the filled slots from float64 U[0, 1) draws: floor(u * size), which is below size for any size
    below 2**52 (size: a buffer's float64 fill level, or a column of K of them)."""
    return (uniform * size).long()


def _stack_rows_(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One [K, ...] tensor whose row k is tensors[k]'s storage: tensors already laid out so (by an earlier call) are
    returned as that stack, untouched; otherwise a new stack is allocated and each tensor in turn is copied into
    its row and re-pointed to it (`.data`: the objects stay the same), so at most one old tensor is alive beside
    the stack (a replay buffer's storage is large)."""
    t0, k = tensors[0], len(tensors)
    n, storage = t0.numel(), t0.untyped_storage()
    if all(t.shape == t0.shape and t.dtype == t0.dtype and t.is_contiguous()
           and t.untyped_storage().data_ptr() == storage.data_ptr()
           and t.storage_offset() == t0.storage_offset() + i * n for i, t in enumerate(tensors)):
        return torch.empty(0, dtype=t0.dtype, device=t0.device).set_(storage, t0.storage_offset(), (k, *t0.shape))
    stacked = torch.empty((k, *t0.shape), dtype=t0.dtype, device=t0.device)
    with torch.no_grad():
        for i, t in enumerate(tensors):
            stacked[i].copy_(t)
            t.data = stacked[i]
    return stacked


class StackedReplayBuffers:
    """K ReplayBuffers of one layout (one per seed of a batch in lockstep, rlkit.core.seeds) written as one.

    Every buffer's storage becomes a view of its row of ONE [K, capacity, width] tensor, and its fill level
    `size_t` a view of one [K] tensor, so add() stores a vector step of all K buffers with one host array and one
    copy per contiguous slice (on CUDA one pinned, non-blocking host-to-device transfer instead of K), and one fill
    of the fill levels (until they are full). The rows are exactly what each buffer's own add() writes; every buffer
    stays whole (its own sample(), gather(), state_dict(), and later add() calls of its own, which write its row).
    The buffers must have the one-row layout (float32 observations, not kept apart), equal capacity, width and
    device, and the same fill level and write position (they are filled in lockstep)."""

    def __init__(self, buffers: Sequence[ReplayBuffer]) -> None:
        b0 = buffers[0]
        for b in buffers:
            if b.split_obs:
                raise ValueError("StackedReplayBuffers needs the one-row layout (float32 observations); these keep "
                                 "their observations apart (images or Dict observations)")
            if (b.capacity, b.width, b.device, b.pos, b.size) != (b0.capacity, b0.width, b0.device, b0.pos, b0.size):
                raise ValueError("StackedReplayBuffers needs buffers of equal capacity, width and device at the same "
                                 f"fill level: ({b0.capacity}, {b0.width}, {b0.device}, pos {b0.pos}, size {b0.size}) "
                                 f"and ({b.capacity}, {b.width}, {b.device}, pos {b.pos}, size {b.size})")
        self.buffers = list(buffers)
        self.data = _stack_rows_([b.data for b in buffers])
        self.size_t = _stack_rows_([b.size_t for b in buffers])
        self.capacity, self.width, self.device = b0.capacity, b0.width, b0.device
        self._cols = b0._cols
        self._host: np.ndarray | None = None
        self._host_t: torch.Tensor | None = None  # CPU: the tensor over `_host` (made once, not at every add)
        self._pinned: torch.Tensor | None = None
        self._dev: torch.Tensor | None = None  # CUDA: the device copy of the pinned rows
        self._event: Any = None

    def _host_rows(self, n: int) -> np.ndarray:
        """A host array [K, n, width]: pinned on CUDA (wait until the previous copy out of it has finished)."""
        shape = (len(self.buffers), n, self.width)
        if self.device.type != "cuda":
            if self._host is None or self._host.shape != shape:
                self._host = np.empty(shape, dtype=np.float32)
                self._host_t = torch.from_numpy(self._host)
            return self._host
        if self._pinned is None or tuple(self._pinned.shape) != shape:
            self._pinned = torch.empty(shape, dtype=torch.float32, pin_memory=True)
            self._event = torch.cuda.Event()
        self._event.synchronize()
        return self._pinned.numpy()

    def add(self, obs: Sequence[Any], actions: Any, rewards: Sequence[Any], next_obs: Sequence[Any],
            terminated: Sequence[Any]) -> None:
        """Store N transitions in each of the K buffers: obs[k], rewards[k], next_obs[k], terminated[k] (NumPy
        arrays, leading dim N; each argument a sequence of K of them or one [K, N, ...] array) and actions[k] go to
        buffer k, as buffers[k].add() would store them."""
        pos, size = self.buffers[0].pos, self.buffers[0].size
        if any(b.pos != pos or b.size != size for b in self.buffers):  # a buffer was written alone since the stacking
            raise ValueError("the stacked ReplayBuffers are no longer at the same write position and fill level")
        k, n, c = len(self.buffers), int(np.shape(obs[0])[0]), self._cols
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions at once to a ReplayBuffer of capacity {self.capacity}")
        rows = self._host_rows(n)
        rows[:, :, c["actions"]] = np.asarray(actions).reshape(k, n, -1)
        rows[:, :, c["obs"]] = np.asarray(obs).reshape(k, n, -1)  # one stack per field: fewer NumPy calls than K
        rows[:, :, c["rewards"]] = np.asarray(rewards).reshape(k, n)
        rows[:, :, c["next_obs"]] = np.asarray(next_obs).reshape(k, n, -1)
        rows[:, :, c["terminated"]] = np.asarray(terminated).reshape(k, n)
        if self._pinned is None:
            src = self._host_t
        else:  # one whole (contiguous) pinned transfer, then device copies: never a host-side slice of pinned memory
            if self._dev is None or self._dev.shape != self._pinned.shape:
                self._dev = torch.empty_like(self._pinned, device=self.device)
            src = self._dev.copy_(self._pinned, non_blocking=True)
            record_copy(self._event, self.device)
        first = min(n, self.capacity - pos)  # up to two slice copies: before and after the wrap
        if first == n:
            self.data[:, pos:pos + n].copy_(src)
        else:
            self.data[:, pos:].copy_(src[:, :first])
            self.data[:, :n - first].copy_(src[:, first:])
        pos_after, size_after = (pos + n) % self.capacity, min(size + n, self.capacity)
        for b in self.buffers:
            b.pos, b.size = pos_after, size_after
        if size_after != size:  # (a full buffer's fill level stays as it is)
            self.size_t.fill_(size_after)

    def sample(self, uniform: torch.Tensor) -> ReplayBatch:
        """Every buffer's gather(sample_indices(B, uniform[k])) at once, from the float64 U[0, 1) draws `uniform`
        [K, B]: the same indices (floor(u * size)) and rows, as one gather; every field [K, B, ...]."""
        size = self.buffers[0].size
        if size == 0:
            raise ValueError("cannot sample from an empty ReplayBuffer")
        if any(b.size != size for b in self.buffers):  # a buffer was written alone since the stacking
            raise ValueError("the stacked ReplayBuffers are no longer at the same fill level")
        if uniform.dtype != torch.float64:
            raise TypeError(f"StackedReplayBuffers.sample takes float64 draws (as sample_indices), got {uniform.dtype}")
        idx = _slot_indices(uniform, self.size_t[:, None])  # each buffer's sample_indices(B, uniform[k])
        rows = torch.gather(self.data, 1, idx[..., None].expand(*idx.shape, self.width))
        return self.buffers[0].split_rows(rows)
