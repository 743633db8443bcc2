"""Image and Dict observations for every agent: a CNN encodes images (never flattened into the MLP), uint8 pixels
are stored and moved as uint8, Dict keys are encoded one by one, optimisers hold each parameter once, checkpoints
round-trip, custom encoders plug in, and bad inputs get one clear line."""
from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import rlkit
from rlkit.agents import get_agent_class
from rlkit.core.checkpoint import CheckpointError
from rlkit.core.envs import SpaceError
from rlkit.core.networks import FeatureEncoder, ImageScale, ObsEncoder, encoder_input_space
from rlkit.core.rollout import NonFiniteError
from rlkit import A2C
from tests.obs_envs import GoalDictEnv, ImageEnv

ALGOS = ["reinforce", "qac", "a2c", "trpo", "ddpg"]
SMALL = {  # a few updates each, small networks: the whole file stays fast on two CPU cores
    "reinforce": dict(n_envs=2, n_steps=16),
    "qac": dict(n_envs=2, n_steps=8),
    "a2c": dict(n_envs=2, n_steps=8),
    "trpo": dict(n_envs=2, n_steps=16, batch_size=32, n_critic_updates=2, cg_max_steps=4, line_search_max_iter=4),
    "ddpg": dict(learning_starts=64, batch_size=8, buffer_size=400, train_freq=4),
}
ENVS = {
    "image_hwc": functools.partial(ImageEnv, (36, 36, 3)),
    "image_chw": functools.partial(ImageEnv, (3, 36, 36), True),
    "dict": GoalDictEnv,
}


def env_for(algo: str, kind: str):
    env = ENVS[kind]
    return functools.partial(env, continuous=True) if algo == "ddpg" else env


def make(algo: str, kind: str = "dict", **kw):
    cfg = {**SMALL[algo], "hidden_sizes": (16,), "cnn_features_dim": 32, **kw}
    return get_agent_class(algo)(env_for(algo, kind), seed=0, device="cpu", **cfg)


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def obs_batch_of(space: gym.Space, n: int):
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([s[k] for s in samples]) for k in space.spaces}
    return np.stack(samples)


@pytest.mark.parametrize("algo,kind", [(a, k) for a in ALGOS for k in ("image_hwc", "dict")]
                         + [("a2c", "image_chw"), ("ddpg", "image_chw")])
def test_every_agent_learns_acts_and_round_trips_on_images_and_dicts(algo, kind, tmp_path):
    agent = make(algo, kind)
    assert convs(agent.actor) and convs(agent.critic)  # a CNN, not a 3,888-input MLP
    first = convs(agent.actor)[0]
    assert first.in_channels == 3 and first.kernel_size == (8, 8) and first.stride == (4, 4)  # Nature CNN, CxHxW
    agent.learn(160, progress=False)
    # pixels are stored as uint8 (vectors as float32)
    if algo == "ddpg":
        stored = agent.buffer.obs_data
    else:
        stored = agent.buffer.obs
    if kind == "dict":
        assert stored["image"].dtype == torch.uint8 and stored["vector"].dtype == torch.float32
        assert sorted(stored) == ["image", "index", "vector"]
    else:
        assert stored.dtype == torch.uint8 and tuple(stored.shape[-3:]) == ENVS[kind].args[0]
    space = agent.observation_space
    one, batch = space.sample(), obs_batch_of(space, 3)
    a1, a3 = agent.act(one), agent.act(batch, deterministic=True)
    act_shape = tuple(agent.action_space.shape)
    assert np.shape(a1) == act_shape and np.shape(a3) == (3, *act_shape)
    agent.save(tmp_path / "a.pt")
    back = rlkit.load_agent(str(tmp_path / "a.pt"), device="cpu")  # no env: the recorded spaces rebuild it
    assert back.env is None and back.observation_space == space
    assert np.array_equal(agent.act(batch, deterministic=True), back.act(batch, deterministic=True))
    values = agent.value(batch) if algo != "ddpg" else agent.value(batch, a3)
    back_values = back.value(batch) if algo != "ddpg" else back.value(batch, a3)
    if algo != "qac" or agent.discrete:  # QAC's V for Box actions is a one-sample estimate
        assert np.allclose(values, back_values)
    assert agent.evaluate(n_episodes=1)["mean_length"] == 6  # a fresh single env: its raw observations


