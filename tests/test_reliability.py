"""Reliability (docs/reliability.md): no NaN/inf reaches a checkpoint, a run directory belongs to one run,
signals stop a run with a checkpoint, and bad input is refused up front with a message naming it."""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import typing

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.agents import get_agent_class
from rlkit.core import agent_io
from rlkit.core.checkpoint import load_checkpoint
from rlkit.core.config import ConfigError, build_config
from rlkit.core.envs import SpaceError, make_vec_env
from rlkit.core.errors import first_non_finite
from rlkit.core.rollout import NonFiniteError, check_finite_env, evaluate_policy
from rlkit.core.rundir import LOCK_NAME, RunDirError, TrainingInterrupted
from tests.conftest import CountingEnv

ALGOS = ["reinforce", "qac", "a2c", "trpo", "ddpg"]
TINY = {
    "reinforce": dict(n_envs=2, n_steps=8, hidden_sizes=(8,)),
    "qac": dict(n_envs=2, n_steps=8, hidden_sizes=(8,)),
    "a2c": dict(n_envs=2, n_steps=8, hidden_sizes=(8,)),
    "trpo": dict(n_envs=2, n_steps=8, hidden_sizes=(8,)),
    "ddpg": dict(hidden_sizes=(8,), learning_starts=8, batch_size=8, buffer_size=256),
}


def env_for(algo: str) -> str:
    return "Pendulum-v1" if algo == "ddpg" else "CartPole-v1"


class NaNOnTruncationEnv(CountingEnv):
    """CountingEnv whose truncating step returns a NaN observation: with SAME_STEP autoreset it arrives only in
    info['final_obs'] (the returned observation is the reset one), the value agents bootstrap from."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        if trunc:
            obs = obs * np.nan
        return obs, r, term, trunc, info


def nan_env_factory(algo: str):
    return lambda: NaNOnTruncationEnv(horizon=4, box_actions=algo in ("trpo", "ddpg"))


def csv_steps(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(float(r["step"])) for r in csv.DictReader(f)]


# ---- 1. silent damage: non-finite values --------------------------------------------------------------------
def test_check_finite_env_checks_final_obs_of_truncated_steps():
    venv = make_vec_env(lambda: NaNOnTruncationEnv(horizon=2), n_envs=2, seed=0)
    _, r, term, trunc, info = venv.step(np.zeros(2, dtype=np.int64))
    check_finite_env(_, r, 0, info.get("final_obs"), term | trunc)  # nothing ended yet
    obs, r, term, trunc, info = venv.step(np.zeros(2, dtype=np.int64))
    assert trunc.all() and np.isfinite(obs).all()  # the returned (reset) observation hides the NaN
    check_finite_env(obs, r, 2)  # the old check (no final_obs) lets it through
    with pytest.raises(NonFiniteError, match=r"final observation .*sub-env 0.* step 2"):
        check_finite_env(obs, r, 2, info["final_obs"], term | trunc)


@pytest.mark.parametrize("algo", ALGOS)
def test_nan_on_truncating_step_never_reaches_a_checkpoint(algo, tmp_path):
    """Today the NaN from info['final_obs'] poisons the critic; training must stop with NonFiniteError and every
    checkpoint on disk must be finite (save_checkpoint and LearnRun refuse non-finite states)."""
    cls = get_agent_class(algo)
    agent = cls(nan_env_factory(algo), seed=0, device="cpu", checkpoint_interval=8, **TINY[algo])
    with pytest.raises(NonFiniteError):
        agent.learn(600, progress=False, run_dir=tmp_path, log_interval=1000)
    for p in (tmp_path / "checkpoints").glob("*.pt"):
        assert first_non_finite(load_checkpoint(p)) is None, p
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("algo", ALGOS)
def test_nan_final_obs_is_blamed_on_the_env_for_all_agents(algo, tmp_path):
    cls = get_agent_class(algo)
    agent = cls(nan_env_factory(algo), seed=0, device="cpu", checkpoint_interval=8, **TINY[algo])
    with pytest.raises(NonFiniteError, match="final observation"):
        agent.learn(600, progress=False, run_dir=tmp_path)
    assert not list((tmp_path / "checkpoints").glob("step_*.pt"))  # stopped at the first truncation


def test_periodic_checkpoint_refuses_non_finite_params_naming_agent_step_tensor(tmp_path):
    a = get_agent_class("reinforce")("CartPole-v1", seed=0, device="cpu", **TINY["reinforce"])
    agent_io.periodic_checkpoint(a, tmp_path, keep=5)
    with torch.no_grad():
        next(a.actor.parameters()).fill_(float("nan"))
    a.num_timesteps = 64
    with pytest.raises(NonFiniteError, match=r"reinforce: actor\.\S+ holds NaN/inf at environment step 64"):
        agent_io.periodic_checkpoint(a, tmp_path, keep=5)
    with pytest.raises(NonFiniteError, match="refusing to write checkpoint"):
        a.save(tmp_path / "direct.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0.envstate", "step_0.pt"]


@pytest.mark.parametrize("algo", ALGOS)
def test_every_float_config_field_refuses_nan_and_inf(algo):
    cls = get_agent_class(algo)
    cfg_cls = type(build_config(_config_class(cls)))
    hints = typing.get_type_hints(cfg_cls)
    floats = [f.name for f in dataclasses.fields(cfg_cls) if float in (hints[f.name], *typing.get_args(hints[f.name]))]
    assert "gamma" in floats
    for name in floats:
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(ConfigError, match=rf"{name} must be a finite number"):
                build_config(cfg_cls, **{name: bad})


def _config_class(cls):
    mod = sys.modules[cls.__module__]
    return getattr(mod, cls.__name__ + "Config")


@pytest.mark.parametrize("algo", ALGOS)
def test_hidden_sizes_empty_or_absurd_is_refused_for_all(algo):
    """Empty: refused, except by A2C, whose heads then sit on the encoder's features (not with a shared trunk)."""
    cfg_cls = _config_class(get_agent_class(algo))
    if algo == "a2c":
        assert build_config(cfg_cls, hidden_sizes=[]).hidden_sizes == ()
        with pytest.raises(ConfigError, match="shared_trunk needs at least one hidden layer"):
            build_config(cfg_cls, hidden_sizes=[], shared_trunk=True)
    else:
        with pytest.raises(ConfigError, match="at least one hidden layer"):
            build_config(cfg_cls, hidden_sizes=[])
    with pytest.raises(ConfigError, match="at most"):
        build_config(cfg_cls, hidden_sizes=[10**9])


