"""EnvWorkers: the sub-envs of several SameStepSyncVectorEnvs moved (forked) into shared worker processes, several
in each, stepped as one. Their views return what Gymnasium's AsyncVectorEnv returns; the envs go on as they were
(state, RNGs); a failing or dying worker surfaces as one line; closing ends the workers."""
from __future__ import annotations

import gc
import os
import pickle
import signal
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.error import ClosedEnvironmentError
from gymnasium.utils import EzPickle

from rlkit.core.envs import (SPIN_SECONDS, EnvWorkers, SameStepSyncVectorEnv, load_vec_env_state, make_vec_env,
                             vec_env_state)
from rlkit.core.rollout import Lockstep, RolloutCollector, step_lockstep
from tests.core.test_async_envs import _assert_same_infos, _Fails, _gym_async, _step_both


@pytest.mark.parametrize("env_id,n_steps", [("CartPole-v1", 120), ("Pendulum-v1", 205)])
def test_views_step_as_gymnasiums_async_vector_env(env_id, n_steps):
    """Two vector envs (2 and 3 sub-envs) in 2 workers, the middle one holding sub-envs of both: each view returns
    what Gymnasium's AsyncVectorEnv (SAME_STEP) returns: observations, rewards, flags (their dtypes) and infos with
    the true final observations, for Discrete actions and Box ones (float32 and float64)."""
    pool = EnvWorkers([make_vec_env(env_id, 2, seed=0), make_vec_env(env_id, 3, seed=1)], n_workers=2)
    plain = [_gym_async([lambda: gym.make(env_id)] * n) for n in (2, 3)]
    try:
        assert pool.bounds == [0, 2, 5] and [(v.lo, v.hi) for v in pool.views] == [(0, 2), (2, 5)]
        for view, ref, seeds in zip(pool.views, plain, ([1, 2], [3, 4, 5])):
            assert isinstance(view, gym.vector.VectorEnv) and view.metadata["autoreset_mode"].name == "SAME_STEP"
            (o1, i1), (o2, i2) = view.reset(seed=seeds), ref.reset(seed=seeds)
            np.testing.assert_array_equal(o1, o2)
            _assert_same_infos(i1, i2)
        rng, ends = np.random.default_rng(0), 0
        for t in range(n_steps):
            for view, ref in zip(pool.views, plain):
                a = rng.integers(0, 2, view.num_envs) if env_id == "CartPole-v1" else \
                    rng.uniform(-2, 2, (view.num_envs, 1)).astype(np.float64 if t % 2 else np.float32)
                ends += _step_both(view, ref, a)
        assert ends >= 5
        assert pool.views[1].get_attr("spec")[0].id == env_id and len(pool.views[1].call("render")) == 3
    finally:
        pool.close()
        for p in plain:
            p.close()


@pytest.mark.parametrize("spin", [False, True])
def test_the_envs_go_on_as_they_were_and_one_step_of_all_equals_their_own_steps(spin):
    """Envs stepped in this process before the move continue where they were (mid-episode, their RNGs); a step of
    every slot at once (what step_lockstep takes: no infos) leaves the same observations, rewards, flags and final
    observations as the vector envs stepped here, whether the processes sleep on their semaphores or poll them
    first (spin); the views keep the origins' space objects."""
    build = [lambda: make_vec_env("Pendulum-v1", 2, seed=7), lambda: make_vec_env("Pendulum-v1", 2, seed=8)]
    moved, here = [f() for f in build], [f() for f in build]
    rng = np.random.default_rng(1)
    for _ in range(150):  # Pendulum truncates at 200: the move happens mid-episode
        for a, b in zip(moved, here):
            act = rng.uniform(-2, 2, (2, 1)).astype(np.float32)
            a.step(act), b.step(act)
    spaces = [v.action_space for v in moved]
    pool = EnvWorkers(moved, n_workers=3, spin=spin)
    try:
        assert pool.spin_s == (SPIN_SECONDS if spin else 0.0)
        assert [v.action_space for v in pool.views] == spaces and pool.views[0].action_space is spaces[0]
        ended = 0
        for _ in range(60):
            act = rng.uniform(-2, 2, (4, 1)).astype(np.float32)
            pool.step_async(act)
            assert pool.step_wait() == []  # no infos asked for
            refs = [v.step(act[2 * k:2 * k + 2]) for k, v in enumerate(here)]
            np.testing.assert_array_equal(pool.obs, np.concatenate([r[0] for r in refs]))
            np.testing.assert_array_equal(pool.rewards, np.concatenate([r[1] for r in refs]))
            np.testing.assert_array_equal(pool.terminated, np.concatenate([r[2] for r in refs]))
            np.testing.assert_array_equal(pool.truncated, np.concatenate([r[3] for r in refs]))
            for k, r in enumerate(refs):
                for i in np.flatnonzero(r[2] | r[3]):
                    np.testing.assert_array_equal(pool.final_observation(2 * k + i), r[4]["final_obs"][i])
                    ended += 1
        assert ended == 4  # every sub-env truncated once, at step 200
    finally:
        pool.close()
        for v in here:
            v.close()


