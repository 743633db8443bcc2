"""`rlkit bench`: a grid of algorithms x environments x seeds, each run a separate `rlkit train` process in
OUT/<env_id>/<algo>/seed<S>/, on local processes or (with --ray) as Ray tasks.

Re-running the same command is idempotent: a finished run (result.json) is skipped, an interrupted one resumes
from its newest valid checkpoint (rlkit train --resume truncates progress.csv and TensorBoard after that step, so no
row or event step appears twice), a run whose lock is live is reported as running elsewhere, and a run that died
before its first checkpoint is moved aside to OUT/_discarded/ and started again. OUT/manifest.json records every
run (status, command, config, seed, wall time, versions, git revision), rewritten atomically as runs start and end.

The local and the Ray runner share everything but `submit()` (how one run is launched).
Figures and tables from the run directories: rlkit/plotting.py (`rlkit plot`).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, NamedTuple

MANIFEST = "manifest.json"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _seed_item(item: str) -> list[int]:
    """'7' -> [7]; '0-3' -> [0, 1, 2, 3] (an inclusive range)."""
    lo, sep, hi = item.partition("-")
    if sep and lo.strip() and hi.strip():
        a, b = int(lo), int(hi)
        if b < a:
            raise ValueError
        return list(range(a, b + 1))
    return [int(item)]


def parse_seeds(text: str) -> list[int]:
    """'5' -> [0..4]; '0,3,7' -> [0, 3, 7]; '0-3' or '0-1,5' -> inclusive ranges; '0,' -> [0] (a trailing comma
    makes a single seed a list)."""
    try:
        if "," not in text and "-" not in text.strip()[1:]:
            n = int(text)
            seeds = list(range(n))
        else:
            seeds = [s for item in _split(text) for s in _seed_item(item)]
    except ValueError:
        raise ValueError(f"--seeds must be a count, a comma-separated list of integers or ranges like 0-7, got "
                         f"{text!r}") from None
    if "," not in text and "-" not in text.strip()[1:] and n < 1:
        raise ValueError(f"--seeds {text} is a count of seeds and must be >= 1 (to run only seed 0, write "
                         f"--seeds 0, ; for seeds 0..4, --seeds 5)")
    if not seeds:
        raise ValueError(f"--seeds {text!r} names no seed")
    bad = [x for x in seeds if x < 0 or x > 2**32 - 1]
    if bad:
        raise ValueError(f"--seeds must be in [0, {2**32 - 1}], got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} repeats a seed (two runs would share one run directory)")
    return seeds


class Run(NamedTuple):
    algo: str
    env_id: str
    seed: int
    run_dir: Path

    @property
    def key(self) -> str:
        return f"{self.env_id}/{self.algo}/seed{self.seed}"


class Slot(NamedTuple):
    """Where one run executes: its --device and (with --pin-cores) the CPU cores it may use."""
    device: str
    cores: tuple[int, ...] = ()


def plan_grid(algos: list[str], envs: list[str], seeds: list[int], out: Path) -> tuple[list[Run], list[dict]]:
    """Every supported (algo, env, seed), and the unsupported (algo, env) pairs with the reason. The action space
    of each env comes from one probe env built here, in the parent, before any run starts."""
    import gymnasium as gym

    from rlkit.agents import get_agent_class

    kinds = {}
    for env_id in envs:
        if env_id not in gym.registry:
            raise ValueError(f"--envs names an unknown Gymnasium environment id {env_id!r}")
        probe = gym.make(env_id)
        kinds[env_id] = type(probe.action_space).__name__
        probe.close()
    runs, skipped = [], []
    for algo, env_id in itertools.product(algos, envs):
        supported = get_agent_class(algo).supported_actions
        if kinds[env_id] not in supported:
            skipped.append({"algo": algo, "env_id": env_id,
                            "reason": f"{algo} supports {'/'.join(supported)} actions, {env_id} has {kinds[env_id]}"})
            continue
        runs += [Run(algo, env_id, s, out / env_id / algo / f"seed{s}") for s in seeds]
    return runs, skipped


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """final.pt, else the step_N.pt with the largest N, among those that load and verify (checksum, schema)."""
    from rlkit.core.checkpoint import load_checkpoint

    ck = run_dir / "checkpoints"
    steps = sorted(((int(x.stem[5:]), x) for x in ck.glob("step_*.pt") if x.stem[5:].isdigit()), reverse=True)
    for path in [ck / "final.pt"] * (ck / "final.pt").is_file() + [p for _, p in steps]:
        try:
            load_checkpoint(path)
            return path
        except (ValueError, OSError):  # a damaged file: an older checkpoint still resumes the run
            continue
    return None


def run_state(run: Run, steps: int | None) -> tuple[str, Path | None, str]:
    """(state, checkpoint to resume from, note). States: new, finished, running (a live lock: elsewhere),
    resume (a checkpoint to continue from), stale (files but nothing to resume: started again)."""
    from rlkit.core.rundir import live_lock_holder, previous_run_files

    if not previous_run_files(run.run_dir):
        return "new", None, ""
    holder = live_lock_holder(run.run_dir)
    if holder is not None:
        return "running", None, holder
    result = run.run_dir / "result.json"
    if result.is_file():
        done = json.loads(result.read_text()).get("steps")
        if steps is None or done is None or int(done) >= steps:
            return "finished", None, ""
        ckpt = newest_valid_checkpoint(run.run_dir)  # finished with fewer steps than asked now: extend it
        return ("resume", ckpt, f"extending from {done} steps") if ckpt else ("stale", None, "")
    ckpt = newest_valid_checkpoint(run.run_dir)
    return ("resume", ckpt, "") if ckpt is not None else ("stale", None, "")


def train_command(run: Run, args: argparse.Namespace, device: str, resume: Path | None) -> list[str]:
    """The `rlkit train` command of one run, starting with "python" (each launcher runs it with its own
    interpreter, so a manifest made locally and one made on a cluster read the same)."""
    cmd = ["python", "-m", "rlkit.cli", "train", run.algo, run.env_id, "--seed", str(run.seed), "--device", device,
           "--run-dir", str(run.run_dir), *_common_flags(run, args, resume is not None)]
    if resume is not None:
        cmd += ["--resume", str(resume)]
    return cmd


def batch_command(runs: list[Run], args: argparse.Namespace, device: str, resume: bool) -> list[str]:
    """The one `rlkit train` command that trains several seeds of one (algo, env) in one process (--seeds-per-process):
    each seed writes OUT/<env_id>/<algo>/seed<S>/ as its own command would, and resumes from there."""
    run = runs[0]
    template = str(run.run_dir.parent / "seed{seed}")
    cmd = ["python", "-m", "rlkit.cli", "train", run.algo, run.env_id, "--seeds", ",".join(str(r.seed) for r in runs),
           "--seeds-per-process", str(len(runs)), "--device", device, "--run-dir", template,
           *_common_flags(run, args, resume)]
    if resume:
        cmd += ["--resume", template]  # each seed from the newest valid checkpoint of its own run directory
    return cmd


def _common_flags(run: Run, args: argparse.Namespace, resume: bool) -> list[str]:
    cmd = ["--no-progress", "--eval-episodes", str(args.eval_episodes)]
    if args.eval_freq:
        cmd += ["--eval-freq", str(args.eval_freq)]
    if args.steps:
        cmd += ["--steps", str(args.steps)]
    for s in args.set:
        cmd += ["--set", s]
    if not resume and not any(s.startswith("checkpoint_interval=") for s in args.set):
        # Periodic checkpoints (10 per run) so a run killed outright (SIGKILL, a lost node) loses at most a tenth;
        # the agents' default is none. A resumed run keeps the interval its checkpoint records.
        from rlkit.presets import preset_for

        preset = preset_for(run.algo, run.env_id) or {}
        steps = args.steps or int(preset.get("steps", 100_000))
        cmd += ["--set", f"checkpoint_interval={max(1, steps // 10)}"]
    return cmd


def group_runs(todo: list[tuple[Run, Path | None]], per_process: int) -> list[tuple[list[Run], list[Path | None]]]:
    """The runs to launch, in chunks of up to `per_process` that train in one process: the same algorithm and env,
    starting from the same step (new runs together, resumed ones by their checkpoint's step), in grid order."""
    if per_process == 1:
        return [([run], [ckpt]) for run, ckpt in todo]
    from rlkit.core.checkpoint import load_checkpoint

    groups: dict[tuple[str, str, int], list[tuple[Run, Path | None]]] = {}
    for run, ckpt in todo:
        step = 0 if ckpt is None else int(load_checkpoint(ckpt)["num_timesteps"])
        groups.setdefault((run.algo, run.env_id, step), []).append((run, ckpt))
    chunks = []
    for items in groups.values():
        for i in range(0, len(items), per_process):
            part = items[i:i + per_process]
            chunks.append(([r for r, _ in part], [c for _, c in part]))
    return chunks


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import rlkit

    out = {"python": sys.version.split()[0], "rlkit": rlkit.__version__}
    for name in ("torch", "gymnasium", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _git_revision() -> str | None:
    """The commit of the rlkit source tree that runs (with '+dirty' for local changes); None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_CHILDREN: dict[int, subprocess.Popen] = {}  # live local runs, so an interrupted bench can stop them cleanly


def execute_run(cmd: list[str], log_path: str | list[str], cores: tuple[int, ...] = (), threads: int = 1
                ) -> dict[str, Any]:
    """Run one `rlkit train` command to its end; its output goes to `log_path` (appended: one section per attempt;
    with several paths, one per seed of a batched command, the section is copied to the others at the end).
    Executed in a thread of the local runner or inside a Ray task. The child gets its own session so a Ctrl-C at the
    terminal reaches only `rlkit bench`, which then sends each run ONE SIGINT (a second would skip the checkpoint)."""
    paths = [log_path] if isinstance(log_path, str) else list(log_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **{v: str(threads) for v in THREAD_VARS}}
    full = [sys.executable, *cmd[1:]]
    pin = (lambda: os.sched_setaffinity(0, set(cores))) if cores else None
    Path(paths[0]).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(paths[0], "a") as log:
        start = log.tell()
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {socket.gethostname()}: {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=pin)
        _CHILDREN[proc.pid] = proc
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # a cancelled Ray task: stop the run with a checkpoint, then report it
            proc.send_signal(signal.SIGINT)
            rc = proc.wait()
        finally:
            _CHILDREN.pop(proc.pid, None)
    if len(paths) > 1:
        with open(paths[0], "rb") as f:
            f.seek(start)
            section = f.read()
        for other in paths[1:]:
            Path(other).parent.mkdir(parents=True, exist_ok=True)
            with open(other, "ab") as f:
                f.write(section)
    return {"returncode": rc, "wall_time_s": round(time.time() - t0, 3), "host": socket.gethostname(),
            "versions": _versions(), "git_revision": _git_revision()}


class LocalLauncher:
    """Runs on this machine, one thread per live run (each waits on its subprocess)."""
    name = "local"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._pool = ThreadPoolExecutor(max_workers=capacity)

    def submit(self, cmd: list[str], log_path: str | list[str], slot: Slot) -> Future:
        return self._pool.submit(execute_run, cmd, log_path, slot.cores)

    def interrupt(self, futures: list[Future]) -> None:
        for proc in list(_CHILDREN.values()):
            proc.send_signal(signal.SIGINT)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RayLauncher:
    """Runs each command as a Ray task with its CPU/GPU resources, on a local Ray started here (address None) or
    on an existing cluster (then OUT must be a path every node sees, e.g. a shared file system)."""
    name = "ray"

    def __init__(self, address: str | None, jobs: int | None, cpus_per_run: float, gpus_per_run: float) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError('--ray needs Ray, which is not installed: pip install "rlkit[ray]"') from None
        self._ray = ray
        self._started = address is None
        host, _, port = (address or "").rpartition(":")
        if host and port.isdigit():  # Ray itself retries an unreachable address for minutes, printing C++ logs
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except OSError as e:
                raise ValueError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None
        try:
            if address is None:
                ray.init(num_cpus=int(jobs * cpus_per_run) if jobs else None, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...: one line either way
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise ValueError(f"cannot start {where}: {type(e).__name__}: {str(e).strip().splitlines()[0]}") from None
        self._remote = ray.remote(execute_run).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        cluster = ray.cluster_resources()
        fit = int(cluster.get("CPU", 1) // cpus_per_run) if cpus_per_run else 10**6
        if gpus_per_run:
            fit = min(fit, int(cluster.get("GPU", 0) // gpus_per_run))
            if fit < 1:
                raise ValueError(f"the Ray cluster has {cluster.get('GPU', 0):g} GPUs; a run asks for {gpus_per_run}")
        self.capacity = max(1, min(fit, jobs or fit))
        self._refs: dict[Future, Any] = {}

    def submit(self, cmd: list[str], log_path: str | list[str], slot: Slot) -> Future:
        ref = self._remote.remote(cmd, log_path)
        fut = ref.future()
        self._refs[fut] = ref
        return fut

    def interrupt(self, futures: list[Future]) -> None:
        for f in futures:  # KeyboardInterrupt in the task: execute_run sends its run one SIGINT
            self._ray.cancel(self._refs[f], force=False)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


class Manifest:
    """OUT/manifest.json: {"grid": ..., "skipped": [...], "runs": {key: record}}, rewritten atomically (temp file +
    os.replace) on every change, so a reader never sees half of it and a killed bench leaves the last state."""

    def __init__(self, out: Path) -> None:
        self.path = out / MANIFEST
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"grid": {}, "skipped": [], "runs": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                raise ValueError(f"{self.path} is not valid JSON; move it away to start a new manifest") from None

    def update(self, key: str | None = None, **fields: Any) -> None:
        with self._lock:
            if key is None:
                self.data.update(fields)
            else:
                self.data["runs"].setdefault(key, {}).update(fields)
            tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def device_slots(device: str, jobs: int | None, runs_per_gpu: int, pin_cores: bool) -> list[Slot]:
    """One slot per run allowed at once. GPU runs: `runs_per_gpu` per GPU (default one: several runs time-slice
    a GPU and together run slower than one alone); CPU runs: --jobs, pinned to one core each with --pin-cores."""
    from rlkit.core.device import resolve_device

    dev = resolve_device(device)  # a missing GPU is named here, before any run starts
    if dev.type == "cuda":
        import torch

        gpus = [dev.index] if dev.index is not None else list(range(torch.cuda.device_count()))
        slots = [Slot(f"cuda:{g}") for g in gpus for _ in range(runs_per_gpu)]
        return slots[:jobs] if jobs else slots
    n = jobs or 1
    if not pin_cores:
        return [Slot("cpu")] * n
    cores = sorted(os.sched_getaffinity(0))
    if n > len(cores):
        raise ValueError(f"--pin-cores with --jobs {n} needs {n} cores; this process may use {len(cores)}")
    return [Slot("cpu", (c,)) for c in cores[:n]]


def _discard(run: Run, out: Path) -> Path:
    """Move a run that died before its first checkpoint out of the grid (nothing is deleted), so it restarts."""
    dest = out / "_discarded" / run.env_id / run.algo / f"seed{run.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run.run_dir, dest)
    return dest


def bench_command(args: argparse.Namespace) -> int:
    from rlkit.agents import get_agent_class

    for flag, v, low in (("--jobs", args.jobs, 1), ("--steps", args.steps, 1), ("--runs-per-gpu", args.runs_per_gpu, 1),
                         ("--eval-episodes", args.eval_episodes, 0), ("--eval-freq", args.eval_freq, 0),
                         ("--seeds-per-process", args.seeds_per_process, 1)):
        if v is not None and v < low:
            raise ValueError(f"{flag} must be >= {low}, got {v}")
    algos = list(dict.fromkeys(get_agent_class(a).algo for a in _split(args.algos)))  # validates names up front
    envs = list(dict.fromkeys(_split(args.envs)))
    if not algos or not envs:
        raise ValueError("--algos and --envs must each name at least one entry")
    seeds = parse_seeds(args.seeds)
    if args.seeds_per_process > len(seeds):
        raise ValueError(f"--seeds-per-process {args.seeds_per_process} is more than the {len(seeds)} seed"
                         f"{'s' if len(seeds) > 1 else ''} of the grid (--seeds)")
    if args.seeds_per_process > 1:
        unbatchable = [a for a in algos if not callable(getattr(get_agent_class(a), "learn_seeds", None))]
        if unbatchable:
            raise ValueError(f"--seeds-per-process {args.seeds_per_process}: {', '.join(unbatchable)} cannot train "
                             "several seeds in one process (supported: a2c, trpo, reinforce, ddpg); bench it "
                             "separately without --seeds-per-process")
    out = Path(args.out).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    runs, skipped = plan_grid(algos, envs, seeds, out)
    use_ray = args.ray is not None
    slots = ([] if use_ray else device_slots(args.device, args.jobs, args.runs_per_gpu, args.pin_cores))
    out.mkdir(parents=True, exist_ok=True)
    from rlkit.core.rundir import RunDirError, RunDirLock, live_lock_holder

    try:
        grid_lock = RunDirLock(out).acquire()  # one bench per grid: two would start the same runs
    except RunDirError:
        raise ValueError(f"--out {out} is in use by another rlkit bench ({live_lock_holder(out)}); wait for it "
                         "to end") from None
    try:
        return _run_grid(args, out, runs, skipped, slots, algos, envs, seeds)
    finally:
        grid_lock.release()


def _run_grid(args: argparse.Namespace, out: Path, runs: list[Run], skipped: list[dict], slots: list[Slot],
              algos: list[str], envs: list[str], seeds: list[int]) -> int:
    use_ray = args.ray is not None
    manifest = Manifest(out)
    manifest.update(grid={"algos": algos, "envs": envs, "seeds": seeds, "steps": args.steps, "set": args.set,
                          "eval_episodes": args.eval_episodes, "eval_freq": args.eval_freq, "device": args.device,
                          "seeds_per_process": args.seeds_per_process, "launcher":
                          "ray" if use_ray else "local"}, skipped=skipped)
    for s in skipped:
        print(f"rlkit bench: skipping {s['algo']} on {s['env_id']}: {s['reason']}", file=sys.stderr)

    todo: deque[tuple[Run, Path | None]] = deque()
    counts = {"finished": 0, "running elsewhere": 0, "resumed": 0, "restarted": 0}
    for run in runs:
        state, ckpt, note = run_state(run, args.steps)
        rel = str(run.run_dir.relative_to(out))
        base = {"algo": run.algo, "env_id": run.env_id, "seed": run.seed, "run_dir": rel}
        if state == "finished":
            counts["finished"] += 1
            manifest.update(run.key, **base, status="finished")
        elif state == "running":
            counts["running elsewhere"] += 1
            manifest.update(run.key, **base, status="running elsewhere", note=note)
            print(f"rlkit bench: {run.key} is running elsewhere ({note}); not starting it twice", file=sys.stderr)
        else:
            if state == "stale":
                counts["restarted"] += 1
                moved = _discard(run, out)
                print(f"rlkit bench: {run.key} stopped before its first checkpoint; moved to {moved} and started "
                      "again", file=sys.stderr)
            counts["resumed"] += state == "resume"
            manifest.update(run.key, **base, status="queued", resume_from=str(ckpt.relative_to(out)) if ckpt else None)
            todo.append((run, ckpt))

    launcher: LocalLauncher | RayLauncher
    if use_ray:
        gpus = 1.0 / args.runs_per_gpu if args.device.startswith("cuda") else 0.0  # "auto" on Ray: the CPU
        launcher = RayLauncher(args.ray or None, args.jobs, args.cpus_per_run, gpus)
        slots = [Slot("cpu" if gpus == 0 else "cuda")] * launcher.capacity  # Ray gives each task its own GPU(s)
    else:
        launcher = LocalLauncher(len(slots))
    where = f"Ray ({args.ray or 'local'})" if use_ray else "local processes"
    print(f"rlkit bench: {len(runs)} runs ({counts['finished']} finished, {counts['resumed']} to resume, "
          f"{counts['running elsewhere']} running elsewhere), {len(slots)} at a time on {where} -> {out}",
          file=sys.stderr)
    chunks = deque(group_runs(list(todo), args.seeds_per_process))
    failed = _execute(chunks, slots, launcher, manifest, args, out, total=len(runs), done=counts["finished"])
    if failed is None:  # interrupted
        return 130
    results = collect_results(out, runs)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    from rlkit.plotting import results_table

    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    if failed:
        # One line naming every failed run; each run's own output is in its stdout.log.
        print(f"rlkit bench: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)}; "
              f"see <run dir>/stdout.log under {out}", file=sys.stderr)
        return 2
    return 0


def _execute(todo: deque, slots: list[Slot], launcher: Any, manifest: Manifest, args: argparse.Namespace, out: Path,
             total: int, done: int) -> list[str] | None:
    """Keep every slot busy until the grid is done (each item of `todo` is a list of runs, one process: one run, or
    several seeds trained together with --seeds-per-process); returns the failed runs, or None when interrupted."""
    from tqdm import tqdm

    free = list(slots)
    inflight: dict[Future, tuple[list[Run], Slot, float]] = {}
    failed: list[str] = []
    bar = tqdm(total=total, initial=done, unit="run", file=sys.stderr, dynamic_ncols=True, desc="rlkit bench")

    def show() -> None:
        bar.set_postfix_str(f"done {bar.n}/{total}, running {sum(len(v[0]) for v in inflight.values())}, "
                            f"failed {len(failed)}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    try:
        while todo or inflight:
            while todo and free:
                runs, ckpts = todo.popleft()
                slot = free.pop(0)
                if len(runs) == 1:
                    cmd = train_command(runs[0], args, slot.device, ckpts[0])
                else:
                    cmd = batch_command(runs, args, slot.device, ckpts[0] is not None)
                for run in runs:
                    manifest.update(run.key, status="running", command=shlex.join(cmd), device=slot.device,
                                    started_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
                logs = [str(run.run_dir / "stdout.log") for run in runs]
                inflight[launcher.submit(cmd, logs[0] if len(logs) == 1 else logs, slot)] = (runs, slot, time.time())
            show()
            finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in finished:
                runs, slot, _t0 = inflight.pop(fut)
                free.append(slot)
                for run in runs:
                    rec = _record(run, fut, manifest, out)
                    if rec["status"] == "failed":
                        failed.append(f"{run.algo}/{run.env_id}/seed{run.seed} (rc {rec.get('returncode')})")
                    show()
                    bar.update(1)
                    score = (f"{rec['mean_return']:.1f}" if "mean_return" in rec else rec["status"])
                    bar.write(f"  {run.algo:<10} {run.env_id:<16} seed {run.seed}: {score}", file=sys.stderr)
        show()
        bar.close()
        return failed
    except KeyboardInterrupt:
        bar.close()
        print(f"rlkit bench: interrupted; stopping {sum(len(v[0]) for v in inflight.values())} runs with a "
              "checkpoint ...", file=sys.stderr)
        launcher.interrupt(list(inflight))
        for fut in list(inflight):
            for run in inflight[fut][0]:
                try:
                    fut.result(timeout=120)
                    _record(run, fut, manifest, out, interrupted=True)
                except Exception:  # noqa: BLE001 - a cancelled Ray task: its run saved a checkpoint (or never began)
                    manifest.update(run.key, status="interrupted")
        print("rlkit bench: re-run the same command to resume (finished runs are skipped)", file=sys.stderr)
        return None
    finally:
        launcher.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _record(run: Run, fut: Future, manifest: Manifest, out: Path, interrupted: bool = False) -> dict[str, Any]:
    """Write one ended attempt into the manifest; returns the run's record."""
    res = fut.result()
    rc = res["returncode"]
    result_path = run.run_dir / "result.json"
    status = ("finished" if rc == 0 and result_path.is_file() else
              "interrupted" if interrupted or rc in (130, 143) else "failed")
    prev = manifest.data["runs"].get(run.key, {})
    fields: dict[str, Any] = {
        "status": status, "returncode": rc, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wall_time_s": round(prev.get("wall_time_s", 0.0) + res["wall_time_s"], 3), "attempts":
        prev.get("attempts", 0) + 1, "host": res["host"], "versions": res["versions"],
        "git_revision": res["git_revision"]}
    cfg = run.run_dir / "config.json"
    if cfg.is_file():
        fields["config"] = json.loads(cfg.read_text())
    if status == "finished":
        r = json.loads(result_path.read_text())
        fields.update({k: r[k] for k in ("steps", "mean_return", "std_return", "best_eval_return", "best_eval_step")
                       if k in r})
    manifest.update(run.key, **fields)
    return manifest.data["runs"][run.key]


def collect_results(out: Path, runs: list[Run]) -> list[dict[str, Any]]:
    """result.json of every finished run of the grid (including those finished by an earlier invocation)."""
    results = []
    for run in runs:
        p = run.run_dir / "result.json"
        if p.is_file():
            r = json.loads(p.read_text())
            r.update({"algo": run.algo, "env_id": run.env_id, "seed": run.seed})
            results.append(r)
    return results


def add_bench_arguments(b: argparse.ArgumentParser) -> None:
    """The `rlkit bench` flags (cli.py builds the subparser; the runner owns its options)."""
    b.add_argument("--algos", required=True, help="comma-separated, e.g. a2c,trpo")
    b.add_argument("--envs", required=True, help="comma-separated env ids")
    b.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, or a count like 5")
    b.add_argument("--steps", type=int, default=None, help="environment steps per run (default: the preset's)")
    b.add_argument("--device", default="cpu", help="cpu | cuda (every GPU) | cuda:N")
    b.add_argument("--out", default="runs/bench", help="grid directory; re-running skips finished runs and "
                   "resumes interrupted ones")
    b.add_argument("--jobs", type=int, default=None, help="runs at once (default: 1 on the CPU, one per GPU)")
    b.add_argument("--runs-per-gpu", type=int, default=1, help="runs sharing one GPU at once")
    b.add_argument("--pin-cores", action="store_true", help="pin each CPU run to its own core (Linux)")
    b.add_argument("--eval-episodes", type=int, default=10)
    b.add_argument("--eval-freq", type=int, default=0, help="evaluate every this many environment steps during "
                   "training (0: never); the table then reports the best evaluation beside the final one")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run as Ray tasks: on a local Ray started for the grid, or on the cluster at ADDRESS")
    b.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray resources of one run")
    b.add_argument("--seeds-per-process", type=int, default=1, metavar="K",
                   help="train up to K seeds of one (algo, env) in one process, their networks batched (rlkit train "
                        "--seeds-per-process); each seed still gets its own run directory and manifest row")