@pytest.mark.parametrize("algo", ["a2c", "ddpg"])
def test_a_run_resumes_its_dict_envs_and_replay_buffer(algo, tmp_path):
    agent = make(algo, "dict", save_replay_buffer=True, learning_starts=16) if algo == "ddpg" else make(algo)
    agent.learn(48, progress=False, run_dir=tmp_path / "run")
    final = tmp_path / "run" / "checkpoints" / "final.pt"
    back = get_agent_class(algo).load(final, env=env_for(algo, "dict"), device="cpu", restore_env=True)
    assert "continue their episodes" in back.resume_note
    for k, v in agent.collector.obs_np.items():
        assert np.array_equal(back.collector.obs_np[k], v) and back.collector.obs_np[k].dtype == v.dtype
    if algo == "ddpg":
        assert len(back.buffer) == len(agent.buffer) == 48
        assert torch.equal(back.buffer.obs_data["image"], agent.buffer.obs_data["image"])
        assert back.buffer.obs_data["image"].dtype == torch.uint8
    back.learn(16, progress=False)


@pytest.mark.parametrize("algo", ALGOS)
def test_each_trainable_parameter_is_in_exactly_one_optimiser_of_its_role(algo):
    agent = make(algo, "dict")
    actor, critic = agent.actor, agent.critic
    if algo == "a2c":  # one joint loss: one optimiser over actor and critic, the encoder (CNN) shared once
        roles = {"joint": agent.flat.params}
        assert actor.encoder is critic.encoder
    elif algo == "trpo":  # the natural-gradient step moves pi_flat (the actor's CNN included); Adam the critic's
        roles = {"actor": agent.pi_flat.params, "critic": agent.vf_flat.params}
    else:
        opts = {"reinforce": ("pi_optimizer", "vf_optimizer"), "qac": ("pi_optimizer", "q_optimizer"),
                "ddpg": ("actor_optimizer", "critic_optimizer")}[algo]
        roles = {role: [p for g in getattr(agent, name).param_groups for p in g["params"]]
                 for role, name in zip(("actor", "critic"), opts)}
    if algo != "a2c":  # own CNN per network, one set of observation statistics
        assert actor.encoder is not critic.encoder and actor.encoder.preprocess is critic.encoder.preprocess
        assert {id(p) for p in roles["actor"]} == {id(p) for p in actor.parameters()}
        assert {id(p) for p in roles["critic"]} == {id(p) for p in critic.parameters()}
        assert set(map(id, convs(actor))) != set(map(id, convs(critic)))
    held = [id(p) for params in roles.values() for p in params]
    assert len(held) == len(set(held))  # nothing twice: not within one optimiser, not across two
    trainable = {id(p) for m in (actor, critic) for p in m.parameters() if p.requires_grad}
    assert set(held) == trainable  # nothing left out (the CNNs included)
    if algo == "ddpg":  # targets: copies of both CNNs, in no optimiser, reading the online statistics
        target = [p for m in (agent.actor_target, agent.critic_target) for p in m.parameters()]
        assert not any(p.requires_grad for p in target) and not {id(p) for p in target} & set(held)
        assert agent.actor_target.encoder.preprocess is actor.encoder.preprocess
        assert agent.critic_target.encoder.preprocess is actor.encoder.preprocess
        assert len(agent._online) == len(agent._targets)


