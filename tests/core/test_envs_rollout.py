"""make_vec_env inputs, space checks, seeding, and the rollout's termination/truncation handling."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from rlkit.core.buffers import RolloutBuffer
from rlkit.core.envs import (SameStepSyncVectorEnv, SpaceError, check_spaces, make_vec_env, sub_env_seeds,
                              to_env_actions)
from rlkit.core.rollout import NonFiniteError, RolloutCollector, evaluate_policy
from rlkit.core.returns import gae
from tests.conftest import BadEnv, CountingEnv


def test_make_vec_env_accepts_id_callable_instance_and_same_step_vector_env():
    for env in ["CartPole-v1", lambda: gym.make("CartPole-v1"), gym.make("CartPole-v1")]:
        v = make_vec_env(env, n_envs=2, seed=0)
        assert v.num_envs == 2 and v.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        v.close()
    ready = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 3, autoreset_mode=AutoresetMode.SAME_STEP)
    assert make_vec_env(ready, seed=0) is ready


def test_next_step_vector_env_is_refused_with_instructions():
    ready = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match="SAME_STEP"):
        make_vec_env(ready)


def test_unknown_id_and_bad_inputs():
    with pytest.raises(ValueError, match="unknown Gymnasium environment id 'Cartpole-v1'.*CartPole-v1"):
        make_vec_env("Cartpole-v1")
    with pytest.raises(ValueError, match="n_envs"):
        make_vec_env("CartPole-v1", n_envs=0)
    with pytest.raises(TypeError, match="env must be"):
        make_vec_env(42)
    with pytest.raises(ValueError, match="n_envs=1"):
        make_vec_env(CountingEnv(), n_envs=2)


def test_space_checks_name_the_algorithm_the_space_and_what_is_supported():
    box = gym.spaces.Box(-1, 1, (2,))
    with pytest.raises(SpaceError,
                       match=r"DDPG does not support action space Discrete\(3\).*supported action spaces: Box"):
        check_spaces("DDPG", box, gym.spaces.Discrete(3), ("Box",))
    with pytest.raises(SpaceError, match="low >= high"):
        check_spaces("A2C", box, gym.spaces.Box(np.array([0.0, 1.0]), np.array([1.0, 1.0])), ("Box",))
    with pytest.raises(SpaceError, match="infinite bound"):
        check_spaces("DDPG", box, gym.spaces.Box(-np.inf, np.inf, (1,)), ("Box",), require_bounded_actions=True)
    with pytest.raises(SpaceError, match="observation space"):
        check_spaces("A2C", gym.spaces.MultiBinary(3), gym.spaces.Discrete(2), ("Discrete",))


def test_make_vec_env_checks_spaces_for_an_algorithm():
    with pytest.raises(SpaceError, match=r"DDPG does not support action space Discrete\(2\)"):
        make_vec_env("CartPole-v1", algo="DDPG", supported_actions=("Box",))


def test_sub_env_seeds_of_adjacent_runs_are_disjoint_and_streams_differ():
    a, b = sub_env_seeds(0, 8), sub_env_seeds(1, 8)
    assert not set(a) & set(b)
    assert sub_env_seeds(0, 8, stream=1) != a
    assert sub_env_seeds(None, 3) is None


def test_action_space_is_seeded():
    s1 = [make_vec_env("CartPole-v1", 2, seed=3).action_space.sample().tolist() for _ in range(2)]
    assert s1[0] == s1[1]


def test_box_actions_are_clipped_into_bounds_in_the_space_dtype():
    space = gym.spaces.Box(np.array([0.0, -2.0]), np.array([1.0, 5.0]), dtype=np.float64)
    a = to_env_actions(np.array([[7.0, -9.0], [-3.0, 9.0]], dtype=np.float32), space)
    assert a.dtype == np.float64 and all(space.contains(x) for x in a)


def test_truncation_stores_true_final_observation_and_bootstraps_from_it():
    """Env 0 truncates at t=3, env 1 terminates at t=3: only env 0's final obs is kept, and it is the true
    final observation [3, 0], not the reset observation [0, 1] the vector env returned."""
    fns = [lambda: CountingEnv(horizon=3, terminate=False), lambda: CountingEnv(horizon=3, terminate=True)]
    venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, _ = venv.reset(seed=[0, 1])
    buf = RolloutBuffer(4, 2, (2,), (), torch.int64, torch.device("cpu"))
    col = RolloutCollector(venv, torch.device("cpu"), obs)
    policy = lambda o: torch.zeros(o.shape[0], dtype=torch.int64)
    col.collect(buf, policy)
    assert buf.truncated[:, 0].tolist() == [False, False, True, False]
    assert buf.terminated[:, 1].tolist() == [False, False, True, False]
    assert not buf.terminated[:, 0].any() and not buf.truncated[:, 1].any()
    assert buf.final_obs[2, 0].tolist() == [3.0, 0.0]            # true final observation of episode 0
    assert buf.final_obs[2, 1].tolist() == [0.0, 0.0]            # terminated: nothing stored
    assert buf.obs[3, 0].tolist() == [0.0, 1.0]                  # next step starts from the reset observation
    assert buf.last_obs[0].tolist() == [1.0, 1.0]
    assert list(col.episode_returns) == [3.0, 3.0] and list(col.episode_lengths) == [3, 3]
    # A value function V(obs) = obs[0] * 10 + obs[1]: bootstrapping from the reset obs would give 1, not 30.
    V = lambda o: o[..., 0] * 10 + o[..., 1]
    adv, ret = gae(buf.rewards, V(buf.obs), buf.terminated, buf.truncated, V(buf.final_obs), V(buf.last_obs),
                   1.0, 1.0)
    assert ret[2, 0].item() == pytest.approx(1.0 + 30.0)   # r + V(true final obs [3, 0])
    assert ret[2, 1].item() == pytest.approx(1.0)          # terminated: r only
    assert ret[0, 1].item() == pytest.approx(3.0)


def test_non_finite_observation_raises_at_that_step():
    venv = gym.vector.SyncVectorEnv([lambda: BadEnv(horizon=5)], autoreset_mode=AutoresetMode.SAME_STEP)
    obs, _ = venv.reset(seed=0)
    buf = RolloutBuffer(4, 1, (2,), (), torch.int64, torch.device("cpu"))
    col = RolloutCollector(venv, torch.device("cpu"), obs)
    with pytest.raises(NonFiniteError, match="non-finite observation.*step 1"):
        col.collect(buf, lambda o: torch.zeros(1, dtype=torch.int64))


def test_evaluate_policy_is_seeded_and_reproducible():
    env = gym.make("CartPole-v1")
    act = lambda o: int(o[2] > 0)
    a = evaluate_policy(act, env, 3, seed=5)
    b = evaluate_policy(act, env, 3, seed=5)
    assert a == b and a["n_episodes"] == 3 and a["mean_return"] > 0
    with pytest.raises(ValueError, match="n_episodes"):
        evaluate_policy(act, env, 0)


class _InfoEnv(CountingEnv):
    """CountingEnv with an info dict on some steps and on reset, to compare info merging."""

    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed, options=options)
        return obs, {"reset_id": self.episode}

    def step(self, action):
        obs, r, term, trunc, _ = super().step(action)
        return obs, r, term, trunc, ({"t": self.t, "vec": np.full(2, self.t, np.float32)} if self.t % 2 else {})


@pytest.mark.parametrize("make", [lambda: gym.make("CartPole-v1"), lambda: gym.make("Pendulum-v1"),
                                  lambda: _InfoEnv(horizon=4), lambda: CountingEnv(horizon=3, terminate=True),
                                  lambda: gym.make("FrozenLake-v1")])
def test_same_step_sync_vector_env_matches_gymnasium_step_for_step(make):
    """rlkit's leaner step() returns what gymnasium's SyncVectorEnv(SAME_STEP) returns: observations, rewards,
    flags, and every info key (final_obs and final_info included), over many episode ends."""
    ours = SameStepSyncVectorEnv([make] * 3)
    ref = gym.vector.SyncVectorEnv([make] * 3, autoreset_mode=AutoresetMode.SAME_STEP)
    o1, i1 = ours.reset(seed=[5, 6, 7])
    o2, i2 = ref.reset(seed=[5, 6, 7])
    np.testing.assert_array_equal(o1, o2)
    ref.action_space.seed(0)
    ends = 0
    for _ in range(420):  # Pendulum truncates at 200
        a = ref.action_space.sample()
        s1, s2 = ours.step(a), ref.step(a)
        for x, y in zip(s1[:4], s2[:4]):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype
        assert s1[1] is not ours._rewards  # copies, as SyncVectorEnv(copy=True) returns
        assert s1[4].keys() == s2[4].keys()
        for k in s2[4]:
            if k == "final_obs":
                for f1, f2 in zip(s1[4][k], s2[4][k]):
                    np.testing.assert_array_equal(f1, f2)
            elif k != "final_info":
                np.testing.assert_array_equal(s1[4][k], s2[4][k])
        ends += int(np.sum(s2[2] | s2[3]))
    assert ends >= 6
    ours.close()
    ref.close()
