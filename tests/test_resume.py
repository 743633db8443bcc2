"""Kill and resume (RELIABILITY.md): a run checkpointed at step k, SIGKILLed later, and resumed in a fresh
process ends bitwise equal to the same schedule without the crash (learn k, save, load, learn k in one
process), and differs from a weights-only cold start."""
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


@pytest.mark.parametrize("algo", _available())
def test_sigkill_then_resume_equals_uninterrupted(algo, tmp_path):
    env_id, cfg = CASES[algo]
    from rlkit.agents import get_agent_class

    cls = get_agent_class(algo)
    ck = tmp_path / "k.pt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from rlkit.agents import get_agent_class
        torch.set_num_threads(1)
        cls = get_agent_class({algo!r})
        a = cls({env_id!r}, config={cfg!r}, seed=7, device="cpu")
        a.learn({K}, progress=False)
        a.save({str(ck)!r})
        # keep training, then die without any cleanup in the middle of it
        a.learn({K} // 2, progress=False, log_interval=1, callback=lambda ag, m: os.kill(os.getpid(), signal.SIGKILL))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    resumed_script = textwrap.dedent(f"""
        import torch
        from rlkit.agents import get_agent_class
        torch.set_num_threads(1)
        a = get_agent_class({algo!r}).load({str(ck)!r}, env={env_id!r}, device="cpu")
        a.learn({K}, progress=False)
        a.save({str(tmp_path / 'resumed.pt')!r})
    """)
    r = subprocess.run([sys.executable, "-c", resumed_script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    resumed = cls.load(tmp_path / "resumed.pt", env=env_id, device="cpu")

    a = cls(env_id, config=cfg, seed=7, device="cpu")
    a.learn(K, progress=False)
    a.save(tmp_path / "same.pt")
    b = cls.load(tmp_path / "same.pt", env=env_id, device="cpu")
    b.learn(K, progress=False)

    sr, sb = state_tensors(resumed), state_tensors(b)
    assert sr.keys() == sb.keys() and sr
    for k in sr:
        assert torch.equal(sr[k], sb[k]), f"{algo}: {k} differs after kill-and-resume"
    assert resumed.num_timesteps == b.num_timesteps == 2 * K

    # A weights-only cold start (fresh optimiser state) ends elsewhere.
    cold = cls(env_id, config=cfg, seed=7, device="cpu")
    loaded = cls.load(tmp_path / "same.pt", device="cpu")
    for name, mod in vars(loaded).items():
        if isinstance(mod, torch.nn.Module):
            getattr(cold, name).load_state_dict(mod.state_dict())
    cold.num_timesteps = K
    cold.learn(K, progress=False)
    sc = state_tensors(cold)
    assert any(not torch.equal(sc[k], sb[k]) for k in sb if k in sc and sb[k].is_floating_point())


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
