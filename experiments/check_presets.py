"""Re-run every shipped preset's learning check, several seeds each, in parallel on N cores.

    python experiments/check_presets.py [--algos a2c,trpo] [--envs CartPole-v1] [--seeds 5] [--jobs N]
                                        [--out bench_out/presets] [--steps-scale 1.0] [--timeout SECONDS]

For every (algo, env) in rlkit/presets/<algo>.json and every seed K in 0..S-1 this runs

    python -m rlkit.cli train ALGO ENV --seed K --device cpu --run-dir OUT/ALGO/ENV/seedK \
        --eval-episodes 10 --no-progress

as a subprocess (one thread each for OpenMP/MKL/OpenBLAS; output in OUT/ALGO/ENV/seedK/train.log), at most
--jobs at a time, longest first. `rlkit train` writes result.json (mean_return of the final deterministic
evaluation) into its run dir. A row passes when every seed finished and the mean over seeds of mean_return
reaches TARGETS[(algo, env)]; it fails as "FAIL (k ERR|TIMEOUT|NORESULT)" when seeds did not finish, and as
"FAIL (NO TARGET)" for a preset missing from TARGETS. The summary goes to OUT/presets.md and OUT/presets.json
and is printed as the last lines; the exit status is 0 only if every row passes. --steps-scale != 1 passes
--steps round(preset steps * scale) (for quick dry runs). Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Learning targets: the mean over seeds of the final deterministic evaluation must reach these.
TARGETS: dict[tuple[str, str], float] = {
    ("a2c", "CartPole-v1"): 475.0,
    ("a2c", "Pendulum-v1"): -200.0,
    ("qac", "CartPole-v1"): 400.0,
    ("reinforce", "CartPole-v1"): 475.0,
    ("trpo", "CartPole-v1"): 475.0,
    ("trpo", "Pendulum-v1"): -160.0,
    ("ddpg", "Pendulum-v1"): -150.0,
    ("ddpg", "MountainCarContinuous-v0"): 90.0,
}
# Presets keyed by a family of ids rather than one id (rlkit.core.config.PRESET_FAMILIES), and those of Atari ids:
# not run here (A2C on Atari is checked on Pong by experiments/atari_pong.py, on a GPU).
FAMILIES = {"atari"}


def atari(env_id: str) -> bool:
    """An Atari preset's id (ALE/<Game>-v5 or <Game>NoFrameskip-v4), by its name: also where ale-py is missing."""
    return env_id.startswith("ALE/") or "NoFrameskip" in env_id
# Relative cost of one environment step, for scheduling the longest runs first.
STEP_COST: dict[str, float] = {"ddpg": 10.0}

REPO = Path(__file__).resolve().parents[1]
PRESET_DIR = REPO / "rlkit" / "presets"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "PYTHONUNBUFFERED": "1"}


@dataclass
class Run:
    algo: str
    env_id: str
    seed: int
    steps: int
    preset_steps: int
    run_dir: Path
    status: str = "PENDING"  # OK | ERR rcN | NORESULT | TIMEOUT
    mean_return: float | None = None
    wall_s: float = 0.0

    @property
    def cost(self) -> float:
        return self.steps * STEP_COST.get(self.algo, 1.0)


@dataclass
class Row:
    algo: str
    env_id: str
    steps: int
    seeds: int
    returns: list[float | None] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    target: float | None = None
    passed: bool = False
    verdict: str = "FAIL"
    wall_s: float = 0.0


