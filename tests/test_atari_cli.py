"""Atari from the API and the CLI: the "atari" preset reaches every Atari id, the envs are preprocessed (and async
with several envs) without being asked, the preprocessing can be switched off, evaluation plays whole games.
Skipped without ale-py (pip install 'rlkit[atari]')."""
from __future__ import annotations

import json

import gymnasium as gym
import pytest

import rlkit
from rlkit.cli import main
from rlkit.core.config import load_presets, preset_for

pytest.importorskip("cv2", reason="Atari preprocessing needs opencv: pip install 'rlkit[atari]'")
pytest.importorskip("ale_py", reason="Atari tests need ale-py: pip install 'rlkit[atari]'")


def test_the_atari_preset_applies_to_every_atari_id_and_exact_ids_keep_theirs():
    atari = load_presets("a2c")["atari"]
    assert atari["config"]["n_envs"] == 16 and atari["config"]["vf_coef"] == 0.25 and atari["steps"] == 10_000_000
    for env_id in ("ALE/Pong-v5", "ALE/Breakout-v5", "BreakoutNoFrameskip-v4"):
        assert preset_for("a2c", env_id) == atari
    pong = preset_for("a2c", "PongNoFrameskip-v4")  # an exact id: its own preset, three values apart
    assert pong == load_presets("a2c")["PongNoFrameskip-v4"] and pong["steps"] == 4_000_000
    changed = {k: v for k, v in pong["config"].items() if atari["config"].get(k) != v}
    assert changed == {"rms_eps": 1e-10, "vf_coef": 0.5, "lr_schedule": "constant"}
    assert pong["config"].keys() == atari["config"].keys()
    assert preset_for("a2c", "CartPole-v1") == load_presets("a2c")["CartPole-v1"]
    assert preset_for("trpo", "PongNoFrameskip-v4") is None  # no atari preset for TRPO


def test_api_builds_preprocessed_async_envs_with_the_preset():
    agent = rlkit.make_agent("a2c", "ALE/Pong-v5", n_envs=2, device="cpu", seed=0)
    cfg = agent.config
    assert (cfg.n_envs, cfg.ent_coef, cfg.vf_coef, cfg.rms_eps, cfg.lr_schedule) == (2, 0.01, 0.25, 1e-5, "linear")
    assert isinstance(agent.env, gym.vector.AsyncVectorEnv) and agent.collector.game_scores
    assert agent.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), dtype="uint8")
    agent.learn(20, progress=False)
    agent.env.close()
    same = rlkit.A2C("PongNoFrameskip-v4", preset=True, n_envs=1, device="cpu")
    assert same.config.ent_coef == 0.01 and not isinstance(same.env, gym.vector.AsyncVectorEnv)  # one env: sync


def test_cli_trains_with_the_preset_and_evaluates_on_whole_games(tmp_path, capsys):
    rd = tmp_path / "pong"
    assert main(["train", "a2c", "PongNoFrameskip-v4", "--steps", "40", "--n-envs", "2", "--run-dir", str(rd),
                 "--no-progress", "--eval-episodes", "0"]) == 0
    cfg = json.loads((rd / "config.json").read_text())
    assert (cfg["n_envs"], cfg["ent_coef"], cfg["vf_coef"], cfg["vectorization"]) == (2, 0.01, 0.5, "auto")
    assert (cfg["optimizer"], cfg["rms_eps"], cfg["lr_schedule"]) == ("rmsprop_tf", 1e-10, "constant")  # Pong's own
    # what `rlkit eval` plays on: the evaluation stack (no game-score record, life-loss cut or clipping)
    loaded = rlkit.load_agent(rd / "checkpoints" / "final.pt", device="cpu")
    env = loaded._env_factory()
    assert [w.name for w in env.spec.additional_wrappers] == ["AtariPreprocessing", "FireReset",
                                                              "FrameStackObservation"]
    env.close()
    assert main(["list", "--presets"]) == 0
    assert "a2c        atari" in capsys.readouterr().out


def test_preprocessing_off_from_the_cli_and_the_api(tmp_path, capsys):
    assert main(["train", "a2c", "CartPole-v1", "--no-atari-preprocessing", "--steps", "10", "--run-dir",
                 str(tmp_path / "c"), "--no-progress"]) == 2
    assert "atari_preprocessing applies to Atari ids only" in capsys.readouterr().err
    agent = rlkit.A2C("PongNoFrameskip-v4", n_envs=1, device="cpu", env_kwargs={"atari_preprocessing": False},
                      hidden_sizes=(4,))
    assert agent.observation_space.shape == (210, 160, 3) and not agent.collector.game_scores
    path = agent.save(tmp_path / "raw.pt")
    loaded = rlkit.load_agent(path, device="cpu")
    assert loaded._env_factory().observation_space.shape == (210, 160, 3)  # the recorded env_kwargs apply


def test_unknown_atari_like_ids_name_the_extra(capsys, monkeypatch):
    import rlkit.core.atari as atari

    monkeypatch.setattr(atari, "register_atari", lambda: False)  # as without ale-py
    assert main(["train", "a2c", "ALE/Pongg-v5", "--steps", "10", "--no-progress"]) == 2
    assert "pip install 'rlkit[atari]'" in capsys.readouterr().err
