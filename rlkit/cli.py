"""`rlkit train | eval | list | bench | plot`: the command line over the public API.

Exit codes (docs/reliability.md):
  0    success
  1    training failed (a NaN/inf from the env or the networks, named), or an internal error (a bug: one line,
       RLKIT_DEBUG=1 shows the traceback)
  2    bad input: an unknown algorithm, env id, flag or config key; a malformed value or file; a missing device;
       an unusable checkpoint or space; a run directory that is a file, read-only, full, in use or another
       run's; a buffer that cannot fit in memory. ONE line on stderr naming the problem, never a traceback.
  130  SIGINT, 143 SIGTERM: the current iteration finished, a checkpoint was written, and the command that
       resumes the run was printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

MAX_SEED = 2**32 - 1  # numpy's legacy seeding (seed_everything) takes seeds in [0, 2**32)



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + message; we want one line
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


class _TerminatedError(Exception):
    """SIGTERM outside training (while building the env or evaluating): nothing to checkpoint."""


def _check_int(flag: str, value: int | None, low: int, high: int | None = None, why: str = "") -> None:
    if value is None:
        return
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise _UsageError(f"rlkit: error: {flag} must be {bound}, got {value}{why}")


def _build_parser() -> _Parser:
    from rlkit.agents import REGISTRY

    p = _Parser(prog="rlkit", description="Train, evaluate and compare rlkit agents on Gymnasium environments.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train one agent")
    t.add_argument("algo", help=f"one of: {', '.join(REGISTRY)}")
    t.add_argument("env_id", help="a Gymnasium environment id, e.g. CartPole-v1, or module:EnvId (the module is "
                                  "imported first, as gymnasium.make does, so it can register EnvId)")
    t.add_argument("--steps", type=int, default=None,
                   help="the run's total environment steps, also when resuming (default: the preset's, else 100000; "
                        "with --resume: the run's budget)")
    t.add_argument("--seed", type=int, default=None, help="default 0 (with --resume: the run's)")
    t.add_argument("--seeds", default=None, metavar="LIST",
                   help="train several seeds: a count (5: seeds 0..4), a list (0,3,7) or ranges (0-7); one run "
                        "directory each (--run-dir and --resume then contain {seed})")
    t.add_argument("--seeds-per-process", type=int, default=1, metavar="K",
                   help="train K of the --seeds at once in this process, their networks batched "
                        "(a2c, trpo, reinforce, ddpg; docs/performance.md); default 1: one after another")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--n-envs", type=int, default=None)
    t.add_argument("--config", default=None, help="JSON or TOML file of config overrides")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config field")
    t.add_argument("--run-dir", default=None, help="default: runs/<env_id>/<algo>/seed<S>-<time>/")
    t.add_argument("--runs-root", default="runs", help="root of the default run directory")
    t.add_argument("--no-preset", action="store_true", help="ignore the tuned preset for this (algo, env)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--eval-episodes", type=int, default=10,
                   help="episodes of each deterministic evaluation, during training and at the end (0: skip both)")
    t.add_argument("--eval-freq", type=int, default=0,
                   help="evaluate every this many environment steps during training (0: never); logs eval/*, "
                        "keeps checkpoints/best.pt")
    t.add_argument("--log-interval", type=int, default=1000, help="log metrics every this many environment steps")
    t.add_argument("--env-kwargs", nargs="+", default=[], metavar="KEY=VALUE",
                   help="keyword arguments for gymnasium.make (values read as JSON when they parse)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR|CHECKPOINT",
                   help="continue a run in its own directory, from its newest valid checkpoint (or the one given), "
                        "with its seed, config and n_envs, and the envs' saved state (a pickle: resume only run "
                        "directories you trust)")
    t.add_argument("--override", action="store_true",
                   help="with --resume: apply --set/--config/--n-envs/--seed although they differ from the run's")
    t.add_argument("--env-backend", default="gymnasium", choices=("gymnasium", "torch"),
                   help="torch: batched classic-control envs on --device (docs/performance.md); evaluation still "
                        "uses Gymnasium's env")
    t.add_argument("--vectorization", default=None, choices=("auto", "sync", "async"),
                   help="step the envs in this process (sync) or in one worker process each (async); auto (the "
                        "default): async for an Atari id with --n-envs > 1, else sync")
    t.add_argument("--no-atari-preprocessing", action="store_true",
                   help="an Atari id: build the env as gymnasium.make does, without rlkit's preprocessing "
                        "(env kwarg atari_preprocessing=false; docs/guide.md#atari)")

    e = sub.add_parser("eval", help="evaluate a checkpoint")
    e.add_argument("path")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--device", default="auto")
    e.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic mode")
    e.add_argument("--env", default=None, help="evaluate on this env id instead of the one trained on")

    ls = sub.add_parser("list", help="algorithms and the spaces each supports (--presets: the tuned presets)")
    ls.add_argument("--presets", action="store_true", help="list every tuned preset with its budget and source")

    from rlkit.bench import add_bench_arguments
    from rlkit.plotting import add_plot_arguments

    add_bench_arguments(sub.add_parser("bench", help="run a grid of algorithms x environments x seeds (idempotent)"))
    add_plot_arguments(sub.add_parser("plot", help="learning curves, aggregates and a results table from runs"))
    return p


def newest_valid_checkpoint(resume: Path, algo: str) -> tuple[Path, dict[str, Any], list[str]]:
    """The checkpoint to resume, its payload and the corrupt ones skipped (named with why): the file given, or
    the newest valid one of a run directory (final.pt, then step_N.pt by N). `rlkit train --resume` loads it;
    scripts read a run's state from it (e.g. payload["total_budget"]). ValueError when none is valid."""
    from rlkit.core.checkpoint import CheckpointError, check_agent_payload, load_checkpoint

    if not resume.is_dir():
        payload = load_checkpoint(resume, algo=algo)
        check_agent_payload(payload, resume)
        return resume, payload, []
    ck = resume / "checkpoints"
    steps = sorted(((int(x.stem[5:]), x) for x in ck.glob("step_*.pt") if x.stem[5:].isdigit()), reverse=True)
    candidates = ([ck / "final.pt"] if (ck / "final.pt").is_file() else []) + [x for _, x in steps]
    skipped = []
    for path in candidates:
        try:
            payload = load_checkpoint(path, algo=algo)
            check_agent_payload(payload, path)
        except CheckpointError as e:
            if "was written by" in str(e):  # another algorithm's run: refused, not skipped as corrupt
                raise
            skipped.append(f"{path.name} ({_one_line(e).replace(str(path), '').strip(': ')})")
            continue
        return path, payload, skipped
    raise ValueError(f"--resume {resume}: no valid checkpoint in {ck}"
                     + (f" (skipped: {'; '.join(skipped)})" if skipped else ""))


