"""The torch env backend (rlkit/core/torch_envs.py): each env side by side with Gymnasium's for 1,000 steps in
float64, seeding and reset ranges, and the collector's tensor path (final observations, episode statistics,
non-finite checks)."""
from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.core import agent_io
from rlkit.core.buffers import RolloutBuffer
from rlkit.core.envs import TORCH_ENV_IDS, make_vec_env
from rlkit.core.rollout import NonFiniteError, RolloutCollector
from rlkit.core.torch_envs import TorchVecEnv

# Where an episode is made to end early, so that 1,000 steps hold terminations and truncations of every env:
# (state set after a reset, in both envs) and a TimeLimit counter moved close to the limit.
NEAR_GOAL = {"MountainCar-v0": [0.49, 0.06], "MountainCarContinuous-v0": [0.44, 0.06]}


def _sync(genv: gym.Env, tenv: TorchVecEnv, i: int) -> None:
    """Put the torch env's state of sub-env i (and its TimeLimit counter) into the Gymnasium env."""
    genv.unwrapped.state = tenv.state[i].numpy().copy()
    genv._elapsed_steps = int(tenv.elapsed[i])  # gym.make's outermost wrapper is the TimeLimit


@pytest.mark.parametrize("env_id", TORCH_ENV_IDS)
def test_torch_env_steps_as_gymnasium_for_1000_steps(env_id):
    n, steps = 4, 1000
    tenv = make_vec_env(env_id, n, seed=0, backend="torch", device="cpu", dtype=torch.float64)
    genvs = [gym.make(env_id) for _ in range(n)]
    limit = genvs[0].spec.max_episode_steps
    assert tenv.max_episode_steps == limit and tenv.single_action_space == genvs[0].action_space
    for i, g in enumerate(genvs):
        g.reset(seed=i)
        _sync(g, tenv, i)
    rng = np.random.default_rng(0)
    space = genvs[0].action_space
    low, high = np.array(tenv.physics.reset_low), np.array(tenv.physics.reset_high)
    counts = {"terminated": 0, "truncated": 0}
    for t in range(steps):
        if t % 97 == 5:  # force endings: sub-env 0 near its time limit, sub-env 1 (MountainCar*) near the goal
            tenv.elapsed[0] = limit - 3
            if env_id in NEAR_GOAL:
                tenv.state[1] = torch.tensor(NEAR_GOAL[env_id], dtype=torch.float64)
            for i in (0, 1):
                _sync(genvs[i], tenv, i)
        if isinstance(space, gym.spaces.Discrete):
            actions = rng.integers(0, space.n, size=n)
        else:  # beyond the bounds too: the env clips (MountainCarContinuous' reward uses the unclipped action)
            actions = rng.uniform(-1.5, 1.5, size=(n, 1)).astype(np.float32) * space.high
        out = tenv.step(torch.as_tensor(actions))
        o_obs, o_rew, o_term, o_trunc, o_final = (x.numpy() for x in out)
        state = tenv.state.numpy()
        for i, g in enumerate(genvs):
            obs, reward, term, trunc, _ = g.step(actions[i])
            assert o_term[i] == term and o_trunc[i] == trunc, (t, i)
            if env_id == "Pendulum-v1":  # NumPy's float32 scalar power (u**2) is off by a float32 ulp at times
                assert abs(o_rew[i] - reward) <= 1e-9, (t, i)
            else:
                assert o_rew[i] == reward, (t, i)
            assert np.abs(o_final[i] - obs).max() <= 1e-6, (t, i)  # the TRUE final observation
            if term or trunc:
                counts["terminated"] += term
                counts["truncated"] += trunc
                # autoreset: a fresh state from Gymnasium's reset range, its observation returned
                assert np.all(state[i] >= low) and np.all(state[i] <= high) and int(tenv.elapsed[i]) == 0
                assert np.array_equal(o_obs[i], state[i].astype(np.float32)) or env_id == "Pendulum-v1"
                g.reset()
                _sync(g, tenv, i)
            else:
                assert np.abs(np.asarray(g.unwrapped.state, dtype=np.float64) - state[i]).max() <= 1e-6, (t, i)
                assert np.array_equal(o_obs[i], o_final[i])
    assert counts["truncated"] >= 5
    if env_id != "Pendulum-v1":  # Pendulum never terminates
        assert counts["terminated"] >= 5