def load_presets() -> dict[str, dict[str, dict[str, Any]]]:
    """{algo: {env_id: {"steps": int, "config": {...}, "source": str}}} from rlkit/presets/*.json."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(PRESET_DIR.glob("*.json"))}


def csv_set(text: str | None) -> set[str] | None:
    return {s.strip() for s in text.split(",") if s.strip()} if text else None


def plan(args: argparse.Namespace, out: Path) -> list[Run]:
    algos, envs = csv_set(args.algos), csv_set(args.envs)
    runs: list[Run] = []
    for algo, presets in load_presets().items():
        if algos is not None and algo not in algos:
            continue
        for env_id, preset in presets.items():
            if env_id in FAMILIES or atari(env_id) or envs is not None and env_id not in envs:
                continue
            preset_steps = int(preset["steps"])
            scaled = max(1, round(preset_steps * args.steps_scale))
            steps = preset_steps if args.steps_scale == 1.0 else scaled
            runs += [Run(algo, env_id, k, steps, preset_steps, out / algo / env_id / f"seed{k}")
                     for k in range(args.seeds)]
    return sorted(runs, key=lambda r: (-r.cost, r.algo, r.env_id, r.seed))


_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the run's whole process group (vector-env workers included)
    except ProcessLookupError:
        pass
    proc.wait()


def execute(run: Run, scaled: bool, timeout: float | None) -> Run:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    result_path = run.run_dir / "result.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "rlkit.cli", "train", run.algo, run.env_id, "--seed", str(run.seed),
           "--device", "cpu", "--run-dir", str(run.run_dir), "--eval-episodes", "10", "--no-progress"]
    if scaled:
        cmd += ["--steps", str(run.steps)]
    env = {**os.environ, **THREAD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    t0 = time.monotonic()
    with open(run.run_dir / "train.log", "wb") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with _live_lock:
            _live.add(proc)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc = None
        finally:
            with _live_lock:
                _live.discard(proc)
    run.wall_s = time.monotonic() - t0
    if rc is None:
        run.status = "TIMEOUT"
    elif rc != 0:
        run.status = f"ERR rc{rc}"
    elif not result_path.exists():
        run.status = "NORESULT"
    else:
        try:
            run.mean_return = float(json.loads(result_path.read_text())["mean_return"])
            run.status = "OK"
        except (ValueError, KeyError, TypeError):
            run.status = "NORESULT"
    return run


def summarize(runs: list[Run]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for run in sorted(runs, key=lambda r: (r.algo, r.env_id, r.seed)):
        row = rows.setdefault((run.algo, run.env_id), Row(run.algo, run.env_id, run.steps, 0))
        row.seeds += 1
        row.returns.append(run.mean_return)
        row.statuses.append(run.status)
        row.wall_s = max(row.wall_s, run.wall_s)
    for (algo, env_id), row in rows.items():
        done = [r for r in row.returns if r is not None]
        row.target = TARGETS.get((algo, env_id))
        if done:
            row.mean = statistics.fmean(done)
            row.std = statistics.pstdev(done)
        if row.target is None:
            row.verdict = "FAIL (NO TARGET)"
        elif len(done) < row.seeds:
            kinds = Counter(s.split()[0] for s in row.statuses if s != "OK")
            row.verdict = "FAIL (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
        else:
            row.passed = row.mean is not None and row.mean >= row.target
            row.verdict = "PASS" if row.passed else "FAIL"
    return list(rows.values())


def markdown(rows: list[Row]) -> str:
    lines = ["| algo | env | steps | seeds | mean ± std | per-seed values | target | PASS/FAIL | wall s |",
             "|---|---|---:|---:|---|---|---:|---|---:|"]
    for r in rows:
        ms = f"{r.mean:.1f} ± {r.std:.1f}" if r.mean is not None and r.std is not None else "—"
        per = ", ".join(f"{v:.1f}" if v is not None else s for v, s in zip(r.returns, r.statuses))
        tgt = f"{r.target:g}" if r.target is not None else "—"
        lines.append(f"| {r.algo} | {r.env_id} | {r.steps:,} | {r.seeds} | {ms} | {per} | {tgt} "
                     f"| {r.verdict} | {r.wall_s:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algos", default=None, help="comma-separated algos (default: every preset file)")
    p.add_argument("--envs", default=None, help="comma-separated env ids (default: every preset env)")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 per (algo, env)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs (default: all cores)")
    p.add_argument("--out", default="bench_out/presets", help="output root")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply each preset's steps (dry runs)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run; past it the run is killed")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or args.steps_scale <= 0:
        p.error("--seeds and --jobs must be >= 1 and --steps-scale > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    runs = plan(args, out)
    if not runs:
        print("check_presets: no preset matches --algos/--envs", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    print(f"check_presets: {len(runs)} runs, {args.jobs} at a time -> {out}", file=sys.stderr)
    t0 = time.monotonic()
    scaled = args.steps_scale != 1.0
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # FIFO: submitted longest first
            futures = [pool.submit(execute, run, scaled, args.timeout) for run in runs]
            for i, fut in enumerate(as_completed(futures), 1):
                r = fut.result()
                value = f"{r.mean_return:.1f}" if r.mean_return is not None else r.status
                print(f"[{i}/{len(runs)}] {r.algo} {r.env_id} seed {r.seed}: {value} ({r.wall_s:.0f} s)",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        with _live_lock:
            procs = list(_live)
        for proc in procs:
            _kill(proc)
        print("check_presets: interrupted", file=sys.stderr)
        return 130
    total_s = time.monotonic() - t0
    rows = summarize(runs)
    table = markdown(rows)
    (out / "presets.md").write_text(table + "\n")
    report = {"args": {k: v for k, v in vars(args).items()}, "wall_s": total_s,
              "rows": [asdict(r) for r in rows],
              "runs": [{**asdict(r), "run_dir": str(r.run_dir)} for r in runs]}
    (out / "presets.json").write_text(json.dumps(report, indent=2))
    n_pass = sum(r.passed for r in rows)
    print(f"\n{n_pass}/{len(rows)} presets pass; {len(runs)} runs in {total_s:.0f} s on {args.jobs} jobs "
          f"(steps x{args.steps_scale:g}); details in {out}/presets.json\n")
    print(table)
    return 0 if n_pass == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
