"""On-device training with the torch env backend (docs/performance.md, "On-device training"): between two logs
nothing is read back to the host, the log reads everything in one transfer, NaN/inf found on the device stop
the run with the same errors as before (naming the step, blaming the env or the agent), TRPO's branch-free line
search accepts the step the textbook loop accepts, and (on a GPU) rollouts and updates replayed as CUDA graphs
train like eager ones."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

from rlkit import A2C, QAC, REINFORCE, TRPO
from rlkit.agents import trpo as trpo_module
from rlkit.core import agent_io, rollout
from rlkit.core.agent_io import LearnRun
from rlkit.core.errors import NonFiniteError

SMALL = dict(n_envs=8, n_steps=8, hidden_sizes=(16,))
EXTRA = {TRPO: dict(batch_size=64)}
AGENTS = [REINFORCE, QAC, A2C, TRPO]
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


def _agent(cls, env_id, device="cpu", **kw):
    return cls(env_id, seed=0, device=device, env_backend="torch", **{**SMALL, **EXTRA.get(cls, {}), **kw})


def _inside(frame, names, depth=4):
    """Whether one of the few innermost frames runs a function of these names: to_host (the log's one
    transfer) or A2C._final_pass (called by A2C.advantages and update), which skips the final-observation pass on
    the CPU when nothing was truncated (on a GPU the device type short-circuits that check, so it is no host read
    there)."""
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name in names:
            return True
        frame = frame.f_back
    return False


def _record_host_reads(monkeypatch):
    """Every read of a tensor's value to the host made by rlkit's own code (outside to_host, the log's one
    transfer), and the to_host calls of the log."""
    reads, transfers = [], []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name, **kwargs):
            frame = sys._getframe(1)
            caller = frame.f_code
            if "/rlkit/" in caller.co_filename and not _inside(frame, ("to_host", "advantages", "_final_pass")):
                reads.append(f"{_name} in {caller.co_name} ({caller.co_filename.rsplit('/', 1)[-1]})")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    real = agent_io.to_host
    monkeypatch.setattr(agent_io, "to_host", lambda tree: (transfers.append(1), real(tree))[1])
    monkeypatch.setattr(rollout, "to_host", lambda tree: (reads.append("collector sync"), real(tree))[1])
    return reads, transfers


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.algo)
def test_training_on_torch_envs_reads_the_host_only_when_it_logs(cls, env_id, monkeypatch):
    """The host-read audit that runs on any machine (on a GPU, test_no_host_sync_between_log_points checks the
    same with torch.cuda.set_sync_debug_mode("error")): 12 iterations logged every 4 make exactly 3 transfers."""
    agent = _agent(cls, env_id)
    batch = 64
    seen = []
    reads, transfers = _record_host_reads(monkeypatch)
    agent.learn(12 * batch, progress=False, log_interval=4 * batch, callback=lambda a, m: seen.append(m))
    monkeypatch.undo()
    assert reads == [] and len(transfers) == len(seen) == 3
    assert agent.collector.steps_done == agent.num_timesteps == 12 * batch and agent.n_updates == 12
    for m in seen:  # the log's device read gives the collector's own statistics
        assert all(isinstance(v, float) for v in m.values())
    if agent.collector.episode_returns:
        assert seen[-1]["rollout/episode_return"] == np.mean(agent.collector.episode_returns)


def test_logged_episode_statistics_equal_the_host_recomputation():
    agent = _agent(A2C, "CartPole-v1", n_envs=16, n_steps=32)
    env, step, seen = agent.env, agent.env.step, []

    def recording_step(actions, uniform=None):
        out = step(actions, uniform)
        seen.append((out.reward.double().clone(), (out.terminated | out.truncated).clone()))
        return out

    env.step = recording_step
    logged = []
    agent.learn(16 * 32 * 10, progress=False, log_interval=16 * 32 * 5, callback=lambda a, m: logged.append(m))
    ret, length, finished = np.zeros(16), np.zeros(16, dtype=int), []
    for r, done in seen:
        ret += r.numpy()
        length += 1
        for i in np.flatnonzero(done.numpy()):
            finished.append((ret[i], length[i]))
            ret[i], length[i] = 0, 0
    assert len(finished) > 100
    assert logged[-1]["rollout/episode_return"] == pytest.approx(np.mean([r for r, _ in finished[-100:]]), abs=1e-9)
    assert logged[-1]["rollout/episode_length"] == pytest.approx(np.mean([x for _, x in finished[-100:]]))
    assert agent.collector.episodes_done == len(finished)


def test_a_non_finite_env_output_stops_training_at_the_next_log_naming_step_and_sub_env(tmp_path):
    agent = _agent(A2C, "CartPole-v1", checkpoint_interval=64)
    step, calls = agent.env.step, []

    def bad_step(actions, uniform=None):
        out = step(actions, uniform)
        calls.append(1)
        if len(calls) == 11:  # vector step 11: environment steps 80..87
            out.reward[3] = float("nan")
        return out

    agent.env.step = bad_step
    with pytest.raises(NonFiniteError, match=r"environment returned a non-finite reward or observation \(sub-env 3\) "
                                             r"at environment step 80 "):
        agent.learn(640, progress=False, log_interval=256, run_dir=tmp_path / "run")
    # the periodic checkpoint of step 128 read the device records and stopped the run before writing anything
    assert not list((tmp_path / "run" / "checkpoints").glob("step_128*"))


def test_non_finite_parameters_are_blamed_on_the_agent():
    agent = _agent(A2C, "Pendulum-v1")
    with torch.no_grad():
        agent.actor.net.head.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"policy returned a non-finite action \(sub-env 0\) at environment "
                                             r"step 0 "):
        agent.learn(256, progress=False, log_interval=128)
    discrete = _agent(A2C, "CartPole-v1")
    discrete.learn(64, progress=False)
    with torch.no_grad():
        discrete.critic.net.head.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match=r"a2c: non-finite train/loss\w*.* first in the update at environment "
                                             r"step 128 \(found at the log of step 320\)"):
        discrete.learn(256, progress=False, log_interval=320)


# ---- graph readiness, checked without a GPU ------------------------------------------------------------------------
class _ReplayByRerun:
    """Stands in for a captured CUDA graph on the CPU: replay() reruns the step, so the training goes on, while the
    test checks that nothing outside tensors changed across the iterations that a real replay would skip."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


