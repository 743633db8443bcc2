"""Atari: id detection, the preprocessing stack, game scores in the episode statistics, evaluation envs.

The wrappers are checked on FakeAtari, a tiny env with the ALE's interface (ale.lives(), get_action_meanings()),
so they run without ale-py; the tests on real games skip without it (and opencv, which Gymnasium's
AtariPreprocessing uses): pip install 'rlkit[atari]'."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.core.atari import (EpisodicLife, RecordGameScore, evaluation_cap, is_atari_id, make_atari_env,
                              wrap_frames)
from rlkit.core.envs import (SameStepAsyncVectorEnv, SameStepSyncVectorEnv, env_factory, make_vec_env,
                             reports_game_scores, vec_env_state)
from rlkit.core.rollout import RolloutCollector, evaluate_policy


@pytest.fixture
def ale():
    pytest.importorskip("cv2", reason="Atari preprocessing needs opencv: pip install 'rlkit[atari]'")
    return pytest.importorskip("ale_py", reason="Atari tests need ale-py: pip install 'rlkit[atari]'")


class _Lives:
    def __init__(self, env: "FakeAtari") -> None:
        self.env = env

    def lives(self) -> int:
        return self.env.lives_left


class FakeAtari(gym.Env):
    """The ALE's interface on a tiny game: rewards from {0, 0, 2, -3, 5} (so clipping shows) after the first two
    steps, a life lost with
    probability 0.15 per step, game over when no life is left, truncated after `limit` steps (the frame limit).
    `games` holds the raw score and the length of every game that ended: what the logged statistics must be."""

    metadata: dict = {"render_modes": []}

    def __init__(self, lives: int = 3, limit: int = 40) -> None:
        self.start_lives, self.limit = lives, limit
        self.observation_space = gym.spaces.Box(0, 255, (6, 6), np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.ale = _Lives(self)
        self.games: list[tuple[float, int]] = []
        self.lives_left, self.t, self.score = lives, 0, 0.0

    def get_action_meanings(self) -> list[str]:
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.lives_left, self.t, self.score = self.start_lives, 0, 0.0
        return self._obs(), {"lives": self.lives_left}

    def step(self, action):
        self.t += 1  # no points in the first steps of a game (FIRE's, in a reset), as in the real games
        reward = float(self.np_random.choice([0.0, 0.0, 2.0, -3.0, 5.0])) if self.t > 2 else 0.0
        self.score += reward
        if self.np_random.random() < 0.15:
            self.lives_left -= 1
        terminated, truncated = self.lives_left == 0, self.t >= self.limit and self.lives_left > 0
        if terminated or truncated:
            self.games.append((self.score, self.t))
        return self._obs(), reward, terminated, truncated, {"lives": self.lives_left}

    def _obs(self) -> np.ndarray:
        return np.full((6, 6), self.t % 256, np.uint8)


def test_training_envs_end_episodes_at_lost_lives_and_clip_rewards_while_the_log_has_whole_game_scores():
    venv = SameStepSyncVectorEnv([lambda: wrap_frames(FakeAtari(), training=True)] * 3)
    assert reports_game_scores(venv)
    assert venv.single_observation_space == gym.spaces.Box(0, 255, (4, 6, 6), np.uint8)
    obs, _ = venv.reset(seed=[1, 2, 3])
    col = RolloutCollector(venv, torch.device("cpu"), obs, game_scores=True)
    rng = np.random.default_rng(0)
    rewards, ends = [], 0
    for _ in range(400):
        res = col.step(rng.integers(0, 4, 3))
        rewards.append(res.rewards)
        ends += int((res.terminated | res.truncated).sum())
    games = [g for env in venv.envs for g in env.unwrapped.games]
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}  # clipped to the sign
    assert ends > len(games) >= 10  # every lost life ended an episode, the games went on
    assert len(games) < col.EPISODE_WINDOW  # all of them are in the window
    assert sorted(zip(col.episode_returns, col.episode_lengths)) == sorted(games)  # raw scores, whole games
    assert col.episodes_done == len(games)
    assert col.episode_stats()["rollout/episode_return"] == pytest.approx(np.mean([s for s, _ in games]))
    venv.close()


def test_a_reset_after_a_lost_life_continues_the_game_and_fire_is_pressed():
    env = FakeAtari(lives=5, limit=10_000)
    stack = EpisodicLife(RecordGameScore(env))
    stack.reset(seed=0)
    while True:
        _, _, terminated, truncated, _ = stack.step(2)
        if terminated or truncated:
            break
    assert env.lives_left == 4 and env.t > 0  # a life was lost, the game is not over
    t = env.t
    _, info = stack.reset()
    assert env.t == t and env.lives_left == 4 and "game_score" not in info  # the same game goes on
    fired = wrap_frames(FakeAtari(), training=False)
    fired.reset(seed=0)
    assert fired.unwrapped.t == 2  # FIRE, then action 2, after the reset


def test_evaluation_envs_play_whole_games_with_raw_rewards():
    env = wrap_frames(FakeAtari(lives=3, limit=10_000), training=False)
    assert not reports_game_scores(env)
    stats = evaluate_policy(lambda o: 2, env, n_episodes=4, seed=0)
    games = env.unwrapped.games
    assert len(games) == 4
    assert stats["mean_return"] == pytest.approx(np.mean([s for s, _ in games]))  # no clipping
    assert stats["mean_length"] == pytest.approx(np.mean([n for _, n in games]) - 2)  # FIRE steps are the reset's


def test_a2c_logs_game_scores_from_a_ready_vector_env_of_atari_stacks(tmp_path):
    import csv

    import rlkit

    venv = SameStepSyncVectorEnv([lambda: wrap_frames(FakeAtari(), training=True)] * 2)
    # the fake frames (4x6x6) are too small for the Nature CNN; flattened, as this test is about game scores
    agent = rlkit.A2C(venv, seed=0, device="cpu", n_steps=5, image_obs=False)
    assert agent.collector.game_scores
    agent.learn(300, run_dir=tmp_path / "run", progress=False, log_interval=100)
    games = [g for env in venv.envs for g in env.unwrapped.games]
    rows = list(csv.DictReader((tmp_path / "run" / "progress.csv").open()))
    logged = float(rows[-1]["rollout/episode_return"])
    assert logged == pytest.approx(np.mean([s for s, _ in games]))
    venv.close()


def test_evaluation_cap_is_the_frame_limit_in_agent_steps_and_truncated_games_are_reported():
    class Capped(FakeAtari):
        def __init__(self) -> None:
            super().__init__(lives=1_000, limit=7)
            self._frameskip = 4

    env = Capped()
    env.ale.getInt = lambda name: 40  # 40 frames = 10 steps of 4 frames
    assert evaluation_cap(env) == (10, "40 frames per game")
    assert evaluation_cap(gym.make("CartPole-v1")) is None
    with pytest.warns(RuntimeWarning, match="2 of 2 evaluation episodes were truncated at 40 frames per game"):
        evaluate_policy(lambda o: 0, env, 2, seed=0, max_steps_per_episode=10, truncation_note="40 frames per game")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note: truncation is the env's normal end, not reported
        evaluate_policy(lambda o: 0, env, 2, seed=0, max_steps_per_episode=10)


def test_non_atari_ids_are_untouched():
    assert not is_atari_id("CartPole-v1") and not is_atari_id("Nope-v0") and not is_atari_id(3)
    assert not reports_game_scores("CartPole-v1")
    with pytest.raises(ValueError, match="atari_preprocessing applies to Atari ids only"):
        env_factory("CartPole-v1", {"atari_preprocessing": False})


# ---- real games (ale-py) ----------------------------------------------------------------------------------------
def test_atari_ids_of_both_families_are_detected_and_preprocessed(ale):
    for env_id in ("PongNoFrameskip-v4", "ALE/Pong-v5", "Pong-v4"):
        assert is_atari_id(env_id), env_id
        assert is_atari_id(f"ale_py:{env_id}")
        assert reports_game_scores(env_id) and not reports_game_scores(env_id, {"atari_preprocessing": False})
    venv = make_vec_env("ALE/Pong-v5", n_envs=1, seed=0)
    assert venv.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    obs, _ = venv.reset(seed=[0])
    assert obs.dtype == np.uint8 and obs.shape == (1, 4, 84, 84)
    raw = venv.envs[0].unwrapped
    assert raw._frameskip == 1 and raw.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # sticky
    venv.close()
    v4 = make_atari_env("PongNoFrameskip-v4", training=False)
    assert v4.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    assert evaluation_cap(v4) == (27_000, "108,000 frames per game")
    v4.close()


def test_sync_atari_envs_are_not_saved_in_checkpoints(ale):
    """ale-py envs pickle, but without the emulator's state: restoring them would not continue the games."""
    venv = make_vec_env("ALE/Breakout-v5", n_envs=1, seed=0, vectorization="sync")
    data, why = vec_env_state(venv)
    assert data is None and "emulator" in why
    venv.close()


