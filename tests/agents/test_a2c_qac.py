"""QAC and A2C (rlkit/agents/qac.py, rlkit/agents/a2c.py): SARSA targets, GAE through the agent, smoke runs on
Discrete and Box, determinism, checkpoints (normaliser statistics and optimiser state included), gSDE, bad configs
and spaces."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlkit
from rlkit import A2C, QAC, A2CConfig
from rlkit.core.optim import FlatAdam, FlatRMSprop
from rlkit.core.config import ConfigError
from rlkit.core.envs import SpaceError
from tests.conftest import CountingEnv

SMALL = dict(n_envs=2, n_steps=8, hidden_sizes=(16,))
AGENTS = [A2C, QAC]


def params(agent):
    return [p.detach().clone() for m in (agent.actor, agent.critic) for p in m.parameters()]


def value_is_first_obs_feature(o):
    return o.reshape(o.shape[0], -1)[:, 0]


# ---- QAC: the SARSA target -----------------------------------------------------------------------------------
class _ValueObsEnv(gym.Env):
    """1-dim Box observations, Discrete(2) actions; only used to build agents whose buffers the tests fill."""
    observation_space = gym.spaces.Box(-1e3, 1e3, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, a):
        return np.zeros(1, np.float32), 0.0, False, False, {}


def _env():
    return gym.wrappers.TimeLimit(_ValueObsEnv(), 50)


def test_qac_target_uses_the_next_action_actually_taken():
    """Q(s, a) = s + 10 a, so the greedy next action (1) and the one taken (0) give different targets.
    Steps: 0 ordinary, 1 truncated (final obs 7, a' ~ pi(final) = 1), 2 ordinary, 3 terminated, 4 last
    (bootstraps from last_obs 9 with a_T = 0)."""
    agent = QAC(_env, seed=0, device="cpu", n_envs=1, n_steps=5, gamma=0.5)
    agent._q = lambda o, a: o[:, 0] + 10.0 * a.float()
    buf = agent.buffer
    buf.obs[:, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    buf.actions[:, 0] = torch.tensor([1, 0, 1, 0, 1])
    buf.rewards[:, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    buf.terminated.zero_(); buf.truncated.zero_(); buf.final_obs.zero_()
    buf.truncated[1, 0] = True
    buf.final_obs[1, 0, 0] = 7.0
    buf.terminated[3, 0] = True
    buf.last_obs[0, 0] = 9.0
    a_T = torch.tensor([0])
    a_final = torch.tensor([[0], [1], [0], [0], [0]])
    y = agent.td_targets(buf, a_T, a_final)[:, 0]
    expected = torch.tensor([
        1 + 0.5 * (2 + 10 * 0),  # next action taken at t=1 is 0 (greedy would be 1 -> 7.0)
        1 + 0.5 * (7 + 10 * 1),  # truncated: TRUE final obs 7 with a' = a_final[1] = 1 (not the reset obs 3)
        1 + 0.5 * (4 + 10 * 0),
        1.0,                     # terminated: no bootstrap
        1 + 0.5 * (9 + 10 * 0),  # rollout end: last_obs with a_T
    ])
    assert torch.allclose(y, expected)
    greedy = 1 + 0.5 * (2 + 10 * 1)
    assert y[0] != greedy


def test_qac_executes_the_bootstrapped_action_first_in_the_next_rollout():
    agent = QAC("CartPole-v1", seed=0, device="cpu", **SMALL)
    agent.collector.collect(agent.buffer, agent._rollout_policy)
    agent.update(agent.buffer)
    a_T = agent._next.clone()
    agent.collector.collect(agent.buffer, agent._rollout_policy)
    assert torch.equal(agent.buffer.actions[0], a_T) and not agent._has_next  # executed once


# ---- A2C: GAE through the agent's own path ----------------------------------------------------------------------
def test_a2c_advantages_match_the_hand_computed_oracle():
    """The GAE oracle: gamma .9, lambda .8, r = 1..5, V = .5..2.5; step 1 truncated with V(final) = 10, step 3
    terminated, V(s_5) = 3 gives A = [8.6, 10.0, 4.74, 2.0, 5.2]. The critic is replaced by V(s) = s[0] so the
    buffer carries the values."""
    agent = A2C(_env, seed=0, device="cpu", n_envs=1, n_steps=5, gamma=0.9, gae_lambda=0.8)
    agent.critic = value_is_first_obs_feature
    buf = agent.buffer
    v = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5])
    buf.obs[:, 0, 0] = v
    buf.rewards[:, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    buf.terminated.zero_(); buf.truncated.zero_(); buf.final_obs.zero_()
    buf.truncated[1, 0] = True
    buf.final_obs[1, 0, 0] = 10.0
    buf.terminated[3, 0] = True
    buf.last_obs[0, 0] = 3.0
    adv, ret = agent.advantages(buf, v.view(5, 1))
    oracle = torch.tensor([8.6, 10.0, 4.74, 2.0, 5.2])
    assert torch.allclose(adv[:, 0], oracle, atol=1e-5)
    assert torch.allclose(ret[:, 0], oracle + v, atol=1e-5)
    # The wrong variant (truncation treated as termination) differs from what the agent computes.
    assert not torch.allclose(adv[:, 0], torch.tensor([2.12, 1.0, 4.74, 2.0, 5.2]), atol=1e-3)
    # lambda = 1: n-step returns minus V, cut at the episode ends.
    agent.config.gae_lambda = 1.0
    adv1, ret1 = agent.advantages(buf, v.view(5, 1))
    g = torch.tensor([1 + 0.9 * (2 + 0.9 * 10), 2 + 0.9 * 10, 3 + 0.9 * 4, 4.0, 5 + 0.9 * 3])
    assert torch.allclose(ret1[:, 0], g, atol=1e-5) and torch.allclose(adv1[:, 0], g - v, atol=1e-5)


# ---- smoke runs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", AGENTS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_smoke_finite_losses_and_actions_in_space(cls, env_id, tmp_path):
    metrics = []
    agent = cls(env_id, seed=0, device="cpu", **SMALL)
    agent.learn(64, progress=False, callback=lambda ag, m: metrics.append(m), run_dir=tmp_path, log_interval=1)
    assert agent.num_timesteps == 64 and len(metrics) == 4
    loss_keys = ["train/loss_pi", "train/loss_v" if cls is A2C else "train/loss_q"]
    assert all(np.isfinite(m[k]) for m in metrics for k in loss_keys)
    space = agent.action_space
    obs = agent.observation_space.sample()
    assert space.contains(agent.act(obs)) and space.contains(agent.act(obs, deterministic=True))
    batch = agent.act(np.stack([obs] * 5))
    assert len(batch) == 5 and all(space.contains(a) for a in batch)
    assert np.isfinite(agent.value(obs)) and agent.value(np.stack([obs] * 3)).shape == (3,)
    stats = agent.evaluate(n_episodes=2)
    assert set(stats) >= {"mean_return", "std_return", "mean_length"}
    assert (tmp_path / "checkpoints" / "final.pt").exists() and (tmp_path / "progress.csv").exists()


@pytest.mark.parametrize("overrides", [dict(shared_trunk=True), dict(optimizer="adam", lr_schedule="linear"),
                                       dict(normalize_obs=True, normalize_advantage=True, activation="relu"),
                                       dict(activation="elu", ent_coef=0.01)])
def test_a2c_variants_run(overrides):
    agent = A2C("CartPole-v1", seed=0, device="cpu", **SMALL, **overrides)
    agent.learn(48, progress=False)
    assert all(torch.isfinite(p).all() for p in params(agent))
    if overrides.get("shared_trunk"):
        assert agent.actor.net.trunk is agent.critic.net.trunk
        assert agent.flat.param.numel() == sum(p.numel() for p in {*agent.actor.parameters(),
                                                                   *agent.critic.parameters()})
    if overrides.get("lr_schedule") == "linear":  # decayed towards 0 over the learn() call
        assert agent.optimizer.param_groups[0]["lr"] < agent.config.learning_rate / 2


# ---- determinism --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", AGENTS)
def test_same_seed_same_losses_and_parameters_different_seed_differs(cls):
    def run(seed):
        losses = []
        a = cls("CartPole-v1", seed=seed, device="cpu", **SMALL)
        a.learn(64, progress=False, log_interval=1, callback=lambda ag, m: losses.append(m["train/loss_pi"]))
        return losses, params(a)

    l1, p1 = run(1)
    l2, p2 = run(1)
    l3, _ = run(2)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert l1 != l3


# ---- checkpoints --------------------------------------------------------------------------------------------------
def test_a2c_checkpoint_round_trip_with_normaliser_and_optimiser_state(tmp_path):
    a = A2C("Pendulum-v1", seed=0, device="cpu", normalize_obs=True, **SMALL)
    a.learn(64, progress=False)
    enc = a.actor.encoder
    assert enc is a.critic.encoder and enc.count.item() > 60 and not torch.equal(enc.mean, torch.zeros_like(enc.mean))
    before = (enc.mean.clone(), enc.var.clone(), enc.count.clone())
    a.evaluate(n_episodes=1)  # evaluation never moves the statistics
    assert all(torch.equal(x, y) for x, y in zip(before, (enc.mean, enc.var, enc.count)))
    a.save(tmp_path / "a.pt")
    b = A2C.load(tmp_path / "a.pt", env="Pendulum-v1", device="cpu")
    assert b.config == a.config and b.num_timesteps == 64 and b.n_updates == a.n_updates
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(b.actor.encoder, name), getattr(enc, name))
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert torch.equal(a.optimizer.square_avg, b.optimizer.square_avg) and a.optimizer.square_avg.abs().sum() > 0
    # Parameters still live in the optimiser's flat tensor after load.
    assert b.optimizer.param is b.flat.param
    assert b.actor.net.head.weight.untyped_storage().data_ptr() == b.flat.param.untyped_storage().data_ptr()
    # Same batch, one more update each: resumed == uninterrupted; a weights-only cold start differs.
    cold = A2C("Pendulum-v1", seed=0, device="cpu", normalize_obs=True, **SMALL)
    cold.actor.load_state_dict(a.actor.state_dict())
    cold.critic.load_state_dict(a.critic.state_dict())
    a.collector.collect(a.buffer, a.actor.sample_actions)
    for other in (b, cold):
        for name in ("obs", "actions", "rewards", "terminated", "truncated", "final_obs", "last_obs"):
            getattr(other.buffer, name).copy_(getattr(a.buffer, name))
    for agent in (a, b, cold):
        agent.update(agent.buffer)
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert not all(torch.equal(x, y) for x, y in zip(params(a), params(cold)))


def test_qac_linear_lr_decay_and_box_critic_sees_clipped_actions():
    agent = QAC("Pendulum-v1", seed=0, device="cpu", lr_schedule="linear", **SMALL)
    agent.learn(64, progress=False)
    assert agent.pi_optimizer.param_groups[0]["lr"] < agent.config.learning_rate / 2
    assert agent.q_optimizer.param_groups[0]["lr"] < agent.config.q_learning_rate / 2
    obs = torch.zeros(2, 3)
    inside = agent._q(obs, torch.tensor([[2.0], [-2.0]]))
    outside = agent._q(obs, torch.tensor([[50.0], [-50.0]]))  # the env executes the clipped action
    assert torch.equal(inside, outside)


def test_qac_checkpoint_round_trip_and_five_cycles(tmp_path):
    a = QAC("CartPole-v1", seed=0, device="cpu", learning_rate=3e-4, **SMALL)
    a.learn(64, progress=False)
    cfg = a.config
    b = a
    for _ in range(5):
        b.save(tmp_path / "c.pt")
        b = rlkit.load_agent(str(tmp_path / "c.pt"), device="cpu")  # no env: the checkpoint's spaces
    assert b.config == cfg and b.pi_optimizer.param_groups[0]["lr"] == 3e-4
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    ids = {id(p) for g in b.q_optimizer.param_groups for p in g["params"]}
    assert ids == {id(p) for p in b.critic.parameters()}
    sa, sb = a.q_optimizer.state_dict()["state"], b.q_optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


# ---- optimisers and truncation -------------------------------------------------------------------------------
def test_flat_rmsprop_equals_torch_rmsprop():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(50))
    p2 = torch.nn.Parameter(p1.detach().clone())
    o1 = torch.optim.RMSprop([p1], lr=7e-4, alpha=0.99, eps=1e-5)
    o2 = FlatRMSprop(p2, 7e-4, 0.99, 1e-5)
    for _ in range(10):
        g = torch.randn(50)
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step(); o2.step()
    assert torch.equal(p1, p2) and torch.equal(o1.state[p1]["square_avg"], o2.square_avg)


def test_flat_rmsprop_tf_like_follows_tensorflow_rmsprop():
    """tf_like: TensorFlow's RMSprop (v starts at 1, eps inside the root), written out here as its formula; the
    first step is about lr * g, not torch's ~10 * lr * sign(g)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    ref, v = p.detach().clone(), torch.ones(50, dtype=torch.float64)
    opt = FlatRMSprop(p, 7e-4, 0.99, 1e-5, tf_like=True)
    for i in range(10):
        g = torch.randn(50, dtype=torch.float64)
        p.grad = g.clone()
        opt.step()
        v = 0.99 * v + 0.01 * g * g
        step = 7e-4 * g / torch.sqrt(v + 1e-5)
        ref -= step
        if i == 0:
            assert torch.allclose(step, 7e-4 * g / (0.99 + 0.01 * g * g + 1e-5) ** 0.5)
            assert (step.abs() < 3 * 7e-4 * g.abs()).all()
    assert torch.allclose(p.detach(), ref, rtol=0, atol=1e-12) and torch.allclose(opt.square_avg, v)
    a = A2C("CartPole-v1", seed=0, device="cpu", n_envs=2, n_steps=4, optimizer="rmsprop_tf")
    assert a.optimizer.tf_like and torch.equal(a.optimizer.square_avg, torch.ones_like(a.optimizer.square_avg))


def test_truncation_bootstraps_from_the_true_final_observation():
    """CountingEnv truncates at t = 3 and resets to [0, episode]; V(s) = s[0] makes the bootstrap visible."""
    agent = A2C(lambda: CountingEnv(horizon=3), seed=0, device="cpu", n_envs=1, n_steps=4, gamma=1.0)
    agent.collector.collect(agent.buffer, agent.actor.sample_actions)
    agent.critic = value_is_first_obs_feature
    buf = agent.buffer
    assert buf.truncated[:, 0].tolist() == [False, False, True, False]
    v = buf.obs[:, 0, 0].clone()  # [0, 1, 2, 0]
    adv, ret = agent.advantages(buf, v.view(4, 1))
    # steps 0..2: 1 + 1 + 1 + V(final obs [3, 0]) = 3 -> returns [6, 5, 4]; step 3 bootstraps from V(s_4) = 1.
    assert ret[:, 0].tolist() == [6.0, 5.0, 4.0, 2.0]


# ---- bad inputs ---------------------------------------------------------------------------------------------------
class _TupleActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, a):
        return np.zeros(2, np.float32), 0.0, False, False, {}


