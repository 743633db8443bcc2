"""Does `rlkit bench --jobs N` scale on N cores? Aggregate throughput of N parallel runs against one run alone.

    python experiments/scaling_bench.py [--algo trpo] [--env Pendulum-v1] [--steps 100000] [--jobs 16]
                                        [--pin-cores] [--out bench_out/scaling]

Runs the same (algo, env) through `rlkit bench` twice, on the CPU: one seed with --jobs 1, then N seeds with
--jobs N (each run pinned to one torch/BLAS thread by the runner; --pin-cores also pins each to its own core).
Each run's throughput is the median of its logged `time/sps` (environment steps per second of learn(), so process
start and the final evaluation are left out); the aggregate is the sum over the N runs, which run side by side
for the whole measurement because they all start together and take the same number of steps. Prints one line per
mode and "scaling: X.XXx of one run on N runs" (issue 13 asks for >= 12x on 16 cores), and writes
OUT/scaling.json. Measure on a machine with at least N free cores (e.g. the GPU machine's 16-core host).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_sps(run_dir: Path) -> float:
    with (run_dir / "progress.csv").open(newline="") as f:
        sps = [float(r["time/sps"]) for r in csv.DictReader(f) if r.get("time/sps")]
    if not sps:
        raise SystemExit(f"{run_dir}/progress.csv logs no time/sps: raise --steps")
    return statistics.median(sps[1:] or sps)  # the first row includes warm-up


def grid(args: argparse.Namespace, n: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "rlkit.cli", "bench", "--algos", args.algo, "--envs", args.env, "--seeds", str(n),
           "--steps", str(args.steps), "--jobs", str(n), "--device", "cpu", "--eval-episodes", "0", "--out", str(out)]
    if args.pin_cores:
        cmd.append("--pin-cores")
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"rlkit bench failed (rc {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    per_run = [run_sps(out / args.env / args.algo / f"seed{s}") for s in range(n)]
    return {"runs": n, "wall_s": round(time.time() - t0, 1), "per_run_sps": [round(x) for x in per_run],
            "aggregate_sps": round(sum(per_run))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="trpo")
    p.add_argument("--env", default="Pendulum-v1")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--pin-cores", action="store_true")
    p.add_argument("--out", default="bench_out/scaling")
    args = p.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")  # a fresh grid: bench would skip finished runs
    one = grid(args, 1, out / "one")
    many = grid(args, args.jobs, out / f"jobs{args.jobs}")
    scaling = many["aggregate_sps"] / one["aggregate_sps"]
    for name, g in (("1 run", one), (f"{args.jobs} runs", many)):
        print(f"{name:>8}: aggregate {g['aggregate_sps']:,} steps/s (per run {min(g['per_run_sps']):,}-"
              f"{max(g['per_run_sps']):,}), wall {g['wall_s']} s")
    print(f"scaling: {scaling:.2f}x of one run on {args.jobs} runs ({args.algo} {args.env}, {args.steps:,} steps each, "
          f"pin-cores {args.pin_cores})")
    (out / "scaling.json").write_text(json.dumps({"args": vars(args), "one": one, "many": many,
                                                  "scaling": round(scaling, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
