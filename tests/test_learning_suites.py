"""One short learning check per suite (marked slow: `python -m pytest -m slow tests/test_learning_suites.py`).

Each trains an agent with its preset for a small part of the preset's budget and checks that the training curve
(the mean return of the last finished episodes, logged every `log_interval` steps) rises by a clear margin. The
full-budget figures are in docs/benchmarks.md.
"""
from __future__ import annotations

import pytest

import rlkit
from rlkit.presets import preset_for


def rise(algo: str, env_id: str, steps: int, log_interval: int) -> tuple[float, float]:
    """(first, last) logged mean episode return of `steps` steps of training with the preset."""
    curve: list[float] = []
    agent = rlkit.make_agent(algo, env_id, seed=0, device="cpu")
    assert preset_for(algo, env_id) is not None
    agent.learn(steps, progress=False, log_interval=log_interval,
                callback=lambda _agent, m: curve.append(m["rollout/episode_return"])
                if "rollout/episode_return" in m else None)
    assert len(curve) >= 3, curve
    return curve[0], curve[-1]


@pytest.mark.slow
def test_classic_control_a2c_cartpole_rises():
    first, last = rise("a2c", "CartPole-v1", 60_000, 5_000)
    assert last > first + 100, (first, last)


@pytest.mark.slow
def test_box2d_trpo_lunarlander_rises():
    pytest.importorskip("Box2D", reason='needs pip install -e ".[box2d]"')
    first, last = rise("trpo", "LunarLander-v3", 150_000, 10_000)
    assert last > first + 50, (first, last)


@pytest.mark.slow
def test_mujoco_trpo_halfcheetah_rises():
    pytest.importorskip("mujoco", reason='needs pip install -e ".[mujoco]"')
    first, last = rise("trpo", "HalfCheetah-v5", 100_000, 10_000)
    assert last > first + 100, (first, last)
