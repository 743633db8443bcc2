"""A2C with its preset on Pong, trained in pieces that each fit a time-capped sitting, then reported.

    python experiments/atari_pong.py [--steps 4000000] [--budget STEPS] [--run-dir runs/atari_pong]
                                     [--time-limit 540] [--env PongNoFrameskip-v4] [--seed 0] [--device cuda|cpu]
                                     [--eval-episodes 5] [--checkpoint-interval 200000] [--set KEY=VALUE ...]

A thin wrapper over `rlkit train a2c ENV` with the env's preset (PongNoFrameskip-v4's own: 16 envs in worker
processes, n_steps 5, TensorFlow-style RMSprop with eps 1e-10, vf_coef 0.5, a constant learning rate, the policy and
value heads on the CNN's features; other Atari ids get the "atari" preset: rl-zoo3's settings, with the learning
rate decaying linearly over the run; the Atari preprocessing of docs/guide.md#atari). --budget is the run's total
budget (default --steps; a run being continued keeps the budget it started with), over which a decaying learning
rate decays: `--budget 10000000 --set vf_coef=0.25 --set rms_eps=1e-5 --set lr_schedule=linear` trains Pong with
the "atari" preset's settings and checks them at --steps of a 10M-step run. Training stops at --steps. The first call
starts the run in --run-dir; every later call continues it (`--resume RUN_DIR`: the newest checkpoint, its config
and seed). A call trains until --steps, or until --time-limit seconds have passed: then it sends itself SIGINT, so
training finishes its iteration, writes a checkpoint and stops (call again to go on; a checkpoint is also written
every --checkpoint-interval steps, against a hard kill); it also sends SIGINT once progress.csv logs a step at or
past --steps (when --steps < --budget). --set KEY=VALUE (repeatable) overrides a preset value for a variant, as
`rlkit train --set` does; it applies when the run starts (a resumed run keeps the config it was started with). When
the run reaches --budget, `rlkit train` evaluates --eval-episodes whole games. Each call ends by printing

    steps/s of this piece (environment steps per second of training, from progress.csv's time/sps)
    the mean training game score over the last 100 games (whole games, all lives, unclipped)

and writing RUN_DIR/curve.csv (step, mean game score over the last 100 games). Run it on a machine with a core
per env (16) and a GPU; --device defaults to cuda when one is there.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from rlkit.cli import main as rlkit_main


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4_000_000, help="train until this many environment steps")
    p.add_argument("--budget", type=int, default=None,
                   help="the run's total budget, over which a decaying learning rate decays (>= --steps; "
                        "default --steps)")
    p.add_argument("--run-dir", default="runs/atari_pong")
    p.add_argument("--time-limit", type=float, default=540.0,
                   help="seconds this call may train before it checkpoints and stops (0: no limit)")
    p.add_argument("--env", default="PongNoFrameskip-v4")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--eval-episodes", type=int, default=5, help="whole games evaluated once the run is complete")
    p.add_argument("--checkpoint-interval", type=int, default=200_000)
    p.add_argument("--log-interval", type=int, default=10_000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value when the run starts (repeatable), as `rlkit train --set`")
    return p.parse_args()


def train_piece(args: argparse.Namespace, run_dir: Path) -> int:
    """One `rlkit train` call that starts or continues the run; SIGINT to this process at the time limit."""
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    argv = ["train", "a2c", args.env, "--steps", str(args.budget), "--run-dir", str(run_dir),
            "--device", args.device,
            "--no-progress", "--eval-episodes", str(args.eval_episodes), "--log-interval", str(args.log_interval)]
    if any((run_dir / "checkpoints").glob("*.pt")):
        argv += ["--resume", str(run_dir)]
    else:
        argv += ["--seed", str(args.seed), "--set", f"checkpoint_interval={args.checkpoint_interval}"]
        for kv in args.set:
            argv += ["--set", kv]
    sent = threading.Lock()  # the time limit and the --steps watcher: whichever comes first sends ONE SIGINT (a
    # second one while the first still writes its checkpoint would stop the run without one)

    def interrupt() -> None:
        if sent.acquire(blocking=False):
            os.kill(os.getpid(), signal.SIGINT)

    timer = None
    if args.time_limit > 0:
        timer = threading.Timer(args.time_limit, interrupt)
        timer.daemon = True
        timer.start()
    stop = threading.Event()
    if args.steps < args.budget:  # stop at --steps: SIGINT once progress.csv has logged a step there
        threading.Thread(target=_stop_at, args=(run_dir / "progress.csv", args.steps, stop, interrupt),
                         daemon=True).start()
    try:
        return rlkit_main(argv)
    finally:
        stop.set()
        if timer is not None:
            timer.cancel()


def _stop_at(progress: Path, steps: int, stop: threading.Event, interrupt: Callable[[], None]) -> None:
    """interrupt() once progress.csv's last logged step is >= steps (polled every 2 s; a read that fails, e.g. of
    a row being written, is tried again at the next poll)."""
    while not stop.wait(2.0):
        try:
            reached = _last_step(progress) >= steps
        except (OSError, ValueError, UnicodeDecodeError, csv.Error):
            continue
        if reached:
            interrupt()
            return


def _last_step(progress: Path) -> int:
    """The last step progress.csv logged (0 when there is none)."""
    if not progress.exists():
        return 0
    with progress.open(newline="") as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f) if r.get("step")]
    return steps[-1] if steps else 0


def report(run_dir: Path, t_start_step: int) -> None:
    """steps/s of this piece, the mean game score over the last 100 games, and RUN_DIR/curve.csv."""
    path = run_dir / "progress.csv"
    if not path.exists():
        print("no progress.csv yet: nothing trained")
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    curve = [(int(float(r["step"])), float(r["rollout/episode_return"])) for r in rows
             if r.get("rollout/episode_return")]
    with (run_dir / "curve.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "mean_game_score_last_100"])
        w.writerows(curve)
    piece = [r for r in rows if int(float(r["step"])) > t_start_step and r.get("time/sps")]
    step = int(float(rows[-1]["step"])) if rows else 0
    sps = float(piece[-1]["time/sps"]) if piece else float("nan")
    score = f"{curve[-1][1]:+.2f}" if curve else "(no game finished yet)"
    print(f"step {step:,}: {sps:,.0f} steps/s this piece; mean training game score over the last 100 games "
          f"{score}; curve ({len(curve)} points) in {run_dir / 'curve.csv'}")
    result = run_dir / "result.json"  # written by `rlkit train` when the run is complete
    if result.exists():
        r = json.loads(result.read_text())
        if "mean_return" in r:
            print(f"evaluation: {r['mean_return']:+.2f} +/- {r['std_return']:.2f} over whole games")


def run_budget(run_dir: Path) -> int | None:
    """The total budget of the run in run_dir, from the checkpoint `rlkit train --resume` loads (the newest that
    reads). None: it predates recorded budgets."""
    from rlkit.cli import newest_valid_checkpoint

    _, payload, _ = newest_valid_checkpoint(run_dir, "a2c")
    return int(payload.get("total_budget") or 0) or None


def main() -> int:
    args = parse()
    run_dir = Path(args.run_dir)
    resuming = any((run_dir / "checkpoints").glob("*.pt"))  # as train_piece decides
    try:
        started = run_budget(run_dir) if resuming else None  # a run in progress keeps its budget (and lr schedule)
    except ValueError as e:  # no checkpoint of the run reads (rlkit.CheckpointError is a ValueError)
        print(f"atari_pong.py: {e}", file=sys.stderr)
        return 2
    if resuming and args.set:
        print(f"atari_pong.py: --set applies when a run starts; the run in {run_dir} keeps the config it was started "
              "with (use a new --run-dir for a variant)", file=sys.stderr)
        return 2
    if started is not None and args.budget not in (None, started):
        print(f"atari_pong.py: --budget {args.budget:,} differs from the budget of the run in {run_dir} "
              f"({started:,}): leave --budget out to continue it, or use a new --run-dir", file=sys.stderr)
        return 2
    budget_of = "the budget of the run in " + str(run_dir) if started is not None else "--budget"
    args.budget = started or args.budget or args.steps
    if args.budget < args.steps:
        print(f"atari_pong.py: {budget_of} ({args.budget:,}) is below --steps {args.steps:,}: the run's budget must "
              "cover the steps it trains", file=sys.stderr)
        return 2
    start = _last_step(run_dir / "progress.csv")
    if start >= args.steps:
        print(f"the run is already at step {start:,} (--steps {args.steps:,}): nothing to train")
        report(run_dir, start)
        return 0
    t0 = time.time()
    code = train_piece(args, run_dir)
    what = {0: "run complete", 130: "stopped at the time limit or at --steps: run again to continue"}.get(code, "error")
    print(f"rlkit train exited with {code} after {time.time() - t0:.0f} s ({what})")
    report(run_dir, start)
    return 0 if code in (0, 130) else code


if __name__ == "__main__":
    sys.exit(main())
