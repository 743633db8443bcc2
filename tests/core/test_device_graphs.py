"""The pieces of on-device training that run on any device: the one-transfer host read (to_host), the act's
fetch that lets a queued update run on (HostFetch), the CUDA-graph switch and its eager fallback (GraphedStep),
device-side optimiser scalars (capturable FlatAdam/FlatRMSprop, set_lr) and optimiser state that loads across
implementation settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlkit.core.config import ConfigError
from rlkit.core.device import GraphedStep, HostFetch, resolve_cuda_graphs, to_host
from rlkit.core.optim import (FlatAdam, FlatRMSprop, load_optimizer_state, optimizer_state_dict, set_lr)

CPU = torch.device("cpu")


def test_to_host_keeps_structure_values_and_dtypes():
    tree = {"a": torch.tensor(1.5), "b": [torch.tensor(3, dtype=torch.int64), torch.tensor(True)],
            "c": (torch.arange(4, dtype=torch.float64).reshape(2, 2), 7), "d": None, "nan": torch.tensor(float("nan"))}
    host = to_host(tree)
    assert host["a"] == 1.5 and isinstance(host["a"], float)
    assert host["b"] == [3, True] and type(host["b"][0]) is int and type(host["b"][1]) is bool
    assert isinstance(host["c"], tuple) and host["c"][1] == 7 and host["c"][0].dtype == np.float64
    assert np.array_equal(host["c"][0], [[0.0, 1.0], [2.0, 3.0]])
    assert host["d"] is None and np.isnan(host["nan"])
    t = torch.zeros(3)
    out = to_host({"t": t})["t"]
    t.fill_(1.0)
    assert np.array_equal(out, np.zeros(3))  # a copy, not a view of the tensor


def test_to_host_of_a_float32_metric_equals_item():
    x = torch.tensor(0.1, dtype=torch.float32) * 3
    assert to_host(x) == x.item()


def test_graphed_step_runs_eagerly_when_disabled_and_falls_back_with_one_warning():
    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    off = GraphedStep(fn, enabled=False, name="x")
    assert [off() for _ in range(4)] == [1, 2, 3, 4] and off.graph is None
    calls.clear()
    if torch.cuda.is_available():
        pytest.skip("the fallback is exercised where no CUDA graph can be captured")
    on = GraphedStep(fn, enabled=True, name="test step", warmup=2)
    assert on() == 1 and on() == 2
    with pytest.warns(RuntimeWarning, match="test step runs eagerly: CUDA graph capture failed"):
        assert on() == 3  # the capture failed: this call's work still happens, eagerly
    assert on() == 4 and not on.enabled and on.graph is None


def test_resolve_cuda_graphs_rules():
    cuda = torch.device("cuda", 0)
    assert resolve_cuda_graphs("auto", cuda, env_on_device=True) == (True, "a CUDA device with the torch env backend")
    assert resolve_cuda_graphs(False, cuda, env_on_device=True)[0] is False
    on, why = resolve_cuda_graphs("auto", CPU, env_on_device=True)
    assert not on and "not a CUDA GPU" in why
    assert not resolve_cuda_graphs("auto", cuda, env_on_device=False)[0]
    assert resolve_cuda_graphs("auto", cuda, True, obstacle="gSDE")[1] == "gSDE"
    with pytest.warns(RuntimeWarning, match="a2c: cuda_graphs=True, but the env steps on the host"):
        assert resolve_cuda_graphs(True, cuda, env_on_device=False, who="a2c")[0] is False


def test_cuda_graphs_config_values():
    from rlkit import A2CConfig, REINFORCEConfig

    assert A2CConfig().cuda_graphs == "auto" and A2CConfig(cuda_graphs=False).cuda_graphs is False
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="cuda_graphs"):
            from rlkit.core.config import build_config

            build_config(REINFORCEConfig, cuda_graphs=bad)


def _train(opt_cls, capturable, schedule, **kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50))
    p.grad = torch.zeros(50)
    opt = opt_cls(p, 0.01, capturable=capturable, **kw)
    target = torch.randn(50)
    for k in range(30):
        if schedule:
            set_lr(opt, 0.01 * (1 - k / 30))
        p.grad.copy_(2 * (p.detach() - target) + 0.1 * torch.randn(50))
        opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("opt_cls,kw", [(FlatAdam, {}), (FlatRMSprop, {"alpha": 0.99, "eps": 1e-5})])
@pytest.mark.parametrize("schedule", [False, True])
def test_capturable_flat_optimisers_follow_the_host_ones(opt_cls, kw, schedule):
    """Device-side step counts, bias corrections and learning rates give the same trajectory up to float rounding
    (the operations are reordered, so bitwise equality is not expected)."""
    host, h_opt = _train(opt_cls, False, schedule, **kw)
    dev, d_opt = _train(opt_cls, True, schedule, **kw)
    torch.testing.assert_close(dev, host, rtol=1e-5, atol=1e-6)
    assert isinstance(d_opt.param_groups[0]["lr"], torch.Tensor) == schedule
    assert not isinstance(h_opt.param_groups[0]["lr"], torch.Tensor)
    state = d_opt.state_dict()  # plain floats and ints: loads into either kind
    assert type(state["param_groups"][0]["lr"]) is float
    if opt_cls is FlatAdam:
        assert state["steps"] == 30 == h_opt.state_dict()["steps"]
    h_opt.load_state_dict(state)
    lr_tensor = d_opt.param_groups[0]["lr"]
    d_opt.load_state_dict(h_opt.state_dict())
    assert d_opt.param_groups[0]["lr"] is lr_tensor  # a graph keeps reading the same tensor
    if schedule:
        assert float(lr_tensor) == pytest.approx(h_opt.param_groups[0]["lr"])


def test_torch_optimiser_state_loads_keeping_the_live_implementation_settings():
    p = torch.nn.Parameter(torch.ones(3))
    saved_by = torch.optim.Adam([p], lr=0.1, foreach=True)
    p.grad = torch.ones(3)
    saved_by.step()
    live = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.5, foreach=False)
    set_lr(live, 0.25)
    state = optimizer_state_dict(saved_by)
    load_optimizer_state(live, state)
    group = live.param_groups[0]
    assert group["foreach"] is False and group["lr"] == 0.1 and live.state[group["params"][0]]["step"].device == CPU


def test_a_capturable_torch_optimiser_keeps_its_learning_rate_tensor_through_a_load():
    p = torch.nn.Parameter(torch.ones(3))
    live = torch.optim.Adam([p], lr=0.5, capturable=True)
    set_lr(live, 0.25)  # a schedule's first step makes the rate a tensor (what a CUDA graph of the update reads)
    lr = live.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and float(lr) == 0.25
    other = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.125)
    other.param_groups[0]["params"][0].grad = torch.ones(3)
    other.step()
    load_optimizer_state(live, optimizer_state_dict(other))
    group = live.param_groups[0]
    assert group["lr"] is lr and float(lr) == 0.125 and group["capturable"] is True
    assert type(optimizer_state_dict(live)["param_groups"][0]["lr"]) is float


@pytest.mark.cuda
def test_graphed_env_steps_draw_the_resets_that_eager_steps_draw():
    """The env's counter stream advances its device counter inside the graph: every replay draws fresh reset
    states, exactly the ones eager steps of an identically seeded env draw (CartPole under a fixed action ends
    episodes every few dozen steps, so resets happen throughout), with no generator registered."""
    from rlkit import make_vec_env

    envs = [make_vec_env("CartPole-v1", 512, seed=0, backend="torch", device="cuda") for _ in range(2)]
    actions = torch.randint(0, 2, (512,), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    graphed = GraphedStep(lambda: [envs[0].step(actions) for _ in range(10)], True, "env steps", warmup=1)
    for _ in range(20):  # one eager call, the capture (and its replay), 18 replays
        graphed()
        for _ in range(10):
            envs[1].step(actions)
    assert graphed.graph is not None
    assert torch.equal(envs[0].state, envs[1].state) and torch.equal(envs[0].elapsed, envs[1].elapsed)
    assert int(envs[0].stream.counter) == int(envs[1].stream.counter) == 1 + 20 * 10  # the reset, then 200 steps


@pytest.mark.cuda
def test_to_host_reads_cuda_tensors_exactly():
    x = {"loss": torch.tensor(0.3, device="cuda") * 3, "n": torch.tensor(7, device="cuda"),
         "ring": torch.arange(5, dtype=torch.float64, device="cuda") / 3, "flag": torch.tensor(False, device="cuda")}
    host = to_host(x)
    assert host["loss"] == x["loss"].item() and host["n"] == 7 and host["flag"] is False
    assert np.array_equal(host["ring"], x["ring"].cpu().numpy())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_host_fetch_returns_the_values_of_the_fetch_not_of_work_queued_after_it(device):
    """get() gives the values the tensor had at fetch(): it waits for the work queued before the fetch, not for the
    work queued after it (on CUDA that work is still running when get() returns: DDPG's update behind its act),
    and not in-place changes made after it; its arrays stay the caller's when the next fetch refills the buffer."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    fetch = HostFetch(torch.device(device))
    with pytest.raises(RuntimeError, match="before fetch"):
        fetch.get()
    assert fetch.is_async == (device == "cuda")
    t = torch.arange(6, dtype=torch.float32, device=device).reshape(2, 3)
    if device == "cuda":  # t is ready only after a long queue: get() must wait for it
        big = torch.randn(4096, 4096, device=device)
        for _ in range(10):
            big = torch.tanh(big @ big / 64.0)
        t = t + 0.0 * big[:2, :3]
    fetch.fetch(t)
    if device == "cuda":  # a long queue after the fetch: get() must not wait for it
        for _ in range(40):
            big = torch.tanh(big @ big / 64.0)
    t.add_(100.0)  # queued after the fetch: get() must not see it
    first = fetch.get()
    if device == "cuda":
        assert not torch.cuda.current_stream().query()  # the work queued after the fetch runs on
    assert np.array_equal(first, np.arange(6, dtype=np.float32).reshape(2, 3))
    fetch.fetch(torch.full((2, 3), 7.0, device=device))
    assert np.array_equal(fetch.get(), np.full((2, 3), 7.0, dtype=np.float32))
    assert np.array_equal(first, np.arange(6, dtype=np.float32).reshape(2, 3))  # a copy, not the pinned buffer