def _python_state(agent) -> dict:
    """What a graph replay cannot update: every plain attribute value, and the identity of every tensor the agent,
    its collector, env, buffer, networks and optimisers hold (a step must update its tensors in place). Gradients
    are left out: torch's optimisers reallocate them in every eager step, and a graph keeps the captured ones."""
    state: dict = {}

    def visit(name, obj):
        for k, v in vars(obj).items():
            if isinstance(v, torch.Tensor):
                state[f"{name}.{k}"] = id(v)
            elif isinstance(v, (int, float, bool, str, type(None))):
                state[f"{name}.{k}"] = v

    for name in ("agent", "collector", "env", "buffer"):
        visit(name, {"agent": agent, "collector": agent.collector, "env": agent.env, "buffer": agent.buffer}[name])
    for module in (agent.actor, agent.critic):
        for n, t in [*module.named_parameters(), *module.named_buffers()]:
            state[f"{type(module).__name__}.{n}"] = id(t)
    for attr in ("optimizer", "pi_optimizer", "vf_optimizer", "q_optimizer"):
        opt = getattr(agent, attr, None)
        if opt is None:
            continue
        for i, group in enumerate(opt.param_groups):
            for k, v in group.items():
                if k != "params":
                    state[f"{attr}.group{i}.{k}"] = id(v) if isinstance(v, torch.Tensor) else v
        if isinstance(opt, torch.optim.Optimizer):
            for p, st in opt.state.items():
                for k, v in st.items():
                    state[f"{attr}.state.{id(p)}.{k}"] = id(v)
        else:
            visit(attr, opt)
    for k in ("agent.num_timesteps", "agent.n_updates"):  # advanced by learn() itself, outside the steps
        state.pop(k, None)
    return state


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.algo)
def test_graphed_steps_keep_all_their_state_in_tensors(cls, env_id, monkeypatch):
    """The graph-ready configuration (capturable optimisers) on the CPU, with each 'replay' rerunning the step:
    from the capture on, no plain attribute changes and no tensor is replaced between iterations, so replaying a
    captured graph (which runs no Python) trains exactly as these calls do."""
    from rlkit.core.device import GraphedStep

    monkeypatch.setattr(agent_io, "cuda_graphs", lambda *a, **k: (True, "graph-ready on the CPU (test)"))
    agent = _agent(cls, env_id)
    assert agent.cuda_graphs

    def capture(self):
        out = self.fn()
        self.graph, self.out = _ReplayByRerun(self.fn), out
        return out

    monkeypatch.setattr(GraphedStep, "_capture_and_replay", capture)
    snapshots = []
    original = LearnRun.end_of_iteration

    def end_of_iteration(self, agent, metrics):
        snapshots.append(_python_state(agent))
        return original(self, agent, metrics)

    monkeypatch.setattr(LearnRun, "end_of_iteration", end_of_iteration)
    agent.learn(8 * 64, progress=False, log_interval=10**9)
    captured = snapshots[2]  # the third iteration captures; the later ones replay
    for later in snapshots[3:]:
        changed = sorted(k for k in set(captured) | set(later) if captured.get(k) != later.get(k))
        assert not changed, f"changed between replays: {changed}"
    assert all(torch.isfinite(p).all() for p in agent.actor.parameters())