def _parse_env_kwargs(items: list[str]) -> dict[str, Any]:
    from rlkit.core.config import parse_set_option

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise _UsageError(f"rlkit: error: --env-kwargs expects key=value, got {item!r}")
        k, v = parse_set_option(item)
        out[k] = v
    return out


def _resume_conflicts(cls: Any, payload: dict[str, Any], overrides: dict[str, Any], args: argparse.Namespace,
                      env_kwargs: dict[str, Any], seed: int | None) -> tuple[list[str], list[str]]:
    """(flags that would change the run, allowed with --override; ones that never can), each naming the value."""
    import importlib

    from rlkit.core.config import build_config, config_to_dict

    cfg_cls = getattr(importlib.import_module(cls.__module__), cls.__name__ + "Config")
    saved = config_to_dict(build_config(cfg_cls, dict(payload["config"])))
    new = config_to_dict(build_config(cfg_cls, dict(payload["config"]), **overrides))
    changed = [f"{'--n-envs' if k == 'n_envs' and args.n_envs is not None else k}={new[k]!r} (the run's: {saved[k]!r})"
               for k in overrides if new.get(k) != saved.get(k)]
    if seed is not None and seed != payload["seed"]:
        changed.append(f"--seed {seed} (the run's: {payload['seed']})")
    never = []
    if args.env_id != payload["env_id"]:
        never.append(f"env {args.env_id!r} (the run's: {payload['env_id']!r})")
    if env_kwargs and env_kwargs != (payload.get("env_kwargs") or {}):
        never.append(f"--env-kwargs {env_kwargs} (the run's: {payload.get('env_kwargs') or {}})")
    return changed, never


class _SeedPlan(NamedTuple):
    """One seed's run as `rlkit train` resolved it: where it goes, what it resumes, its total budget."""
    seed: int
    run_dir: Path
    ckpt: Path | None
    steps: int
    skipped: list[str]
    overrides: dict[str, Any]


