"""REINFORCE: smoke runs on Discrete and Box, determinism, checkpoints, resume, bad inputs."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlkit
from rlkit import REINFORCE, REINFORCEConfig
from rlkit.core.checkpoint import CheckpointError
from rlkit.core.config import ConfigError
from rlkit.core.envs import SpaceError
from tests.conftest import CountingEnv

SMALL = dict(n_envs=2, n_steps=16, hidden_sizes=(16,))


def params(agent):
    return [p.detach().clone() for p in list(agent.actor.parameters()) + list(agent.critic.parameters())]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_smoke_finite_losses_and_actions_in_space(env_id, tmp_path):
    losses = []
    agent = REINFORCE(env_id, seed=0, device="cpu", **SMALL)
    agent.learn(128, progress=False, callback=lambda ag, m: losses.append(m["train/loss_pi"]), run_dir=tmp_path,
                log_interval=1)
    assert agent.num_timesteps == 128 and len(losses) == 4 and np.isfinite(losses).all()
    space = agent.action_space
    obs = agent.observation_space.sample()
    assert space.contains(agent.act(obs)) and space.contains(agent.act(obs, deterministic=True))
    batch = agent.act(np.stack([obs] * 5))
    assert len(batch) == 5 and all(space.contains(a) for a in batch)
    assert np.isfinite(agent.value(obs))
    stats = agent.evaluate(n_episodes=2)
    assert set(stats) >= {"mean_return", "std_return", "mean_length"}
    assert (tmp_path / "checkpoints" / "final.pt").exists() and (tmp_path / "progress.csv").exists()


def test_same_seed_same_losses_and_parameters_different_seed_differs():
    def run(seed):
        losses = []
        a = REINFORCE("CartPole-v1", seed=seed, device="cpu", **SMALL)
        a.learn(96, progress=False, callback=lambda ag, m: losses.append((m["train/loss_pi"], m["train/loss_v"])))
        return losses, params(a)

    l1, p1 = run(1)
    l2, p2 = run(1)
    l3, _ = run(2)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert l1 != l3


def test_checkpoint_round_trip_resume_equals_uninterrupted(tmp_path):
    """Resume from a checkpoint taken at a rollout boundary continues like the uninterrupted run would in its
    learning state: the same parameters after the same extra update on the same batch. Also proves the
    optimiser state is restored (a fresh optimiser gives different parameters)."""
    a = REINFORCE("CartPole-v1", seed=0, device="cpu", **SMALL)
    a.learn(64, progress=False)
    a.save(tmp_path / "a.pt")
    b = REINFORCE.load(tmp_path / "a.pt", env="CartPole-v1", device="cpu")
    assert b.config == a.config and b.num_timesteps == 64
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    # The optimiser holds the module's own parameter objects after load.
    ids = {id(p) for g in b.pi_optimizer.param_groups for p in g["params"]}
    assert ids == {id(p) for p in b.actor.parameters()}
    # Same batch, one more update each: resumed == uninterrupted; a weights-only cold start differs.
    cold = REINFORCE("CartPole-v1", seed=0, device="cpu", **SMALL)
    cold.actor.load_state_dict(a.actor.state_dict())
    cold.critic.load_state_dict(a.critic.state_dict())
    a.collector.collect(a.buffer, a.actor.sample_actions)
    for other in (b, cold):
        for name in ("obs", "actions", "rewards", "terminated", "truncated", "final_obs", "last_obs"):
            getattr(other.buffer, name).copy_(getattr(a.buffer, name))
    torch.manual_seed(0); a.update(a.buffer)
    torch.manual_seed(0); b.update(b.buffer)
    torch.manual_seed(0); cold.update(cold.buffer)
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert not all(torch.equal(x, y) for x, y in zip(params(a), params(cold)))


def test_five_save_load_cycles_change_no_hyperparameter(tmp_path):
    a = REINFORCE("CartPole-v1", seed=0, device="cpu", learning_rate=3e-4, hidden_sizes=(8, 8), n_envs=2)
    cfg = a.config
    for i in range(5):
        a.save(tmp_path / "c.pt")
        a = rlkit.load_agent(str(tmp_path / "c.pt"), device="cpu")
    assert a.config == cfg and a.pi_optimizer.param_groups[0]["lr"] == 3e-4


def test_wrong_space_and_wrong_algorithm_checkpoints_leave_live_agent_unchanged(tmp_path):
    a = REINFORCE("CartPole-v1", seed=0, device="cpu", **SMALL)
    a.save(tmp_path / "cp.pt")
    with pytest.raises(CheckpointError, match=r"trained on spaces obs=Box\(4,\) act=Discrete\(2\)"):
        REINFORCE.load(tmp_path / "cp.pt", env="Pendulum-v1", device="cpu")
    from rlkit.core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other.pt", {"algo": "a2c"})
    with pytest.raises(CheckpointError, match="written by 'a2c', not 'reinforce'"):
        REINFORCE.load(tmp_path / "other.pt", device="cpu")
    # A state that fails half-way through loading leaves the live agent exactly as it was.
    from rlkit.core.agent_io import load_state_or_rollback

    before = params(a)
    other = REINFORCE("CartPole-v1", seed=5, device="cpu", **SMALL).state_dict()
    other["critic"] = {k: (v[:1] if v.dim() else v) for k, v in other["critic"].items()}  # actor fits, critic not
    with pytest.raises(RuntimeError):
        load_state_or_rollback(a, other)
    assert all(torch.equal(x, y) for x, y in zip(before, params(a)))


def test_unsupported_spaces_and_bad_config():
    env = lambda: gym.wrappers.TimeLimit(_TupleActionEnv(), 5)
    with pytest.raises(SpaceError, match=r"reinforce does not support action space Tuple\(.*: Discrete, Box, Multi"):
        REINFORCE(env, device="cpu")
    with pytest.raises(ConfigError, match="learning_rate must be > 0"):
        REINFORCE("CartPole-v1", learning_rate=-1.0)
    with pytest.raises(ConfigError, match="unknown REINFORCEConfig key"):
        REINFORCE("CartPole-v1", config=REINFORCEConfig(), lr=1.0)


class _TupleActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, a):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_custom_env_instance_and_float64_box():
    agent = REINFORCE(CountingEnv(horizon=4, box_actions=True), seed=0, device="cpu", n_envs=1, n_steps=8)
    agent.learn(16, progress=False)
    f64 = lambda: gym.wrappers.TimeLimit(_F64Env(), 10)
    a2 = REINFORCE(f64, seed=0, device="cpu", n_envs=2, n_steps=8)
    a2.learn(32, progress=False)
    assert a2.action_space.contains(a2.act(np.zeros(3)))


class _F64Env(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float64)
    action_space = gym.spaces.Box(-2.0, 5.0, (2,), np.float64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3), {}

    def step(self, a):
        assert self.action_space.contains(a)
        return self.np_random.uniform(-1, 1, 3), float(-np.sum(a ** 2)), False, False, {}


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    a = REINFORCE("CartPole-v1", seed=0, device="cpu", **SMALL)
    with torch.no_grad():
        for p in a.actor.parameters():
            p.fill_(float("nan"))
    from rlkit.core.rollout import NonFiniteError

    with pytest.raises((NonFiniteError, RuntimeError)):
        a.learn(64, progress=False, run_dir=tmp_path)
    assert not (tmp_path / "checkpoints" / "final.pt").exists()


@pytest.mark.cuda
def test_cuda_training_keeps_rollout_buffer_on_gpu():
    agent = REINFORCE("CartPole-v1", seed=0, device="cuda", **SMALL)
    agent.learn(64, progress=False)
    assert agent.buffer.obs.is_cuda and agent.buffer.rewards.is_cuda
    assert next(agent.actor.parameters()).is_cuda
    assert agent.action_space.contains(agent.act(np.zeros(4, np.float32)))


def test_evaluating_a_checkpoint_twice_gives_identical_returns(tmp_path):
    a = REINFORCE("CartPole-v1", seed=4, device="cpu", **SMALL)
    a.save(tmp_path / "e.pt")
    s1 = rlkit.load_agent(str(tmp_path / "e.pt"), device="cpu").evaluate(3, deterministic=False)
    s2 = rlkit.load_agent(str(tmp_path / "e.pt"), device="cpu").evaluate(3, deterministic=False)
    assert s1 == s2


def test_advantage_normalisation_of_a_batch_of_one_is_finite():
    from rlkit.agents.reinforce import normalize

    assert torch.equal(normalize(torch.tensor([3.0])), torch.tensor([3.0]))
    a = REINFORCE("CartPole-v1", seed=0, device="cpu", n_envs=1, n_steps=1)
    a.learn(3, progress=False)
    assert all(torch.isfinite(p).all() for p in params(a))


def test_failed_periodic_save_prunes_nothing(tmp_path, monkeypatch):
    from rlkit.core import agent_io, checkpoint

    a = REINFORCE("CartPole-v1", seed=0, device="cpu", **SMALL)
    d = tmp_path / "checkpoints"
    for n in (32, 64):
        a.num_timesteps = n
        agent_io.periodic_checkpoint(a, d, keep=2)
    monkeypatch.setattr(checkpoint.os, "replace", lambda *x: (_ for _ in ()).throw(OSError("simulated")))
    a.num_timesteps = 96
    with pytest.raises(OSError):
        agent_io.periodic_checkpoint(a, d, keep=2)
    assert sorted(p.name for p in d.iterdir()) == ["step_32.envstate", "step_32.pt", "step_64.envstate", "step_64.pt"]


def test_discrete_observations_are_one_hot_encoded():
    a = REINFORCE("FrozenLake-v1", seed=0, device="cpu", n_envs=2, n_steps=8)
    a.learn(32, progress=False)
    assert a.action_space.contains(a.act(3)) and len(a.act(np.array([0, 5]))) == 2


def test_periodic_checkpoints_during_learn(tmp_path):
    a = REINFORCE("CartPole-v1", seed=0, device="cpu", checkpoint_interval=32, keep_checkpoints=2, **SMALL)
    a.learn(160, progress=False, run_dir=tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["final.envstate", "final.pt", "step_128.envstate", "step_128.pt", "step_160.envstate",
                     "step_160.pt"]  # each with its env state (docs/guide.md, "Resuming a run"), rotated alike