# ---- 2. a run directory belongs to one run ------------------------------------------------------------------
def small(algo="reinforce", **kw):
    return get_agent_class(algo)(env_for(algo), seed=0, device="cpu", **{**TINY[algo], **kw})


def test_new_run_into_a_used_run_dir_is_refused(tmp_path):
    small().learn(32, progress=False, run_dir=tmp_path)
    before = (tmp_path / "progress.csv").read_bytes()
    with pytest.raises(RunDirError, match=r"already holds a run .*resume it from .*final\.pt"):
        small().learn(32, progress=False, run_dir=tmp_path)
    assert (tmp_path / "progress.csv").read_bytes() == before
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_lock_refuses_and_stale_lock_is_taken_over(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (tmp_path / LOCK_NAME).write_text(f"{live.pid} {socket.gethostname()} \n")
        with pytest.raises(RunDirError, match=rf"in use by another run \(pid {live.pid}"):
            small().learn(16, progress=False, run_dir=tmp_path)
    finally:
        live.kill()
        live.wait()
    # the holder is gone: its lock is stale and taken over; released after learn
    small().learn(16, progress=False, run_dir=tmp_path)
    assert (tmp_path / "checkpoints" / "final.pt").exists() and not (tmp_path / LOCK_NAME).exists()


def test_resume_from_an_older_checkpoint_truncates_progress_and_tensorboard(tmp_path):
    a = small(checkpoint_interval=32, keep_checkpoints=10)
    a.learn(128, progress=False, run_dir=tmp_path, log_interval=16)
    assert csv_steps(tmp_path / "progress.csv") == [16 * k for k in range(1, 9)]
    stale = tmp_path / "checkpoints" / ".step_96.pt.x1y2.tmp"  # left by a SIGKILL during a save
    stale.write_bytes(b"partial")
    b = get_agent_class("reinforce").load(tmp_path / "checkpoints" / "step_64.pt", env="CartPole-v1", device="cpu")
    b.learn(32, progress=False, run_dir=tmp_path, log_interval=16)
    steps = csv_steps(tmp_path / "progress.csv")
    assert steps == [16, 32, 48, 64, 80, 96] and len(set(steps)) == len(steps)
    assert not stale.exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tb_steps = [e.step for e in acc.Scalars("train/loss_pi")]
    assert tb_steps == sorted(set(tb_steps)) and max(tb_steps) == 96


def test_run_dir_that_is_or_lies_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for rd, needle in [(f, "is a file"), (f / "sub", "lies under")]:
        with pytest.raises(RunDirError, match=needle):
            small().learn(16, progress=False, run_dir=rd)


def test_read_only_or_full_file_system_is_named_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    import errno

    from rlkit.core import checkpoint, rundir

    real_open = os.open

    def ro_open(path, flags, *a):
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(rundir.os, "open", ro_open)
    with pytest.raises(RunDirError, match=rf"cannot use run directory {tmp_path / 'ro'}: Read-only file system"):
        small().learn(16, progress=False, run_dir=tmp_path / "ro")
    monkeypatch.undo()

    a = small(checkpoint_interval=16)
    a.learn(32, progress=False, run_dir=tmp_path / "full")
    ck = tmp_path / "full" / "checkpoints"
    before = {p.name: p.read_bytes() for p in ck.iterdir()}

    real_fsync = os.fsync

    def enospc(fd):  # only checkpoint temp files hit the "full disk" (os.fsync is patched process-wide)
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", enospc)
    with pytest.raises(checkpoint.CheckpointWriteError, match=r"step_48\.pt: No space left on device"):
        a.learn(32, progress=False, run_dir=tmp_path / "full")
    assert {p.name: p.read_bytes() for p in ck.iterdir()} == before
    assert not list((tmp_path / "full").rglob("*.tmp")) and not (tmp_path / "full" / LOCK_NAME).exists()


# ---- 3. signals ---------------------------------------------------------------------------------------------
def test_sigint_in_learn_checkpoints_and_raises_training_interrupted(tmp_path):
    a = small()
    before = signal.getsignal(signal.SIGINT)
    calls = []

    def cb(agent, metrics):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as e:
        a.learn(10_000, progress=False, run_dir=tmp_path, callback=cb, log_interval=16)
    assert e.value.exit_code == 130 and e.value.step == a.num_timesteps == 32
    assert e.value.checkpoint == tmp_path / "checkpoints" / "step_32.pt"
    assert load_checkpoint(e.value.checkpoint)["num_timesteps"] == 32
    assert csv_steps(tmp_path / "progress.csv") == [16, 32]
    assert signal.getsignal(signal.SIGINT) is before and not (tmp_path / LOCK_NAME).exists()


def test_cli_sigterm_checkpoints_prints_resume_command_and_it_resumes(tmp_path):
    """SIGTERM (SIGINT takes the same path, see the in-process test above): exit 143, a checkpoint, the command
    that resumes the run; running that command continues without repeating a logged step."""
    import shlex

    sig, code = signal.SIGTERM, 143
    import time

    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "rlkit.cli", "train", "reinforce", "CartPole-v1", "--steps",
                          "100000000", "--run-dir", str(run), "--no-progress", "--set", "n_steps=16",
                          "--set", "hidden_sizes=[8]", "--n-envs", "2", "--eval-episodes", "0"],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not ((run / "progress.csv").exists()
                                          and len(csv_steps(run / "progress.csv")) >= 2):
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err and f"interrupted by {signal.Signals(sig).name}" in err
    cmd = shlex.split(err.split("resume with: ", 1)[1].splitlines()[0])
    ckpt = cmd[cmd.index("--resume") + 1]
    step = load_checkpoint(ckpt)["num_timesteps"]
    assert csv_steps(run / "progress.csv")[-1] == step
    assert cmd[:3] == ["rlkit", "train", "reinforce"] and cmd[cmd.index("--run-dir") + 1] == str(run)
    cmd[cmd.index("--steps") + 1] = str(step + 64)
    r = subprocess.run([sys.executable, "-m", "rlkit.cli", *cmd[1:]], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    steps = csv_steps(run / "progress.csv")
    assert len(steps) == len(set(steps)) and steps[-1] == step + 64


# ---- bad input, refused up front ----------------------------------------------------------------------------
def test_unusable_spaces_are_refused_up_front(tmp_path):
    from rlkit.core.envs import check_spaces

    with pytest.raises(SpaceError, match=r"Discrete observations must start at 0 \(start=3\)"):
        check_spaces("a2c", gym.spaces.Discrete(4, start=3), gym.spaces.Discrete(2), ("Discrete",))
    with pytest.raises(SpaceError, match=r"Box actions must be one-dimensional .*\(2, 2\)"):
        check_spaces("ddpg", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-1, 1, (2, 2)), ("Box",))


