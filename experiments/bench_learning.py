"""Learning benchmark: train ALGO on ENV for several seeds with the tuned preset, evaluate the final policy
deterministically, print per-seed and mean +/- std returns, and check them against a target.

    python experiments/bench_learning.py --algo reinforce --env CartPole-v1 --seeds 5 --steps 500000 --target 475

Each seed is a separate `rlkit train` process (through `rlkit bench`), so this measures exactly what a user
running the CLI gets. Exit status 0 when the mean final return reaches --target (or no target is given).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rlkit.cli import main as rlkit_main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--seeds", default="5", help="a count (0..N-1) or a comma-separated list")
    p.add_argument("--steps", type=int, default=None, help="default: the preset's")
    p.add_argument("--target", type=float, default=None, help="mean final return to reach")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    out = Path(a.out or f"bench_out/{a.algo}-{a.env}-{int(time.time())}")
    argv = ["bench", "--algos", a.algo, "--envs", a.env, "--seeds", a.seeds, "--device", a.device,
            "--out", str(out), "--jobs", str(a.jobs), "--eval-episodes", str(a.eval_episodes)]
    if a.steps:
        argv += ["--steps", str(a.steps)]
    for s in a.set:
        argv += ["--set", s]
    t0 = time.time()
    rc = rlkit_main(argv)
    results = json.loads((out / "results.json").read_text())
    rets = [r["mean_return"] for r in results if "mean_return" in r]
    if not rets:
        print("no run finished", file=sys.stderr)
        return 1
    mean = sum(rets) / len(rets)
    print(f"\n{a.algo} {a.env}: final deterministic eval return {mean:.1f} (mean of {len(rets)} seeds; "
          f"per seed {[round(x, 1) for x in rets]}); wall {time.time() - t0:.0f}s")
    if a.target is not None:
        ok = mean >= a.target
        print(f"target {a.target}: {'PASS' if ok else 'FAIL'}")
        return 0 if ok and rc == 0 else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
