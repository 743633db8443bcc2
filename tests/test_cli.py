"""The CLI through a subprocess, like a user: train, eval, list, bench, plot, and one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


def rlkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rlkit.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_train_writes_run_directory_and_eval_reads_it(tmp_path):
    run = tmp_path / "run"
    r = rlkit("train", "reinforce", "CartPole-v1", "--steps", "256", "--seed", "1", "--run-dir", str(run),
              "--no-progress", "--set", "n_steps=32", "--n-envs", "2", "--eval-episodes", "2")
    assert r.returncode == 0, r.stderr
    assert "eval: mean return" in r.stdout
    for name in ["config.json", "progress.csv", "result.json", "checkpoints/final.pt"]:
        assert (run / name).exists(), name
    assert list(run.glob("events.out.tfevents.*"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["n_steps"] == 32 and cfg["n_envs"] == 2 and cfg["algo"] == "reinforce" and cfg["seed"] == 1
    e = rlkit("eval", str(run / "checkpoints" / "final.pt"), "--episodes", "2")
    assert e.returncode == 0 and "mean return" in e.stdout and "+/-" in e.stdout


def test_default_run_dir_layout(tmp_path):
    r = rlkit("train", "reinforce", "CartPole-v1", "--steps", "64", "--set", "n_steps=32", "--n-envs", "2",
              "--no-progress", "--eval-episodes", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "runs" / "CartPole-v1" / "reinforce").glob("seed0-*"))
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "final.pt").exists()


@pytest.mark.parametrize("args,needle", [
    (["train", "nope", "CartPole-v1"], "unknown algorithm 'nope'; choose from: reinforce"),
    (["train", "reinforce", "NoSuchEnv-v0"], "unknown Gymnasium environment id 'NoSuchEnv-v0'"),
    (["train", "reinforce", "CartPole-v1", "--set", "lr=1"], "valid keys are"),
    (["train", "reinforce", "CartPole-v1", "--set", "n_steps=0"], "n_steps must be > 0"),
    (["train", "reinforce", "CartPole-v1", "--config", "/nonexistent.json"], "cannot read config file"),
    (["train", "reinforce", "CartPole-v1", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["eval", "/nonexistent.pt"], "does not exist"),
    (["frob"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    r = rlkit(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_missing_cuda_device_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    r = rlkit("train", "reinforce", "CartPole-v1", "--device", "cuda", "--steps", "64")
    assert r.returncode == 2 and "CUDA is not available" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_checkpoint_is_one_line(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"garbage" * 10)
    r = rlkit("eval", str(p))
    assert r.returncode == 2 and "not an rlkit checkpoint" in r.stderr


def test_list_names_every_algorithm():
    r = rlkit("list")
    assert r.returncode == 0
    for name in ["reinforce", "qac", "a2c", "trpo", "ddpg"]:
        assert name in r.stdout


def test_bench_grid_and_plot(tmp_path):
    out = tmp_path / "grid"
    r = rlkit("bench", "--algos", "reinforce", "--envs", "CartPole-v1", "--seeds", "0,1", "--steps", "64",
              "--out", str(out), "--eval-episodes", "1", "--set", "n_steps=32", "--set", "n_envs=2")
    assert r.returncode == 0, r.stderr
    assert "| reinforce | CartPole-v1 | 2 |" in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert sorted(x["seed"] for x in results) == [0, 1] and all("mean_return" in x for x in results)
    p = rlkit("plot", str(out), "--metric", "train/loss_pi")
    assert p.returncode == 0, p.stderr
    assert "| CartPole-v1 | reinforce | 2 |" in p.stdout