def test_rollout_buffer_that_cannot_fit_names_the_gib():
    from rlkit.core.buffers import RolloutBuffer

    with pytest.raises(MemoryError, match=r"needs \d+\.\d\d GiB on cpu"):
        RolloutBuffer(10**9, 8, (4,), (), torch.int64, torch.device("cpu"))


class NeverEnds(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {}


def test_evaluation_of_an_episode_that_never_ends_is_capped_with_a_warning(monkeypatch):
    from rlkit.core import rollout

    monkeypatch.setattr(rollout, "DEFAULT_EVAL_MAX_EPISODE_STEPS", 50)
    with pytest.warns(RuntimeWarning, match="did not end within 50 steps"):
        stats = evaluate_policy(lambda o: 0, NeverEnds(), 2)
    assert stats["mean_length"] == 50 and stats["capped_episodes"] == 2
    capped = gym.wrappers.TimeLimit(NeverEnds(), 7)  # the env's own TimeLimit ends it: no warning
    assert evaluate_policy(lambda o: 0, capped, np.int64(1))["mean_length"] == 7


@pytest.mark.parametrize("algo", ALGOS)
def test_act_validates_shapes_and_evaluate_takes_numpy_ints(algo):
    a = small(algo)
    shape = a.observation_space.shape
    with pytest.raises(ValueError, match=rf"expected shape \({shape[0]},\)"):
        a.act(np.zeros(shape[0] + 1))
    with pytest.raises(ValueError, match="expected shape"):
        a.act(np.zeros((2, 2, shape[0])))
    assert a.act(np.zeros((3, shape[0]))).shape[0] == 3
    assert a.evaluate(np.int64(1))["n_episodes"] == 1


def test_discrete_observations_are_range_checked_and_one_hot_is_not_a_batch():
    a = get_agent_class("a2c")("FrozenLake-v1", seed=0, device="cpu", **TINY["a2c"])
    assert a.action_space.contains(a.act(3)) and len(a.act(np.array([0, 5]))) == 2
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\), got 16"):
        a.act(16)
    with pytest.raises(ValueError, match="one-hot"):
        a.act(np.eye(16, dtype=np.float32)[3])
    x, single = agent_io.obs_batch(np.int64(2), a.observation_space, torch.device("cpu"))
    assert single and x.tolist() == [2.0]


