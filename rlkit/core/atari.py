"""Atari (the Arcade Learning Environment, ale-py): id detection and the standard preprocessing.

Every Atari id (ALE/Pong-v5, PongNoFrameskip-v4, ...) is built with the preprocessing of Mnih et al. (2015) as
Machado et al. (2018) and Stable-Baselines3's AtariWrapper apply it, from the inside out:

  gym.make(id, frameskip=1)      the wrapper below skips frames (v5's sticky actions, p=0.25, stay on)
  AtariPreprocessing             no-op reset (1..30 no-ops), frame skip 4 with a max over the last two frames,
                                 84x84 grayscale (Gymnasium's wrapper)
  RecordGameScore   [training]   sums the raw rewards of each whole game (all lives) for the logged statistics
  GameRecordsOnly   [training]   infos keep only those game records (not the ALE's per-step lives and frame counts)
  EpisodicLife      [training]   a lost life ends the episode (terminated) while the game goes on
  FireReset                      presses FIRE after every reset, for games that wait for it (Breakout)
  clipped rewards   [training]   sign(reward)
  FrameStackObservation(4)       uint8 observations of shape (4, 84, 84)

The evaluation env has no [training] layers: it plays whole games and returns the game's own score.
Environment wrappers are gymnasium.Wrapper subclasses, Gymnasium's extension point for envs (as nn.Module is
torch's for networks); see docs/architecture.md.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import gymnasium as gym
import numpy as np

FRAME_SKIP = 4
SCREEN_SIZE = 84
NOOP_MAX = 30
FRAME_STACK = 4
# 108,000 frames = 30 minutes of play at 60 frames/s (Machado et al. 2018): the per-game limit ale-py registers;
# evaluation uses it as its cap when an env has none.
DEFAULT_FRAME_LIMIT = 108_000
PREPROCESSING_KEY = "atari_preprocessing"  # the env_kwargs key that switches the preprocessing off


def register_atari() -> bool:
    """Register ale-py's ids with Gymnasium (Gymnasium 1.x does not import ale_py by itself); False without ale-py."""
    try:
        import ale_py
    except ImportError:
        return False
    gym.register_envs(ale_py)
    return True


def is_atari_id(env_id: Any) -> bool:
    """Whether `env_id` (a Gymnasium id, or module:id) names an ALE environment (ale-py's AtariEnv)."""
    if not isinstance(env_id, str):
        return False
    name = env_id.split(":", 1)[1] if ":" in env_id else env_id
    spec = gym.registry.get(name)
    if spec is None and register_atari():
        spec = gym.registry.get(name)
    if spec is None:
        return False
    entry = spec.entry_point
    module = entry if isinstance(entry, str) else getattr(entry, "__module__", "")
    return module.startswith("ale_py")


def atari_install_hint(env_id: str) -> str:
    """'; ...pip install rlkit[atari]' for an unknown id that looks like an Atari one while ale-py is missing."""
    looks = env_id.startswith("ALE/") or "NoFrameskip" in env_id
    if looks and not register_atari():
        return "; Atari ids need ale-py: pip install 'rlkit[atari]'"
    return ""


def _lives(env: gym.Env) -> int:
    return int(env.unwrapped.ale.lives())


class RecordGameScore(gym.Wrapper):
    """Sum the rewards of each whole game (all lives) as the game counts them: it sits below the life-loss and
    reward-clipping wrappers, so it sees every step of the game with its raw reward. The reset after a game
    ended reports {"game_score": the sum, "game_length": agent steps} in its info (a SAME_STEP vector env puts
    it in the step's infos), so the collector logs game scores, not clipped returns per life. A game cut by an
    early reset (not ended) is not reported."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.score, self.length, self.ended = 0.0, 0, False

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        self.length += 1
        self.ended = bool(terminated or truncated)
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if self.ended:
            info = {**info, "game_score": self.score, "game_length": self.length}
        self.score, self.length, self.ended = 0.0, 0, False
        return obs, info


class GameRecordsOnly(gym.Wrapper):
    """Training only: the infos keep only RecordGameScore's game records (GAME_RECORD_KEYS), not the ALE's lives and
    frame counters of every step, which nothing in training reads. So most steps return an empty info, and an async
    worker (rlkit.core.envs.SameStepAsyncVectorEnv) sends and merges nothing for them: with 16 workers the
    pickling and merging of those per-step keys cost the main process a sizeable part of each vector step."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, _game_records(info)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, _game_records(info)


GAME_RECORD_KEYS = ("game_score", "game_length")


def _game_records(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in GAME_RECORD_KEYS if k in info} if info else info


