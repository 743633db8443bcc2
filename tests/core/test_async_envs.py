"""vectorization="async": Gymnasium's AsyncVectorEnv with SAME_STEP autoreset gives the same transitions as the
sync path, its workers survive Ctrl-C, and checkpoints fall back cleanly (its sub-envs cannot be saved)."""
from __future__ import annotations

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

import rlkit
from rlkit.core.envs import SameStepAsyncVectorEnv, SameStepSyncVectorEnv, make_vec_env, vec_env_state


def test_async_matches_sync_step_for_step_with_true_final_observations():
    sync = make_vec_env("CartPole-v1", n_envs=4, seed=3, vectorization="sync")
    asyn = make_vec_env("CartPole-v1", n_envs=4, seed=3, vectorization="async")
    assert isinstance(sync, SameStepSyncVectorEnv) and isinstance(asyn, gym.vector.AsyncVectorEnv)
    o1, _ = sync.reset(seed=[5, 6, 7, 8])
    o2, _ = asyn.reset(seed=[5, 6, 7, 8])
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(200):
        a = rng.integers(0, 2, 4)
        s, r = sync.step(a), asyn.step(a)
        for x, y in zip(s[:4], r[:4]):  # observations (the reset ones where an episode ended), rewards, flags
            np.testing.assert_array_equal(x, y)
        done = s[2] | s[3]
        ends += int(done.sum())
        for i in np.flatnonzero(done):
            np.testing.assert_array_equal(s[4]["final_obs"][i], r[4]["final_obs"][i])
    assert ends >= 20
    sync.close()
    asyn.close()


def test_auto_is_sync_for_other_envs_and_bad_modes_are_named():
    v = make_vec_env("CartPole-v1", n_envs=2)
    assert isinstance(v, SameStepSyncVectorEnv)
    v.close()
    with pytest.raises(ValueError, match="vectorization must be one of auto, sync, async, got 'threads'"):
        make_vec_env("CartPole-v1", n_envs=2, vectorization="threads")
    with pytest.raises(rlkit.ConfigError, match=r"A2CConfig.vectorization must be one of"):
        rlkit.A2CConfig(vectorization="threads")


