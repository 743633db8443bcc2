"""REINFORCE, QAC, A2C and TRPO on MultiDiscrete and MultiBinary actions: each learns a tiny matching task clearly
above chance, acts with members of the space, round-trips through a checkpoint (also without its env); QAC's
factorised critic gives the exact E_pi[Q]; TRPO's trust region and Fisher-vector products hold for the product
heads; DDPG refuses them with one line."""
from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlkit
from rlkit import A2C, DDPG, QAC, REINFORCE, TRPO
from rlkit.agents.trpo import fisher_vector_product, surrogate
from rlkit.core import distributions as D
from rlkit.core.envs import SpaceError
from rlkit.core.networks import LogitActor, MultiCategoricalLogits, make_actor
from rlkit.core.optim import flat_grad, flat_params
from tests.multi_action_envs import MatchMultiBinaryEnv, MatchMultiDiscreteEnv

HORIZON = 8
ENVS = {
    "MultiDiscrete": lambda: MatchMultiDiscreteEnv((3, 2, 4), start=(1, 0, -2), horizon=HORIZON),  # ragged nvec
    "MultiBinary": lambda: MatchMultiBinaryEnv(4, horizon=HORIZON),
}
# Settings for a contextual bandit (gamma 0: every step's reward is its own), small networks, large steps.
LEARN = {
    REINFORCE: (4096, dict(n_envs=8, n_steps=16, learning_rate=1e-2, gamma=0.0)),
    QAC: (6144, dict(n_envs=8, n_steps=16, learning_rate=1e-2, q_learning_rate=1e-2, gamma=0.0)),
    A2C: (4096, dict(n_envs=8, n_steps=16, learning_rate=1e-2, gamma=0.0, optimizer="adam")),
    TRPO: (2048, dict(n_envs=8, n_steps=32, batch_size=64, gamma=0.0, max_kl=0.05)),
}
TINY = {REINFORCE: dict(n_envs=2, n_steps=8), QAC: dict(n_envs=2, n_steps=8), A2C: dict(n_envs=2, n_steps=8),
        TRPO: dict(n_envs=2, n_steps=16, batch_size=16)}


@pytest.mark.parametrize("space", list(ENVS))
@pytest.mark.parametrize("cls", list(LEARN))
def test_learns_clearly_above_chance(cls, space):
    """The mean training return of the last 100 episodes closes at least 40% of the gap from the uniform random
    policy to the best one (seeds 0-4 closed 60-89% of it with these budgets)."""
    steps, kw = LEARN[cls]
    agent = cls(ENVS[space], seed=0, device="cpu", hidden_sizes=(32,), **kw)
    agent.learn(steps, progress=False)
    env = ENVS[space]()
    chance, best = HORIZON * env.chance(), HORIZON * float(np.prod(env.action_space.shape))
    ret = agent.collector.episode_stats()["rollout/episode_return"]
    assert ret > chance + 0.4 * (best - chance), f"{cls.algo} on {space}: return {ret:.2f}, chance {chance:.2f}"


@pytest.mark.parametrize("make", [ENVS["MultiDiscrete"], ENVS["MultiBinary"], lambda: MatchMultiBinaryEnv((2, 3)),
                                  lambda: MatchMultiDiscreteEnv([[2, 3], [4, 2]], start=[[0, 1], [-1, 0]])],
                         ids=["MultiDiscrete", "MultiBinary", "MultiBinary2d", "MultiDiscrete2d"])