# ---- TRPO: the branch-free line search accepts what the sequential one accepts ------------------------------------
@torch.no_grad()
def sequential_line_search(theta, step, valid, evaluate, surr_old, max_kl, shrink, max_iter):
    """The textbook backtracking loop (Schulman et al. 2015, appendix C), with host decisions and an early exit:
    the first k with KL <= max_kl and an improved surrogate, else theta. Same step coefficients."""
    coefs = shrink ** torch.arange(max_iter, dtype=theta.dtype, device=theta.device)
    if not bool(valid):
        return theta.clone(), None
    for k in range(max_iter):
        candidate = theta + coefs[k] * step
        kl, surr = evaluate(candidate)
        if torch.isfinite(kl) and torch.isfinite(surr) and float(kl) <= max_kl and bool(surr > surr_old):
            return candidate, k
    return theta.clone(), None


def test_branch_free_line_search_equals_the_sequential_one_on_random_problems():
    gen = torch.Generator().manual_seed(0)
    outcomes = set()
    for trial in range(300):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        theta, step = torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 3
        a = torch.randn(n, n, generator=gen)
        curvature, g = a @ a.T + 0.1 * torch.eye(n), torch.randn(n, generator=gen)
        nan_at = int(torch.randint(0, 12, (1,), generator=gen))  # >= 10: no NaN

        def evaluate(t, theta=theta, curvature=curvature, g=g, nan_at=nan_at, calls=[0]):
            d = t - theta
            kl, surr = 0.5 * d @ curvature @ d, g @ d - 0.05 * d @ d
            hit = nan_at < 10 and torch.allclose(d, 0.8 ** nan_at * step)
            return (kl * float("nan") if hit else kl), surr

        valid = torch.tensor(trial % 17 != 0)
        max_kl = float(torch.rand((), generator=gen)) * 2
        ref, k = sequential_line_search(theta, step, valid, evaluate, torch.tensor(0.0), max_kl, 0.8, 10)
        new, info = trpo_module.line_search(theta, step, valid, evaluate, torch.tensor(0.0), max_kl, 0.8, 10)
        assert torch.equal(new, ref)
        assert info["train/line_search_accepted"].item() == float(k is not None)
        assert info["train/line_search_steps"].item() == (10 if k is None else k + 1)
        outcomes.add(k)
    assert None in outcomes and 0 in outcomes and len(outcomes) >= 6  # rejections and many accepted k


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_trpo_updates_take_the_step_the_sequential_line_search_takes(env_id, monkeypatch):
    agent = _agent(TRPO, env_id, n_envs=4, n_steps=64)
    checked = []
    real = trpo_module.line_search

    def both(theta, step, valid, evaluate, surr_old, max_kl, shrink, max_iter):
        ref, k = sequential_line_search(theta, step, valid, evaluate, surr_old, max_kl, shrink, max_iter)
        new, info = real(theta, step, valid, evaluate, surr_old, max_kl, shrink, max_iter)
        assert torch.equal(new, ref) and info["train/line_search_steps"].item() == (max_iter if k is None else k + 1)
        checked.append(k)
        return new, info

    monkeypatch.setattr(trpo_module, "line_search", both)
    agent.learn(4 * 64 * 6, progress=False)
    assert len(checked) == 6 and any(k is not None for k in checked)


# ---- on a GPU ---------------------------------------------------------------------------------------------------
CUDA_SIZES = dict(n_envs=256, n_steps=8, hidden_sizes=(32, 32))
CUDA_EXTRA = {TRPO: dict(batch_size=512)}


