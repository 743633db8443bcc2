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
    """'5' -> [0..4]; '0,3,7' -> [0, 3, 7]."""
    try:
        if "," not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return list(range(n))
        return [int(s) for s in _split(text)]
    except ValueError:
        raise ValueError(f"--seeds must be a count or a comma-separated list of integers, got {text!r}") from None


def bench_command(args: argparse.Namespace) -> int:
    from rlkit.agents import get_agent_class

    algos = [get_agent_class(a).algo for a in _split(args.algos)]  # validates names up front
    envs = _split(args.envs)
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
    print(f"rlkit bench: {len(jobs)} runs, {args.jobs} at a time -> {out}", file=sys.stderr)

    def run(job: tuple) -> dict[str, Any]:
        algo, env_id, seed, run_dir, cmd = job
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "stdout.log", "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        res_path = run_dir / "result.json"
        res = json.loads(res_path.read_text()) if rc == 0 and res_path.exists() else {}
        res.update({"algo": algo, "env_id": env_id, "seed": seed, "returncode": rc})
        status = f"{res.get('mean_return', float('nan')):.1f}" if rc == 0 else f"FAILED (rc {rc}, see {run_dir}/stdout.log)"
        print(f"  {algo:<10} {env_id:<16} seed {seed}: {status}", file=sys.stderr, flush=True)
        return res

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run, jobs))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0 if all(r["returncode"] == 0 for r in results) else 1


def results_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per (algo, env) the mean +/- std over seeds of the final deterministic evaluation return."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in results:
        if "mean_return" in r:
            groups.setdefault((r["algo"], r["env_id"]), []).append(float(r["mean_return"]))
    lines = ["| algo | env | seeds | final eval return (mean +/- std over seeds) | per seed |", "|---|---|---:|---:|---|"]
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
