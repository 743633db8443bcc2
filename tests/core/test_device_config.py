"""Device resolution, seeding, config building/validation (with hypothesis fuzzing)."""
from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlkit.agents.reinforce import REINFORCEConfig
from rlkit.core.config import ConfigError, build_config, load_config_file, parse_set_option
from rlkit.core.device import resolve_device, rng_state, seed_everything, set_rng_state


def test_resolve_device_cpu_auto_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="must be a string"):
        resolve_device(3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_says_what_is_available():
    with pytest.raises(ValueError, match="CUDA is not available here; available: cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:1")


@pytest.mark.cuda
def test_cuda_index_that_does_not_exist():
    n = torch.cuda.device_count()
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=f"'cuda:{n}' does not exist; available: cpu, cuda:0"):
        resolve_device(f"cuda:{n}")


def test_seed_everything_and_rng_state_round_trip():
    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    s = rng_state()
    x = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(s)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == x


def test_build_config_overrides_and_unknown_keys_list_valid_ones():
    c = build_config(REINFORCEConfig, {"n_steps": 7}, learning_rate=0.1, hidden_sizes=[8, 8])
    assert c.n_steps == 7 and c.learning_rate == 0.1 and c.hidden_sizes == (8, 8)
    assert build_config(REINFORCEConfig, c) == c
    with pytest.raises(ConfigError, match=r"unknown REINFORCEConfig key\(s\) \['lr'\]; valid keys are: n_envs, "):
        build_config(REINFORCEConfig, lr=1.0)


@pytest.mark.parametrize("field,value,msg", [
    ("learning_rate", -1.0, "learning_rate must be > 0"),
    ("n_steps", 0, "n_steps must be > 0"),
    ("n_steps", 2.5, "n_steps must be an integer"),
    ("gamma", 1.5, r"gamma must be in \[0, 1\]"),
    ("hidden_sizes", [64, -1], "hidden_sizes must be a tuple of positive"),
    ("activation", "sigmoid", "activation must be one of"),
    ("use_baseline", "yes", "use_baseline must be true or false"),
    ("learning_rate", float("nan"), "learning_rate must be a finite number"),
])
def test_invalid_values_name_the_field(field, value, msg):
    with pytest.raises(ConfigError, match=msg):
        build_config(REINFORCEConfig, **{field: value})


_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.integers(-5, 300), max_size=3))


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from([f.name for f in dataclasses.fields(REINFORCEConfig)] + ["bogus_key"]), value=_values)
def test_config_fuzzing_only_config_errors_escape(key, value):
    """Any value for any key either builds a valid config or raises ConfigError naming the key."""
    try:
        cfg = build_config(REINFORCEConfig, **{key: value})
    except ConfigError as e:
        assert key in str(e)
    else:
        assert dataclasses.is_dataclass(cfg)


def test_config_file_and_set_option(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"n_steps": 16}))
    assert load_config_file(p) == {"n_steps": 16}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json is malformed"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(tmp_path / "list.json")
    assert parse_set_option("hidden_sizes=[32,32]") == ("hidden_sizes", [32, 32])
    assert parse_set_option("activation=relu") == ("activation", "relu")
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_option("oops")


def test_configure_threads_sets_torch_and_numpy_blas_threads():
    import sys

    from rlkit.core.device import configure_threads, set_numpy_blas_threads

    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        maps = open("/proc/self/maps").read().lower() if sys.platform.startswith("linux") else ""
        if "openblas" in maps:  # NumPy's wheels bundle OpenBLAS; found through /proc/self/maps
            assert set_numpy_blas_threads(1)
    finally:
        torch.set_num_threads(before)
