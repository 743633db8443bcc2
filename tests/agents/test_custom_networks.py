"""Custom networks (rlkit.core.networks protocol): every agent trains with the user's own modules, and it is the
user's module that acts, that learns, and that a checkpoint restores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rlkit
from rlkit.agents import get_agent_class
from rlkit.core.checkpoint import CheckpointError

SMALL = {
    "reinforce": ("CartPole-v1", dict(n_envs=2, n_steps=16)),
    "qac": ("CartPole-v1", dict(n_envs=2, n_steps=8)),
    "a2c": ("Pendulum-v1", dict(n_envs=2, n_steps=8)),
    "trpo": ("Pendulum-v1", dict(n_envs=2, n_steps=32, batch_size=32)),
    "ddpg": ("Pendulum-v1", dict(learning_starts=16, batch_size=16, buffer_size=1000)),
}


class LayerNormNet(nn.Module):
    """Not an MLP: Linear -> LayerNorm -> tanh -> Linear, counting its forward calls. A top-level class taking
    (in_dim, out_dim), so a checkpoint can rebuild it by name."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.inp, self.norm, self.out = nn.Linear(in_dim, 24), nn.LayerNorm(24), nn.Linear(24, out_dim)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.out(torch.tanh(self.norm(self.inp(x))))


def make(algo: str, **kw):
    env_id, cfg = SMALL[algo]
    return get_agent_class(algo)(env_id, seed=0, device="cpu", **cfg, **kw)


@pytest.mark.parametrize("algo", list(SMALL))
def test_the_users_networks_act_and_learn(algo):
    agent = make(algo, policy=LayerNormNet, critic=LayerNormNet)
    pol, crit = agent.actor.net, agent.critic.net
    assert isinstance(pol, LayerNormNet) and isinstance(crit, LayerNormNet)
    norm_before = pol.norm.weight.detach().clone(), crit.norm.weight.detach().clone()
    calls_before = pol.calls
    agent.learn(128, progress=False)
    assert pol.calls > calls_before  # the rollouts came from the user's module
    assert not torch.equal(pol.norm.weight, norm_before[0])  # its LayerNorm learned
    assert not torch.equal(crit.norm.weight, norm_before[1])
    # What act() returns is what the module says: make it prefer one action overwhelmingly.
    obs = agent.observation_space.sample()
    with torch.no_grad():
        pol.out.weight.zero_()
        pol.out.bias.copy_(torch.linspace(5.0, -5.0, pol.out.bias.numel()) if algo != "ddpg"
                           else torch.full_like(pol.out.bias, 5.0))
    action = agent.act(obs, deterministic=True)
    if agent.action_space.__class__.__name__ == "Discrete":
        assert int(action) == 0
    else:
        assert np.allclose(action, agent.action_space.high if algo == "ddpg" else np.clip(5.0, -2, 2), atol=1e-3)


@pytest.mark.parametrize("algo", list(SMALL))
def test_checkpoint_rebuilds_a_factory_and_asks_for_an_instance(algo, tmp_path):
    agent = make(algo, policy=LayerNormNet, critic=LayerNormNet)
    agent.learn(64, progress=False)
    agent.save(tmp_path / "f.pt")
    back = rlkit.load_agent(str(tmp_path / "f.pt"), device="cpu")  # no env, no networks passed: rebuilt by name
    assert isinstance(back.actor.net, LayerNormNet) and back.env is None
    for x, y in zip(agent.actor.parameters(), back.actor.parameters()):
        assert torch.equal(x, y)
    obs = np.stack([agent.observation_space.sample() for _ in range(4)])
    assert np.array_equal(agent.act(obs, deterministic=True), back.act(obs, deterministic=True))

    probe = make(algo)
    in_dim = probe.actor.encoder.dim
    out_dim = probe.actor.net.head.out_features
    inst = make(algo, policy=LayerNormNet(in_dim, out_dim))
    inst.save(tmp_path / "i.pt")
    with pytest.raises(CheckpointError, match="custom policy network.*pass policy="):
        rlkit.load_agent(str(tmp_path / "i.pt"), device="cpu")
    again = rlkit.load_agent(str(tmp_path / "i.pt"), device="cpu", policy=LayerNormNet(in_dim, out_dim))
    for x, y in zip(inst.actor.parameters(), again.actor.parameters()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("algo", list(SMALL))
def test_a_network_that_breaks_the_protocol_is_refused_by_role(algo):
    with pytest.raises(ValueError, match=r"the policy network must map \[B, \d+\] to \[B, \d+\]"):
        make(algo, policy=lambda i, o: nn.Linear(i, o + 1))
    with pytest.raises(ValueError, match="the critic network"):
        make(algo, critic=lambda i, o: nn.Linear(i, 7))
    with pytest.raises(ValueError, match="policy must be an nn.Module or a factory"):
        make(algo, policy=3)