def test_workers_ignore_sigint_and_the_main_process_keeps_its_handler():
    before = signal.getsignal(signal.SIGINT)
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0, vectorization="async")
    assert signal.getsignal(signal.SIGINT) is before  # the spaces probe built in this process changed nothing
    for p in venv.processes:
        os.kill(p.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    time.sleep(0.3)
    assert all(p.is_alive() for p in venv.processes)
    venv.step(np.zeros(2, dtype=np.int64))  # still stepping: training can finish its iteration and checkpoint
    venv.close()
    assert not any(p.is_alive() for p in venv.processes)


def test_async_checkpoints_fall_back_to_fresh_episodes(tmp_path):
    agent = rlkit.A2C("CartPole-v1", n_envs=2, seed=0, device="cpu", vectorization="async")
    assert isinstance(agent.env, gym.vector.AsyncVectorEnv)
    data, why = vec_env_state(agent.env)
    assert data is None and "worker processes" in why
    agent.learn(40, run_dir=tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoints" / "final.pt"
    assert not ckpt.with_suffix(".envstate").exists()
    resumed = rlkit.A2C.load(ckpt, env="CartPole-v1", device="cpu", restore_env=True)
    assert resumed.config.vectorization == "async" and isinstance(resumed.env, gym.vector.AsyncVectorEnv)
    assert "fresh episodes" in resumed.resume_note and "worker processes" in resumed.resume_note
    resumed.learn(20, run_dir=tmp_path / "run", progress=False)
    agent.env.close()
    resumed.env.close()


def _gym_async(fns):
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _assert_same_infos(a, b):
    assert set(a) == set(b)
    for k in a:
        if k == "final_obs":
            for x, y in zip(a[k], b[k]):
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_array_equal(x, y)
        elif isinstance(a[k], dict):
            _assert_same_infos(a[k], b[k])
        else:
            np.testing.assert_array_equal(a[k], b[k])


def _step_both(venv, reference, actions) -> int:
    """Step both vector envs with `actions`; assert they returned the same; the number of episodes that ended."""
    s, r = venv.step(actions), reference.step(actions)
    for x, y in zip(s[:4], r[:4]):  # observations (the reset ones where an episode ended), rewards, flags
        np.testing.assert_array_equal(x, y)
        assert x.dtype == y.dtype
    _assert_same_infos(s[4], r[4])
    return int((s[2] | s[3]).sum())


@pytest.mark.parametrize("env_id,n_steps", [("CartPole-v1", 150), ("Pendulum-v1", 210)])
def test_the_lean_async_step_returns_what_gymnasiums_returns(env_id, n_steps):
    """SameStepAsyncVectorEnv (raw-byte actions and replies, infos only when not empty) against Gymnasium's
    AsyncVectorEnv: the same observations, rewards, flags and infos (final_obs, final_info), with Discrete actions
    (sent as integers) and Box ones (raw bytes)."""
    lean = make_vec_env(env_id, n_envs=3, vectorization="async")
    assert isinstance(lean, SameStepAsyncVectorEnv)
    plain = _gym_async([lambda: gym.make(env_id)] * 3)
    o1, i1 = lean.reset(seed=[1, 2, 3])
    o2, i2 = plain.reset(seed=[1, 2, 3])
    np.testing.assert_array_equal(o1, o2)
    _assert_same_infos(i1, i2)
    lean.action_space.seed(0)
    ends = sum(_step_both(lean, plain, lean.action_space.sample()) for _ in range(n_steps))
    assert ends >= 3
    lean.close()
    plain.close()


def test_box_actions_go_as_raw_bytes_of_their_own_dtype_and_other_batches_pickled():
    """A Box action batch (a NumPy array) reaches each worker as its row's raw bytes in the batch's dtype (float64
    rows stay float64, as Gymnasium's pickled rows do); anything else (a list) is pickled, as before."""
    lean = make_vec_env("Pendulum-v1", n_envs=2, vectorization="async")
    plain = _gym_async([lambda: gym.make("Pendulum-v1")] * 2)
    try:
        lean.reset(seed=[4, 5]), plain.reset(seed=[4, 5])
        rng = np.random.default_rng(3)
        for dtype in (np.float64, np.float32, np.float64):
            _step_both(lean, plain, rng.uniform(-2, 2, (2, 1)).astype(dtype))
        _step_both(lean, plain, [np.array([0.5]), np.array([-1.25])])
    finally:
        lean.close()
        plain.close()


class _Fails(gym.Wrapper):
    def step(self, action):
        if action == 1:
            raise ArithmeticError("sub-env failed on purpose")
        return self.env.step(action)


def test_a_failing_step_in_a_lean_worker_raises_its_error_in_the_main_process():
    venv = SameStepAsyncVectorEnv([lambda: _Fails(gym.make("CartPole-v1"))] * 2)
    venv.reset(seed=0)
    venv.step(np.array([0, 0]))
    with pytest.raises(ArithmeticError, match="sub-env failed on purpose"):
        venv.step(np.array([0, 1]))
    venv.close(terminate=True)


@pytest.mark.parametrize("env_id,actions,needle", [
    ("CartPole-v1", np.array([0, 1]), r"takes 3 integer actions \(one per sub-env, Discrete\), got .* shape \(2,\)"),
    ("CartPole-v1", np.array([0, 1.5, 0]), r"got an array of shape \(3,\) and dtype float64"),
    ("Pendulum-v1", np.zeros((2, 1), np.float32), r"takes 3 actions \(one per sub-env\), got 2"),
])
def test_a_bad_action_batch_is_refused_in_one_line_and_leaves_the_workers_in_step(env_id, actions, needle):
    """A batch of the wrong length or type raises before any worker is sent a step: the next good step works (no
    worker a step ahead, no step_wait waiting forever on a worker that was never sent one)."""
    venv = SameStepAsyncVectorEnv([lambda: gym.make(env_id)] * 3)
    try:
        venv.reset(seed=0)
        with pytest.raises(ValueError, match=needle):
            venv.step_async(actions)
        venv.step_async(venv.action_space.sample())
        obs, rewards, *_ = venv.step_wait(timeout=10)
        assert obs.shape[0] == rewards.shape[0] == 3
    finally:
        venv.close(terminate=True)
