"""The device layer: the only place that decides where tensors live, plus seeding, conversions (to_host: many
tensors read in one transfer) and CUDA graphs (GraphedStep and the cuda_graphs rule)."""
from __future__ import annotations

import ctypes
import random
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map "auto" | "cpu" | "cuda" | "cuda:N" | torch.device to a torch.device that exists.

    Asking for CUDA without a GPU, or for an index that does not exist, raises ValueError saying what exists.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise ValueError(f"device must be a string or torch.device, got {type(device).__name__}")
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {spec!r} requested but CUDA is not available here; available: cpu")
        index = 0
        if spec.startswith("cuda:"):
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise ValueError(f"malformed device {spec!r}; expected cuda:N with N an integer") from None
        if not 0 <= index < n:
            raise ValueError(
                f"device {spec!r} does not exist; available: cpu, "
                + ", ".join(f"cuda:{i}" for i in range(n))
            )
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


# device="auto" sends on-policy MLP work to the GPU only from this many transitions per update: below it a small
# MLP's kernels are launch-bound and every env step pays a host<->device copy, so the CPU is as fast or faster
# (measured on an H200 machine, one run at a time: docs/guide.md, "Devices"; with several runs sharing a machine
# the CPU side scales with its cores, so the threshold errs towards the CPU).
AUTO_GPU_MIN_BATCH = 65_536


def auto_device(algo: str, image_obs: bool, batch_size: int, env_on_gpu: bool = False,
                cuda_available: bool | None = None) -> tuple[torch.device, str]:
    """The device that is fastest for the work, and why, from simple facts about it (docs/guide.md, "Devices"):
    the GPU for GPU-native envs, image observations (convolutions), DDPG (its updates run as CUDA graphs: 18-26x
    the CPU's steps/s) and first-order on-policy agents with batches of >= AUTO_GPU_MIN_BATCH transitions; the
    CPU for MLP policies on CPU-stepped envs with smaller batches, for TRPO (its conjugate-gradient and
    line-search steps are many small ops: the CPU was as fast or faster up to 131,072 transitions per update),
    and whenever there is no GPU."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if not cuda:
        return torch.device("cpu"), "no CUDA GPU here"
    gpu = torch.device("cuda", 0)
    if env_on_gpu:
        return gpu, "the env steps on the GPU"
    if image_obs:
        return gpu, "image observations (convolutions run faster on the GPU)"
    if algo == "ddpg":
        return gpu, "DDPG's updates run as CUDA graphs"
    if algo == "trpo":
        return torch.device("cpu"), "TRPO with an MLP on CPU-stepped envs: its many small update ops are faster there"
    if batch_size >= AUTO_GPU_MIN_BATCH:
        return gpu, f"large batches ({batch_size:,} transitions per update >= {AUTO_GPU_MIN_BATCH:,})"
    return torch.device("cpu"), (f"an MLP on CPU-stepped envs with {batch_size:,} transitions per update "
                                 f"(< {AUTO_GPU_MIN_BATCH:,}): the CPU is faster")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Global RNG states, as plain tensors and Python values (safe under weights_only loading)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_from_plain(state["numpy"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _numpy_state_to_plain(s: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = s
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _python_state_to_plain(s: tuple) -> dict[str, Any]:
    version, internal, gauss = s
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(x) for x in d["internal"].tolist()), d["gauss"])


def configure_threads(n: int | None) -> None:
    """Small-MLP RL runs fastest on one intra-op thread (the work per op is tiny): torch's, and NumPy's BLAS
    (what environments compute with), which otherwise spins up a thread per core. With several runs sharing the
    cores (rlkit bench --jobs) such spinning threads slow every run down."""
    if n is not None and n > 0:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        set_numpy_blas_threads(n)


_BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
                 "openblas_set_num_threads")


def set_numpy_blas_threads(n: int) -> bool:
    """Set the thread count of the OpenBLAS that NumPy loaded (NumPy's wheels bundle one; found in the process's
    memory map on Linux). Returns False where that is not possible (another BLAS or OS): NumPy keeps its default."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return False
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            if hasattr(lib, name):
                getattr(lib, name)(int(n))
                return True
    return False


def capture_cuda_graph(fn: Any, warmup: int = 3) -> tuple["torch.cuda.CUDAGraph", Any]:
    """Capture one call of `fn()` (no arguments; it reads and writes tensors that stay put) as a CUDA graph.

    `fn` runs `warmup` times eagerly on a side stream first (lazy state such as Adam's moments is created there,
    as the PyTorch CUDA-graph recipe asks), then once under capture. The CUDA generator's state is put back
    afterwards, so the first replay draws the random numbers an eager call would have drawn at that point
    (replays advance the generator's philox offset like eager calls do). Undoing the warm-up's effects on other
    state (parameters, optimiser moments) is the caller's job. Returns (graph, whatever fn returned: tensors
    that every replay overwrites in place).
    """
    rng = torch.cuda.get_rng_state()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    torch.cuda.synchronize()
    torch.cuda.set_rng_state(rng)
    return graph, out


