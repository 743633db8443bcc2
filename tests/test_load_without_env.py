"""A checkpoint stores the spaces: agents load without their environment for act() and value(), also when they
were trained on an unregistered env; an env is needed only to train (and to evaluate an unregistered one)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlkit
from rlkit.agents import get_agent_class
from tests.conftest import CountingEnv

TINY = {
    "reinforce": dict(n_envs=2, n_steps=8), "qac": dict(n_envs=2, n_steps=8), "a2c": dict(n_envs=2, n_steps=8),
    "trpo": dict(n_envs=2, n_steps=16, batch_size=16),
    "ddpg": dict(learning_starts=8, batch_size=8, buffer_size=500),
}


@pytest.mark.parametrize("algo", list(TINY))
def test_an_agent_trained_on_a_callable_env_loads_without_it(algo, tmp_path):
    box = algo == "ddpg"
    agent = get_agent_class(algo)(lambda: CountingEnv(horizon=5, box_actions=box), seed=0, device="cpu",
                                  **TINY[algo])
    agent.learn(32, progress=False)
    agent.save(tmp_path / "a.pt")
    loaded = rlkit.load_agent(str(tmp_path / "a.pt"), device="cpu")
    assert loaded.env is None and loaded.observation_space == agent.observation_space
    obs = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    assert np.array_equal(loaded.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    assert loaded.action_space.contains(loaded.act(obs[0]))
    if algo == "ddpg":
        assert np.allclose(loaded.value(obs, loaded.act(obs, True)), agent.value(obs, agent.act(obs, True)))
    else:
        assert np.allclose(loaded.value(obs), agent.value(obs))
    with pytest.raises(ValueError, match="loaded without an environment.*pass env= to load"):
        loaded.learn(10)
    with pytest.raises(ValueError, match="pass env="):
        loaded.evaluate(1)  # nothing records how to rebuild a callable's env
    assert loaded.evaluate(1, env=CountingEnv(horizon=5, box_actions=box))["mean_length"] == 5.0
    again = get_agent_class(algo).load(tmp_path / "a.pt", env=lambda: CountingEnv(horizon=5, box_actions=box),
                                       device="cpu")
    again.learn(16, progress=False)  # with an env it trains on


def test_registered_env_and_ready_vector_env(tmp_path):
    venv = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    agent = rlkit.A2C(venv, seed=0, device="cpu", n_steps=8)
    assert agent.env_id == "CartPole-v1" and agent.config.n_envs == 3  # the real number of envs is recorded
    agent.learn(48, progress=False)
    agent.save(tmp_path / "v.pt")
    loaded = rlkit.load_agent(str(tmp_path / "v.pt"), device="cpu")
    assert loaded.env is None and loaded.env_id == "CartPole-v1"
    assert loaded.evaluate(2)["n_episodes"] == 2.0  # rebuilt from the recorded id