def _train(args: argparse.Namespace) -> int:
    from rlkit.agents import REGISTRY, get_agent_class
    from rlkit.core.atari import atari_install_hint
    from rlkit.core.config import load_config_file, parse_set_option
    from rlkit.core.envs import is_known_env_id

    _check_int("--seed", args.seed, 0, MAX_SEED)
    _check_int("--steps", args.steps, 1)
    _check_int("--n-envs", args.n_envs, 1)
    _check_int("--eval-episodes", args.eval_episodes, 0)
    _check_int("--eval-freq", args.eval_freq, 0)
    _check_int("--log-interval", args.log_interval, 1)
    _check_int("--seeds-per-process", args.seeds_per_process, 1)
    if args.eval_freq and not args.eval_episodes:
        raise _UsageError("rlkit: error: --eval-freq needs --eval-episodes >= 1")
    if args.seeds is not None and args.seed is not None:
        raise _UsageError("rlkit: error: give --seed or --seeds, not both")
    if args.seeds is not None:
        from rlkit.bench import parse_seeds

        seeds: list[int | None] = list(parse_seeds(args.seeds))
    else:
        seeds = [args.seed]
    per_process = args.seeds_per_process
    if per_process > len(seeds):
        raise _UsageError(f"rlkit: error: --seeds-per-process {per_process} is more than the {len(seeds)} seed"
                          f"{'s' if len(seeds) > 1 else ''} given (--seeds)")
    cls = get_agent_class(args.algo)
    algo = cls.algo
    if per_process > 1 and not callable(getattr(cls, "learn_seeds", None)):
        batchable = [n for n in REGISTRY if callable(getattr(get_agent_class(n), "learn_seeds", None))]
        raise _UsageError(f"rlkit: error: {algo} cannot train several seeds in one process; --seeds-per-process > 1 "
                          f"supports {', '.join(batchable)}")
    if len(seeds) > 1:
        for flag, value in (("--run-dir", args.run_dir), ("--resume", args.resume)):
            if value and "{seed}" not in value:
                raise ValueError(f"{flag} must contain {{seed}} when training several seeds (one run directory "
                                 f"each), got {value!r}")
    env_kwargs = _parse_env_kwargs(args.env_kwargs)
    if args.no_atari_preprocessing:
        env_kwargs["atari_preprocessing"] = False

    import gymnasium as gym

    if not is_known_env_id(args.env_id):
        close = [k for k in gym.registry if args.env_id.split(":")[-1].lower().split("-")[0] in k.lower()][:5]
        raise ValueError(f"unknown Gymnasium environment id {args.env_id!r}"
                         + (f"; did you mean one of {close}?" if close else "") + atari_install_hint(args.env_id))
    overrides: dict[str, Any] = {}
    if args.config:
        overrides.update(load_config_file(args.config))
    for item in args.set:
        k, v = parse_set_option(item)
        overrides[k] = v
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    if args.vectorization is not None:
        overrides["vectorization"] = args.vectorization
    default_dir = None
    if len(seeds) > 1 and not args.run_dir and not args.resume:  # one time stamp for the seeds: a {seed} template
        from rlkit.core.logger import default_run_dir

        default_dir = str(default_run_dir(args.env_id, algo, "{seed}", args.runs_root))  # type: ignore[arg-type]
    # Every seed's run is resolved (and its directory checked) before anything is built.
    plans = [_plan_seed(args, cls, algo, seed, overrides, env_kwargs, default_dir) for seed in seeds]
    for i in range(0, len(plans), per_process):
        chunk = plans[i:i + per_process]
        rc = _train_one(args, cls, chunk[0], env_kwargs) if len(chunk) == 1 else _train_batch(args, cls, chunk,
                                                                                              env_kwargs, default_dir)
        if rc != 0:
            if i + len(chunk) < len(plans):
                rest = [str(p.seed) for p in plans[i + len(chunk):]]
                print(f"rlkit: seeds {', '.join(rest)} were not started", file=sys.stderr)
            return rc
    return 0


