"""Running observation and reward normalisation: the statistics equal a direct computation on a recorded stream,
travel with checkpoints, stay frozen in evaluation, and never touch the logged episode returns."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlkit.agents import get_agent_class
from rlkit.core.networks import ObsEncoder
from rlkit.core.normalize import ReturnNormalizer
from tests.conftest import CountingEnv

import gymnasium as gym

ALGOS = {
    "reinforce": ("CartPole-v1", dict(n_envs=2, n_steps=16)),
    "qac": ("Pendulum-v1", dict(n_envs=2, n_steps=8)),
    "a2c": ("Pendulum-v1", dict(n_envs=2, n_steps=8)),
    "trpo": ("Pendulum-v1", dict(n_envs=2, n_steps=32, batch_size=32)),
    "ddpg": ("Pendulum-v1", dict(learning_starts=16, batch_size=16, buffer_size=1000)),
}


def test_return_normalizer_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    T, N, gamma = 300, 3, 0.9
    rewards = rng.normal(2.0, 3.0, size=(T, N))
    done = rng.random((T, N)) < 0.05
    norm = ReturnNormalizer(N, gamma, clip=1e9)
    seen, ret = [], np.zeros(N)
    for t in range(T):
        scaled = norm(rewards[t], done[t])
        ret = ret * gamma + rewards[t]
        seen.append(ret.copy())
        ret[done[t]] = 0.0
        var = np.var(np.concatenate(seen))  # the 1e-4 prior count weighs nothing next to these samples
        assert np.allclose(scaled, rewards[t] / np.sqrt(var + 1e-8), rtol=1e-3)
    assert norm.var == pytest.approx(np.var(np.concatenate(seen)), rel=1e-5)
    assert norm.mean == pytest.approx(np.mean(np.concatenate(seen)), rel=1e-5)
    clipped = ReturnNormalizer(N, gamma, clip=0.5)(np.full(N, 1e3), np.zeros(N, bool))
    assert np.all(clipped == 0.5)


def test_observation_statistics_equal_a_direct_computation():
    enc = ObsEncoder(gym.spaces.Box(-np.inf, np.inf, (3,)), normalize=True, clip=1e9)
    rng = np.random.default_rng(1)
    batches = [rng.normal(5.0, 2.0, size=(int(rng.integers(1, 40)), 3)) for _ in range(30)]
    for b in batches:
        enc.update_stats(torch.as_tensor(b, dtype=torch.float32))
    stream = np.concatenate(batches).astype(np.float32).astype(np.float64)
    assert np.allclose(enc.mean.numpy(), stream.mean(0), atol=1e-6)
    assert np.allclose(enc.var.numpy(), stream.var(0), rtol=1e-4)
    x = torch.as_tensor(stream[:4], dtype=torch.float32)
    expected = (stream[:4] - stream.mean(0)) / np.sqrt(stream.var(0) + 1e-8)
    assert np.allclose(enc(x).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("algo", list(ALGOS))
def test_every_agent_normalises_saves_restores_and_freezes_in_evaluation(algo, tmp_path):
    env_id, kw = ALGOS[algo]
    cls = get_agent_class(algo)
    a = cls(env_id, seed=0, device="cpu", normalize_obs=True, normalize_reward=True, **kw)
    a.learn(128, progress=False)
    enc, rn = a.actor.encoder, a.collector.reward_normalizer
    assert enc.count.item() > 100 and rn.count > 100
    assert enc is a.critic.encoder
    before = (enc.mean.clone(), enc.var.clone(), rn.state_dict())
    a.evaluate(n_episodes=1)
    a.act(a.observation_space.sample())
    assert torch.equal(before[0], enc.mean) and torch.equal(before[1], enc.var) and rn.state_dict() == before[2]
    a.save(tmp_path / "n.pt")
    b = cls.load(tmp_path / "n.pt", env=env_id, device="cpu")
    assert torch.equal(b.actor.encoder.mean, enc.mean) and b.collector.reward_normalizer.state_dict() == before[2]
    assert not torch.equal(enc.mean, torch.zeros_like(enc.mean))


@pytest.mark.parametrize("algo", ["a2c", "reinforce"])
def test_logged_episode_return_is_the_raw_return(algo):
    """CountingEnv pays 1 per step and ends after 3: the logged return is 3 whatever the reward scaling."""
    cls = get_agent_class(algo)
    a = cls(lambda: CountingEnv(horizon=3), seed=0, device="cpu", n_envs=2, n_steps=6, normalize_reward=True)
    logged = []
    a.learn(48, progress=False, log_interval=12, callback=lambda ag, m: logged.append(m["rollout/episode_return"]))
    assert logged and all(r == 3.0 for r in logged)
    assert not torch.all(a.buffer.rewards == 1.0)  # what it trained on was scaled


def test_ddpg_targets_share_the_observation_statistics():
    a = get_agent_class("ddpg")("Pendulum-v1", seed=0, device="cpu", normalize_obs=True,
                                **ALGOS["ddpg"][1])
    assert a.actor_target.encoder is a.actor.encoder is a.critic.encoder is a.critic_target.encoder
    a.learn(40, progress=False)
    assert a.actor.encoder.count.item() > 30
