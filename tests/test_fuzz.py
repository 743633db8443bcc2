"""Fuzzing the edges users reach (docs/reliability.md): CLI arguments, --set values, config files and
checkpoint payloads. Every outcome is success or a one-line error (exit 2 for the CLI), never a traceback.
Training itself is stubbed out where an argument would start it, so the suite stays fast."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlkit import cli
from rlkit.agents import get_agent_class
from rlkit.core import agent_io
from rlkit.core.checkpoint import CheckpointError, save_checkpoint
from rlkit.core.config import ConfigError, build_config, load_config_file, parse_set_option
from rlkit.core.errors import NonFiniteError

ALGOS = ["reinforce", "qac", "a2c", "trpo", "ddpg"]
def fast(n: int) -> settings:
    return settings(deadline=None, max_examples=n, database=None, suppress_health_check=list(HealthCheck))


def config_class(algo):
    import sys

    cls = get_agent_class(algo)
    return getattr(sys.modules[cls.__module__], cls.__name__ + "Config")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.sampled_from([10**30, -1, 0, 1, 2**63])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


@pytest.mark.parametrize("algo", ALGOS)
@fast(100)
@given(data=st.data())
def test_set_values_build_a_valid_config_or_a_config_error(algo, data):
    cfg_cls = config_class(algo)
    keys = list(cfg_cls.__dataclass_fields__) + ["nope", "", "gamma ", "hidden_sizes"]
    key = data.draw(st.sampled_from(keys))
    raw = data.draw(st.one_of(st.text(max_size=12), json_values.map(lambda v: json.dumps(v, allow_nan=True))))
    try:
        k, v = parse_set_option(f"{key}={raw}")
        cfg = build_config(cfg_cls, **{k: v})
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    for f, val in vars(cfg).items():  # whatever was accepted is finite and of the declared kind
        if isinstance(val, float):
            assert np.isfinite(val), f


@fast(200)
@given(content=st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()),
       suffix=st.sampled_from([".json", ".toml", ".cfg"]), algo=st.sampled_from(ALGOS))
def test_config_files_load_or_raise_config_error_naming_the_file(tmp_path_factory, content, suffix, algo):
    p = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    p.write_bytes(content)
    try:
        build_config(config_class(algo), load_config_file(p))
    except ConfigError as e:
        assert "\n" not in str(e)
        if "file" in str(e):
            assert str(p) in str(e)


def _no_training(monkeypatch):
    """Agents are built for real (env, networks, buffers: where bad values surface) but learn/evaluate are
    stubs that still open and close the run (lock, logger) through begin_learn."""
    def learn(self, total_steps, callback=None, run_dir=None, progress=True, log_interval=1, *, total_budget=None,
              eval_freq=0, n_eval_episodes=10):
        run = agent_io.begin_learn(self, total_steps, run_dir, progress, log_interval, callback, total_budget,
                                   eval_freq, n_eval_episodes)
        run.close()
        return self

    for algo in ALGOS:
        cls = get_agent_class(algo)
        monkeypatch.setattr(cls, "learn", learn)
        monkeypatch.setattr(cls, "evaluate", lambda self, n_episodes=10, deterministic=True, env=None:
                            {"mean_return": 0.0, "std_return": 0.0, "mean_length": 1.0, "n_episodes": 1.0})


def assert_one_line_outcome(rc, err):
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("rlkit: training ")]
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        assert len(lines) == 1, err


small_ints = st.sampled_from(["-1", "0", "1", "2", "64", "99999999999999999999", "x", "1.5", ""])
flag_values = {
    "--steps": small_ints, "--seed": small_ints, "--n-envs": small_ints, "--eval-episodes": small_ints,
    "--device": st.sampled_from(["cpu", "auto", "cuda", "cuda:7", "tpu", ""]),
    "--set": st.sampled_from(["n_steps=8", "hidden_sizes=[]", "hidden_sizes=[8]", "hidden_sizes=[1e9]",
                              "log_std_init=NaN", "gamma=2", "gamma=Infinity", "nope=1", "n_steps", "=",
                              "n_steps=1000000000", "buffer_size=100000000000", "learning_rate=-1",
                              "activation=relu", "activation=\u00e9", "batch_size=8", "n_envs=0"]),
    "--run-dir": st.sampled_from(["RUN", "FILE", "FILE/sub", "USED"]),
    "--config": st.sampled_from(["GOODCFG", "BADBYTES", "/nonexistent.json", "NOTDICT"]),
    "--resume": st.sampled_from(["/nonexistent.pt", "FILE", "USED/checkpoints/final.pt"]),
}


@pytest.mark.parametrize("algo", ALGOS)
@fast(40)
@given(data=st.data())
def test_cli_train_arguments_never_traceback(algo, data, tmp_path_factory, monkeypatch, capsys):
    _no_training(monkeypatch)
    d = tmp_path_factory.mktemp("cli")
    (d / "FILE").write_text("x")
    (d / "GOODCFG").write_text(json.dumps({"n_steps": 8}))
    (d / "BADBYTES").write_bytes(b"\xff\xfe{")
    (d / "NOTDICT").write_text("[1]")
    used = d / "USED"
    (used / "checkpoints").mkdir(parents=True)
    (used / "progress.csv").write_text("step\n8\n")
    (used / "checkpoints" / "final.pt").write_bytes(b"not a checkpoint")
    env = "Pendulum-v1" if algo in ("ddpg",) else data.draw(st.sampled_from(["CartPole-v1", "Pendulum-v1",
                                                                              "NoSuchEnv-v0"]))
    argv = ["train", data.draw(st.sampled_from([algo, algo.upper(), "nope"])), env,
            "--no-progress", "--runs-root", str(d / "runs"), "--steps", "64"]
    for flag in data.draw(st.lists(st.sampled_from(sorted(flag_values)), max_size=4)):
        value = data.draw(flag_values[flag])
        for token in ("RUN", "FILE", "USED", "GOODCFG", "BADBYTES", "NOTDICT"):
            if value.startswith(token):
                value = str(d / value)
                break
        argv += [flag, value]
    rc = cli.main(argv)
    out = capsys.readouterr()
    assert_one_line_outcome(rc, out.err)


@fast(150)
@given(argv=st.lists(st.sampled_from(["eval", "bench", "list", "plot", "train", "--jobs", "0", "--seeds", "0",
                                      "-1", "--algos", "a2c", "--envs", "--episodes", "--device", "cuda",
                                      "/nonexistent.pt", "--frob", "", "x", "--out", "--steps", "-h"]), max_size=8))
def test_cli_commands_fuzzed_token_soup(argv, monkeypatch, capsys, tmp_path_factory):
    _no_training(monkeypatch)
    monkeypatch.setattr("subprocess.call", lambda *a, **k: 2)  # bench never starts a real run here
    monkeypatch.chdir(tmp_path_factory.mktemp("soup"))
    if "-h" in argv:  # argparse help exits 0 through SystemExit by design
        return
    rc = cli.main(argv)
    assert_one_line_outcome(rc, capsys.readouterr().err)


# ---- checkpoint payloads --------------------------------------------------------------------------------------
_CACHE: dict = {}


def base_payload(algo):
    if algo not in _CACHE:
        env = "Pendulum-v1" if algo == "ddpg" else "CartPole-v1"
        kw = dict(hidden_sizes=(8,)) | ({} if algo == "ddpg" else dict(n_envs=2, n_steps=8))
        a = get_agent_class(algo)(env, seed=0, device="cpu", **kw)
        _CACHE[algo] = agent_io.checkpoint_payload(a)
    return _CACHE[algo]


def mutate(payload, data):
    """Replace, delete or add one entry somewhere in the payload (top level or one level into state)."""
    import copy

    p = copy.deepcopy(payload)
    target = p
    if data.draw(st.booleans()) and isinstance(p.get("state"), dict) and p["state"]:
        target = p["state"]
        inner = data.draw(st.sampled_from(sorted(target)))
        if isinstance(target[inner], dict) and target[inner] and data.draw(st.booleans()):
            target = target[inner]
    key = data.draw(st.sampled_from(sorted(target, key=str) + ["extra"]))
    op = data.draw(st.sampled_from(["delete", "replace"]))
    if op == "delete":
        target.pop(key, None)
    else:
        target[key] = data.draw(st.one_of(json_values, st.just(torch.zeros(3)), st.just(torch.ones(2, 2)),
                                          st.just(torch.tensor([1, 2])), st.just({})))
    return p


@pytest.mark.parametrize("algo", ALGOS)
@fast(25)
@given(data=st.data())
def test_checkpoint_payloads_load_or_raise_checkpoint_error(algo, data, tmp_path_factory):
    p = mutate(base_payload(algo), data)
    path = tmp_path_factory.mktemp("ck") / "c.pt"
    try:
        save_checkpoint(path, p)
    except NonFiniteError:
        return
    try:
        agent = get_agent_class(algo).load(path, device="cpu", restore_rng=False)
    except CheckpointError as e:
        assert "\n" not in str(e).strip() or str(e).startswith("checkpoint")
        assert str(path) in str(e)
        return
    assert agent.algo == algo