def _plan_seed(args: argparse.Namespace, cls: Any, algo: str, seed_arg: int | None, overrides: dict[str, Any],
               env_kwargs: dict[str, Any], default_dir: str | None) -> _SeedPlan:
    """Resolve one seed's run: its checkpoint to resume (and the checks on what may change), its budget, its
    run directory (refusing one that already holds a run unless resuming it)."""
    from rlkit.core.logger import default_run_dir
    from rlkit.core.rundir import check_run_dir_path, latest_checkpoint, previous_run_files
    from rlkit.presets import preset_for

    def for_seed(template: str) -> str:
        return template.replace("{seed}", str(seed_arg)) if seed_arg is not None else template

    resume = Path(for_seed(args.resume)) if args.resume else None
    if resume is not None:
        ckpt, payload, skipped = newest_valid_checkpoint(resume, algo)
        changed, never = _resume_conflicts(cls, payload, overrides, args, env_kwargs, seed_arg)
        if never:
            raise ValueError(f"--resume {resume}: cannot change the run's environment: {'; '.join(never)}")
        if changed and not args.override:
            raise ValueError(f"--resume {resume}: these would change the run: {'; '.join(changed)}; "
                             "drop them, or pass --override to apply them")
        seed = seed_arg if seed_arg is not None and args.override else payload["seed"]
        steps = args.steps or int(payload.get("total_budget") or 0) or 100_000
    else:
        ckpt, seed, steps, skipped = None, 0 if seed_arg is None else seed_arg, args.steps, []
        preset = None if args.no_preset else preset_for(algo, args.env_id)
        if preset:
            overrides = {**preset.get("config", {}), **overrides}
            steps = steps if steps is not None else int(preset.get("steps", 100_000))
        steps = steps if steps is not None else 100_000
    if args.run_dir:
        run_dir = check_run_dir_path(for_seed(args.run_dir))
    elif resume is not None and resume.is_dir():
        run_dir = resume
    elif ckpt is not None and ckpt.parent.name == "checkpoints":
        run_dir = ckpt.parent.parent  # continue the run the checkpoint belongs to
    elif default_dir is not None:
        run_dir = Path(for_seed(default_dir))
    else:
        run_dir = default_run_dir(args.env_id, algo, seed, args.runs_root)
    if resume is None and previous_run_files(run_dir):  # fail before building anything (learn() checks too)
        latest = latest_checkpoint(run_dir)
        hint = f"resume it with --resume {run_dir}" if latest is not None else "remove it"
        raise ValueError(f"run directory {run_dir} already holds a run ({', '.join(previous_run_files(run_dir)[:3])})"
                         f"; {hint}, or choose another --run-dir")
    return _SeedPlan(seed, run_dir, ckpt, steps, skipped, overrides)


def _kept_flags(args: argparse.Namespace) -> list[str]:
    """The flags a printed resume command repeats (those that differ from their defaults)."""
    cmd = []
    if args.device != "auto":
        cmd += ["--device", args.device]
    if args.no_progress:
        cmd.append("--no-progress")
    if args.env_backend != "gymnasium":
        cmd += ["--env-backend", args.env_backend]
    kept = (("--eval-episodes", args.eval_episodes, 10), ("--eval-freq", args.eval_freq, 0),
            ("--log-interval", args.log_interval, 1000))
    for flag, value, default in kept:
        if value != default:
            cmd += [flag, str(value)]
    return cmd


def _train_one(args: argparse.Namespace, cls: Any, plan: _SeedPlan, env_kwargs: dict[str, Any]) -> int:
    """Train one seed in this process, as planned."""
    algo, seed, run_dir, ckpt, steps, skipped, overrides = cls.algo, *plan
    if ckpt is not None:
        agent = cls.load(ckpt, env=args.env_id, device=args.device, restore_env=True,
                         config_overrides=overrides if args.override else None, env_backend=args.env_backend)
        if steps < agent.num_timesteps:
            raise ValueError(f"--steps {steps:,} is below the run's {agent.num_timesteps:,} steps in {ckpt}")
        agent.seed = seed
        remaining = steps - agent.num_timesteps
        what = (f"resuming {ckpt} at step {agent.num_timesteps:,} to {steps:,} ({remaining:,} more; "
                f"{agent.resume_note}" + (f"; skipped corrupt {', '.join(skipped)}" if skipped else "") + ")")
    else:
        agent = cls(args.env_id, config=overrides, seed=seed, device=args.device, env_kwargs=env_kwargs,
                    env_backend=args.env_backend)
        remaining = steps
        what = f"{remaining:,} steps"
    graphs = "; CUDA graphs" if getattr(agent, "cuda_graphs", False) is True else ""
    print(f"rlkit: training {algo} on {args.env_id}: {what}; seed {seed}; device {agent.device} "
          f"({agent.device_reason}){graphs} -> {run_dir}", file=sys.stderr)
    from rlkit.core.rundir import TrainingInterrupted

    try:
        agent.learn(remaining, run_dir=run_dir, progress=not args.no_progress, log_interval=args.log_interval,
                    total_budget=steps, eval_freq=args.eval_freq, n_eval_episodes=max(args.eval_episodes, 1))
    except TrainingInterrupted as e:
        print(f"rlkit: {e}; run directory {run_dir}", file=sys.stderr)
        if e.checkpoint is not None:
            cmd = ["rlkit", "train", algo, args.env_id, "--steps", str(steps), "--run-dir", str(run_dir),
                   "--resume", str(e.checkpoint), *_kept_flags(args)]
            print(f"rlkit: resume with: {shlex.join(cmd)}", file=sys.stderr)
        sys.stderr.flush()
        return e.exit_code
    _finish_run(args, agent, plan)
    return 0