@pytest.mark.parametrize("cls", AGENTS)
def test_unsupported_action_space_names_agent_and_space(cls):
    env = lambda: gym.wrappers.TimeLimit(_TupleActionEnv(), 5)  # noqa: E731
    with pytest.raises(SpaceError, match=rf"{cls.algo} does not support action space Tuple\(.*: Discrete, Box, Multi"):
        cls(env, device="cpu")


@pytest.mark.parametrize("cls", AGENTS)
@pytest.mark.parametrize("field,value", [("learning_rate", -1.0), ("n_steps", 0), ("n_envs", 0), ("gamma", 1.5),
                                         ("max_grad_norm", -0.1), ("hidden_sizes", (0,)), ("activation", "sigmoid")])
def test_bad_config_names_the_field(cls, field, value):
    with pytest.raises(ConfigError, match=field):
        cls("CartPole-v1", device="cpu", **{field: value})


@pytest.mark.parametrize("field,value", [("gae_lambda", -0.1), ("vf_coef", -1.0), ("lr_schedule", "cosine"),
                                         ("optimizer", "sgd"), ("rms_eps", 0.0), ("reward_scale", 0.0)])
def test_a2c_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        A2C("CartPole-v1", device="cpu", **{field: value})
    with pytest.raises(ConfigError, match="unknown A2CConfig key"):
        A2C("CartPole-v1", config=A2CConfig(), lr=1.0)