def test_seeding_is_reproducible_and_streams_differ():
    a = make_vec_env("CartPole-v1", 64, seed=1, backend="torch", device="cpu")
    b = make_vec_env("CartPole-v1", 64, seed=1, backend="torch", device="cpu")
    c = make_vec_env("CartPole-v1", 64, seed=2, backend="torch", device="cpu")
    assert torch.equal(a.state, b.state) and not torch.equal(a.state, c.state)
    for _ in range(50):
        actions = torch.randint(0, 2, (64,))
        oa, ob = a.step(actions), b.step(actions)
        assert torch.equal(oa.obs, ob.obs)
    assert torch.equal(a.reset(5), b.reset(5))
    assert (a.state.abs() <= 0.05).all() and a.state.dtype == torch.float32
    assert a.step(actions).obs.dtype == torch.float32


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="env backend 'torch' supports CartPole-v1.*got 'Acrobot-v1'"):
        make_vec_env("Acrobot-v1", 2, backend="torch")
    with pytest.raises(ValueError, match="n_envs must be an integer"):
        make_vec_env("CartPole-v1", 0, backend="torch")
    with pytest.raises(ValueError, match="env backend must be one of gymnasium, torch"):
        make_vec_env("CartPole-v1", 2, backend="jax")
    with pytest.raises(ValueError, match="dtype"):
        make_vec_env("CartPole-v1", 2, backend="torch", dtype=torch.int32)
    with pytest.raises(ValueError, match="a2c: env_backend must be one of"):
        agent_io.setup_env("a2c", "CartPole-v1", SimpleNamespace(n_envs=2), 0, ("Discrete",), env_backend="numba")
    with pytest.raises(ValueError, match="ddpg does not support env_backend='torch'"):
        agent_io.setup_env("ddpg", "Pendulum-v1", SimpleNamespace(n_envs=2), 0, ("Box",), env_backend="torch",
                           tensor_steps=False)


def _collector(env_id: str, n: int, seed: int = 0) -> RolloutCollector:
    es = agent_io.setup_env("test", env_id, SimpleNamespace(n_envs=n), seed, ("Discrete", "Box"), env_backend="torch",
                            device="cpu")
    assert isinstance(es.venv, TorchVecEnv) and isinstance(es.initial_obs, torch.Tensor)
    return RolloutCollector(es.venv, torch.device("cpu"), es.initial_obs)


def test_collect_stores_final_obs_on_truncation_only_and_keeps_episode_statistics():
    T, n = 64, 6
    col = _collector("CartPole-v1", n)
    env = col.env
    env.elapsed[:3] = env.max_episode_steps - torch.tensor([1, 2, 3], dtype=torch.int32)  # truncations
    seen = []  # what the env returned, step by step
    step = env.step

    def recording_step(actions, uniform=None):
        out = step(actions, uniform)
        seen.append(out)
        return out

    env.step = recording_step
    buf = RolloutBuffer(T, n, (4,), (), torch.int64, torch.device("cpu"))
    col.collect(buf, lambda o: torch.randint(0, 2, (o.shape[0],)))
    trunc = torch.stack([s.truncated for s in seen])
    term = torch.stack([s.terminated for s in seen])
    assert torch.equal(buf.truncated, trunc) and torch.equal(buf.terminated, term)
    assert trunc[:, :3].sum() == 3 and term.sum() > 0
    expected_final = torch.where(trunc[..., None], torch.stack([s.final_obs for s in seen]), 0.0)
    assert torch.equal(buf.final_obs, expected_final)  # after termination nothing is stored
    for t in range(1, T):  # every stored observation is the one the policy acted on: the reset one after an end
        assert torch.equal(buf.obs[t], seen[t - 1].obs)
    assert torch.equal(buf.last_obs, seen[-1].obs)
    # episode statistics as the NumPy path keeps them: returns/lengths in order of ending, sub-env order within
    # a step
    ret, length, finished = np.zeros(n), np.zeros(n, dtype=int), []
    for s in seen:
        ret += s.reward.numpy()
        length += 1
        for i in np.flatnonzero((s.terminated | s.truncated).numpy()):
            finished.append((ret[i], length[i]))
            ret[i], length[i] = 0, 0
    stats = col.episode_stats()
    assert col.episodes_done == len(finished) and list(col.episode_returns) == [r for r, _ in finished]
    assert stats["rollout/episode_length"] == pytest.approx(np.mean([x for _, x in finished]))
    assert col.steps_done == T * n


