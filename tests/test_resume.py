"""Kill and resume (docs/reliability.md): a run checkpointed at step k, SIGKILLed later, and resumed from its run
directory in a fresh process ends bitwise equal to one uninterrupted run, for every agent (the linear lr schedule
included); envs that cannot be saved resume with fresh episodes, and the run's log says so."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import torch

CASES = {
    "reinforce": ("CartPole-v1", dict(n_envs=2, n_steps=16, hidden_sizes=(16,))),
    "a2c": ("CartPole-v1", dict(n_envs=2, n_steps=8, hidden_sizes=(16,))),
    "qac": ("CartPole-v1", dict(n_envs=2, n_steps=8, hidden_sizes=(16,))),
    "trpo": ("Pendulum-v1", dict(n_envs=2, n_steps=32, hidden_sizes=(16,))),
    "ddpg": ("Pendulum-v1", dict(hidden_sizes=(16,), learning_starts=32, batch_size=16, buffer_size=1000,
                                 save_replay_buffer=True)),
}
K = 64


def _available():
    from rlkit.agents import available

    return [a for a in CASES if a in available()]


def state_tensors(agent):
    out = {}
    for k, v in agent.state_dict().items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, torch.Tensor):
                    out[f"{k}.{kk}"] = vv
    return out


LINEAR = {"a2c", "qac"}  # the agents with a learning-rate schedule: run it, it must continue, not restart


class UnpicklableEnv:
    """A CartPole factory whose envs hold a lock, so their state cannot be pickled: a resume starts fresh episodes."""

    __name__ = "UnpicklableEnv"

    def __call__(self):
        import threading

        import gymnasium as gym

        env = gym.make("CartPole-v1")
        env.unwrapped.lock = threading.Lock()
        return env


def _run_killed_then_resumed(algo, env_expr, cfg, run_dir, n_total, kill_after):
    """Train to n_total in run_dir, SIGKILLed at the first callback after step kill_after (a checkpoint was
    written at kill_after), then resume the run directory in a fresh process to n_total."""
    killed = textwrap.dedent(f"""
        import os, signal, torch
        from rlkit.agents import get_agent_class
        from tests.test_resume import UnpicklableEnv
        torch.set_num_threads(1)
        a = get_agent_class({algo!r})({env_expr}, config={cfg!r}, seed=7, device="cpu")
        die = lambda ag, m: os.kill(os.getpid(), signal.SIGKILL) if ag.num_timesteps > {kill_after} else None
        a.learn({n_total}, run_dir={str(run_dir)!r}, progress=False, log_interval=1, callback=die)
    """)
    r = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    resumed = textwrap.dedent(f"""
        import torch
        from rlkit.agents import get_agent_class
        from rlkit.core.rundir import latest_checkpoint
        from tests.test_resume import UnpicklableEnv
        torch.set_num_threads(1)
        ck = latest_checkpoint({str(run_dir)!r})
        assert ck.name == "step_{kill_after}.pt", ck
        a = get_agent_class({algo!r}).load(ck, env={env_expr}, device="cpu", restore_env=True)
        a.learn(a.total_budget - a.num_timesteps, run_dir={str(run_dir)!r}, progress=False, log_interval=1)
    """)
    r = subprocess.run([sys.executable, "-c", resumed], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("algo", _available())
def test_sigkill_at_k_then_resume_to_n_equals_uninterrupted_n(algo, tmp_path):
    """Killed (SIGKILL) at k and resumed to N from the run directory == one uninterrupted N-step run, bitwise: the
    env state beside the checkpoint continues the same episodes, the linear lr decay runs over the run's budget."""
    env_id, cfg = CASES[algo]
    cfg = {**cfg, "checkpoint_interval": K, **({"lr_schedule": "linear"} if algo in LINEAR else {})}
    from rlkit.agents import get_agent_class

    cls = get_agent_class(algo)
    rd = tmp_path / "run"
    _run_killed_then_resumed(algo, repr(env_id), cfg, rd, 2 * K, K)
    assert (rd / "checkpoints" / f"step_{K}.envstate").is_file()
    assert "continue their episodes" in (rd / "run.log").read_text()
    steps = [int(float(row.split(",")[0])) for row in (rd / "progress.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * K, steps  # one CSV, strictly increasing steps
    resumed = cls.load(rd / "checkpoints" / "final.pt", env=env_id, device="cpu")

    ref = cls(env_id, config=cfg, seed=7, device="cpu")
    ref.learn(2 * K, run_dir=tmp_path / "ref", progress=False, log_interval=1)
    sr, sb = state_tensors(resumed), state_tensors(ref)
    assert sr.keys() == sb.keys() and sr
    for k in sr:
        assert torch.equal(sr[k], sb[k]), f"{algo}: {k} differs between kill-and-resume and one uninterrupted run"
    assert resumed.num_timesteps == ref.num_timesteps == 2 * K


def test_envs_that_cannot_be_saved_resume_with_fresh_episodes_and_the_log_says_so(tmp_path):
    cfg = {**CASES["a2c"][1], "checkpoint_interval": K}
    rd = tmp_path / "run"
    _run_killed_then_resumed("a2c", "UnpicklableEnv()", cfg, rd, 2 * K, K)
    assert not (rd / "checkpoints" / f"step_{K}.envstate").exists()
    log = (rd / "run.log").read_text()
    assert f"step {K}: resumed; the envs start fresh episodes" in log and "cannot be pickled" in log, log
    from rlkit import A2C

    resumed = A2C.load(rd / "checkpoints" / "final.pt", device="cpu")
    assert resumed.num_timesteps == 2 * K
    ref = A2C(UnpicklableEnv(), config=cfg, seed=7, device="cpu")
    ref.learn(2 * K, progress=False, log_interval=1)
    # fresh episodes after the resume: the run goes on, but it is not the uninterrupted one
    assert any(not torch.equal(v, ref.actor.state_dict()[k]) for k, v in resumed.actor.state_dict().items())


@pytest.mark.parametrize("algo", ["reinforce", "qac", "a2c", "trpo", "ddpg"])
def test_every_agent_checks_learn_arguments_the_same_way(algo):
    from rlkit.agents import get_agent_class

    env = "CartPole-v1" if algo != "ddpg" else "Pendulum-v1"
    agent = get_agent_class(algo)(env, seed=0, device="cpu")
    with pytest.raises(ValueError, match="total_steps"):
        agent.learn(-5, progress=False)
    with pytest.raises(ValueError, match="log_interval"):
        agent.learn(10, progress=False, log_interval=0)
    assert agent.num_timesteps == 0