@pytest.mark.parametrize("cls", list(TINY))
def test_actions_are_members_and_checkpoints_act_identically(cls, make, tmp_path):
    agent = cls(make, seed=0, device="cpu", hidden_sizes=(16,), **TINY[cls])
    agent.learn(32, progress=False)
    space = agent.action_space
    env = make()
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    for det in (False, True):
        batch = agent.act(obs, deterministic=det)
        assert batch.shape == (5, *space.shape) and batch.dtype == space.dtype
        assert all(space.contains(a) for a in batch) and space.contains(agent.act(obs[0], deterministic=det))
    agent.save(tmp_path / "a.pt")
    loaded = rlkit.load_agent(str(tmp_path / "a.pt"), device="cpu")  # no env: the spaces come from the file
    assert loaded.env is None and loaded.action_space == space
    assert np.array_equal(loaded.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    torch.manual_seed(1)
    sampled = agent.act(obs)
    torch.manual_seed(1)
    assert np.array_equal(loaded.act(obs), sampled)
    assert np.allclose(loaded.value(obs), agent.value(obs))
    again = cls.load(tmp_path / "a.pt", env=make, device="cpu")
    again.learn(16, progress=False)
    assert again.evaluate(2)["mean_length"] == float(env.horizon)


@pytest.mark.parametrize("space", list(ENVS))
def test_ddpg_refuses_with_one_line(space):
    with pytest.raises(SpaceError, match=rf"^ddpg does not support action space {space}\(.*\) \({space}\); "
                                         r"supported action spaces: Box$"):
        DDPG(ENVS[space], device="cpu")


@pytest.mark.parametrize("cls", [A2C, TRPO])
def test_gsde_is_refused_for_non_box_actions(cls):
    with pytest.raises(SpaceError, match="use_sde needs a Box action space"):
        cls(ENVS["MultiBinary"], device="cpu", use_sde=True)


def test_a2c_shared_trunk_on_multidiscrete():
    agent = A2C(ENVS["MultiDiscrete"], seed=0, device="cpu", shared_trunk=True, hidden_sizes=(16, 16), **TINY[A2C])
    agent.learn(32, progress=False)
    assert isinstance(agent.actor, LogitActor) and isinstance(agent.actor.dist, MultiCategoricalLogits)
    assert agent.actor.net.head.out_features == 9


# ---- QAC: Q(s, a) = sum_d Q_d(s, a_d) and the exact E_pi[Q] -------------------------------------------------------
@pytest.mark.parametrize("space", list(ENVS))
def test_qac_baseline_is_the_exact_expectation_over_every_joint_action(space):
    agent = QAC(ENVS[space], seed=0, device="cpu", hidden_sizes=(16,), **TINY[QAC])
    with torch.no_grad():
        for p in agent.critic.parameters():  # away from the near-zero init, so the sums are not trivially small
            p.add_(0.3 * torch.randn_like(p))
    obs = torch.randn(6, *agent.observation_space.shape)
    nvec = [int(n) for n in agent.action_space.nvec] if space == "MultiDiscrete" else [2] * 4
    logits = agent.actor.dist_params(obs)[0]
    per_dim = [torch.softmax(logits[:, d, :n], -1) for d, n in enumerate(nvec)] if space == "MultiDiscrete" \
        else [torch.stack([1 - torch.sigmoid(logits[:, d]), torch.sigmoid(logits[:, d])], -1) for d in range(4)]
    exact = torch.zeros(6)
    for joint in itertools.product(*[range(n) for n in nvec]):  # every joint action, weighted by its probability
        a = torch.tensor(joint).expand(6, len(nvec))
        prob = torch.stack([per_dim[d][:, k] for d, k in enumerate(joint)], -1).prod(-1)
        with torch.no_grad():
            exact += prob * agent._q(obs, a)
    assert torch.allclose(agent._q_baseline(obs), exact, atol=1e-5)
    assert np.allclose(agent.value(obs.numpy()), exact.numpy(), atol=1e-5)
    q_all = agent.critic.all_actions(obs)  # Q(s, a) is the sum of the chosen output of every dimension
    a = agent.actor.sample_actions(obs)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    want = sum(q_all[torch.arange(6), int(offsets[d]) + a[:, d]] for d in range(len(nvec)))
    assert torch.allclose(agent.critic(obs, a), want, atol=1e-6)


# ---- TRPO on the product heads -------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", list(ENVS))
def test_trpo_accepted_steps_respect_the_trust_region(space):
    agent = TRPO(ENVS[space], seed=0, device="cpu", hidden_sizes=(16,), **TINY[TRPO])
    g = torch.Generator().manual_seed(0)
    accepted = 0
    for i in range(15):
        max_kl = float(10 ** torch.empty(1).uniform_(-3, -1, generator=g))
        agent.config.max_kl = max_kl
        obs = torch.randn(64, *agent.observation_space.shape, generator=g)
        adv = torch.randn(64, generator=g)
        with torch.no_grad():
            actions = agent.actor.sample_actions(obs)
            old = agent.actor.dist_params(obs)
            logp_old = agent.actor.log_prob_from_params(old, actions)
        theta0 = agent.pi_flat.param.detach().clone()
        info = agent.policy_step(obs, actions, adv)
        with torch.no_grad():
            new = agent.actor.dist_params(obs)
            kl = agent.actor.kl(old, new).mean()
            surr_new = surrogate(agent.actor.log_prob_from_params(new, actions), logp_old, adv)
        if info["train/line_search_accepted"].item() == 1.0:
            accepted += 1
            assert kl.item() <= max_kl and surr_new >= adv.mean() and kl.item() > 0
        else:
            assert torch.equal(theta0, agent.pi_flat.param)
    assert accepted >= 12


@pytest.mark.parametrize("space", [gym.spaces.MultiDiscrete([3, 2, 4]), gym.spaces.MultiBinary(3)],
                         ids=["MultiDiscrete", "MultiBinary"])
def test_fisher_vector_product_equals_explicit_hessian_of_mean_kl(space):
    torch.manual_seed(0)
    actor = make_actor(gym.spaces.Box(-1, 1, (3,), np.float32), space, (8,), "tanh").double()
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.5 * torch.randn_like(p))
    obs = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    named = dict(actor.named_parameters())
    shapes = [p.shape for p in named.values()]

    def dist(params: dict) -> tuple[torch.Tensor]:  # the actor's dist_params in float64 (bypassing the encoder)
        out = torch.func.functional_call(actor.net, {k[4:]: v for k, v in params.items()}, (obs,))
        return (D.multicategorical_logits(out, 3, actor.dist.pad_index),) \
            if isinstance(actor.dist, MultiCategoricalLogits) else (out,)

    def unflat(theta: torch.Tensor) -> dict:
        out, i = {}, 0
        for n, s in zip(named, shapes):
            out[n] = theta[i:i + int(np.prod(s))].view(s)
            i += int(np.prod(s))
        return out

    old = tuple(p.detach() for p in dist(named))
    hess = torch.autograd.functional.hessian(lambda th: actor.kl(old, dist(unflat(th))).mean(),
                                             flat_params(actor.parameters()))
    params = list(actor.parameters())
    grad_kl = flat_grad(actor.kl(old, dist(named)).mean(), params, create_graph=True)
    v = torch.randn(hess.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fv = fisher_vector_product(grad_kl, params, v, 0.1)
    ref = hess @ v + 0.1 * v
    assert torch.linalg.vector_norm(fv - ref) / torch.linalg.vector_norm(ref) < 1e-10
    assert torch.linalg.vector_norm(fv - 0.1 * v) > 1e-3


def test_custom_networks_are_checked_against_the_multi_action_widths():
    factory = lambda i, o: torch.nn.Sequential(torch.nn.Linear(i, 16), torch.nn.Tanh(), torch.nn.Linear(16, o))  # noqa: E731
    agent = QAC(ENVS["MultiDiscrete"], seed=0, device="cpu", policy=factory, critic=factory, **TINY[QAC])
    assert agent.actor.net[-1].out_features == 9 and agent.critic.net[-1].out_features == 9
    qac_mb = QAC(ENVS["MultiBinary"], seed=0, device="cpu", critic=factory, **TINY[QAC])
    assert qac_mb.critic.net[-1].out_features == 8  # two outputs per bit
    with pytest.raises(ValueError, match=r"the policy network must map \[B, 9\] to \[B, 9\]; for B=2 it returned"):
        A2C(ENVS["MultiDiscrete"], device="cpu", policy=torch.nn.Linear(9, 3), **TINY[A2C])


def test_multidiscrete_and_multibinary_actors_refuse_outside_sampling_noise():
    """Only the categorical actor takes its sampling noise from outside (noise_kind "uniform"); the other two
    logit distributions refuse noise in one line instead of silently ignoring it."""
    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    obs = torch.zeros(4, 3)
    for space in (gym.spaces.MultiDiscrete([3, 2]), gym.spaces.MultiBinary(3)):
        actor = make_actor(obs_space, space, (8,), "tanh")
        assert actor.noise_kind is None
        with pytest.raises(ValueError, match="takes no sampling noise from outside"):
            actor.sample_actions(obs, torch.rand(4, 5))
    assert make_actor(obs_space, gym.spaces.Discrete(4), (8,), "tanh").noise_kind == "uniform"
