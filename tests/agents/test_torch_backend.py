"""Every on-policy agent trains unchanged on the torch env backend (Discrete and Box envs), evaluates on
Gymnasium's env, checkpoints and resumes; DDPG refuses the backend with one line."""
from __future__ import annotations

import pytest
import torch

from rlkit import A2C, DDPG, QAC, REINFORCE, TRPO
from rlkit.core.envs import TORCH_ENV_IDS
from rlkit.core.torch_envs import TorchVecEnv

SMALL = dict(n_envs=4, n_steps=16, hidden_sizes=(16,))
EXTRA = {TRPO: dict(batch_size=32)}


def params(agent):
    return [p.detach().clone() for m in (agent.actor, agent.critic) for p in m.parameters()]


@pytest.mark.parametrize("env_id", TORCH_ENV_IDS)
@pytest.mark.parametrize("cls", [REINFORCE, QAC, A2C, TRPO], ids=lambda c: c.algo)
def test_on_policy_agent_trains_on_the_torch_backend(cls, env_id):
    agent = cls(env_id, seed=0, device="cpu", env_backend="torch", **SMALL, **EXTRA.get(cls, {}))
    assert isinstance(agent.env, TorchVecEnv) and agent.collector.tensor_env
    before = params(agent)
    seen = []
    agent.learn(256, progress=False, log_interval=128, callback=lambda a, m: seen.append(m))
    assert agent.num_timesteps >= 256 and seen
    assert any(not torch.equal(a, b) for a, b in zip(before, params(agent)))
    assert all(torch.isfinite(p).all() for p in params(agent))
    if env_id == "CartPole-v1":  # evaluation runs Gymnasium's env of the same id
        assert agent.evaluate(n_episodes=1)["mean_length"] >= 1


def test_checkpoint_resumes_on_the_torch_backend_and_loads_on_gymnasium(tmp_path):
    agent = A2C("CartPole-v1", seed=0, device="cpu", env_backend="torch", **SMALL)
    agent.learn(320, progress=False, run_dir=tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "final.pt"
    on_gym = A2C.load(path, env="CartPole-v1", device="cpu")  # before the resumed run replaces final.pt
    resumed = A2C.load(path, env="CartPole-v1", device="cpu", env_backend="torch")
    assert isinstance(resumed.env, TorchVecEnv) and resumed.env.num_envs == 4
    assert resumed.collector.episodes_done == agent.collector.episodes_done > 0
    # the counter streams continue where they were: 5 rollouts of 16 steps (the env's reset drew once more)
    streams = {"action_noise": 80, "env_resets": 81}
    assert resumed.collector.state_dict()["streams"] == agent.collector.state_dict()["streams"] == streams
    resumed.learn(64, progress=False, run_dir=tmp_path / "run")
    assert resumed.num_timesteps == agent.num_timesteps + 64
    assert resumed.collector.state_dict()["streams"] == {"action_noise": 96, "env_resets": 97}
    agent.learn(64, progress=False)  # uninterrupted, it draws the same noise and reset states after the resume
    for s in ("action_noise_stream", "env"):
        x = getattr(agent.collector, s) if s != "env" else agent.env.stream
        y = getattr(resumed.collector, s) if s != "env" else resumed.env.stream
        assert torch.equal(x.keys, y.keys) and torch.equal(x.counter, y.counter)
    assert not on_gym.collector.tensor_env
    obs = torch.zeros(3, 4).numpy()
    assert (on_gym.act(obs, deterministic=True) == agent.act(obs, deterministic=True)).all()


def test_ddpg_refuses_the_torch_backend_with_one_line():
    with pytest.raises(ValueError, match="ddpg does not support env_backend='torch'"):
        DDPG("Pendulum-v1", seed=0, device="cpu", env_backend="torch")


@pytest.mark.cuda
def test_a2c_trains_on_cuda_with_the_env_on_the_device():
    agent = A2C("Pendulum-v1", seed=0, device="cuda", env_backend="torch", **SMALL)
    assert agent.env.device.type == "cuda" and agent.collector.obs.device.type == "cuda"
    agent.learn(512, progress=False)
    assert agent.buffer.final_obs.device.type == "cuda" and agent.collector.episode_stats() == {}