def _vec(factory, n):
    venv = SameStepSyncVectorEnv([factory] * n)
    venv.reset(seed=0)
    return venv


def test_a_failing_sub_env_raises_its_error_in_one_line_and_shuts_the_workers_down():
    failing, fine = _vec(lambda: _Fails(gym.make("CartPole-v1")), 2), _vec(lambda: gym.make("CartPole-v1"), 2)
    pool = EnvWorkers([failing, fine], n_workers=2)
    view = pool.views[0]
    view.step(np.array([0, 0]))
    with pytest.raises(ArithmeticError) as e:
        view.step(np.array([0, 1]))
    assert str(e.value) == "sub-env failed on purpose (sub-env 1 of the env workers)"  # one line
    notes = getattr(e.value, "__notes__", None)  # Python >= 3.11: the worker's traceback, as a note
    assert notes is None or "ArithmeticError" in notes[0]
    assert pool.closed and not any(p.is_alive() for p in pool._processes)
    with pytest.raises(ClosedEnvironmentError, match="sub-env failed on purpose"):
        pool.views[1].step(np.array([0, 0]))
    pool.views[1].close()


def test_a_dead_worker_is_named_and_a_bad_action_batch_is_refused_before_anything_is_sent():
    pool = EnvWorkers([make_vec_env("Pendulum-v1", 2, seed=0)], n_workers=2)
    view = pool.views[0]
    with pytest.raises(ValueError, match=r"actions of shape \(2, 1\) for 2 sub-env\(s\) of Box.*shape \(3, 1\)"):
        view.step(np.zeros((3, 1), np.float32))
    view.step(np.zeros((2, 1), np.float32))  # nothing was sent: the workers are in step
    os.kill(pool._processes[1].pid, signal.SIGKILL)
    pool._processes[1].join()
    with pytest.raises(RuntimeError, match=r"^env worker process 1 ended unexpectedly \(exit code -9\)$"):
        view.step(np.zeros((2, 1), np.float32))
    assert pool.closed
    view.close()


class _MarksClose(gym.Wrapper):
    def __init__(self, env, path):
        super().__init__(env)
        self.path = path

    def close(self):
        Path(self.path, str(os.getpid())).mkdir(exist_ok=True)
        super().close()