def test_learn_rejects_bad_arguments():
    agent = A2C("CartPole-v1", seed=0, device="cpu", **SMALL)
    with pytest.raises(ValueError, match="log_interval"):
        agent.learn(16, progress=False, log_interval=0)
    with pytest.raises(ValueError, match="total_steps"):
        agent.learn(-5, progress=False)


# ---- learning (benchmarks, not CI) --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a2c_learns_cartpole_with_the_preset():
    from rlkit.presets import preset_for

    p = preset_for("a2c", "CartPole-v1")
    agent = A2C("CartPole-v1", config=p["config"], seed=0, device="cpu")
    agent.learn(p["steps"], progress=False)
    assert agent.evaluate(n_episodes=10)["mean_return"] >= 475


def test_flat_adam_equals_torch_adam():
    torch.manual_seed(0)
    ref = torch.nn.Parameter(torch.randn(200))
    ps = [torch.nn.Parameter(ref.detach().clone())]
    o_ref = torch.optim.Adam([ref], lr=1e-3, eps=1e-5)
    flat = [FlatAdam(p, 1e-3, eps=1e-5) for p in ps]
    for _ in range(30):
        g = torch.randn(200)
        for p in (ref, *ps):
            p.grad = g.clone()
        o_ref.step()
        flat[0].step()
    assert not torch.equal(ref, ps[0].detach() * 0)
    for p, o in zip(ps, flat):
        assert torch.allclose(ref, p, rtol=0, atol=1e-6)
        assert torch.allclose(o_ref.state[ref]["exp_avg_sq"], o.exp_avg_sq, rtol=1e-5, atol=1e-9)
    restored = FlatAdam(torch.nn.Parameter(ps[0].detach().clone()), 1.0)
    restored.load_state_dict(flat[0].state_dict())
    assert restored.steps == 30 and restored.param_groups[0]["lr"] == 1e-3
    with pytest.raises(ValueError, match="elements"):
        FlatAdam(torch.nn.Parameter(torch.zeros(3)), 1e-3).load_state_dict(flat[0].state_dict())