def _train_batch(args: argparse.Namespace, cls: Any, plans: list[_SeedPlan], env_kwargs: dict[str, Any],
                 default_dir: str | None) -> int:
    """Train several seeds in this process at once (rlkit.core.seeds.SeedBatch): each seed writes the run
    directory, logs, checkpoints and result.json that training it alone would."""
    from rlkit.core.rundir import TrainingInterrupted
    from rlkit.core.seeds import SeedBatch

    algo, seeds = cls.algo, [p.seed for p in plans]
    steps = plans[0].steps
    if any(p.steps != steps for p in plans):
        raise ValueError(f"the seeds' runs have different budgets ({', '.join(f'{p.steps:,}' for p in plans)}); "
                         "train them in separate processes")
    if plans[0].ckpt is not None:
        batch = SeedBatch.load(cls, [p.ckpt for p in plans], env=args.env_id, device=args.device, restore_env=True,
                               config_overrides=plans[0].overrides if args.override else None,
                               env_backend=args.env_backend)
        for agent, plan in zip(batch.agents, plans):
            agent.seed = plan.seed
        done = batch.agents[0].num_timesteps
        if steps < done:
            raise ValueError(f"--steps {steps:,} is below the runs' {done:,} steps")
        notes = "; ".join(f"seed {p.seed}: {a.resume_note}" for p, a in zip(plans, batch.agents))
        what = f"resuming at step {done:,} to {steps:,} ({steps - done:,} more; {notes})"
    else:
        batch = SeedBatch(cls, args.env_id, seeds, config=plans[0].overrides, device=args.device,
                          env_kwargs=env_kwargs, env_backend=args.env_backend)
        done, what = 0, f"{steps:,} steps"
    dirs = args.run_dir or args.resume or default_dir
    print(f"rlkit: training {algo} on {args.env_id}: {what}; seeds {', '.join(map(str, seeds))} in one process; "
          f"device {batch.device} ({batch.agents[0].device_reason}) -> {dirs or plans[0].run_dir}", file=sys.stderr)
    try:
        batch.learn(steps - done, run_dirs=[p.run_dir for p in plans], progress=not args.no_progress,
                    log_interval=args.log_interval, total_budget=steps, eval_freq=args.eval_freq,
                    n_eval_episodes=max(args.eval_episodes, 1))
    except TrainingInterrupted as e:
        print(f"rlkit: {e}; run directories {dirs or ', '.join(str(p.run_dir) for p in plans)}", file=sys.stderr)
        if e.checkpoint is not None and dirs is not None:
            cmd = ["rlkit", "train", algo, args.env_id, "--steps", str(steps), "--seeds", ",".join(map(str, seeds)),
                   "--seeds-per-process", str(len(plans)), "--run-dir", dirs, "--resume", dirs, *_kept_flags(args)]
            print(f"rlkit: resume with: {shlex.join(cmd)}", file=sys.stderr)
        sys.stderr.flush()
        return e.exit_code
    for k, (agent, plan) in enumerate(zip(batch.agents, plans)):
        with batch.streams.scope(k):
            _finish_run(args, agent, plan)
    return 0


def _finish_run(args: argparse.Namespace, agent: Any, plan: _SeedPlan) -> None:
    """The final evaluation and result.json of one seed's run."""
    result: dict[str, Any] = {"algo": agent.algo, "env_id": args.env_id, "seed": plan.seed,
                              "steps": agent.num_timesteps, "run_dir": str(plan.run_dir)}
    if args.eval_episodes > 0:
        stats = agent.evaluate(n_episodes=args.eval_episodes, deterministic=True)
        result.update(stats)  # mean_return, std_return, mean_length: the final evaluation
        print(f"eval: mean return {stats['mean_return']:.2f} +/- {stats['std_return']:.2f} "
              f"over {args.eval_episodes} episodes" + (f" (seed {plan.seed})" if args.seeds is not None else ""))
    best = getattr(agent, "best_eval", None)
    if best is not None:  # evaluation during training ran: its best, kept in checkpoints/best.pt
        result.update({"best_eval_return": best["return"], "best_eval_step": best["step"]})
    (plan.run_dir / "result.json").write_text(json.dumps(result, indent=2))


