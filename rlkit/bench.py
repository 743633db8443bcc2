"""Grids of runs and their comparison: `rlkit bench` (algorithms x environments x seeds, each run a separate
`rlkit train` process) and `rlkit plot` (learning curves and a results table from run directories).
Uses only the CLI and the files runs write (progress.csv, result.json), like any user would.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_seeds(text: str) -> list[int]:
    """'5' -> [0..4]; '0,3,7' -> [0, 3, 7]; '0,' -> [0] (a trailing comma makes a single seed a list)."""
    try:
        if "," not in text:
            n = int(text)
            seeds = list(range(n))
        else:
            seeds = [int(s) for s in _split(text)]
    except ValueError:
        raise ValueError(f"--seeds must be a count or a comma-separated list of integers, got {text!r}") from None
    if "," not in text and n < 1:
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


def bench_command(args: argparse.Namespace) -> int:
    from rlkit.agents import get_agent_class

    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1 (parallel runs), got {args.jobs}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.eval_episodes < 0:
        raise ValueError(f"--eval-episodes must be >= 0, got {args.eval_episodes}")
    algos = list(dict.fromkeys(get_agent_class(a).algo for a in _split(args.algos)))  # validates names up front
    envs = list(dict.fromkeys(_split(args.envs)))
    if not algos or not envs:
        raise ValueError("--algos and --envs must each name at least one entry")
    seeds = parse_seeds(args.seeds)
    out = Path(args.out)
    jobs = []
    for algo, env_id, seed in itertools.product(algos, envs, seeds):
        run_dir = out / env_id / algo / f"seed{seed}"
        cmd = [sys.executable, "-m", "rlkit.cli", "train", algo, env_id, "--seed", str(seed), "--device", args.device,
               "--run-dir", str(run_dir), "--no-progress", "--eval-episodes", str(args.eval_episodes)]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        for s in args.set:
            cmd += ["--set", s]
        jobs.append((algo, env_id, seed, run_dir, cmd))
    from rlkit.core.rundir import previous_run_files

    taken = [j[3] for j in jobs if previous_run_files(j[3])]
    if taken:  # every run would refuse its directory: say so once, before starting any
        more = f' and {len(taken) - 1} more' if len(taken) > 1 else ''
        raise ValueError(f"--out {out} already holds runs ({taken[0]}{more}); "
                         "choose another --out")
    print(f"rlkit bench: {len(jobs)} runs, {args.jobs} at a time -> {out}", file=sys.stderr)

    def run(job: tuple) -> dict[str, Any]:
        algo, env_id, seed, run_dir, cmd = job
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "result.json").unlink(missing_ok=True)  # a stale result must not pass for this run's
        with open(run_dir / "stdout.log", "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        res_path = run_dir / "result.json"
        res = json.loads(res_path.read_text()) if rc == 0 and res_path.exists() else {}
        res.update({"algo": algo, "env_id": env_id, "seed": seed, "returncode": rc})
        status = (f"{res.get('mean_return', float('nan')):.1f}" if rc == 0
                  else f"FAILED (rc {rc}, see {run_dir}/stdout.log)")
        print(f"  {algo:<10} {env_id:<16} seed {seed}: {status}", file=sys.stderr, flush=True)
        return res

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run, jobs))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    failed = [f"{r['algo']}/{r['env_id']}/seed{r['seed']} (rc {r['returncode']})" for r in results
              if r["returncode"] != 0]
    if failed:
        # One line naming every failed run; each run's own output is in its stdout.log.
        print(f"rlkit bench: {len(failed)} of {len(results)} runs failed: {', '.join(failed)}; "
              f"see <run dir>/stdout.log under {out}", file=sys.stderr)
        return 2
    return 0


def results_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per (algo, env) the mean +/- std over seeds of the final deterministic evaluation return."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in results:
        if "mean_return" in r:
            groups.setdefault((r["algo"], r["env_id"]), []).append(float(r["mean_return"]))
    lines = ["| algo | env | seeds | final eval return (mean +/- std over seeds) | per seed |",
             "|---|---|---:|---:|---|"]
    for (algo, env_id), vals in sorted(groups.items()):
        v = np.array(vals)
        lines.append(f"| {algo} | {env_id} | {len(v)} | {v.mean():.1f} +/- {v.std():.1f} | "
                     f"{', '.join(f'{x:.1f}' for x in v)} |")
    return "\n".join(lines)


def read_curves(root: Path, metric: str) -> dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]]:
    """{(env_id, algo): [(steps, values) per run]} from every progress.csv under root (config.json names
    the run's algo and env)."""
    curves: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    for prog in sorted(root.rglob("progress.csv")):
        cfg_path = prog.parent / "config.json"
        meta = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        key = (str(meta.get("env_id", prog.parent.parent.parent.name)), str(meta.get("algo", prog.parent.parent.name)))
        steps, vals = [], []
        with prog.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get(metric) not in (None, ""):
                    steps.append(float(row["step"]))
                    vals.append(float(row[metric]))
        if steps:
            curves.setdefault(key, []).append((np.array(steps), np.array(vals)))
    return curves


def plot_command(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    curves = read_curves(root, args.metric)
    if not curves:
        raise ValueError(f"no progress.csv with metric {args.metric!r} under {root}")
    lines = [f"| env | algo | runs | last {args.metric} (mean +/- std) |", "|---|---|---:|---:|"]
    for (env_id, algo), runs in sorted(curves.items()):
        last = np.array([v[-1] for _, v in runs])
        lines.append(f"| {env_id} | {algo} | {len(runs)} | {last.mean():.1f} +/- {last.std():.1f} |")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("rlkit plot: matplotlib is not installed (pip install matplotlib); wrote the table only",
              file=sys.stderr)
        return 0
    envs = sorted({e for e, _ in curves})
    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for (e, algo), runs in sorted(curves.items()):
            if e != env_id:
                continue
            grid = np.linspace(0, min(s[-1] for s, _ in runs), 200)
            ys = np.stack([np.interp(grid, s, v) for s, v in runs])
            m, sd = ys.mean(0), ys.std(0)
            ax.plot(grid, m, label=f"{algo} ({len(runs)})")
            ax.fill_between(grid, m - sd, m + sd, alpha=0.2)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(args.metric)
        ax.legend()
    fig.tight_layout()
    out = Path(args.out) if args.out else root / "curves.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}", file=sys.stderr)
    return 0