# ---- gSDE (state-dependent exploration) --------------------------------------------------------------------------
def test_gsde_noise_is_a_function_of_the_state_until_redrawn():
    agent = A2C("Pendulum-v1", seed=0, device="cpu", use_sde=True, log_std_init=-1.0, n_envs=3, n_steps=4)
    actor = agent.actor
    assert actor.log_std.shape == (64, 1)
    obs = torch.randn(3, 3)
    actor.reset_noise(3)
    a1, logp1 = actor.sample(obs)
    a2, _ = actor.sample(obs)
    assert torch.equal(a1, a2)  # same state, same matrices: the same action (no per-step noise)
    actor.reset_noise(3)
    assert not torch.equal(actor.sample(obs)[0], a1)
    # log pi(a|s) is N(mu(s), std(s)) with std(s)^2 = z(s)^2 . exp(log_std)^2 + 1e-6, z the policy features
    h = actor.net.features(actor.encoder(obs))
    mean = actor.net.head(h)
    std = ((h ** 2) @ torch.exp(2 * actor.log_std) + 1e-6).sqrt()
    ref = torch.distributions.Normal(mean, std).log_prob(a1).sum(-1)
    assert torch.allclose(logp1, ref, atol=1e-5)
    assert torch.allclose(actor.mode(obs), mean)