def test_trpo_moves_the_actor_cnn_by_the_trust_region_step_and_the_critic_cnn_by_adam():
    agent = make("trpo", "image_hwc", line_search_max_iter=10, cg_max_steps=8)
    a_conv, c_conv = convs(agent.actor)[0].weight, convs(agent.critic)[0].weight
    flat = agent.pi_flat.param
    assert flat.untyped_storage().data_ptr() == a_conv.untyped_storage().data_ptr()  # a view of the flat vector
    before = a_conv.detach().clone(), c_conv.detach().clone()
    accepted = []
    agent.learn(64, progress=False, callback=lambda a, m: accepted.append(m["train/line_search_accepted"]),
                log_interval=32)
    assert not torch.equal(c_conv, before[1])
    assert max(accepted) == 1.0 and not torch.equal(a_conv, before[0])


@pytest.mark.parametrize("algo", ["a2c", "ddpg"])
def test_normalize_obs_applies_to_vector_parts_only(algo):
    agent = make(algo, "dict", normalize_obs=True, learning_starts=1000) if algo == "ddpg" else \
        make(algo, "dict", normalize_obs=True)
    pre = agent.actor.encoder.preprocess
    assert isinstance(pre.parts["image"], ImageScale) and isinstance(pre.parts["vector"], ObsEncoder)
    agent.learn(64, progress=False)
    vec = pre.parts["vector"]
    assert vec.count.item() > 60 and not torch.equal(vec.mean, torch.zeros_like(vec.mean))
    obs = {k: torch.as_tensor(v) for k, v in obs_batch_of(agent.observation_space, 4).items()}
    out = pre({k: v.float() if k == "index" else v for k, v in obs.items()})
    assert torch.equal(out["image"], obs["image"].permute(0, 3, 1, 2).float() / 255.0)  # scaled only
    assert not torch.allclose(out["vector"], obs["vector"])  # normalised by the running statistics
    # a lone image space with normalize_obs: nothing to normalise, nothing breaks
    img = make(algo, "image_hwc", normalize_obs=True)
    assert isinstance(img.actor.encoder.preprocess, ImageScale)
    img.learn(16 if algo != "ddpg" else 8, progress=False)


def test_uint8_crosses_host_to_device_and_is_scaled_there():
    agent = make("a2c", "dict")
    assert agent.collector.obs["image"].dtype == torch.uint8  # what the policy is called with during rollouts
    x, single = rlkit.core.agent_io.obs_batch(agent.observation_space.sample(), agent.observation_space, agent.device)
    assert single and x["image"].dtype == torch.uint8 and x["vector"].dtype == torch.float32
    seen = []
    scale = agent.actor.encoder.preprocess.parts["image"]
    hook = scale.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    agent.learn(16, progress=False)
    agent.act(agent.observation_space.sample())
    hook.remove()
    assert seen and set(seen) == {torch.uint8}
    img = make("reinforce", "image_hwc")
    assert img.collector.obs.dtype == torch.uint8


def test_channels_last_images_are_scaled_into_contiguous_chw_so_gradients_keep_their_parameters_strides():
    frames = torch.randint(0, 256, (2, 8, 6, 3), dtype=torch.uint8)
    out = ImageScale(channels_first=False)(frames)
    assert out.is_contiguous() and torch.equal(out, frames.permute(0, 3, 1, 2).float() / 255.0)
    already = torch.rand(2, 3, 8, 6)  # a float, contiguous CHW batch: scaled into a new tensor, never in place
    kept = already.clone()
    assert torch.equal(ImageScale(channels_first=True)(already), kept / 255.0) and torch.equal(already, kept)
    # DDPG's fused Adam on CUDA refuses a gradient whose strides differ from its parameter's (channels-last
    # gradients of the convolutions, before ImageScale made its output contiguous)
    agent = make("ddpg", "image_hwc")
    agent.learn(96, progress=False)
    params = [*agent.actor.parameters(), *agent.critic.parameters()]
    grads = [(p.stride(), p.grad.stride()) for p in params if p.grad is not None]
    assert sum(p.dim() == 4 and p.grad is not None for p in params) >= 3 and all(a == b for a, b in grads)


