"""DDPG: target networks and Polyak, the Bellman target (terminated vs truncated), the true final observation
in the buffer, exploration inside the Box, OU reset, spaces refused, config errors, checkpoint round trip
with the buffer, determinism; CUDA-graph vs eager on a GPU (`cuda` marker)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlkit import DDPG, SpaceError
from rlkit.core.buffers import ReplayBatch
from rlkit.core.config import ConfigError
from rlkit.core.optim import polyak_update
from rlkit.agents.ddpg import critic_loss
from rlkit.core.rollout import NonFiniteError
from tests.conftest import BadEnv, CountingEnv

SMALL = dict(hidden_sizes=(16, 16), batch_size=8, buffer_size=500, learning_starts=20)


class BoxEnv(CountingEnv):
    """CountingEnv with a 2-d Box action space of given bounds; records every executed action."""

    def __init__(self, low, high, horizon=5):
        super().__init__(horizon=horizon)
        self.action_space = gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action))
        return super().step(action)


def params(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def test_polyak_tau_0_1_and_0005_exact():
    src, tgt = [torch.ones(3), torch.full((2, 2), 1.0)], [torch.zeros(3), torch.zeros(2, 2)]
    polyak_update(tgt, src, 0.0)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in tgt)
    polyak_update(tgt, src, 0.005)
    assert all(torch.equal(t, torch.full_like(t, 0.005)) for t in tgt)
    polyak_update(tgt, [s * 7 for s in src], 1.0)
    assert all(torch.equal(t, torch.full_like(t, 7.0)) for t in tgt)


def test_targets_start_equal_without_grad_outside_optimisers():
    a = DDPG("Pendulum-v1", seed=0, device="cpu", **SMALL)
    for online, target in ((a.actor, a.actor_target), (a.critic, a.critic_target)):
        for p, t in zip(online.parameters(), target.parameters()):
            assert torch.equal(p, t) and p is not t and not t.requires_grad
    in_opt = {id(p) for o in (a.actor_optimizer, a.critic_optimizer) for g in o.param_groups for p in g["params"]}
    assert not in_opt & {id(t) for t in a._targets}
    assert in_opt == {id(p) for p in a._online}


def test_tau_zero_freezes_targets_and_tau_one_copies():
    a = DDPG("Pendulum-v1", seed=0, device="cpu", tau=0.0, **SMALL)
    before = params(a.critic_target)
    a.learn(40, progress=False)
    assert a.n_updates > 0 and all(torch.equal(x, y) for x, y in zip(before, params(a.critic_target)))
    b = DDPG("Pendulum-v1", seed=0, device="cpu", tau=1.0, **SMALL)
    b.learn(40, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(params(b.actor), params(b.actor_target)))


def test_critic_loss_no_actor_grad_and_actor_step_leaves_critic():
    a = DDPG("Pendulum-v1", seed=1, device="cpu", **SMALL)
    a.learn(25, progress=False)
    a.actor_optimizer.zero_grad(set_to_none=True)
    loss, _ = critic_loss(a.critic, a.critic_target, a.actor_target, a.buffer.sample(8), a.config.gamma)
    loss.backward()
    assert all(p.grad is None for p in a.actor.parameters())
    assert any(p.grad is not None for p in a.critic.parameters())
    after_critic_step = {}
    step = a.critic_optimizer.step

    def recording_step(*args, **kw):
        out = step(*args, **kw)
        after_critic_step["p"] = params(a.critic)
        return out
    a.critic_optimizer.step = recording_step
    actor_before = params(a.actor)
    a._gradient_step(actor_step=True)
    assert all(torch.equal(x, y) for x, y in zip(after_critic_step["p"], params(a.critic)))
    assert any(not torch.equal(x, y) for x, y in zip(actor_before, params(a.actor)))


class ConstQ(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.q = nn.Parameter(torch.as_tensor(values, dtype=torch.float32))

    def forward(self, obs, actions):
        return self.q


def test_bellman_target_terminated_is_r_truncated_and_ordinary_bootstrap():
    a = DDPG("Pendulum-v1", seed=0, device="cpu", **SMALL)
    b = ReplayBatch(obs=torch.zeros(3, 3), actions=torch.zeros(3, 1), rewards=torch.tensor([1.0, 2.0, 3.0]),
                    next_obs=torch.zeros(3, 3), terminated=torch.tensor([1.0, 0.0, 0.0]))
    q = ConstQ([0.0, 0.0, 0.0])
    loss, _ = critic_loss(q, ConstQ([10.0, 20.0, 30.0]), a.actor_target, b, gamma=0.5)
    loss.backward()
    y = -q.q.grad * 3 / 2  # d/dq mean (q - y)^2 at q = 0 is -2y/B
    # row 0 terminated: y = r; row 1 (truncated: terminated is 0) and row 2 (ordinary) bootstrap
    assert torch.allclose(y, torch.tensor([1.0, 2.0 + 0.5 * 20.0, 3.0 + 0.5 * 30.0]))


@pytest.mark.parametrize("terminate", [False, True])
def test_buffer_holds_true_final_obs_and_terminated_flag(terminate):
    env = lambda: CountingEnv(horizon=3, terminate=terminate, box_actions=True)  # noqa: E731
    a = DDPG(env, seed=0, device="cpu", n_envs=2, **SMALL)
    a.learn(12, progress=False)  # 6 vector steps: two episodes per env
    rows = a.buffer.gather(torch.arange(len(a.buffer)))
    ends = rows.obs[:, 0] == 2
    assert ends.sum() == 4
    # the stored next_obs at an episode end is [3, episode], never the reset obs [0, episode + 1]
    assert torch.equal(rows.next_obs[ends], torch.stack([rows.obs[ends, 0] + 1, rows.obs[ends, 1]], 1))
    assert torch.equal(rows.terminated, (ends & terminate).float())
    assert len(a.collector.episode_returns) == 4 and set(a.collector.episode_lengths) == {3}


@pytest.mark.parametrize("noise", ["normal", "ornstein_uhlenbeck"])
def test_executed_actions_inside_box_with_large_noise(noise):
    envs = []

    def make():
        envs.append(BoxEnv([0.0, -2.0], [1.0, 5.0]))
        return envs[-1]
    a = DDPG(make, seed=0, device="cpu", noise_type=noise, noise_std=50.0, ou_dt=1.0, n_envs=2, **SMALL)
    a.learn(60, progress=False)
    acts = np.array([x for e in envs for x in e.actions])
    assert len(acts) >= 60
    assert (acts >= [0.0, -2.0]).all() and (acts <= [1.0, 5.0]).all()
    assert (acts == [0.0, -2.0]).any() and (acts == [1.0, 5.0]).any()  # the noise did push to the bounds
    single = a.act(np.zeros(2, np.float32))
    assert single.shape == (2,) and (single >= [0, -2]).all() and (single <= [1, 5]).all()


def test_ou_state_resets_at_episode_end():
    a = DDPG(lambda: CountingEnv(horizon=3, box_actions=True), seed=0, device="cpu", noise_type="ornstein_uhlenbeck",
             **{**SMALL, "learning_starts": 0})
    a.learn(2, progress=False)
    assert (a._ou != 0).all()
    a.learn(1, progress=False)  # the episode ends at its third step
    assert (a._ou == 0).all()
    a.learn(1, progress=False)
    assert (a._ou != 0).all()


def test_warmup_actions_are_seeded_and_uniform():
    # torch's global generator draws them (saved in checkpoints): build and run one agent after the other
    a = DDPG("Pendulum-v1", seed=3, device="cpu", **{**SMALL, "learning_starts": 400}).learn(300, progress=False)
    b = DDPG("Pendulum-v1", seed=3, device="cpu", **{**SMALL, "learning_starts": 400}).learn(300, progress=False)
    acts = a.buffer.gather(torch.arange(300)).actions
    assert torch.equal(acts, b.buffer.gather(torch.arange(300)).actions) and a.n_updates == 0
    assert acts.min() < -0.9 and acts.max() > 0.9 and abs(float(acts.mean())) < 0.15


def test_discrete_and_unbounded_spaces_refused():
    with pytest.raises(SpaceError, match=r"ddpg.*Discrete.*supported action spaces: Box"):
        DDPG("CartPole-v1", device="cpu")

    class Unbounded(CountingEnv):
        def __init__(self):
            super().__init__(box_actions=True)
            self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
    with pytest.raises(SpaceError, match="ddpg needs a bounded Box.*infinite bound"):
        DDPG(Unbounded, device="cpu")


def test_float64_spaces_work_and_nan_observation_stops_with_the_step():
    class F64(CountingEnv):
        def __init__(self):
            super().__init__(horizon=4)
            self.observation_space = gym.spaces.Box(-1e6, 1e6, shape=(2,), dtype=np.float64)
            self.action_space = gym.spaces.Box(-1.0, 3.0, shape=(1,), dtype=np.float64)

        def step(self, action):
            assert action.dtype == np.float64 and -1.0 <= action[0] <= 3.0
            obs, *rest = super().step(action)
            return obs.astype(np.float64), *rest
    a = DDPG(F64, seed=0, device="cpu", **SMALL).learn(30, progress=False)
    assert a.n_updates == 10 and a.act(np.zeros(2)).dtype == np.float64
    with pytest.raises(NonFiniteError, match="non-finite observation .* at environment step 1"):
        DDPG(lambda: BadEnv(box_actions=True), seed=0, device="cpu", **SMALL).learn(10, progress=False)


def test_config_errors_and_buffer_that_cannot_fit():
    with pytest.raises(ConfigError, match="noise_type"):
        DDPG("Pendulum-v1", device="cpu", noise_type="pink")
    with pytest.raises(ConfigError, match="unknown DDPGConfig key.*buffer_sz"):
        DDPG("Pendulum-v1", device="cpu", buffer_sz=10)
    for field, bad in (("tau", 1.5), ("policy_delay", 0), ("batch_size", 0), ("noise_std", -1.0)):
        with pytest.raises(ConfigError, match=field):
            DDPG("Pendulum-v1", device="cpu", **{field: bad})
    with pytest.raises(MemoryError, match=r"ReplayBuffer of capacity 10,000,000,000,000 needs .* GiB"):
        DDPG("Pendulum-v1", device="cpu", buffer_size=10**13)


def test_policy_delay_updates_actor_every_kth_step():
    a = DDPG("Pendulum-v1", seed=0, device="cpu", policy_delay=3, **SMALL)
    a.learn(21, progress=False)  # exactly one critic update
    before = params(a.actor)
    a.learn(1, progress=False)  # second critic update: actor untouched
    assert all(torch.equal(x, y) for x, y in zip(before, params(a.actor)))
    a.learn(1, progress=False)  # third: actor and targets move
    assert any(not torch.equal(x, y) for x, y in zip(before, params(a.actor)))


@pytest.mark.parametrize("overlap", [False, True])
def test_update_order_store_then_update_or_overlapped(overlap):
    a = DDPG("Pendulum-v1", seed=0, device="cpu", overlap_env_step=overlap, **SMALL)
    seen = []
    sample = a.buffer.sample
    a.buffer.sample = lambda n: (seen.append(len(a.buffer)), sample(n))[1]
    a.learn(23, progress=False)
    # updates after steps 21, 22, 23; overlapped, each is launched before its step's transition is stored
    assert seen == ([20, 21, 22] if overlap else [21, 22, 23]) and a.n_updates == 3


def update_log(agent: DDPG) -> list[int]:
    """Record num_timesteps at every update() call of the agent (wrapping it)."""
    calls: list[int] = []
    real = agent.update
    agent.update = lambda: (calls.append(agent.num_timesteps), real())[1]
    return calls


@pytest.mark.parametrize("train_freq, gradient_steps, n_envs, expected", [
    (1, -1, 1, [10] * 5 + [15] * 5 + [20] * 5),  # each episode's 5 steps, after it ends; none for steps 1-5
    (2, -1, 1, [10] * 10 + [20] * 10),             # every second episode end: the 10 steps since the last check
    (1, 3, 1, [10] * 3 + [15] * 3 + [20] * 3),     # a fixed number per episode end
    (3, -1, 2, [20] * 20 + [40] * 20),             # 2 envs end 2 episodes at once: 4 >= 3 at t = 20 and 40
])
def test_episode_updates_come_after_the_episodes_end(train_freq, gradient_steps, n_envs, expected):
    """train_freq_unit="episode" (rl-zoo3's DDPG setting on Pendulum, LunarLanderContinuous and BipedalWalker): the
    updates of an interval follow the env step that ends its train_freq-th episode (episodes of all envs count),
    gradient_steps=-1 takes as many as the environment steps since the last check, and an interval that ends
    before learning_starts is trained on by nobody later (as Stable-Baselines3)."""
    a = DDPG(lambda: CountingEnv(horizon=5, box_actions=True), seed=0, device="cpu", n_envs=n_envs,
             train_freq_unit="episode", train_freq=train_freq, gradient_steps=gradient_steps,
             **{**SMALL, "learning_starts": 7})
    calls = update_log(a)
    a.learn(20 * n_envs, progress=False)
    assert calls == expected
    assert a.n_updates == len(expected)


def test_episode_updates_resume_where_the_interval_stood(tmp_path):
    """A checkpoint taken inside an episode keeps the steps and episodes counted since the last update, so the run
    resumed from it takes the updates the uninterrupted run takes."""
    kw = dict(seed=1, device="cpu", train_freq_unit="episode", train_freq=2, gradient_steps=-1,
              save_replay_buffer=True, **{**SMALL, "learning_starts": 7})
    env = lambda: CountingEnv(horizon=5, box_actions=True)  # noqa: E731
    whole = DDPG(env, **kw)
    whole_calls = update_log(whole)
    whole.learn(30, progress=False)
    part = DDPG(env, **kw)
    part.learn(13, progress=False, run_dir=tmp_path)  # 2 episodes, 3 steps of the third: 3 steps, 0 episodes counted
    ckpt, = (tmp_path / "checkpoints").glob("*.pt")  # with the envs' state beside it
    resumed = DDPG.load(ckpt, env=env, device="cpu", restore_env=True)  # the same episodes go on
    assert resumed._since_update == {"steps": 3, "episodes": 0}
    calls = update_log(resumed)
    resumed.learn(17, progress=False)
    assert calls == [t for t in whole_calls if t > 13] == [20] * 10 + [30] * 10
    assert all(torch.equal(x, y) for x, y in zip(params(whole.critic), params(resumed.critic)))


def test_episode_updates_refused_in_a_seed_batch_and_bad_settings_named():
    from rlkit import SeedBatch
    with pytest.raises(ValueError, match="train_freq_unit='episode' cannot train seeds in lockstep"):
        SeedBatch(DDPG, "Pendulum-v1", [0, 1], device="cpu", train_freq_unit="episode", **SMALL)  # before seed 1
    for field, bad in (("train_freq_unit", "epsiode"), ("gradient_steps", 0), ("gradient_steps", -2)):
        with pytest.raises(ConfigError, match=field):
            DDPG("Pendulum-v1", device="cpu", **{field: bad})


def test_gradient_steps_minus_one_by_steps_takes_the_interval():
    """train_freq_unit "step" with gradient_steps=-1: train_freq x n_envs updates per interval (SB3's -1)."""
    a = DDPG("Pendulum-v1", seed=0, device="cpu", n_envs=2, train_freq=3, gradient_steps=-1, **SMALL)
    calls = update_log(a)
    a.learn(36, progress=False)  # vector steps 3, 6, 9, ..., 18; updates launched before steps 12 (t=22), 15, 18
    assert calls == [22] * 6 + [28] * 6 + [34] * 6
    assert a._since_update == {"steps": 0, "episodes": 0}  # counted by episode updates only: a resume into them
    # (--override train_freq_unit=episode) starts a fresh interval


def losses_of(seed: int, **kw) -> list[float]:
    out: list[float] = []
    a = DDPG("Pendulum-v1", seed=seed, device="cpu", **{**SMALL, **kw})
    a.learn(120, progress=False, log_interval=10,
            callback=lambda ag, m: out.append((m.get("train/loss_q"), m.get("train/loss_pi"))))
    return out


def test_same_seed_same_losses_different_seed_differs():
    a, b, c = losses_of(5), losses_of(5), losses_of(6)
    assert len(a) == 12 and a[-1][0] is not None and a == b and a != c


def test_checkpoint_round_trip_with_replay_buffer(tmp_path):
    a = DDPG("Pendulum-v1", seed=2, device="cpu", save_replay_buffer=True, noise_type="ornstein_uhlenbeck", **SMALL)
    a.learn(60, progress=False)
    a.save(tmp_path / "a.pt")
    b = DDPG.load(tmp_path / "a.pt", env="Pendulum-v1", device="cpu")
    assert torch.equal(a.buffer.data, b.buffer.data) and (b.buffer.pos, len(b.buffer)) == (60, 60)
    assert torch.equal(a._ou, b._ou) and b.n_updates == a.n_updates and b.num_timesteps == 60
    for name in ("actor", "critic", "actor_target", "critic_target"):
        assert all(torch.equal(x, y) for x, y in zip(params(getattr(a, name)), params(getattr(b, name))))
    b.learn(40, progress=False)
    # resuming twice: the same run
    c = DDPG.load(tmp_path / "a.pt", env="Pendulum-v1", device="cpu").learn(40, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(params(b.critic), params(c.critic)))
    assert b.actor_optimizer.param_groups[0]["params"][0] is next(b.actor.parameters())
    a2 = DDPG("Pendulum-v1", seed=2, device="cpu", **SMALL)
    a2.learn(30, progress=False)
    a2.save(tmp_path / "nobuf.pt")
    nobuf = DDPG.load(tmp_path / "nobuf.pt", env="Pendulum-v1", device="cpu")
    assert len(nobuf.buffer) == 0 and "replay buffer was not saved" in nobuf.resume_note  # said where it resumes
    assert "replay buffer" not in DDPG.load(tmp_path / "a.pt", env="Pendulum-v1", device="cpu").resume_note


def test_value_returns_q_and_evaluate_is_reproducible():
    a = DDPG("Pendulum-v1", seed=0, device="cpu", **SMALL)
    obs = np.zeros(3, np.float32)
    q = a.value(obs, np.array([1.0]))
    unit = torch.tensor([[0.5]])  # env action 1.0 on [-2, 2]
    assert np.isclose(q, a.critic(torch.zeros(1, 3), unit).item())
    assert a.value(np.zeros((4, 3)), np.zeros((4, 1))).shape == (4,)
    assert a.evaluate(2) == a.evaluate(2)


@pytest.mark.cuda
def test_cuda_graph_equals_eager_after_100_updates():
    agents = []
    for graph in (True, False):
        a = DDPG("Pendulum-v1", seed=0, device="cuda", use_cuda_graph=graph, learning_starts=1000, buffer_size=5000)
        a.learn(1000, progress=False)  # random actions only: identical buffers
        torch.cuda.manual_seed(123)
        for _ in range(100):
            a.update()
        torch.cuda.synchronize()
        agents.append(a)
    g, e = agents
    assert torch.equal(g.buffer.data, e.buffer.data) and g._graphs and not e._graphs
    for name in ("actor", "critic", "actor_target", "critic_target"):
        for x, y in zip(params(getattr(g, name)), params(getattr(e, name))):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("noise", ["normal", "ornstein_uhlenbeck"])
def test_cuda_graph_equals_eager_while_the_buffer_fills(noise):
    runs = []
    for graph in (True, False):
        a = DDPG("Pendulum-v1", seed=1, device="cuda", use_cuda_graph=graph, learning_starts=100, buffer_size=5000,
                 noise_type=noise, overlap_env_step=noise == "normal")
        a.learn(300, progress=False)  # 200 replays while the buffer grows from 100 to 300
        runs.append(a)
    assert runs[0]._act_graph is not None and runs[0]._graphs
    torch.testing.assert_close(runs[0].buffer.data, runs[1].buffer.data, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(runs[0]._ou, runs[1]._ou)
    for x, y in zip(params(runs[0].critic), params(runs[1].critic)):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4)


@pytest.mark.cuda
def test_same_seed_twice_on_cuda_equal():
    runs = []
    for _ in range(2):
        a = DDPG("Pendulum-v1", seed=4, device="cuda", learning_starts=100, buffer_size=5000)
        a.learn(110, progress=False)
        runs.append(a)
    for x, y in zip(params(runs[0].critic), params(runs[1].critic)):
        assert torch.equal(x, y)


@pytest.mark.cuda
def test_a_cpu_checkpoint_resumes_on_cuda_with_its_cuda_graph_adam(tmp_path):
    """The optimisers keep this agent's settings (capturable, fused), not the CPU run's, so the graphed update
    captures, and their step counts move to the GPU."""
    a = DDPG("Pendulum-v1", seed=1, device="cpu", learning_starts=50, buffer_size=5000, save_replay_buffer=True)
    a.learn(80, progress=False)
    a.save(tmp_path / "cpu.pt")
    b = DDPG.load(tmp_path / "cpu.pt", env="Pendulum-v1", device="cuda")
    group = b.critic_optimizer.param_groups[0]
    assert group["capturable"] and group["fused"] and b._use_graph
    b.learn(40, progress=False)
    assert b._graphs and b.num_timesteps == 120
    assert all(s["step"].device.type == "cuda" and float(s["step"]) == b.n_updates
               for s in b.critic_optimizer.state.values())


@pytest.mark.slow
def test_pendulum_preset_learns():
    """One seed of the shipped preset (the 5-seed benchmark is experiments/bench_learning.py)."""
    from rlkit.presets import preset_for

    preset = preset_for("ddpg", "Pendulum-v1")
    a = DDPG("Pendulum-v1", config=preset["config"], seed=0).learn(preset["steps"], progress=False)
    assert a.evaluate(10)["mean_return"] >= -200