def test_preprocessing_can_be_switched_off_and_frameskip_conflicts_are_named(ale):
    env = env_factory("PongNoFrameskip-v4", {"atari_preprocessing": False})[0]()
    assert env.observation_space.shape == (210, 160, 3)
    env.close()
    with pytest.raises(ValueError, match="frameskip=4 cannot be combined with rlkit's Atari preprocessing"):
        env_factory("ALE/Pong-v5", {"frameskip": 4})[0]()
    with pytest.raises(ValueError, match="atari_preprocessing must be true or false"):
        env_factory("ALE/Pong-v5", {"atari_preprocessing": "no"})


def test_breakout_game_scores_equal_the_raw_rewards_of_the_emulator(ale):
    """Breakout has 5 lives: the score reported per game must be the sum of the emulator's own rewards over all
    of them, while the agent sees a terminal per lost life (and rewards clipped to their sign)."""
    class Spy(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.games, self.score, self.started = [], 0.0, False

        def reset(self, **kw):
            if self.started:
                self.games.append(self.score)
            self.score, self.started = 0.0, True
            return self.env.reset(**kw)

        def step(self, a):
            out = self.env.step(a)
            self.score += float(out[1])
            return out

    spy = Spy(gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0))
    env = wrap_frames(gym.wrappers.AtariPreprocessing(spy, noop_max=30, frame_skip=4), training=True)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    reported, terminals, rewards = [], 0, set()
    while len(reported) < 2:
        _, r, terminated, truncated, _ = env.step(int(rng.integers(0, 4)))
        rewards.add(float(r))
        if terminated or truncated:
            terminals += 1
            _, info = env.reset()
            if "game_score" in info:
                reported.append(info["game_score"])
    assert reported == spy.games[:2] and sum(reported) > 0
    assert rewards <= {0.0, 1.0} and terminals >= 2 * 5  # 5 lives a game: a terminal per lost life


