"""Logger writes TensorBoard events, progress.csv and config.json; steps continue on resume."""
from __future__ import annotations

import csv
import json

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlkit.agents.reinforce import REINFORCEConfig
from rlkit.core.logger import Logger, default_run_dir


def test_files_metrics_and_hparams(tmp_path):
    with Logger(tmp_path, REINFORCEConfig(), total_steps=100, progress=False, console=False,
                hparams={"algo": "reinforce"}) as lg:
        lg.record({"train/loss_pi": torch.tensor(0.5), "time/sps": 10.0}, step=40)
        lg.record({"train/loss_pi": 0.25, "rollout/episode_return": 7.0}, step=80)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["algo"] == "reinforce" and cfg["n_steps"] == REINFORCEConfig().n_steps
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [r["step"] for r in rows] == ["40", "80"]
    assert rows[0]["rollout/episode_return"] == "" and float(rows[1]["rollout/episode_return"]) == 7.0
    ea = EventAccumulator(str(tmp_path))
    ea.Reload()
    assert [e.step for e in ea.Scalars("train/loss_pi")] == [40, 80]
    assert "config" in "".join(ea.Tags().get("tensors", [])) or ea.Tags()["tensors"]


def test_resume_appends_and_steps_keep_rising(tmp_path):
    with Logger(tmp_path, None, progress=False, console=False) as lg:
        lg.record({"train/loss_pi": 1.0}, step=10)
    with Logger(tmp_path, None, progress=False, console=False, start_step=10) as lg:
        lg.record({"train/loss_pi": 2.0}, step=20)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20]
    ea = EventAccumulator(str(tmp_path))
    ea.Reload()
    assert sorted(e.step for e in ea.Scalars("train/loss_pi")) == [10, 20]


def test_no_run_dir_writes_nothing(tmp_path, capsys):
    with Logger(None, None, total_steps=10, progress=True, console=False) as lg:
        lg.record({"a": 1.0}, step=5)
    assert lg.latest == {"a": 1.0}


def test_default_run_dir_layout(tmp_path):
    p = default_run_dir("CartPole-v1", "a2c", 3, root=tmp_path)
    assert p.parent == tmp_path / "CartPole-v1" / "a2c" and p.name.startswith("seed3-")