def _cuda_agent(cls, env_id, **kw):
    return cls(env_id, seed=0, device="cuda", env_backend="torch", **{**CUDA_SIZES, **CUDA_EXTRA.get(cls, {}), **kw})


@pytest.mark.cuda
@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.algo)
def test_no_host_sync_between_log_points(cls, env_id, graphs, monkeypatch):
    """12 iterations logged every 4: from the first log on, everything outside the logs runs under
    torch.cuda.set_sync_debug_mode("error") (any .item(), bool(tensor), blocking copy or data-dependent shape
    raises), graph replays included (captured at the third iteration)."""
    agent = _cuda_agent(cls, env_id, cuda_graphs=graphs)
    assert agent.cuda_graphs is graphs
    batch = 256 * 8
    logs = []
    original = LearnRun.log

    def log(self, agent, metrics):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return original(self, agent, metrics)
        finally:
            logs.append(agent.num_timesteps)
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(LearnRun, "log", log)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a failed capture (eager fallback) fails the test
            agent.learn(12 * batch, progress=False, log_interval=4 * batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert logs == [4 * batch, 8 * batch, 12 * batch]
    assert all(torch.isfinite(p).all() for p in agent.actor.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.algo)
def test_cuda_graphs_train_as_the_same_code_run_eagerly(cls, env_id):
    """Graph replays run the kernels an eager call launches, with the same random numbers (the generators are
    registered with the graphs), so 8 updates with graphs equal 8 eager updates of the same graph-ready code
    (capturable optimisers, cuda_graphs switched off after construction) up to float rounding."""
    runs = []
    for replay in (True, False):
        agent = _cuda_agent(cls, env_id, cuda_graphs=True)
        agent.cuda_graphs = replay
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            agent.learn(8 * 256 * 8, progress=False, log_interval=4 * 256 * 8)
        runs.append(agent)
    g, e = runs
    assert g.collector.steps_done == e.collector.steps_done == g.num_timesteps
    if env_id == "Pendulum-v1":  # (on CartPole a flipped action would part the env states: the parameters tell)
        torch.testing.assert_close(g.env.state, e.env.state, rtol=1e-5, atol=1e-6)
    for x, y in zip([*g.actor.parameters(), *g.critic.parameters()], [*e.actor.parameters(), *e.critic.parameters()]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("cls", AGENTS, ids=lambda c: c.algo)
def test_cuda_graphs_on_and_off_give_close_parameters(cls):
    """Graphs on against cuda_graphs=False (plain eager, host-side optimiser scalars). Exact equality cannot hold:
    the graph-ready optimisers keep their step counts, bias corrections and learning rates in float32 device
    tensors (and REINFORCE/QAC use torch's fused Adam), so each step rounds differently (~1e-7 relative). On
    Pendulum (continuous actions, episodes cut by the time limit only) such differences stay small; on CartPole a
    rounding difference may flip a sampled action and the runs part ways, so it is not compared here."""
    runs = [_cuda_agent(cls, "Pendulum-v1", cuda_graphs=graphs).learn(6 * 256 * 8, progress=False)
            for graphs in (True, False)]
    for x, y in zip([*runs[0].actor.parameters(), *runs[0].critic.parameters()],
                    [*runs[1].actor.parameters(), *runs[1].critic.parameters()]):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
def test_a_cuda_graph_run_with_a_schedule_checkpoints_and_resumes_on_either_device(tmp_path):
    agent = _cuda_agent(QAC, "Pendulum-v1", lr_schedule="linear")
    agent.learn(8 * 256 * 8, progress=False, run_dir=tmp_path / "run")
    assert isinstance(agent.pi_optimizer.param_groups[0]["lr"], torch.Tensor)  # set_lr made it a device tensor
    path = tmp_path / "run" / "checkpoints" / "final.pt"
    on_cpu = QAC.load(path, env="Pendulum-v1", device="cpu")
    on_cpu.learn(64, progress=False)
    again = QAC.load(path, env="Pendulum-v1", device="cuda", env_backend="torch")
    assert again.cuda_graphs and again.pi_optimizer.param_groups[0]["capturable"]
    again.learn(4 * 256 * 8, progress=False)
    assert all(torch.isfinite(p).all() for p in again.actor.parameters())