def _fake_training_stack() -> gym.Env:
    return wrap_frames(FakeAtari(), training=True)


def test_training_infos_hold_only_game_records_and_async_logs_the_same_scores_as_sync():
    """The training stack's infos carry only RecordGameScore's records (the ALE's per-step keys are dropped, so an
    async worker sends nothing on most steps); the game scores reaching the statistics are the same with rlkit's
    async vector env as with the sync one, step for step."""
    env = _fake_training_stack()
    _, info = env.reset(seed=0)
    assert info == {}
    infos = [env.step(2)[4] for _ in range(200)]
    assert all(set(i) <= {"game_score", "game_length"} for i in infos)
    sync = make_vec_env(_fake_training_stack, n_envs=3, seed=4, vectorization="sync")
    asyn = make_vec_env(_fake_training_stack, n_envs=3, seed=4, vectorization="async")
    assert isinstance(asyn, SameStepAsyncVectorEnv)
    o1, o2 = sync.reset(seed=[1, 2, 3])[0], asyn.reset(seed=[1, 2, 3])[0]
    c1 = RolloutCollector(sync, torch.device("cpu"), o1, game_scores=True)
    c2 = RolloutCollector(asyn, torch.device("cpu"), o2, game_scores=True)
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = rng.integers(0, 4, 3)
        r1, r2 = c1.step(a), c2.step(a)
        for x, y in zip(r1, r2):
            np.testing.assert_array_equal(x, y)
    assert c1.episodes_done == c2.episodes_done >= 10
    assert list(c1.episode_returns) == list(c2.episode_returns)
    assert list(c1.episode_lengths) == list(c2.episode_lengths)
    sync.close()
    asyn.close()