class EpisodicLife(gym.Wrapper):
    """Training only: losing a life ends the episode (terminated, so nothing is bootstrapped past it), as in
    Mnih et al. (2015). The reset that follows continues the same game from the frame where the life was lost;
    only a game over (or the frame limit, or an explicit seed) resets the game. As Stable-Baselines3's
    EpisodicLifeEnv, a loss is counted only while lives remain (some games show 0 lives for a few frames before
    the game over)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives, self.game_over, self.last_obs = 0, True, None

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = _lives(self.env)
        if 0 < lives < self.lives:
            terminated = True
        self.lives, self.last_obs = lives, obs
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self.game_over or seed is not None or self.last_obs is None:
            obs, info = self.env.reset(seed=seed, options=options)
            self.game_over = False
        else:  # a life was lost: the game goes on from where it is
            obs, info = self.last_obs, {}
        self.lives = _lives(self.env)
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE (then action 2) after every reset, for games that do not start until FIRE is pressed
    (Breakout); used when action 1 is FIRE, as Stable-Baselines3's FireResetEnv. In training it sits above
    EpisodicLife, so it also fires after each lost life. An episode that ends during these steps is reset
    again (the infos of both resets are kept, so a game score reported by the first is not lost). Rewards of
    these steps are not returned (a reset has none); no game scores in the first frames after a start, and the
    training statistics count them anyway (RecordGameScore sits below)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        for action in (1, 2):
            obs, _, terminated, truncated, _ = self.env.step(action)
            if terminated or truncated:
                obs, later = self.env.reset(seed=seed, options=options)
                info = {**info, **later}
        return obs, info


def needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) >= 3 and meanings[1] == "FIRE"


def make_atari_env(env_id: str, env_kwargs: dict[str, Any] | None = None, training: bool = True) -> gym.Env:
    """One preprocessed Atari env (the stack in the module docstring): `training` adds the game-score record,
    life-loss terminals and reward clipping; without it the env plays whole games with raw rewards.
    env_kwargs go to gymnasium.make (frameskip excepted: the preprocessing skips frames)."""
    kwargs = dict(env_kwargs or {})
    if kwargs.get("frameskip", 1) != 1:
        raise ValueError(f"{env_id}: frameskip={kwargs['frameskip']!r} cannot be combined with rlkit's Atari "
                         f"preprocessing, which skips {FRAME_SKIP} frames itself (max over the last two); pass "
                         f"{PREPROCESSING_KEY}=False to build the env as given")
    register_atari()  # also in a worker process that starts without the registrations
    env = gym.make(env_id, **{**kwargs, "frameskip": 1})
    env = gym.wrappers.AtariPreprocessing(env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN_SIZE,
                                          terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    return wrap_frames(env, training)


def wrap_frames(env: gym.Env, training: bool) -> gym.Env:
    """The layers above AtariPreprocessing (the module docstring's stack), on any env with the ALE's interface
    (env.unwrapped.ale.lives(), env.unwrapped.get_action_meanings())."""
    if training:
        env = EpisodicLife(GameRecordsOnly(RecordGameScore(env)))
    if needs_fire(env):
        env = FireReset(env)
    if training:
        env = gym.wrappers.TransformReward(env, np.sign)
    return gym.wrappers.FrameStackObservation(env, FRAME_STACK)


def atari_factory(env_id: str, env_kwargs: dict[str, Any] | None, training: bool) -> Callable[[], gym.Env]:
    """A callable that builds the Atari env: preprocessed (make_atari_env) unless env_kwargs holds
    atari_preprocessing=False (then gymnasium.make with the other kwargs, nothing added)."""
    kwargs = dict(env_kwargs or {})
    preprocess = kwargs.pop(PREPROCESSING_KEY, True)
    if not isinstance(preprocess, bool):
        raise ValueError(f"env_kwargs {PREPROCESSING_KEY} must be true or false, got {preprocess!r}")
    if preprocess:
        return lambda: make_atari_env(env_id, kwargs, training)

    def plain() -> gym.Env:
        register_atari()
        return gym.make(env_id, **kwargs)
    return plain


def evaluation_cap(env: gym.Env) -> tuple[int, str] | None:
    """For an ALE env: (the step cap of one evaluation game, the limit it comes from); None for other envs.
    The ALE truncates a game at its frame limit (max_num_frames_per_episode, 108,000 frames as ale-py registers
    its ids); with the limit switched off (0) evaluation stops a game at DEFAULT_FRAME_LIMIT frames instead."""
    ale = getattr(env.unwrapped, "ale", None)
    if ale is None:
        return None
    try:
        frames = int(ale.getInt("max_num_frames_per_episode"))
    except Exception:  # noqa: BLE001 - an ALE-like env without the setting: the default limit
        frames = 0
    skip, wrapped = 1, env
    while isinstance(wrapped, gym.Wrapper):  # the frames one step takes: the preprocessing's, else the env's
        if isinstance(wrapped, gym.wrappers.AtariPreprocessing):
            skip = wrapped.frame_skip
            break
        wrapped = wrapped.env
    else:
        own = getattr(env.unwrapped, "_frameskip", 1)
        skip = int(own) if isinstance(own, (int, np.integer)) else int(min(own))
    limit = frames if frames > 0 else DEFAULT_FRAME_LIMIT
    return math.ceil(limit / max(skip, 1)), f"{limit:,} frames per game"