@pytest.mark.cuda
@pytest.mark.parametrize("algo", ["a2c", "ddpg"])
def test_uint8_crosses_to_the_gpu_and_is_scaled_there(algo):
    """On a GPU the image part reaches the network as uint8 on the device (the /255 runs there), in rollouts,
    updates and act(), for an on-policy agent (rollout buffer) and DDPG (replay buffer)."""
    cfg = {**SMALL[algo], "hidden_sizes": (16,), "cnn_features_dim": 32}
    agent = get_agent_class(algo)(env_for(algo, "dict"), seed=0, device="cuda", **cfg)
    seen = []
    scale = agent.actor.encoder.preprocess.parts["image"]
    hook = scale.register_forward_pre_hook(lambda m, args: seen.append((args[0].dtype, args[0].device.type)))
    agent.learn(128 if algo == "ddpg" else 16, progress=False)  # DDPG: 64 steps of warm-up, then updates
    agent.act(agent.observation_space.sample())
    hook.remove()
    assert len(seen) > 2 and set(seen) == {(torch.uint8, "cuda")}


def test_channels_last_and_first_are_detected_and_can_be_overridden():
    hwc, chw = make("a2c", "image_hwc"), make("a2c", "image_chw")
    assert hwc.actor.encoder.preprocess.channels_first is False
    assert chw.actor.encoder.preprocess.channels_first is True
    seen = []

    def tiny(space):
        seen.append(space.shape)
        return TinyCNN(space)

    agent = get_agent_class("a2c")(functools.partial(ImageEnv, (12, 12, 3)), seed=0, device="cpu", n_envs=2,
                                   n_steps=4, encoder=tiny)
    assert seen == [(3, 12, 12)] and agent.actor.encoder.preprocess.channels_first is False
    forced = get_agent_class("a2c")(functools.partial(ImageEnv, (12, 12, 3)), seed=0, device="cpu", n_envs=2,
                                    n_steps=4, encoder=tiny, image_channels_first=True)
    assert seen[-1] == (12, 12, 3) and forced.actor.encoder.preprocess.channels_first is True
    forced.learn(8, progress=False)


def test_atari_frame_stacks_go_through_the_nature_cnn_as_uint8():
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    agent = rlkit.A2C("PongNoFrameskip-v4", n_envs=1, n_steps=4, device="cpu", seed=0, vectorization="sync")
    first = convs(agent.actor)[0]
    assert first.in_channels == 4 and agent.actor.encoder.preprocess.channels_first  # (4, 84, 84): channels first
    assert agent.actor.encoder.body.linear.in_features == 64 * 7 * 7 and agent.actor.encoder is agent.critic.encoder
    assert agent.buffer.obs.dtype == torch.uint8 and agent.collector.obs.dtype == torch.uint8
    agent.learn(8, progress=False)


def test_image_obs_false_flattens_and_true_requires_an_image():
    flat = make("reinforce", "image_hwc", image_obs=False)
    assert not convs(flat.actor) and isinstance(flat.actor.encoder, ObsEncoder)
    assert flat.actor.encoder.out_dim == 36 * 36 * 3 and flat.buffer.obs.dtype == torch.uint8
    flat.learn(32, progress=False)
    with pytest.raises(ValueError, match=r"image_obs=True but observation space .* holds no uint8 Box of rank 3"):
        get_agent_class("a2c")("CartPole-v1", device="cpu", image_obs=True)