def test_gsde_redraws_every_rollout_and_every_sde_sample_freq_steps():
    agent = A2C("Pendulum-v1", seed=0, device="cpu", use_sde=True, sde_sample_freq=2, n_envs=2, n_steps=5)
    draws = []
    original = agent.actor.reset_noise
    agent.actor.reset_noise = lambda n: (draws.append(n), original(n))
    agent.learn(20, progress=False)  # two rollouts of 5 steps: a draw at each start, then at steps 2 and 4
    assert draws == [2, 2, 2] * 2


def test_gsde_learns_and_round_trips(tmp_path):
    agent = A2C("Pendulum-v1", seed=0, device="cpu", use_sde=True, ortho_init=False, **SMALL)
    agent.learn(64, progress=False)
    assert torch.isfinite(agent.actor.log_std).all() and agent.actor.log_std.grad.abs().sum() > 0
    agent.save(tmp_path / "a.pt")
    b = A2C.load(tmp_path / "a.pt", device="cpu")
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    assert np.array_equal(agent.act(obs, deterministic=True), b.act(obs, deterministic=True))
    assert torch.equal(agent.actor.log_std, b.actor.log_std)


def test_gsde_needs_box_actions_and_a_valid_sample_freq():
    with pytest.raises(SpaceError, match="use_sde"):
        A2C("CartPole-v1", seed=0, device="cpu", use_sde=True, **SMALL)
    with pytest.raises(ConfigError, match="sde_sample_freq"):
        A2CConfig(sde_sample_freq=0)