CUDA_GRAPHS_CHOICES = (True, False, "auto")


def resolve_cuda_graphs(setting: bool | str, device: torch.device, env_on_device: bool, obstacle: str | None = None,
                        who: str = "") -> tuple[bool, str]:
    """Whether an on-policy agent's learn() replays its rollout and its update as CUDA graphs, and why.

    "auto" (the agents' default) and True mean yes on a CUDA device whose env steps there (the torch env backend:
    only then is the whole rollout device work) unless `obstacle` names a reason against it (gSDE redraws its
    noise outside the rollout). True that cannot be honoured warns (RuntimeWarning) and runs eagerly; "auto"
    falls back silently. Returns (on, reason)."""
    if setting is False:
        return False, "cuda_graphs=False"
    if device.type != "cuda":
        problem = f"the device is {device}, not a CUDA GPU"
    elif not env_on_device:
        problem = "the env steps on the host (only the torch env backend keeps the rollout on the device)"
    else:
        problem = obstacle
    if problem is None:
        return True, "a CUDA device with the torch env backend"
    if setting is True:
        warnings.warn(f"rlkit: {who + ': ' if who else ''}cuda_graphs=True, but {problem}; training runs eagerly",
                      RuntimeWarning, stacklevel=3)
    return False, problem


class GraphedStep:
    """A no-argument step of a training loop (a rollout, an update), run eagerly for its first `warmup` calls and
    from then on replayed as ONE CUDA graph, captured at call warmup + 1 (when `enabled`; else always eager).

    The eager calls are real iterations: they also create what the step creates lazily (optimiser moments,
    cuBLAS handles) before the capture, so nothing needs undoing afterwards. Only CUDA work is recorded: `fn`'s
    Python code runs once, at capture, so `fn` keeps all its state in tensors that it updates in place and takes
    the same Python branches on every call (host-side counters are advanced by the caller). Random numbers: the
    default CUDA generator and `generators` (e.g. a torch env's) are registered with the graph, so every replay
    draws what an eager call at that point would (the generators' offsets advance as in eager mode).

    Returns fn's result: under replay the same tensors every call, overwritten by the next replay. If capturing
    fails (an op that is not capturable), a RuntimeWarning names the step and the reason and fn runs eagerly
    from then on.
    """

    def __init__(self, fn: Callable[[], Any], enabled: bool, name: str, warmup: int = 2,
                 generators: Sequence[torch.Generator] = ()) -> None:
        self.fn, self.enabled, self.name, self.warmup = fn, bool(enabled), name, int(warmup)
        self.generators = [g for g in generators if g.device.type == "cuda"]
        self.graph: Any = None
        self.out: Any = None
        self.calls = 0

    def __call__(self) -> Any:
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if self.enabled and self.calls >= self.warmup:
            self.calls += 1
            return self._capture_and_replay()
        self.calls += 1
        if not self.enabled:
            return self.fn()
        with warnings.catch_warnings():  # the warm-up steps a capturable optimiser eagerly, as intended
            warnings.filterwarnings("ignore", message=".*capturable=True.*without CUDA graph capture")
            return self.fn()

    def _capture_and_replay(self) -> Any:
        states: list[torch.Tensor] = []
        stream = None
        try:
            states = [torch.cuda.get_rng_state()] + [g.get_state() for g in self.generators]
            stream = torch.cuda.current_stream()
            graph = torch.cuda.CUDAGraph()
            if hasattr(graph, "register_generator_state"):  # recent torch also registers generators on first use
                for g in self.generators:
                    graph.register_generator_state(g)
            with torch.cuda.graph(graph):
                out = self.fn()
        except Exception as e:  # noqa: BLE001 - any capture failure: say why, then run eagerly
            self.enabled = False
            if stream is not None:
                torch.cuda.set_stream(stream)  # a capture that failed in capture_end leaves its side stream current
                torch.cuda.synchronize()
            self._restore(states)
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            warnings.warn(f"rlkit: {self.name} runs eagerly: CUDA graph capture failed ({type(e).__name__}: "
                          f"{reason})", RuntimeWarning, stacklevel=3)
            return self.fn()
        self._restore(states)  # capture draws nothing; keep the generators exactly where eager calls would be
        self.graph, self.out = graph, out
        graph.replay()
        return out

    def _restore(self, states: list[torch.Tensor]) -> None:
        """Put the generators' host states back where they differ (a capture should not move them)."""
        if states:
            if not torch.equal(torch.cuda.get_rng_state(), states[0]):
                torch.cuda.set_rng_state(states[0])
            for g, s in zip(self.generators, states[1:]):
                if not torch.equal(g.get_state(), s):
                    g.set_state(s)


