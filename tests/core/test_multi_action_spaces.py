"""MultiDiscrete and MultiBinary actions at the env edge (rlkit/core/envs.py, networks.py): the policy's flat
[B, D] actions become members of the space (shape, dtype, start), the spaces are recorded in checkpoints as plain
data and read back equal, the checks refuse what cannot work with one line, and rollouts store [T, N, D] int64."""
from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.core.buffers import RolloutBuffer
from rlkit.core.envs import (SpaceError, check_spaces, make_vec_env, space_from_dict, space_signature, space_to_dict,
                             to_env_actions)
from rlkit.core.networks import action_dim, action_storage, make_actor
from rlkit.core.rollout import RolloutCollector
from tests.multi_action_envs import MatchMultiBinaryEnv, MatchMultiDiscreteEnv

BOX = gym.spaces.Box(-1, 1, (2,), np.float32)
MULTI = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")


def test_to_env_actions_gives_members_of_the_space():
    md = gym.spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -2])
    a = np.array([[2, 1, 0], [0, 0, 3]], dtype=np.int64)
    out = to_env_actions(a, md)
    assert out.dtype == np.int64 and out.shape == (2, 3) and out.tolist() == [[3, 1, -2], [1, 0, 1]]
    assert all(md.contains(row) for row in out)
    md2 = gym.spaces.MultiDiscrete([[2, 3], [4, 5]], dtype=np.int32)  # a 2-D nvec: the policy's D = 4 flattened
    out2 = to_env_actions(np.array([[1, 2, 3, 4]]), md2)
    assert out2.dtype == np.int32 and out2.shape == (1, 2, 2) and md2.contains(out2[0])
    mb = gym.spaces.MultiBinary((2, 3))
    out3 = to_env_actions(np.array([[1, 0, 1, 1, 0, 0]]), mb)
    assert out3.dtype == np.int8 and out3.shape == (1, 2, 3) and mb.contains(out3[0])
    assert to_env_actions(np.array([[0, 1, 1, 0]]), gym.spaces.MultiBinary(4)).dtype == np.int8


@pytest.mark.parametrize("space", [gym.spaces.MultiDiscrete([3, 2, 4]),
                                   gym.spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -2]),
                                   gym.spaces.MultiDiscrete([[2, 3], [4, 5]], dtype=np.int32),
                                   gym.spaces.MultiBinary(4), gym.spaces.MultiBinary((2, 3))])
def test_spaces_are_recorded_as_plain_data_and_read_back_equal(space):
    d = space_to_dict(space)
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    back = space_from_dict(torch.load(buf, weights_only=True))  # what a checkpoint load accepts
    assert back == space and back.dtype == space.dtype and back.shape == space.shape
    assert space_signature(BOX, back) == space_signature(BOX, space)


def test_signatures_tell_spaces_apart():
    sigs = {space_signature(BOX, s) for s in (gym.spaces.MultiDiscrete([3, 2]), gym.spaces.MultiDiscrete([2, 3]),
                                              gym.spaces.MultiDiscrete([3, 2], start=[1, 0]),
                                              gym.spaces.MultiBinary(6), gym.spaces.MultiBinary((2, 3)))}
    assert len(sigs) == 5
    assert space_signature(BOX, gym.spaces.MultiDiscrete([3, 2])) == "obs=Box(2,) act=MultiDiscrete([3, 2])"


def test_space_checks_accept_declared_kinds_and_refuse_the_rest_in_one_line():
    check_spaces("a2c", BOX, gym.spaces.MultiDiscrete([3, 2], start=[5, -1]), MULTI)
    check_spaces("a2c", BOX, gym.spaces.MultiBinary((2, 3)), MULTI)
    with pytest.raises(SpaceError, match=r"^ddpg does not support action space MultiDiscrete\(\[3 2\]\) "
                                         r"\(MultiDiscrete\); supported action spaces: Box$"):
        check_spaces("ddpg", BOX, gym.spaces.MultiDiscrete([3, 2]), ("Box",))
    with pytest.raises(SpaceError, match=r"^ddpg does not support action space MultiDiscrete\(\[\[2 3\] \[4 5\]\]\) "
                                         r"\(MultiDiscrete\); supported action spaces: Box$"):  # one line
        check_spaces("ddpg", BOX, gym.spaces.MultiDiscrete([[2, 3], [4, 5]]), ("Box",))
    with pytest.raises(SpaceError, match=r"^a2c cannot use action space MultiDiscrete\(\[\]\): it has no action "
                                         r"dimensions$"):
        check_spaces("a2c", BOX, gym.spaces.MultiDiscrete(np.zeros(0, np.int64)), MULTI)


def test_actor_outputs_and_storage_per_space():
    for space, n_out, n_dims in [(gym.spaces.MultiDiscrete([3, 2, 4]), 9, 3), (gym.spaces.MultiBinary((2, 3)), 6, 6),
                                 (gym.spaces.MultiDiscrete([[2, 3], [4, 5]]), 14, 4)]:
        assert action_dim(space) == n_out and action_storage(space) == ((n_dims,), torch.int64)
        actor = make_actor(BOX, space, (8,))
        obs = torch.randn(5, 2)
        a = actor.sample_actions(obs)
        assert a.shape == (5, n_dims) and a.dtype == torch.int64
        assert all(space.contains(row) for row in to_env_actions(a.numpy(), space))
        assert all(space.contains(row) for row in to_env_actions(actor.mode(obs).numpy(), space))
        logp, h = actor.log_prob_entropy(obs, a)
        assert logp.shape == (5,) and h.shape == (5,) and (logp <= 0).all() and (h > 0).all()
        assert torch.allclose(actor.action_probs(obs).sum(-1), torch.full((5,), float(n_dims)))
        assert not any(k.endswith("index") for k in actor.state_dict())  # index buffers stay out of checkpoints


@pytest.mark.parametrize("make", [lambda: MatchMultiDiscreteEnv(start=(1, 0, -2)), lambda: MatchMultiBinaryEnv((2, 2)),
                                  lambda: MatchMultiDiscreteEnv(nvec=[[2, 3], [4, 2]], start=[[0, 1], [-1, 0]])])
def test_rollout_stores_flat_int64_actions_and_steps_the_env_with_members(make):
    venv = make_vec_env(make, n_envs=3, seed=0)  # the env asserts that each action is in its space
    space = venv.single_action_space
    shape, dtype = action_storage(space)
    actor = make_actor(venv.single_observation_space, space, (8,))
    buf = RolloutBuffer(5, 3, venv.single_observation_space.shape, shape, dtype, torch.device("cpu"))
    obs, _ = venv.reset(seed=[0, 1, 2])
    RolloutCollector(venv, torch.device("cpu"), obs).collect(buf, actor.sample_actions)
    assert buf.actions.shape == (5, 3, int(np.prod(space.shape))) and buf.actions.dtype == torch.int64
    assert all(space.contains(row) for row in to_env_actions(buf.flat(buf.actions).numpy(), space))
    venv.close()