def _eval(args: argparse.Namespace) -> int:
    from rlkit import load_agent
    from rlkit.core.device import resolve_device

    _check_int("--episodes", args.episodes, 1)
    resolve_device(args.device)  # a missing GPU is named as such before the checkpoint is even read
    # evaluation steps one env: an agent rebuilt on another env id needs no more (a run of 16 Atari envs would
    # otherwise start 16 worker processes only to evaluate)
    agent = load_agent(args.path, env=args.env, device=args.device, **({"n_envs": 1} if args.env else {}))
    stats = agent.evaluate(n_episodes=args.episodes, deterministic=not args.stochastic)
    print(f"{agent.algo} on {agent.env_id}: mean return {stats['mean_return']:.2f} +/- {stats['std_return']:.2f} "
          f"(mean length {stats['mean_length']:.1f}, {args.episodes} episodes)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from rlkit.agents import REGISTRY, available, get_agent_class

    present = set(available())
    if args.presets:
        from rlkit.core.config import PRESET_FAMILIES, load_presets

        presets = {name: load_presets(name) for name in REGISTRY}
        width = max((len(env_id) for ps in presets.values() for env_id in ps), default=16)  # ids in one column
        for name, ps in presets.items():
            for env_id, p in sorted(ps.items()):
                fields = ", ".join(f"{k}={v}" for k, v in p["config"].items())
                family = f"{'':<11}applies to: every {env_id} id without a preset of its own\n" \
                    if env_id in PRESET_FAMILIES else ""
                print(f"{name:<10} {env_id:<{width}} {int(p['steps']):>10,} steps  {fields}\n{family}"
                      f"{'':<11}source: {p['source']}")
        return 0
    for name in REGISTRY:
        if name in present:
            cls = get_agent_class(name)
            print(f"{name:<10} actions: {', '.join(cls.supported_actions):<16} "
                  "observations: Box, image Box (CNN), Discrete, Dict")
        else:
            print(f"{name:<10} (not in this installation)")
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """Warnings (e.g. an evaluation episode cut at its step cap) as one line, not file:line plus source."""
    print(f"rlkit: warning: {_one_line(Exception(str(message)))}", file=sys.stderr)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _TerminatedError()


def main(argv: Sequence[str] | None = None) -> int:
    from rlkit.core.envs import SpaceError
    from rlkit.core.rollout import NonFiniteError

    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_warning
    previous_term = None
    try:
        previous_term = signal.signal(signal.SIGTERM, _on_sigterm)  # training installs its own, saving, handler
    except ValueError:  # not the main thread (main() called from a worker thread): keep the default
        pass
    try:
        args = _build_parser().parse_args(argv)
        handler = {"train": _train, "eval": _eval, "list": _list}.get(args.command)
        if handler is None:
            from rlkit import bench, plotting

            handler = {"bench": bench.bench_command, "plot": plotting.plot_command}[args.command]
        return handler(args)
    except _UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"rlkit: training failed: {_one_line(e)}", file=sys.stderr)
        return 1
    except (ValueError, SpaceError, FileNotFoundError) as e:  # ConfigError, CheckpointError, RunDirError too
        print(f"rlkit: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError as e:  # a buffer that cannot fit, refused before allocating (names the GiB)
        print(f"rlkit: error: {_one_line(e) if str(e) else 'out of memory'}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only file system, a full disk, ... while writing logs or results
        where = f" ({e.filename})" if e.filename else ""
        print(f"rlkit: error: {e.strerror or _one_line(e)}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlkit: interrupted (SIGINT) before a checkpoint could be written", file=sys.stderr)
        return 130
    except _TerminatedError:
        print("rlkit: terminated (SIGTERM) outside training; nothing to resume", file=sys.stderr)
        return 143
    except Exception as e:  # noqa: BLE001 - a bug in rlkit: still one line, the traceback on request
        if os.environ.get("RLKIT_DEBUG"):
            raise
        print(f"rlkit: internal error: {type(e).__name__}: {_one_line(e)} (a bug in rlkit; set RLKIT_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous_showwarning
        if previous_term is not None:
            try:
                signal.signal(signal.SIGTERM, previous_term)
            except ValueError:
                pass


if __name__ == "__main__":
    sys.exit(main())