def test_an_image_too_small_for_the_nature_cnn_is_one_clear_line():
    for env in (functools.partial(ImageEnv, (12, 12, 3)), functools.partial(GoalDictEnv, (12, 12, 3))):
        with pytest.raises(ValueError) as e:
            get_agent_class("a2c")(env, device="cpu", n_envs=1)
        msg = str(e.value)
        assert "\n" not in msg and "12x12" in msg and "Nature CNN needs at least 36x36" in msg
        assert "pass encoder= a smaller CNN" in msg and "image_obs=False" in msg


class TinyCNN(nn.Module):
    """A small encoder for small images (a factory f(observation_space)), counting its forward calls; a Dict's
    image key is encoded, its other keys concatenated."""

    def __init__(self, observation_space: gym.Space) -> None:
        super().__init__()
        space = observation_space["image"] if isinstance(observation_space, gym.spaces.Dict) else observation_space
        self.dict_obs = isinstance(observation_space, gym.spaces.Dict)
        c = space.shape[0]
        self.conv = nn.Conv2d(c, 4, 3, stride=2)
        self.out_dim = 4 * ((space.shape[1] - 3) // 2 + 1) * ((space.shape[2] - 3) // 2 + 1)
        if self.dict_obs:
            self.out_dim += 3 + 4  # vector (3) and the one-hot index (4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.dict_obs:
            img = torch.relu(self.conv(x["image"])).flatten(1)
            return torch.cat([img, x["index"], x["vector"]], dim=-1)
        return torch.relu(self.conv(x)).flatten(1)


@pytest.mark.parametrize("algo", ALGOS)
def test_a_custom_encoder_is_used_saved_and_loaded(algo, tmp_path):
    env = functools.partial(GoalDictEnv, (12, 12, 3))
    env = functools.partial(env, continuous=True) if algo == "ddpg" else env
    cfg = {**SMALL[algo], "hidden_sizes": (16,)}
    agent = get_agent_class(algo)(env, seed=0, device="cpu", encoder=TinyCNN, **cfg)
    enc = agent.actor.encoder
    assert isinstance(enc, FeatureEncoder) and isinstance(enc.body, TinyCNN) and enc.out_dim == enc.body.out_dim
    calls = enc.body.calls
    agent.learn(128, progress=False)
    assert enc.body.calls > calls
    assert agent.networks["encoder"] == f"{__name__}:TinyCNN"
    agent.save(tmp_path / "f.pt")
    back = rlkit.load_agent(str(tmp_path / "f.pt"), device="cpu")  # the factory is imported and called again
    assert isinstance(back.actor.encoder.body, TinyCNN)
    batch = obs_batch_of(agent.observation_space, 4)
    assert np.array_equal(agent.act(batch, deterministic=True), back.act(batch, deterministic=True))
    seen = encoder_input_space(back.observation_space)  # what a factory is given: images channels first
    inst = get_agent_class(algo)(env, seed=0, device="cpu", encoder=TinyCNN(seen), **cfg)
    inst.save(tmp_path / "i.pt")
    with pytest.raises(CheckpointError, match="custom encoder network.*pass encoder="):
        rlkit.load_agent(str(tmp_path / "i.pt"), device="cpu")
    again = rlkit.load_agent(str(tmp_path / "i.pt"), device="cpu", encoder=TinyCNN(seen))
    assert np.array_equal(inst.act(batch, deterministic=True), again.act(batch, deterministic=True))


def test_a_custom_encoder_that_does_not_fit_is_refused_naming_role_and_shapes():
    env = functools.partial(ImageEnv, (12, 12, 3))

    def build(encoder):
        return get_agent_class("reinforce")(env, device="cpu", n_envs=1, encoder=encoder)

    with pytest.raises(ValueError, match=r"the encoder network must map a preprocessed observation batch "
                                         r"\[2, 3, 12, 12\] to \[B, 5\] \(its out_dim\); for B=2 it returned"):
        wrong = TinyCNN(gym.spaces.Box(0, 255, (3, 12, 12), np.uint8))
        wrong.out_dim = 5
        build(wrong)
    with pytest.raises(ValueError, match=r"the encoder network failed on a preprocessed observation batch "
                                         r"\[2, 3, 12, 12\]"):
        build(lambda space: nn.Linear(7, 3))
    with pytest.raises(ValueError, match="to \\[B, F\\] \\(float\\); for B=2 it returned \\(2, 3, 12, 12\\)"):
        build(lambda space: nn.Identity())
    with pytest.raises(ValueError, match="encoder must be an nn.Module or a factory f\\(observation_space\\)"):
        build(3)
    with pytest.raises(ValueError, match="the encoder factory must return an nn.Module"):
        build(lambda space: "conv")


def test_nested_and_tuple_observation_spaces_are_refused_in_one_line():
    class Nested(GoalDictEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = gym.spaces.Dict({"inner": self.observation_space,
                                                      "x": gym.spaces.Discrete(2)})

    with pytest.raises(SpaceError, match=r"key 'inner' holds a Dict; a Dict observation may hold only Box and "
                                         r"Discrete spaces \(nested Dict/Tuple spaces are not supported"):
        get_agent_class("a2c")(Nested, device="cpu", n_envs=1)

    class TupleObs(ImageEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = gym.spaces.Tuple((self.observation_space,))

    with pytest.raises(SpaceError, match=r"supported observation spaces: Box, Discrete, Dict of Box and Discrete"):
        get_agent_class("ddpg")(TupleObs, device="cpu")


def test_dict_observations_bootstrap_from_the_true_final_observation():
    agent = make("a2c", "dict", n_steps=8)
    agent.collector.collect(agent.buffer, agent.actor.sample_actions)
    buf = agent.buffer
    vec, final = buf.obs["vector"], buf.final_obs["vector"]
    trunc = buf.truncated
    assert trunc.any()  # the env truncates every even goal's episode at its horizon
    assert torch.allclose(final[trunc][:, 0], torch.ones(int(trunc.sum())))  # step / horizon = 1 at the end
    assert torch.all(final[~trunc] == 0)
    nxt = torch.cat([vec[1:], buf.last_obs["vector"][None]])  # the reset observations after each end
    assert torch.all(nxt[trunc][:, 0] == 0)
    assert buf.final_obs["image"].dtype == torch.uint8 and buf.final_obs["image"][trunc].any()


def test_a_non_finite_dict_observation_names_the_key():
    agent = get_agent_class("a2c")(functools.partial(GoalDictEnv, nan_at=2), device="cpu", n_envs=2, n_steps=4,
                                   hidden_sizes=(16,), cnn_features_dim=32)
    with pytest.raises(NonFiniteError, match=r"non-finite observation \(key 'vector'\) \(sub-env 0\)"):
        agent.learn(8, progress=False)


def test_act_names_a_bad_dict_observation():
    agent = make("reinforce", "dict")
    obs = agent.observation_space.sample()
    with pytest.raises(ValueError, match=r"a Dict observation has keys \['image', 'index', 'vector'\]"):
        agent.act({k: v for k, v in obs.items() if k != "index"})
    with pytest.raises(ValueError, match="all hold one observation or all a batch"):
        agent.act({**obs, "vector": np.stack([obs["vector"]] * 2)})
    with pytest.raises(ValueError, match=r"\(key 'image'\) .* must hold integers in \[0, 255\]"):
        agent.act({**obs, "image": obs["image"] / 255.0})
    with pytest.raises(ValueError, match="a Dict observation is a dict"):
        agent.act(obs["vector"])


LEARN = {  # (config, steps): every agent reaches the optimum's neighbourhood from pixels and from a Dict
    "reinforce": (dict(n_envs=8, n_steps=32, learning_rate=3e-3), 16_000),
    "qac": (dict(n_envs=8, n_steps=8, ent_coef=0.01), 8_000),
    "a2c": (dict(n_envs=8, n_steps=5, ent_coef=0.01), 8_000),
    "trpo": (dict(n_envs=4, n_steps=128, batch_size=128), 16_000),
    # DDPG from pixels: at the default learning rate (1e-3) the actor's tanh saturates before the critic has
    # learned to tell the targets apart, and it stays there
    "ddpg": (dict(learning_starts=500, batch_size=64, buffer_size=20_000, train_freq=2, learning_rate=1e-4), 6_000),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image_hwc", "dict"])
@pytest.mark.parametrize("algo", ALGOS)
def test_every_agent_learns_from_pixels_and_dicts(algo, kind):
    cfg, steps = LEARN[algo]
    agent = get_agent_class(algo)(env_for(algo, kind), seed=0, device="cpu", hidden_sizes=(64,), cnn_features_dim=64,
                                  **cfg)
    agent.learn(steps, progress=False)
    ret = agent.evaluate(20)["mean_return"]
    # Discrete actions: the optimum is 6 (acting on the hidden target every step), a constant action gets about 3.
    # DDPG's Box versions: on the image env the optimum is 0 and a constant action about -6; on the Dict env
    # (steer a position to the goal) the optimum is about -0.5 and standing still -3.
    bar = {"image_hwc": -1.5, "dict": -2.5}[kind] if algo == "ddpg" else 5.5
    assert ret >= bar, ret


def test_several_seeds_in_one_process_take_images_and_refuse_dicts_in_one_line():
    from rlkit.core.seeds import SeedBatch

    kw = dict(device="cpu", n_envs=2, n_steps=4, hidden_sizes=(16,), cnn_features_dim=16)
    batch = SeedBatch(get_agent_class("a2c"), ImageEnv, [0, 1], **kw)
    batch.learn(16, progress=False)
    lone = get_agent_class("a2c")(ImageEnv, seed=1, **kw).learn(16, progress=False)
    for p, q in zip(batch.agents[1].actor.parameters(), lone.actor.parameters()):  # seed 1 as if trained alone
        assert torch.allclose(p, q, atol=1e-4)
    with pytest.raises(ValueError, match="Dict observations cannot be trained as several seeds in one process"):
        SeedBatch(get_agent_class("a2c"), GoalDictEnv, [0, 1], **kw)
    with pytest.raises(ValueError, match=r"pass encoder= as a factory f\(observation_space\), not a module instance"):
        SeedBatch(get_agent_class("a2c"), ImageEnv, [0, 1], encoder=nn.Identity(), **kw)


@pytest.mark.parametrize("continuous", [False, True])
def test_a2c_heads_on_the_cnn_features_as_sb3_cnn_policy(continuous, tmp_path):
    """A2C hidden_sizes=[] (the "atari" preset): the policy and value heads are single linear layers on the shared
    CNN's features (Stable-Baselines3's CnnPolicy); it trains with TF-style RMSprop, acts and round-trips."""
    env = ENVS["image_hwc"] if not continuous else (lambda: ImageEnv(continuous=True))
    agent = A2C(env, seed=0, device="cpu", hidden_sizes=(), cnn_features_dim=32, optimizer="rmsprop_tf",
                n_envs=2, n_steps=8, use_sde=continuous)
    for net in (agent.actor, agent.critic):
        assert len(net.net.hidden) == 0 and net.net.head.in_features == 32
    assert agent.actor.encoder is agent.critic.encoder
    before = [p.detach().clone() for p in agent.actor.encoder.parameters()]
    agent.learn(64, progress=False)
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.actor.encoder.parameters()))
    batch = obs_batch_of(agent.observation_space, 3)
    agent.save(tmp_path / "a.pt")
    back = rlkit.load_agent(str(tmp_path / "a.pt"), device="cpu")
    assert back.config.hidden_sizes == () and back.config.optimizer == "rmsprop_tf"
    assert np.array_equal(agent.act(batch, deterministic=True), back.act(batch, deterministic=True))