@pytest.mark.cuda
@pytest.mark.parametrize("env_id,overrides", [("CartPole-v1", {}), ("Pendulum-v1", {"use_sde": True}),
                                              ("Pendulum-v1", {"optimizer": "adam", "normalize_obs": True})])
def test_a2c_on_cuda_matches_the_cpu_update(env_id, overrides):
    """On CUDA A2C collects into a GPU buffer (host staging, one copy per tensor); the gradient of one update on
    the same rollout equals the CPU one (the same code on both devices)."""
    cuda = A2C(env_id, seed=1, device="cuda", max_grad_norm=0.0, n_envs=3, n_steps=6, **overrides)
    cpu = A2C(env_id, seed=1, device="cpu", max_grad_norm=0.0, n_envs=3, n_steps=6, **overrides)
    assert cuda.buffer.obs.is_cuda
    cpu.actor.load_state_dict(cuda.actor.state_dict())
    cpu.critic.load_state_dict(cuda.critic.state_dict())
    cuda.collector.collect(cuda.buffer, cuda.actor.sample_actions)
    for name in ("obs", "actions", "rewards", "terminated", "truncated", "final_obs", "last_obs"):
        getattr(cpu.buffer, name).copy_(getattr(cuda.buffer, name).cpu())
    for agent in (cuda, cpu):
        agent.optimizer.step = lambda: None
        agent.update(agent.buffer)
    assert torch.allclose(cuda.flat.param.grad.cpu(), cpu.flat.param.grad, rtol=1e-4, atol=1e-5)
    del cuda.optimizer.step
    cuda.learn(48, progress=False)
    assert torch.isfinite(cuda.flat.param).all()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_qac_baseline_is_the_policy_average_of_q(env_id):
    agent = QAC(env_id, seed=0, device="cpu", q_baseline=True, **SMALL)
    obs = torch.randn(5, agent.observation_space.shape[0])
    b = agent._q_baseline(obs)
    assert b.shape == (5,) and not b.requires_grad
    if env_id == "CartPole-v1":
        probs = torch.softmax(agent.actor.dist_params(obs)[0], -1)
        q_all = torch.stack([agent._q(obs, torch.full((5,), a)) for a in range(2)], -1)
        assert torch.allclose(b, (probs * q_all).sum(-1), atol=1e-6)
        assert np.allclose(agent.value(obs.numpy()), b.numpy(), atol=1e-6)
    agent.learn(48, progress=False)
    assert all(torch.isfinite(p).all() for p in agent.actor.parameters())
