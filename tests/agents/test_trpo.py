"""TRPO: the step oracle, Fisher-vector products against explicit Hessians, line-search guarantees over random
batches, exact restore on failure, degenerate steps, smoke runs on Discrete and Box, determinism, checkpoints."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlkit
from rlkit import TRPO, TRPOConfig
from rlkit.agents.trpo import fisher_vector_product, line_search, natural_step, surrogate
from rlkit.core.config import ConfigError
from rlkit.core.envs import SpaceError
from rlkit.core.networks import make_actor
from rlkit.core.optim import flat_grad, flat_params

SMALL = dict(n_envs=2, n_steps=32, hidden_sizes=(16,), batch_size=32, n_critic_updates=2)
F64 = torch.float64


def params(agent):
    return [p.detach().clone() for p in list(agent.actor.parameters()) + list(agent.critic.parameters())]


# ---- the step --------------------------------------------------------------------------------------------------
def test_natural_step_oracle():
    """The hand-computed TRPO step: F=[[4,1],[1,3]], g=[1,2], max_kl=.01 -> s=[0.090909, 0.636364], beta=0.121106."""
    f = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=F64)
    g = torch.tensor([1.0, 2.0], dtype=F64)
    step, valid = natural_step(g, lambda v: f @ v, max_kl=0.01, cg_iters=10, residual_tol=1e-20)
    s = torch.tensor([1 / 11, 7 / 11], dtype=F64)
    beta = (step / s)[0].item()
    assert bool(valid) and beta == pytest.approx(0.121106, abs=1e-6)
    assert torch.allclose(step, beta * s, rtol=1e-12)
    assert torch.allclose(s, torch.tensor([0.090909, 0.636364], dtype=F64), atol=1e-6)
    # The quadratic model's KL of the full step is exactly max_kl: 0.5 * step^T F step = 0.01.
    assert (0.5 * step @ f @ step).item() == pytest.approx(0.01, rel=1e-12)


@pytest.mark.parametrize("fvp", [lambda v: -v, lambda v: 0 * v, lambda v: v * float("nan"), lambda v: v * float("inf")])
def test_non_positive_or_non_finite_curvature_gives_no_step_and_no_nan(fvp):
    step, valid = natural_step(torch.tensor([1.0, 2.0]), fvp, max_kl=0.01, cg_iters=5, residual_tol=1e-10)
    assert not bool(valid) and torch.equal(step, torch.zeros(2))


# ---- Fisher-vector products --------------------------------------------------------------------------------------
def _tiny_actor(discrete: bool):
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Discrete(2) if discrete else gym.spaces.Box(-1, 1, (2,), np.float32)
    actor = make_actor(obs_space, act_space, (8,), "tanh").double()
    with torch.no_grad():  # move away from the near-zero output init so the test is not trivially small
        for p in actor.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return actor


def _dist(actor, named: dict, obs):
    """dist params of a 3-8-2 tanh actor from a dict of its parameters (float64, bypassing the float32 encoder)."""
    out = torch.func.functional_call(actor.net, {k[4:]: v for k, v in named.items() if k.startswith("net.")}, (obs,))
    return (out,) if "log_std" not in named else (out, named["log_std"].expand_as(out))


@pytest.mark.parametrize("discrete", [True, False])
def test_fisher_vector_product_equals_explicit_hessian_of_mean_kl(discrete):
    actor = _tiny_actor(discrete)
    obs = torch.randn(32, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    names = [n for n, _ in actor.named_parameters()]
    shapes = [p.shape for _, p in actor.named_parameters()]
    theta0 = flat_params(actor.parameters())
    old = tuple(p.detach() for p in _dist(actor, dict(actor.named_parameters()), obs))

    def unflat(theta):
        out, i = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            out[n] = theta[i:i + k].view(s)
            i += k
        return out

    mean_kl = lambda theta: actor.kl(old, _dist(actor, unflat(theta), obs)).mean()
    hess = torch.autograd.functional.hessian(mean_kl, theta0)
    params = list(actor.parameters())
    grad_kl = flat_grad(actor.kl(old, _dist(actor, dict(actor.named_parameters()), obs)).mean(), params,
                        create_graph=True)
    damping = 0.1
    for seed in range(3):
        v = torch.randn(theta0.numel(), dtype=F64, generator=torch.Generator().manual_seed(10 + seed))
        fv = fisher_vector_product(grad_kl, params, v, damping)
        ref = hess @ v + damping * v
        assert torch.linalg.vector_norm(fv - ref) / torch.linalg.vector_norm(ref) < 1e-10
        assert torch.linalg.vector_norm(fv - damping * v) > 1e-3  # F v != 0 at theta_old
    # A bug peers shipped: an old policy that is NOT detached makes KL(old||new) identically 0, F = 0.
    live = _dist(actor, dict(actor.named_parameters()), obs)
    gk = flat_grad(actor.kl(live, live).mean(), params, create_graph=True)
    v = torch.randn(theta0.numel(), dtype=F64)
    assert torch.allclose(fisher_vector_product(gk, params, v, 0.0), torch.zeros_like(v), atol=1e-12)


# ---- line search -------------------------------------------------------------------------------------------------
def _random_batch(agent, g, n=64):
    obs = torch.randn(n, *agent.observation_space.shape, generator=g)
    with torch.no_grad():
        actions = agent.actor.sample(obs)[0]
    return obs, actions, torch.randn(n, generator=g)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_every_accepted_step_respects_the_trust_region_and_improves(env_id):
    agent = TRPO(env_id, seed=0, device="cpu", n_envs=1, n_steps=64, batch_size=64, hidden_sizes=(16,))
    g = torch.Generator().manual_seed(0)
    accepted = 0
    for i in range(50):
        max_kl = float(10 ** torch.empty(1).uniform_(-4, -1, generator=g))
        agent.config.max_kl = max_kl
        obs, actions, adv = _random_batch(agent, g)
        theta0 = agent.pi_flat.param.detach().clone()
        with torch.no_grad():  # cloned: a Gaussian's log_std is a view of the parameters the step overwrites
            old = tuple(p.clone() for p in agent.actor.dist_params(obs))
            logp_old = agent.actor.log_prob_from_params(old, actions)
        info = agent.policy_step(obs, actions, adv)
        with torch.no_grad():
            new = agent.actor.dist_params(obs)
            kl = agent.actor.kl(old, new).mean()
            surr_new = surrogate(agent.actor.log_prob_from_params(new, actions), logp_old, adv)
        surr_old = adv.mean()  # ratio 1 at theta_old
        if info["train/line_search_accepted"].item() == 1.0:
            accepted += 1
            assert kl.item() <= max_kl, f"batch {i}: KL {kl.item()} > max_kl {max_kl}"
            assert surr_new >= surr_old
            assert kl.item() == pytest.approx(info["train/kl"].item(), rel=1e-6)
            assert not torch.equal(theta0, agent.pi_flat.param)
        else:
            assert torch.equal(theta0, agent.pi_flat.param)
        assert torch.isfinite(agent.pi_flat.param).all()
    assert accepted >= 40


def test_forced_line_search_failure_restores_parameters_bit_for_bit_and_is_logged():
    agent = TRPO("Pendulum-v1", seed=0, device="cpu", **SMALL)
    kl = agent.actor.kl
    agent.actor.kl = lambda old, new: kl(old, new) + 1.0  # same Fisher (a constant shift), every try fails
    g = torch.Generator().manual_seed(0)
    obs, actions, adv = _random_batch(agent, g)
    before = [p.detach().clone() for p in agent.actor.parameters()]
    info = agent.policy_step(obs, actions, adv)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.actor.parameters()))
    assert info["train/line_search_accepted"].item() == 0.0
    assert info["train/line_search_steps"].item() == agent.config.line_search_max_iter
    assert info["train/kl"].item() == 0.0 and info["train/surrogate_improvement"].item() == 0.0
    logged = []
    agent.learn(64, progress=False, callback=lambda ag, m: logged.append(m))
    assert logged and all(m["train/line_search_accepted"] == 0.0 for m in logged)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.actor.parameters()))


def test_line_search_returns_the_first_acceptable_candidate():
    theta, step = torch.zeros(2), torch.tensor([1.0, 0.0])
    # KL = x^2: only candidates with 0.8^k <= 0.5 (k >= 4) fit max_kl 0.25; the surrogate always improves.
    new, info = line_search(theta, step, torch.tensor(True), lambda t: (t[0] ** 2, t[0]), torch.tensor(-1.0),
                            max_kl=0.25, shrink=0.8, max_iter=10)
    assert new[0].item() == pytest.approx(0.8 ** 4) and info["train/line_search_steps"].item() == 5
    new, info = line_search(theta, step, torch.tensor(False), lambda t: (t[0] ** 2, t[0]), torch.tensor(-1.0),
                            max_kl=0.25, shrink=0.8, max_iter=10)
    assert torch.equal(new, theta) and info["train/line_search_accepted"].item() == 0.0


def test_zero_advantages_make_no_update_and_no_nan():
    agent = TRPO("CartPole-v1", seed=0, device="cpu", **SMALL)
    obs, actions, _ = _random_batch(agent, torch.Generator().manual_seed(0))
    before = agent.pi_flat.param.detach().clone()
    info = agent.policy_step(obs, actions, torch.zeros(obs.shape[0]))
    assert torch.equal(before, agent.pi_flat.param)
    assert info["train/line_search_accepted"].item() == 0.0
    assert all(torch.isfinite(v).all() for v in info.values())


def test_fvp_subsample_gives_a_valid_step():
    agent = TRPO("Pendulum-v1", seed=0, device="cpu", fvp_subsample=0.25, **SMALL)
    obs, actions, adv = _random_batch(agent, torch.Generator().manual_seed(0), n=256)
    with torch.no_grad():
        old = agent.actor.dist_params(obs)
    info = agent.policy_step(obs, actions, adv)
    assert info["train/line_search_accepted"].item() == 1.0
    with torch.no_grad():
        assert agent.actor.kl(old, agent.actor.dist_params(obs)).mean().item() <= agent.config.max_kl


# ---- the agent ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_smoke_finite_losses_and_actions_in_space(env_id, tmp_path):
    logged = []
    agent = TRPO(env_id, seed=0, device="cpu", **SMALL)
    agent.learn(256, progress=False, callback=lambda ag, m: logged.append(m), run_dir=tmp_path, log_interval=1)
    assert agent.num_timesteps == 256 and len(logged) == 4
    keys = {"train/kl", "train/line_search_accepted", "train/line_search_steps", "train/surrogate_improvement",
            "train/explained_variance", "train/loss_pi", "train/loss_v", "train/entropy", "time/sps"}
    assert all(keys <= set(m) for m in logged)
    assert all(np.isfinite(m["train/loss_pi"]) and np.isfinite(m["train/loss_v"]) for m in logged)
    assert all(m["train/kl"] <= agent.config.max_kl for m in logged)
    space, obs = agent.action_space, agent.observation_space.sample()
    assert space.contains(agent.act(obs)) and space.contains(agent.act(obs, deterministic=True))
    assert np.isfinite(agent.value(obs))
    assert set(agent.evaluate(n_episodes=2)) >= {"mean_return", "std_return", "mean_length"}
    assert (tmp_path / "checkpoints" / "final.pt").exists() and (tmp_path / "progress.csv").exists()


def test_same_seed_same_losses_and_parameters_different_seed_differs():
    def run(seed):
        logged = []
        a = TRPO("Pendulum-v1", seed=seed, device="cpu", **SMALL)
        a.learn(192, progress=False, callback=lambda ag, m: logged.append((m["train/loss_pi"], m["train/loss_v"])))
        return logged, params(a)

    l1, p1 = run(1)
    l2, p2 = run(1)
    l3, _ = run(2)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert l1 != l3


def test_checkpoint_round_trip_and_resume_equals_uninterrupted(tmp_path):
    a = TRPO("CartPole-v1", seed=0, device="cpu", normalize_obs=True, **SMALL)
    a.learn(128, progress=False)
    a.save(tmp_path / "a.pt")
    b = TRPO.load(tmp_path / "a.pt", env="CartPole-v1", device="cpu")
    assert b.config == a.config and b.num_timesteps == 128
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert torch.equal(a.actor.encoder.mean, b.actor.encoder.mean) and b.actor.encoder.count > 100
    assert b.critic.encoder is b.actor.encoder  # one normaliser for both after load
    assert b.vf_optimizer.param is b.vf_flat.param
    # Same batch, one more update each: resumed == uninterrupted; a fresh critic optimiser differs.
    cold = TRPO("CartPole-v1", seed=0, device="cpu", normalize_obs=True, **SMALL)
    cold.actor.load_state_dict(a.actor.state_dict())
    cold.critic.load_state_dict(a.critic.state_dict())
    a.collector.collect(a.buffer, a.actor.sample_actions)
    for other in (b, cold):
        for name in ("obs", "actions", "rewards", "terminated", "truncated", "final_obs", "last_obs"):
            getattr(other.buffer, name).copy_(getattr(a.buffer, name))
    for agent in (a, b, cold):
        torch.manual_seed(0)
        agent.update(agent.buffer)
    assert all(torch.equal(x, y) for x, y in zip(params(a), params(b)))
    assert not all(torch.equal(x, y) for x, y in zip(params(a), params(cold)))


def test_observation_statistics_are_frozen_in_evaluation():
    a = TRPO("CartPole-v1", seed=0, device="cpu", normalize_obs=True, **SMALL)
    a.learn(64, progress=False)
    before = a.actor.encoder.mean.clone(), a.actor.encoder.count.clone()
    a.evaluate(n_episodes=2)
    a.act(np.zeros(4, np.float32))
    assert torch.equal(before[0], a.actor.encoder.mean) and torch.equal(before[1], a.actor.encoder.count)


def test_five_save_load_cycles_change_no_hyperparameter(tmp_path):
    a = TRPO("CartPole-v1", seed=0, device="cpu", max_kl=0.02, cg_damping=1e-3, **SMALL)
    cfg = a.config
    for _ in range(5):
        a.save(tmp_path / "c.pt")
        a = rlkit.load_agent(str(tmp_path / "c.pt"), device="cpu")
    assert a.config == cfg and a.vf_optimizer.param_groups[0]["lr"] == cfg.learning_rate


def test_unsupported_spaces_and_bad_config():
    with pytest.raises(SpaceError, match=r"trpo does not support action space Tuple\(.*: Discrete, Box, Multi"):
        TRPO(lambda: gym.wrappers.TimeLimit(_TupleActionEnv(), 5), device="cpu")
    for bad, field in [({"max_kl": 0.0}, "max_kl"), ({"line_search_shrink": 1.0}, "line_search_shrink"),
                       ({"fvp_subsample": 1.5}, "fvp_subsample"), ({"cg_max_steps": 0}, "cg_max_steps"),
                       ({"cg_damping": -1.0}, "cg_damping"), ({"line_search_max_iter": 0}, "line_search_max_iter")]:
        with pytest.raises(ConfigError, match=field):
            TRPOConfig(**bad)
    with pytest.raises(ConfigError, match="batch_size"):
        TRPOConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown TRPOConfig key"):
        TRPO("CartPole-v1", target_kl=0.01)


class _TupleActionEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, a):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_presets_exist_for_the_learning_targets():
    from rlkit.presets import preset_for

    for env_id, steps in [("CartPole-v1", 100_000), ("Pendulum-v1", 200_000)]:
        p = preset_for("trpo", env_id)
        assert p is not None and p["steps"] == steps
        TRPOConfig(**p["config"])  # every key valid


@pytest.mark.cuda
def test_cuda_policy_update_makes_no_host_sync():
    """The whole update (GAE, CG, line search, critic fit) under sync debug mode "error": any .item(),
    bool(tensor) or data-dependent shape inside it raises."""
    agent = TRPO("Pendulum-v1", seed=0, device="cuda", fvp_subsample=0.5, **SMALL)
    agent.collector.collect(agent.buffer, agent.actor.sample_actions)
    agent.update(agent.buffer)  # warm-up: lazy CUDA initialisation may sync once
    before = agent.pi_flat.param.detach().clone()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        info = agent.update(agent.buffer)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert agent.pi_flat.param.is_cuda and info["train/kl"].is_cuda
    assert info["train/kl"].item() <= agent.config.max_kl
    if info["train/line_search_accepted"].item() == 0.0:
        assert torch.equal(before, agent.pi_flat.param)


@pytest.mark.slow
@pytest.mark.parametrize("env_id,target", [("CartPole-v1", 475.0), ("Pendulum-v1", -160.0)])
def test_learns_with_the_preset(env_id, target):
    from rlkit.presets import preset_for

    p = preset_for("trpo", env_id)
    agent = TRPO(env_id, config=p["config"], seed=0, device="cpu")
    agent.learn(p["steps"], progress=False)
    assert agent.evaluate(n_episodes=20)["mean_return"] >= target


def test_critic_fit_reduces_the_value_loss():
    a = TRPO("Pendulum-v1", seed=0, device="cpu", **{**SMALL, "learning_rate": 1e-2})
    obs = torch.randn(64, 3)
    ret = 3 * obs.sum(1) + 1
    first = a.fit_critic(obs, ret)
    for _ in range(30):
        last = a.fit_critic(obs, ret)
    assert last < 0.5 * first


def test_gsde_trpo_updates_within_the_trust_region_and_round_trips(tmp_path):
    """gSDE makes the policy's std a function of the state; the KL, Fisher products and line search use the
    per-sample std, so accepted steps stay inside max_kl."""
    a = TRPO("Pendulum-v1", seed=0, device="cpu", use_sde=True, sde_sample_freq=4, **SMALL)
    assert a.actor.log_std.shape == (SMALL["hidden_sizes"][-1], 1)
    draws = []
    original = a.actor.reset_noise
    a.actor.reset_noise = lambda n: (draws.append(n), original(n))
    a.learn(2 * SMALL["n_envs"] * SMALL["n_steps"], progress=False, log_interval=1,
            callback=lambda ag, m: draws.append(m))
    metrics = [d for d in draws if isinstance(d, dict)]
    assert len([d for d in draws if d == SMALL["n_envs"]]) == 2 * (1 + (SMALL["n_steps"] - 1) // 4)
    for m in metrics:
        assert m["train/kl"] <= a.config.max_kl + 1e-6 and np.isfinite(m["train/loss_v"])
    a.save(tmp_path / "a.pt")
    b = TRPO.load(tmp_path / "a.pt", device="cpu")
    obs = np.zeros((3, 3), np.float32)
    assert np.array_equal(a.act(obs, deterministic=True), b.act(obs, deterministic=True))
    with pytest.raises(SpaceError, match="use_sde"):
        TRPO("CartPole-v1", seed=0, device="cpu", use_sde=True, **SMALL)
    with pytest.raises(ConfigError, match="sde_sample_freq"):
        TRPO("Pendulum-v1", seed=0, device="cpu", sde_sample_freq=-3, **SMALL)