# ---- checkpoints: schema ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mutate,needle", [
    (lambda p: p.pop("state"), "missing state"),
    (lambda p: p.pop("rng"), "missing rng"),
    (lambda p: p.update(num_timesteps="12"), "num_timesteps must be int"),
    (lambda p: p.update(config=[1, 2]), "config must be dict"),
    (lambda p: p.update(seed=True), "seed must be int or None"),
    (lambda p: p.update(state={"actor": 3}), "does not fit"),
    (lambda p: p.update(rng={"torch": 1}), "unusable rng state"),
    (lambda p: p.update(config={"gamma": "x"}), "invalid config"),
])
def test_checkpoint_with_valid_checksum_but_incomplete_content_is_refused_by_name(tmp_path, mutate, needle):
    from rlkit.core.checkpoint import CheckpointError, save_checkpoint

    a = small()
    payload = agent_io.checkpoint_payload(a)
    payload["extra_key_from_a_newer_writer"] = {"x": 1}  # unknown keys are accepted
    save_checkpoint(tmp_path / "ok.pt", payload)
    get_agent_class("reinforce").load(tmp_path / "ok.pt", device="cpu")
    mutate(payload)
    save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match=needle):
        get_agent_class("reinforce").load(tmp_path / "bad.pt", device="cpu")


def test_logger_truncation_keeps_rows_up_to_the_resume_step(tmp_path):
    from rlkit.core.logger import Logger

    with Logger(tmp_path, tensorboard=False, progress=False, console=False) as lg:
        for s in (10, 20, 30):
            lg.record({"a": 1.0}, s)
    with Logger(tmp_path, tensorboard=False, progress=False, console=False, start_step=20) as lg:
        lg.record({"a": 2.0}, 30)
    assert csv_steps(tmp_path / "progress.csv") == [10, 20, 30]
    assert not math.isnan(float(open(tmp_path / "progress.csv").read().splitlines()[-1].split(",")[1]))