def test_closing_every_view_ends_the_workers_which_close_their_envs_and_ignore_ctrl_c(tmp_path):
    pool = EnvWorkers([_vec(lambda: _MarksClose(gym.make("CartPole-v1"), tmp_path), 2) for _ in range(2)], n_workers=2)
    for p in pool._processes:
        os.kill(p.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group: training checkpoints, then stops
    time.sleep(0.3)
    assert all(p.is_alive() for p in pool._processes)
    pool.views[0].close()
    assert not pool.closed
    pool.views[1].step_async(np.array([0, 1]))  # closing with a step pending waits for it first
    pool.views[1].close()
    assert pool.closed and [p.exitcode for p in pool._processes] == [0, 0]
    assert sorted(int(d.name) for d in tmp_path.iterdir()) == sorted(p.pid for p in pool._processes)
    dropped = EnvWorkers([make_vec_env("CartPole-v1", 2, seed=0)], n_workers=2)
    processes = dropped._processes
    del dropped, pool
    gc.collect()  # workers and views that nothing holds any more: the workers end (killed, as Gymnasium's own)
    assert not any(p.is_alive() for p in processes)


def test_the_moved_envs_are_saved_and_restored_as_in_process_ones():
    """vec_env_state of a view pickles its sub-envs in their workers (state, RNG, TimeLimit counters), in the format
    of an in-process vector env's: either restores into the other (load_vec_env_state), and they step alike."""
    here = make_vec_env("Pendulum-v1", 2, seed=3)
    pool = EnvWorkers([make_vec_env("Pendulum-v1", 2, seed=3), make_vec_env("Pendulum-v1", 1, seed=4)], n_workers=2)
    view, rng = pool.views[0], np.random.default_rng(4)

    def step_alike(a, b, n):
        for _ in range(n):
            _step_both(a, b, rng.uniform(-2, 2, (2, 1)).astype(np.float32))
    try:
        step_alike(view, here, 120)
        data, why = vec_env_state(view)
        assert why == "" and data is not None
        fresh = make_vec_env("Pendulum-v1", 2, seed=99)
        load_vec_env_state(fresh, data)  # the view's state, in this process
        here_data = vec_env_state(here)[0]
        step_alike(fresh, here, 90)  # past the time limit: TimeLimit's counters came along
        load_vec_env_state(view, here_data)  # an in-process state, into the workers
        load_vec_env_state(fresh, here_data)
        step_alike(view, fresh, 90)
        assert pool.views[1].step(np.zeros((1, 1), np.float32))[0].shape == (1, 3)  # the other slots untouched
    finally:
        pool.close()


def _collectors_in_workers(env_id):
    """3 collectors (2 sub-envs each) whose envs moved into one EnvWorkers of 2 workers, the collectors of identical
    envs left in this process beside them, and the pool."""
    make = [lambda k=k: make_vec_env(env_id, 2, seed=k) for k in range(3)]
    moved, here = [f() for f in make], [f() for f in make]
    cpu = torch.device("cpu")
    cols = [RolloutCollector(v, cpu, v.reset(seed=[2 * k, 2 * k + 1])[0]) for k, v in enumerate(moved)]
    refs = [RolloutCollector(v, cpu, v.reset(seed=[2 * k, 2 * k + 1])[0]) for k, v in enumerate(here)]
    pool = EnvWorkers(moved, n_workers=2)
    for c, view in zip(cols, pool.views):
        c.env = view
    return cols, refs, pool


def test_step_lockstep_steps_the_collectors_of_one_env_workers_as_one():
    """K collectors whose envs are the views of one EnvWorkers: one step of all, stacked results [K, N, ...], every
    collector's records as its own step() keeps them (against collectors of identical in-process envs), the true
    final observations where episodes end, and a non-finite observation named with its seed's step and sub-env."""
    cols, refs, pool = _collectors_in_workers("Pendulum-v1")
    rng = np.random.default_rng(2)
    try:
        for t in range(205):
            act = rng.uniform(-2, 2, (3, 2, 1)).astype(np.float32)
            step = step_lockstep(cols, act)
            alone = [c.step(a) for c, a in zip(refs, act)]
            assert step.obs.shape == (3, 2, 3) and step.rewards.shape == (3, 2)
            for field, x in zip(step._fields, step):
                np.testing.assert_array_equal(x, np.stack([getattr(s, field) for s in alone]), err_msg=field)
        for c, r in zip(cols, refs):
            assert c.episode_stats() == r.episode_stats() and c.steps_done == r.steps_done == 410
            np.testing.assert_array_equal(c.obs_np, r.obs_np)
        # a sub-env of seed 1 goes bad: the error names seed 1's own sub-env and step, as its own step() would
        pool.views[1].set_attr("state", [np.array([np.nan, 0.0]), np.array([0.0, 0.0])])
        with pytest.raises(Exception, match=r"non-finite .*sub-env 0\) at environment step 410"):
            step_lockstep(cols, np.zeros((3, 2, 1), np.float32))
    finally:
        pool.close()


def test_a_lockstep_stays_right_when_its_collectors_are_changed_between_steps():
    """A Lockstep built once keeps the collectors' running episode sums in its [K, N] arrays and reuses the last
    step's observations; between two of its steps a collector is stepped alone, loads a changed episode state, has
    its envs reset (episode state zeroed), loads its state dict, and another Lockstep steps them all (taking their
    episode sums over): every step and every episode counted still equals collectors of identical in-process envs
    put through the same."""
    cols, refs, pool = _collectors_in_workers("CartPole-v1")
    rng = np.random.default_rng(3)
    try:
        lockstep = Lockstep(cols)
        assert lockstep.pool is pool and lockstep.returns.shape == lockstep.lengths.shape == (3, 2)
        for t in range(160):
            if t == 20:  # seed 1 stepped alone: its observations are no longer a row of the last lockstep step's
                a = rng.integers(0, 2, 2)
                cols[1].step(a), refs[1].step(a)
            if t == 40:  # seed 2 loads a changed episode state (in place into the lockstep's rows)
                state = refs[2].episode_state()
                state["obs"] = state["obs"] + 1.0
                state["ep_return"] += 100.0
                state["ep_length"] += 7
                cols[2].load_episode_state(state), refs[2].load_episode_state(state)
            if t == 60:  # seed 0's envs reset, its episodes restarted
                for c in (cols[0], refs[0]):
                    obs = c.env.reset(seed=[7, 8])[0]
                    c.load_episode_state({"obs": obs, "ep_return": np.zeros(2), "ep_length": np.zeros(2, np.int64)})
            if t == 80:
                cols[0].load_state_dict(refs[0].state_dict())
            act = rng.integers(0, 2, (3, 2))
            if t in (100, 101):  # another Lockstep takes the episode sums over; the first takes them back after
                step = (step_lockstep(cols, act) if t == 100 else Lockstep(cols).step(act))
            else:
                step = lockstep.step(act)
            alone = [c.step(a) for c, a in zip(refs, act)]
            for field, x in zip(step._fields, step):
                np.testing.assert_array_equal(x, np.stack([getattr(s, field) for s in alone]), err_msg=f"{field} {t}")
        for c, r in zip(cols, refs):
            assert c.episodes_done == r.episodes_done > 3 and c.steps_done == r.steps_done
            assert list(c.episode_returns) == list(r.episode_returns)
            assert list(c.episode_lengths) == list(r.episode_lengths)
            for key, value in c.episode_state().items():
                np.testing.assert_array_equal(value, r.episode_state()[key])
        assert max(cols[2].episode_returns) > 100.0  # the loaded episode was counted from its loaded sums
        with pytest.raises(ValueError, match="episode sums must be float64 and int64 arrays of shape"):
            cols[0].share_episode_sums(np.zeros(3), np.zeros(3, np.int64))
        with pytest.raises(ValueError, match="Lockstep needs one or more collectors of Gymnasium vector envs"):
            Lockstep([])
    finally:
        pool.close()


def test_lockstep_current_obs_is_the_last_steps_array_while_the_collectors_hold_its_rows():
    """current_obs() stacks the K collectors' current observations [K, N, ...]: in shared workers the last step's
    array itself (no copy) while every collector's observations are still its rows, and that step's observations
    are what the next step returns as its obs; once a collector moved on alone, a stack of what they hold."""
    cols, refs, pool = _collectors_in_workers("Pendulum-v1")
    try:
        lockstep = Lockstep(cols)
        np.testing.assert_array_equal(lockstep.current_obs(), np.stack([c.obs_np for c in cols]))
        act = np.zeros((3, 2, 1), np.float32)
        step = lockstep.step(act)
        now = lockstep.current_obs()
        assert now.shape == (3, 2, 3) and all(np.shares_memory(now, c.obs_np) for c in cols)
        np.testing.assert_array_equal(now, step.next_obs)  # no episode ended: the true next observations
        after = lockstep.step(act)  # its obs: the observations current_obs() gave, the same array
        assert np.shares_memory(after.obs, now) and np.array_equal(after.obs, now)
        cols[1].step(act[1])  # seed 1 steps alone: its observations are no longer a row of the last lockstep step's
        alone = lockstep.current_obs()
        assert not np.shares_memory(alone, cols[0].obs_np)
        np.testing.assert_array_equal(alone, np.stack([c.obs_np for c in cols]))
    finally:
        pool.close()


def _build_and_die(pipe):
    pool = EnvWorkers([make_vec_env("CartPole-v1", 2, seed=0)], n_workers=2)
    pipe.send([p.pid for p in pool._processes])
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_workers_end_when_the_main_process_is_killed():
    """Nothing closes the workers of a killed training process: they notice that it is gone and end (their
    semaphore waits time out every second to look)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    main = ctx.Process(target=_build_and_die, args=(there,))
    main.start()
    assert here.poll(60)
    pids = here.recv()
    main.join()
    assert main.exitcode == -signal.SIGKILL and len(pids) == 2

    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False
    deadline = time.time() + 10
    while any(running(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(running(p) for p in pids)


def test_the_workers_poll_by_default_only_where_the_machines_load_leaves_a_core_for_each(monkeypatch):
    """spin=None: poll when the workers and this process fit on the idle cores (idle_cores: the usable cores less
    the load), else sleep; a value other than True, False or None is refused."""
    import rlkit.core.envs as envs

    for idle, polls in ((3.0, True), (2.9, False)):
        monkeypatch.setattr(envs, "idle_cores", lambda idle=idle: idle)
        pool = EnvWorkers([make_vec_env("CartPole-v1", 2, seed=0)], n_workers=2)
        try:
            assert pool.spin_s == (SPIN_SECONDS if polls else 0.0)
        finally:
            pool.close()
    with pytest.raises(ValueError, match="spin must be True, False or None"):
        EnvWorkers([make_vec_env("CartPole-v1", 2, seed=0)], n_workers=2, spin=1)
    monkeypatch.undo()
    loaded = envs.usable_cores() + 1 - __import__("os").getloadavg()[0]
    assert abs(envs.idle_cores() - loaded) < 1.0  # the 1-minute load moves little between two reads


def test_lockstep_runs_while_waiting_between_sending_the_actions_and_awaiting_them():
    """Lockstep.step(actions, while_waiting) runs the callable once the workers have the actions (they step during
    it) and before their results are read; if it raises, the workers are still awaited, so the next step works."""
    cols, refs, pool = _collectors_in_workers("CartPole-v1")
    try:
        lockstep, seen = Lockstep(cols), []
        act = np.ones((3, 2), np.int64)

        def probe() -> None:  # the step is under way: the collectors have not recorded it yet
            seen.append([c.steps_done for c in cols])
        step = lockstep.step(act, probe)
        alone = [c.step(a) for c, a in zip(refs, act)]
        np.testing.assert_array_equal(step.obs, np.stack([s.obs for s in alone]))
        assert seen == [[0, 0, 0]] and [c.steps_done for c in cols] == [2, 2, 2]

        def boom() -> None:
            raise RuntimeError("launch failed")
        with pytest.raises(RuntimeError, match="launch failed"):
            lockstep.step(act, boom)
        assert lockstep.step(act).obs.shape == (3, 2, 4)  # the workers are not left waiting (step_async again works)
    finally:
        pool.close()


class _EzCartPole(CartPoleEnv, EzPickle):
    """A CartPole that pickles as Gymnasium's Box2D and MuJoCo envs do: its constructor's arguments only."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        EzPickle.__init__(self, **kwargs)


class _EzCartPoleWithState(_EzCartPole):
    """An EzPickle env that pickles its whole state after all: saved as any other."""

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, state):
        self.__dict__.update(state)


