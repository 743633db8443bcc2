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
    assert "| reinforce | CartPole-v1 | 2 | final eval |" in p.stdout


# ---- reliability: one line, exit 2 (in-process through main(): no interpreter start per case) -------------
def run_main(argv, capsys):
    from rlkit.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("args,needle", [
    (["train", "reinforce", "CartPole-v1", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["train", "trpo", "CartPole-v1", "--set", "hidden_sizes=[]"], "hidden_sizes must name at least one hidden layer"),
    (["train", "a2c", "CartPole-v1", "--set", "log_std_init=NaN"], "log_std_init must be a finite number"),
    (["train", "a2c", "CartPole-v1", "--set", "n_steps=1000000000"], "GiB on cpu but only"),
    (["train", "ddpg", "Pendulum-v1", "--set", "buffer_size=100000000000"], "GiB on cpu (36 bytes"),
    (["train", "a2c", "CartPole-v1", "--n-envs", "10000000"], "n_envs must be at most"),
    (["eval", "/nonexistent.pt", "--episodes", "0"], "--episodes must be >= 1"),
    (["bench", "--algos", "a2c", "--envs", "CartPole-v1", "--jobs", "0"], "--jobs must be >= 1"),
    (["bench", "--algos", "a2c", "--envs", "CartPole-v1", "--seeds", "0"], "is a count of seeds and must be >= 1"),
    (["train", "a2c", "Acrobot-v1", "--env-backend", "torch"], "env backend 'torch' supports CartPole-v1"),
    (["train", "ddpg", "Pendulum-v1", "--env-backend", "torch"], "ddpg does not support env_backend='torch'"),
    (["train", "a2c", "CartPole-v1", "--env-backend", "jax"], "invalid choice: 'jax'"),
])
def test_bad_values_are_one_line_exit_2(args, needle, capsys):
    rc, err = run_main(args, capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_config_with_undecodable_bytes_names_the_file(tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_bytes(b"\xff\xfe{}")
    rc, err = run_main(["train", "reinforce", "CartPole-v1", "--config", str(p)], capsys)
    assert rc == 2 and f"config file {p} is not UTF-8" in err


def test_eval_on_a_missing_gpu_names_the_device(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    from rlkit.agents import get_agent_class

    a = get_agent_class("reinforce")("CartPole-v1", seed=0, device="cpu", n_envs=2, n_steps=8)
    a.save(tmp_path / "a.pt")
    rc, err = run_main(["eval", str(tmp_path / "a.pt"), "--device", "cuda"], capsys)
    assert rc == 2 and "CUDA is not available" in err and "rebuild" not in err


def test_run_dir_file_under_file_and_reuse_are_refused(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert "is a file" in run_main(["train", "a2c", "CartPole-v1", "--run-dir", str(f)], capsys)[1]
    assert "lies under" in run_main(["train", "a2c", "CartPole-v1", "--run-dir", str(f / "d")], capsys)[1]
    run = tmp_path / "run"
    small = ["train", "reinforce", "CartPole-v1", "--steps", "32", "--set", "n_steps=16", "--n-envs", "2",
             "--no-progress", "--eval-episodes", "0", "--run-dir", str(run)]
    assert run_main(small, capsys)[0] == 0
    rc, err = run_main(small, capsys)
    assert rc == 2 and "already holds a run" in err and f"--resume {run}," in err
    assert len(err.strip().splitlines()) == 1


def test_bench_names_failing_runs_and_exits_2(tmp_path):
    out = tmp_path / "grid"
    r = rlkit("bench", "--algos", "reinforce", "--envs", "CartPole-v1", "--seeds", "3,", "--steps", "64",
              "--out", str(out), "--eval-episodes", "0", "--set", "n_steps=0")
    assert r.returncode == 2
    assert "1 of 1 runs failed: reinforce/CartPole-v1/seed3 (rc 2)" in r.stderr.strip().splitlines()[-1]


def test_train_on_the_torch_env_backend(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = run_main(["train", "a2c", "Pendulum-v1", "--env-backend", "torch", "--device", "cpu", "--steps", "128",
                        "--n-envs", "4", "--run-dir", str(run), "--no-progress", "--eval-episodes", "1"], capsys)
    assert rc == 0, err
    assert json.loads((run / "result.json").read_text())["steps"] == 128 and (run / "checkpoints/final.pt").exists()


# ---- issue 13: resume a run directory, evaluation during training, custom envs --------------------------------
def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_run_dir_refuses_changes_skips_corrupt_checkpoints_and_continues(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "a2c", "CartPole-v1", "--no-progress", "--eval-episodes", "0", "--log-interval", "16"]
    rc, err = run_main([*base, "--steps", "32", "--seed", "3", "--set", "n_steps=8", "--n-envs", "2",
                        "--set", "checkpoint_interval=16", "--set", "lr_schedule=linear", "--run-dir", str(run)],
                       capsys)
    assert rc == 0, err
    assert "device cpu (" in err.splitlines()[0]  # which device and why, in the first line
    rc, err = run_main([*base, "--resume", str(run), "--steps", "64", "--set", "n_steps=16", "--seed", "4"], capsys)
    assert rc == 2 and "would change the run: n_steps=16 (the run's: 8); --seed 4 (the run's: 3)" in err, err
    assert len(err.strip().splitlines()) == 1
    rc, err = run_main([*base, "--resume", str(run), "--steps", "64", "--env-kwargs", "render_mode=rgb_array"], capsys)
    assert rc == 2 and "cannot change the run's environment" in err, err
    (run / "checkpoints" / "final.pt").write_bytes(b"torn")
    rc, err = run_main([*base, "--resume", str(run), "--steps", "64", "--set", "n_steps=8"], capsys)  # same value
    assert rc == 0, err
    first = err.splitlines()[0]  # what resumed from where, the corrupt checkpoint it skipped, the env state
    assert "skipped corrupt final.pt (" in first
    assert "resuming" in first and "step_32.pt at step 32 to 64" in first and "seed 3" in first
    assert "continue their episodes" in first
    steps = [int(float(r["step"])) for r in _csv(run / "progress.csv")]
    assert steps == [16, 32, 48, 64], steps  # one run, appended, strictly increasing
    assert json.loads((run / "result.json").read_text())["seed"] == 3


def test_eval_during_training_logs_eval_metrics_keeps_best_and_reports_it(tmp_path, capsys):
    run = tmp_path / "run"
    rc, err = run_main(["train", "reinforce", "CartPole-v1", "--steps", "64", "--set", "n_steps=16", "--n-envs", "2",
                        "--no-progress", "--eval-freq", "32", "--eval-episodes", "2", "--run-dir", str(run)], capsys)
    assert rc == 0, err
    rows = [r for r in _csv(run / "progress.csv") if r.get("eval/mean_return")]
    assert [int(float(r["step"])) for r in rows] == [32, 64]
    assert all(r["eval/std_return"] and r["eval/mean_length"] for r in rows)
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "final.pt").is_file()
    res = json.loads((run / "result.json").read_text())
    best = max(float(r["eval/mean_return"]) for r in rows)
    assert res["best_eval_return"] == best and res["best_eval_step"] in (32, 64) and "mean_return" in res


def test_custom_env_module_env_kwargs_and_log_interval(tmp_path, capsys, monkeypatch):
    (tmp_path / "rlkit_test_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('RlkitTestPole-v0', entry_point='gymnasium.envs.classic_control.cartpole:CartPoleEnv',\n"
        "             max_episode_steps=50)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    rc, err = run_main(["train", "reinforce", "rlkit_test_envs:RlkitTestPole-v0", "--steps", "64", "--set",
                        "n_steps=16", "--n-envs", "2", "--no-progress", "--eval-episodes", "1", "--log-interval", "32",
                        "--env-kwargs", "sutton_barto_reward=true", "--run-dir", str(run)], capsys)
    assert rc == 0, err
    assert [int(float(r["step"])) for r in _csv(run / "progress.csv")] == [32, 64]
    from rlkit.core.checkpoint import load_checkpoint

    ck = load_checkpoint(run / "checkpoints" / "final.pt")
    assert ck["env_id"] == "rlkit_test_envs:RlkitTestPole-v0" and ck["env_kwargs"] == {"sutton_barto_reward": True}
    from rlkit import load_agent

    agent = load_agent(run / "checkpoints" / "final.pt", env="rlkit_test_envs:RlkitTestPole-v0", device="cpu")
    assert agent.env.envs[0].unwrapped._sutton_barto_reward is True  # the run's kwargs rebuild its env
    rc, err = run_main(["train", "reinforce", "no_such_module_xyz:Env-v0", "--steps", "8"], capsys)
    assert rc == 2 and "cannot import module 'no_such_module_xyz'" in err
    rc, err = run_main(["train", "reinforce", "CartPole-v1", "--env-kwargs", "novalue"], capsys)
    assert rc == 2 and "--env-kwargs expects key=value" in err


def test_an_env_that_cannot_be_built_is_named_in_one_line_with_exit_2(tmp_path, capsys):
    """A failure inside the env's construction (bad kwargs here; a missing dependency or a broken rendering
    library alike) is the env's problem: one line naming the env and the error, exit 2, not an 'internal error'."""
    rc, err = run_main(["train", "a2c", "CartPole-v1", "--env-kwargs", "no_such_kwarg=1", "--steps", "8",
                        "--run-dir", str(tmp_path / "run"), "--no-progress"], capsys)
    assert rc == 2 and "cannot build env CartPole-v1: TypeError" in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_factory_that_raises_is_reported_as_the_envs_failure():
    from rlkit.core.envs import EnvBuildError, make_vec_env

    def broken_env():
        raise AttributeError("'NoneType' object has no attribute 'eglQueryString'")

    with pytest.raises(EnvBuildError, match=r"cannot build env broken_env: AttributeError: 'NoneType'"):
        make_vec_env(broken_env, 2, seed=0)