def to_host(tree: Any) -> Any:
    """A copy of a nested dict/list/tuple in which every tensor has been read to the host in ONE transfer per
    device (one synchronisation, not one per tensor): a 0-dim tensor becomes a Python bool, int or float (by its
    dtype), a larger one a NumPy array of its dtype. Everything else is returned as it is."""
    tensors: list[torch.Tensor] = []

    def collect(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            tensors.append(x.detach())
            return _Slot(len(tensors) - 1)
        if isinstance(x, dict):
            return {k: collect(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(collect(v) for v in x)
        return x

    skeleton = collect(tree)
    values: list[Any] = [None] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, idx in by_device.items():
        if device.type == "cpu":
            arrays = [tensors[i].numpy().copy() for i in idx]
        else:  # the raw bytes of every tensor in one copy: exact for every dtype (int64 sentinels included)
            for i in idx:
                if tensors[i].dtype == torch.bfloat16:  # NumPy has no bfloat16
                    tensors[i] = tensors[i].float()
            raw = torch.cat([tensors[i].reshape(-1).contiguous().view(torch.uint8) for i in idx]).cpu().numpy()
            arrays, start = [], 0
            for i in idx:
                t = tensors[i]
                dtype = torch.empty(0, dtype=t.dtype).numpy().dtype
                n = t.numel() * dtype.itemsize
                arrays.append(np.frombuffer(raw[start:start + n].tobytes(), dtype=dtype).reshape(tuple(t.shape)))
                start += n
        for i, a in zip(idx, arrays):
            values[i] = a.item() if a.ndim == 0 else a

    def fill(x: Any) -> Any:
        if isinstance(x, _Slot):
            return values[x.index]
        if isinstance(x, dict):
            return {k: fill(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(fill(v) for v in x)
        return x

    return fill(skeleton)


class _Slot:
    """Where to_host puts the host value of the tensor with this index."""

    def __init__(self, index: int) -> None:
        self.index = index


def record_copy(event: Any, device: torch.device | str) -> None:
    """Record `event` on the current stream of `device`, where a non-blocking copy to or from it was queued. A bare
    event.record() takes the current device's stream, which is not the copy's when `device` is another GPU (an
    agent on cuda:1): a wait on that event would not wait for the copy."""
    event.record(torch.cuda.current_stream(torch.device(device)))


class HostFetch:
    """A device tensor's values brought to the host without waiting for GPU work queued after them.

    fetch(t) queues a non-blocking copy of t into a pinned buffer and records an event; GPU work queued next (an
    update) then runs while get() waits for that copy alone and returns a NumPy copy of the values. A plain
    t.cpu() would wait for everything queued before it returns. On CPU, fetch() keeps a copy of t and get() is its
    numpy()."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._host: torch.Tensor | None = None
        self._event = torch.cuda.Event() if self._cuda else None

    @property
    def is_async(self) -> bool:
        """True where work queued between fetch() and get() runs on after get() returns (CUDA)."""
        return self._cuda

    def fetch(self, tensor: torch.Tensor) -> None:
        tensor = tensor.detach()
        if not self._cuda:
            self._host = tensor.clone()
            return
        if self._host is None or self._host.shape != tensor.shape or self._host.dtype != tensor.dtype:
            self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        self._host.copy_(tensor, non_blocking=True)
        record_copy(self._event, tensor.device)

    def get(self) -> np.ndarray:
        if self._host is None:
            raise RuntimeError("HostFetch.get() before fetch()")
        if not self._cuda:
            return self._host.cpu().numpy()
        self._event.synchronize()  # type: ignore[union-attr]
        return self._host.numpy().copy()  # the pinned buffer is refilled by the next fetch()


class HostStager:
    """Copy a host (NumPy) array into a fixed device tensor without blocking the host.

    On CUDA the array goes through a pinned buffer with a non-blocking copy (a copy from pageable memory would
    first wait for every kernel already queued, e.g. a replayed update); an event makes the next call wait until
    the pinned buffer is free again. On CPU the array is written straight into the output tensor. The output is
    the same tensor every call (a CUDA graph may read it), so use it before the next call.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.out = torch.zeros(shape, dtype=dtype, device=device)
        self._cuda = device.type == "cuda"
        self.host = torch.zeros(shape, dtype=dtype, pin_memory=True) if self._cuda else self.out
        self._host_np = self.host.numpy()
        self._event = torch.cuda.Event() if self._cuda else None

    def __call__(self, array: Any) -> torch.Tensor:
        if self._event is not None:
            self._event.synchronize()  # the previous copy out of the pinned buffer has finished
        self._host_np[...] = np.asarray(array).reshape(self._host_np.shape)
        if self._event is not None:
            self.out.copy_(self.host, non_blocking=True)
            record_copy(self._event, self.device)
        return self.out