def _ez_vec(cls, n=2):
    return SameStepSyncVectorEnv([lambda: gym.wrappers.TimeLimit(cls(), 500)] * n)


def test_envs_that_pickle_only_their_constructor_arguments_are_not_saved_in_process_or_in_workers():
    """Gymnasium's Box2D and MuJoCo envs (EzPickle) pickle their arguments, not their simulator: a restored copy
    would be a new, never-reset env (BipedalWalker's step fails; a MuJoCo env starts from its initial pose while
    TimeLimit counts on). Such envs are not saved, in-process or in EnvWorkers, and the reason names the env; an
    EzPickle env that pickles its state itself is saved."""
    here = _ez_vec(_EzCartPole)
    here.reset(seed=0)
    data, why = vec_env_state(here)
    assert data is None and "_EzCartPole pickles only its constructor's arguments" in why, why
    pool = EnvWorkers([_ez_vec(_EzCartPole), _ez_vec(_EzCartPoleWithState)], n_workers=2)
    try:
        for view in pool.views:
            view.reset(seed=1)
        data, why = vec_env_state(pool.views[0])
        assert data is None and "EzPickle" in why, why
        data, why = vec_env_state(pool.views[1])
        assert why == "" and data is not None
    finally:
        pool.close()
    saved = _ez_vec(_EzCartPoleWithState)
    assert vec_env_state(saved)[1] == ""
    looped = gym.make("CartPole-v1")
    looped.unwrapped.env = looped.unwrapped  # an `env` attribute leading back: the walk ends (saved as any other)
    assert vec_env_state(SameStepSyncVectorEnv([lambda: looped]))[1] == ""
    # what an older rlkit wrote for such envs: refused on load, before anything changes
    old = pickle.dumps({"envs": here.envs, "action_space": here.action_space,
                        "single_action_space": here.single_action_space})
    target = _ez_vec(_EzCartPole)
    kept = list(target.envs)
    with pytest.raises(ValueError, match="_EzCartPole pickles only its constructor's arguments"):
        load_vec_env_state(target, old)
    assert target.envs == kept


@pytest.mark.parametrize("env_id,extra", [("LunarLander-v3", "Box2D"), ("BipedalWalker-v3", "Box2D"),
                                          ("Hopper-v5", "mujoco")])
def test_box2d_and_mujoco_envs_are_not_saved(env_id, extra):
    pytest.importorskip(extra, reason=f"{env_id} needs {extra}")
    venv = make_vec_env(env_id, 1, seed=0)
    venv.reset(seed=0)
    data, why = vec_env_state(venv)
    assert data is None and "EzPickle" in why, why
    venv.close()