def test_episode_window_keeps_the_last_100_when_many_end_at_once_and_survives_a_checkpoint():
    n = 250
    col = _collector("Pendulum-v1", n)
    col.env.elapsed[:] = col.env.max_episode_steps - 1 - torch.arange(n, dtype=torch.int32) % 2
    zero = torch.zeros(n, 1)
    r1 = col.step(zero).rewards.double()
    r2 = col.step(zero).rewards.double()  # 125 end at step 1 (one step long), 125 at step 2 (two steps long)
    ends1, ends2 = torch.arange(0, n, 2), torch.arange(1, n, 2)
    expected = (r1[ends1].tolist() + (r1 + r2)[ends2].tolist())[-100:]
    assert col.episode_stats()["rollout/episode_return"] == pytest.approx(np.mean(expected))
    assert col.episodes_done == n and list(col.episode_returns) == pytest.approx(expected)
    state = col.state_dict()
    fresh = _collector("Pendulum-v1", n, seed=3)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    fresh.step(zero)  # later episodes go after the restored ones
    assert fresh.episodes_done == n and list(fresh.episode_returns) == list(col.episode_returns)


def test_a_non_finite_action_is_remembered_on_the_device_and_blamed_on_the_policy():
    col = _collector("Pendulum-v1", 3)
    buf = RolloutBuffer(8, 3, (3,), (1,), torch.float32, torch.device("cpu"))
    calls = []

    def nan_policy(o):
        calls.append(1)
        a = torch.zeros(o.shape[0], 1)
        a[1] = float("nan") if len(calls) == 3 else 0.0  # the third vector step: environment steps 6..8
        return a

    col.collect(buf, nan_policy)  # no host read inside a rollout: the check is a device record
    with pytest.raises(NonFiniteError, match=r"policy returned a non-finite action \(sub-env 1\) at environment "
                                             r"step 6 \(reported .* at environment step 24\)"):
        col.sync()
    with pytest.raises(NonFiniteError):  # the record stays until the collector is reloaded
        col.episode_stats()


def test_a_non_finite_env_output_is_blamed_on_the_env_with_the_first_step_and_sub_env():
    col = _collector("CartPole-v1", 4)
    step = col.env.step
    seen = []

    def bad_step(actions, uniform=None):
        out = step(actions, uniform)
        seen.append(1)
        if len(seen) in (5, 7):  # first at the fifth vector step (environment step 16), sub-env 2
            out.reward[2 if len(seen) == 5 else 0] = float("inf")
        return out

    col.env.step = bad_step
    buf = RolloutBuffer(8, 4, (4,), (), torch.int64, torch.device("cpu"))
    col.collect(buf, lambda o: torch.zeros(o.shape[0], dtype=torch.int64))
    with pytest.raises(NonFiniteError, match=r"environment returned a non-finite reward or observation "
                                             r"\(sub-env 2\) at environment step 16 "):
        col.state_dict()  # a checkpoint reads the records too
    assert col.steps_done == 32  # refreshed by the read before it raised


@pytest.mark.cuda
def test_torch_env_on_cuda_keeps_everything_on_the_device_and_matches_the_cpu():
    dev = torch.device("cuda")
    for env_id in TORCH_ENV_IDS:
        g = make_vec_env(env_id, 1024, seed=0, backend="torch", device=dev, dtype=torch.float64)
        c = make_vec_env(env_id, 1024, seed=0, backend="torch", device="cpu", dtype=torch.float64)
        discrete = isinstance(g.single_action_space, gym.spaces.Discrete)
        for _ in range(300):
            c.state.copy_(g.state.cpu())
            c.elapsed.copy_(g.elapsed.cpu())
            a = (torch.randint(0, int(g.single_action_space.n), (1024,)) if discrete
                 else torch.rand(1024, 1) * 4 - 2)
            og, oc = g.step(a.to(dev)), c.step(a)
            assert all(x.device.type == "cuda" for x in og)
            assert torch.equal(og.terminated.cpu(), oc.terminated) and torch.equal(og.truncated.cpu(), oc.truncated)
            torch.testing.assert_close(og.final_obs.cpu(), oc.final_obs, rtol=0, atol=1e-6)
            torch.testing.assert_close(og.reward.cpu(), oc.reward, rtol=0, atol=1e-9)
    col = _collector_on("CartPole-v1", 256, dev)
    buf = RolloutBuffer(32, 256, (4,), (), torch.int64, dev)
    col.collect(buf, lambda o: torch.randint(0, 2, (o.shape[0],), device=dev))
    assert buf.obs.device.type == "cuda" and col.episode_stats()["rollout/episode_length"] > 0


def _collector_on(env_id: str, n: int, device: torch.device) -> RolloutCollector:
    es = agent_io.setup_env("test", env_id, SimpleNamespace(n_envs=n), 0, ("Discrete", "Box"), env_backend="torch",
                            device=device)
    return RolloutCollector(es.venv, device, es.initial_obs)
