"""Presets reach the CLI and the Python API the same way; explicit values override them."""
from __future__ import annotations

import json

import pytest

import rlkit
from rlkit.cli import main
from rlkit.core.config import ConfigError, config_to_dict, load_presets


def test_make_agent_and_preset_true_apply_the_preset_and_keywords_override_it():
    preset = load_presets("a2c")["CartPole-v1"]["config"]
    a = rlkit.make_agent("a2c", "CartPole-v1", device="cpu")
    b = rlkit.A2C("CartPole-v1", preset=True, device="cpu", n_envs=4)
    for k, v in preset.items():
        assert getattr(a.config, k) == (tuple(v) if isinstance(v, list) else v), k
    assert b.config.n_envs == 4 and b.config.lr_schedule == preset["lr_schedule"]
    assert rlkit.A2C("CartPole-v1", device="cpu").config.lr_schedule == "constant"  # no preset unless asked
    assert rlkit.make_agent("a2c", "Acrobot-v1", device="cpu").config == rlkit.A2CConfig()  # none for this env
    with pytest.raises(ConfigError, match=r"no a2c preset for 'Acrobot-v1'; presets exist for: "
                                          r"Ant-v5, BipedalWalker-v3, CartPole-v1"):
        rlkit.A2C("Acrobot-v1", preset=True, device="cpu")


def test_the_cli_and_the_api_build_the_same_config(tmp_path):
    rd = tmp_path / "run"
    assert main(["train", "trpo", "CartPole-v1", "--steps", "64", "--run-dir", str(rd), "--no-progress",
                 "--eval-episodes", "0", "--set", "n_steps=32"]) == 0
    cli_cfg = json.loads((rd / "config.json").read_text())
    api_cfg = config_to_dict(rlkit.make_agent("trpo", "CartPole-v1", device="cpu", n_steps=32).config)
    assert {k: cli_cfg[k] for k in api_cfg} == api_cfg


def test_list_presets_shows_every_preset_with_its_source(capsys):
    assert main(["list", "--presets"]) == 0
    out = capsys.readouterr().out
    for algo in ("reinforce", "qac", "a2c", "trpo", "ddpg"):
        for env_id, p in load_presets(algo).items():
            assert f"{algo:<10} {env_id:<16}" in out and p["source"] in out
