"""`rlkit train | eval | list | bench | plot`: the command line over the public API.

Bad input (an unknown algorithm, env id, flag or config key; a malformed value or file; a missing device;
an unusable checkpoint) exits with status 2 and ONE line on stderr naming the problem, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _build_parser() -> _Parser:
    from rlkit.agents import REGISTRY

    p = _Parser(prog="rlkit", description="Train, evaluate and compare rlkit agents on Gymnasium environments.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one agent")
    t.add_argument("algo", help=f"one of: {', '.join(REGISTRY)}")
    t.add_argument("env_id", help="a Gymnasium environment id, e.g. CartPole-v1")
    t.add_argument("--steps", type=int, default=None, help="environment steps (default: the preset's, else 100000)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--n-envs", type=int, default=None)
    t.add_argument("--config", default=None, help="JSON or TOML file of config overrides")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config field")
    t.add_argument("--run-dir", default=None, help="default: runs/<env_id>/<algo>/seed<S>-<time>/")
    t.add_argument("--runs-root", default="runs", help="root of the default run directory")
    t.add_argument("--no-preset", action="store_true", help="ignore the tuned preset for this (algo, env)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--eval-episodes", type=int, default=10, help="final deterministic evaluation (0: skip)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue from a checkpoint")

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("path")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--device", default="auto")
    e.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic mode")
    e.add_argument("--env", default=None, help="evaluate on this env id instead of the one trained on")

    sub.add_parser("list", help="algorithms and the spaces each supports")

    b = sub.add_parser("bench", help="run a grid of algorithms x environments x seeds")
    b.add_argument("--algos", required=True, help="comma-separated, e.g. a2c,trpo")
    b.add_argument("--envs", required=True, help="comma-separated env ids")
    b.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, or a count like 5")
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--device", default="cpu")
    b.add_argument("--out", default="runs/bench")
    b.add_argument("--jobs", type=int, default=1, help="parallel processes")
    b.add_argument("--eval-episodes", type=int, default=10)
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    pl = sub.add_parser("plot", help="learning curves and a results table from run directories")
    pl.add_argument("root", help="directory searched for progress.csv files")
    pl.add_argument("--out", default=None, help="PNG path (needs matplotlib); default <root>/curves.png")
    pl.add_argument("--metric", default="rollout/episode_return")
    return p


def _train(args: argparse.Namespace) -> int:
    from rlkit.agents import get_agent_class
    from rlkit.core.config import load_config_file, parse_set_option
    from rlkit.core.logger import default_run_dir
    from rlkit.presets import preset_for

    cls = get_agent_class(args.algo)
    algo = cls.algo
    import gymnasium as gym

    if args.env_id not in gym.registry:
        close = [k for k in gym.registry if args.env_id.lower().split("-")[0] in k.lower()][:5]
        raise ValueError(f"unknown Gymnasium environment id {args.env_id!r}"
                         + (f"; did you mean one of {close}?" if close else ""))
    overrides: dict[str, Any] = {}
    steps = args.steps
    preset = None if args.no_preset else preset_for(algo, args.env_id)
    if preset:
        overrides.update(preset.get("config", {}))
        steps = steps if steps is not None else int(preset.get("steps", 100_000))
    if args.config:
        overrides.update(load_config_file(args.config))
    for item in args.set:
        k, v = parse_set_option(item)
        overrides[k] = v
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    steps = steps if steps is not None else 100_000
    if steps <= 0:
        raise ValueError(f"--steps must be positive, got {steps}")
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.env_id, algo, args.seed, args.runs_root)
    if args.resume:
        agent = cls.load(args.resume, env=args.env_id, device=args.device)
        remaining = max(0, steps - agent.num_timesteps)
    else:
        agent = cls(args.env_id, config=overrides, seed=args.seed, device=args.device)
        remaining = steps
    print(f"rlkit: training {algo} on {args.env_id} for {remaining:,} steps (seed {args.seed}, "
          f"device {agent.device}) -> {run_dir}", file=sys.stderr)
    agent.learn(remaining, run_dir=run_dir, progress=not args.no_progress)
    result: dict[str, Any] = {"algo": algo, "env_id": args.env_id, "seed": args.seed, "steps": agent.num_timesteps,
                              "run_dir": str(run_dir)}
    if args.eval_episodes > 0:
        stats = agent.evaluate(n_episodes=args.eval_episodes, deterministic=True)
        result.update(stats)
        print(f"eval: mean return {stats['mean_return']:.2f} +/- {stats['std_return']:.2f} "
              f"over {args.eval_episodes} episodes")
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rlkit import load_agent

    agent = load_agent(args.path, env=args.env, device=args.device)
    stats = agent.evaluate(n_episodes=args.episodes, deterministic=not args.stochastic)
    print(f"{agent.algo} on {agent.env_id}: mean return {stats['mean_return']:.2f} +/- {stats['std_return']:.2f} "
          f"(mean length {stats['mean_length']:.1f}, {args.episodes} episodes)")
    return 0


def _list(_: argparse.Namespace) -> int:
    from rlkit.agents import REGISTRY, available, get_agent_class

    present = set(available())
    for name in REGISTRY:
        if name in present:
            cls = get_agent_class(name)
            print(f"{name:<10} actions: {', '.join(cls.supported_actions):<16} observations: Box, Discrete")
        else:
            print(f"{name:<10} (not in this installation)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from rlkit.core.envs import SpaceError
    from rlkit.core.rollout import NonFiniteError

    try:
        args = _build_parser().parse_args(argv)
        handler = {"train": _train, "eval": _eval, "list": _list}.get(args.command)
        if handler is None:
            from rlkit import bench

            handler = {"bench": bench.bench_command, "plot": bench.plot_command}[args.command]
        return handler(args)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"rlkit: training failed: {e}", file=sys.stderr)
        return 1
    except (ValueError, SpaceError, FileNotFoundError) as e:  # ConfigError and CheckpointError are ValueErrors
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"rlkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
