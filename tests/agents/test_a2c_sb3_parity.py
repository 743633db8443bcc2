"""A2C's Atari preset against Stable-Baselines3's A2C (CnnPolicy, RMSpropTFLike, AtariWrapper + VecFrameStack), the
setup rl-zoo3 trains Atari with: the same weights and the same rollout must give the same losses, gradients and
parameters after each optimiser step, and the same Pong frames must reach both networks. Skipped without
stable-baselines3 (pip install 'rlkit[bench]'); the Pong test also needs ale-py and opencv (rlkit[atari])."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlkit.agents.a2c import A2C, a2c_advantages, a2c_loss
from rlkit.core.config import load_presets

T, N = 5, 4


@pytest.fixture
def ale():
    pytest.importorskip("cv2", reason="Atari preprocessing needs opencv: pip install 'rlkit[atari]'")
    return pytest.importorskip("ale_py", reason="Atari tests need ale-py: pip install 'rlkit[atari]'")


class AtariShaped(gym.Env):
    """Observations of the Atari stack's shape and dtype (uint8, 4x84x84, channels first) with 6 actions, random
    frames, rewards in {-1, 0, 1} and terminations with probability 0.2: a rollout with every kind of step."""

    observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    action_space = gym.spaces.Discrete(6)

    def _obs(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (4, 84, 84), dtype=np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(self.np_random.integers(-1, 2))
        return self._obs(), reward, bool(self.np_random.random() < 0.2), False, {}


def _sb3_twin(agent: A2C, cfg: dict):
    """SB3's A2C as rl-zoo3 configures it for Atari, with agent's weights copied in; and the name map."""
    sb3 = pytest.importorskip("stable_baselines3", reason="the SB3 parity checks need stable-baselines3")
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = sb3.A2C("CnnPolicy", DummyVecEnv([AtariShaped] * N), n_steps=T, learning_rate=cfg["learning_rate"],
                    gamma=cfg["gamma"], gae_lambda=cfg["gae_lambda"], ent_coef=cfg["ent_coef"],
                    vf_coef=cfg["vf_coef"], max_grad_norm=cfg["max_grad_norm"], device="cpu", seed=0,
                    policy_kwargs=dict(optimizer_class=RMSpropTFLike,
                                       optimizer_kwargs=dict(alpha=cfg["rms_alpha"], eps=cfg["rms_eps"])))
    model.set_logger(configure(None, []))
    names = {f"encoder.body.cnn.{i}.{w}": f"features_extractor.cnn.{i}.{w}" for i in (0, 2, 4)
             for w in ("weight", "bias")}
    names.update({f"encoder.body.linear.{w}": f"features_extractor.linear.0.{w}" for w in ("weight", "bias")})
    names.update({f"net.head.{w}": f"action_net.{w}" for w in ("weight", "bias")})
    ours = {**dict(agent.actor.named_parameters()),
            "value_net.weight": agent.critic.net.head.weight, "value_net.bias": agent.critic.net.head.bias}
    pairs = [(ours[k], v) for k, v in names.items()] + [(ours[k], k) for k in ("value_net.weight", "value_net.bias")]
    theirs = dict(model.policy.named_parameters())
    with torch.no_grad():
        for p, name in pairs:
            assert p.shape == theirs[name].shape, name
            p.copy_(theirs[name])
    return model, [(p, theirs[name]) for p, name in pairs]


def test_atari_preset_update_equals_stable_baselines3_a2c_step_for_step():
    """Two updates on rollouts of random frames, rewards and terminations: values, advantages, returns, the policy,
    entropy and value losses, every pre-clip gradient and every parameter after the clipped RMSpropTFLike step agree
    with SB3's A2C.train() to float32 rounding."""
    cfg = load_presets("a2c")["atari"]["config"]
    agent = A2C(AtariShaped, config=dict(cfg, n_envs=N, vectorization="sync"), seed=0, device="cpu")
    assert agent.actor.encoder is agent.critic.encoder  # one CNN under both heads, as SB3's shared extractor
    assert agent.flat.param.numel() == 1_687_719  # SB3's CnnPolicy on 4x84x84 with 6 actions
    model, pairs = _sb3_twin(agent, cfg)
    policy, buf = model.policy, model.rollout_buffer
    assert policy.share_features_extractor and len(list(policy.parameters())) == len(pairs)
    for update in range(2):
        agent.collector.collect(agent.buffer, agent.actor.sample_actions)
        b = agent.buffer
        assert b.terminated.any() and (b.rewards != 0).any() and not b.truncated.any()
        buf.reset()  # the same rollout in SB3's buffer: episode_starts[t] = done[t - 1] (1 at the very start)
        starts = np.full(N, 1.0 if update == 0 else float(0), dtype=np.float32)
        with torch.no_grad():
            for t in range(T):
                values, logp, _ = policy.evaluate_actions(b.obs[t], b.actions[t])
                buf.add(b.obs[t].numpy(), b.actions[t].numpy().reshape(N, 1), b.rewards[t].numpy(), starts, values,
                        logp)
                starts = b.terminated[t].numpy().astype(np.float32)
            last = policy.predict_values(b.last_obs)
            buf.compute_returns_and_advantage(last_values=last, dones=b.terminated[-1].numpy().astype(np.float32))
            v = agent.critic(b.flat(b.obs)).view(T, N)
            adv, ret = a2c_advantages(agent.critic, b.rollout(), v, agent.critic(b.last_obs), agent.config, True)
        np.testing.assert_allclose(v.numpy(), buf.values, atol=1e-6)
        np.testing.assert_allclose(adv.numpy(), buf.advantages, atol=1e-5)
        np.testing.assert_allclose(ret.numpy(), buf.returns, atol=1e-5)

        agent.flat.zero_grad()
        loss, info = a2c_loss(agent.actor, agent.critic, b.rollout(), agent.config)
        loss.backward()
        ours = [p.grad.clone() for p, _ in pairs]
        theirs: list[torch.Tensor] = []
        clip = torch.nn.utils.clip_grad_norm_

        def capture(params, max_norm, *args, **kwargs):  # SB3's gradient before its clip
            params = list(params)
            theirs.extend(q.grad.clone() for _, q in pairs)
            return clip(params, max_norm, *args, **kwargs)

        torch.nn.utils.clip_grad_norm_ = capture
        try:
            model.train()
        finally:
            torch.nn.utils.clip_grad_norm_ = clip
        logged = model.logger.name_to_value
        assert info["train/entropy"].item() == pytest.approx(-logged["train/entropy_loss"], abs=1e-6)
        pg = logged["train/policy_loss"] + cfg["ent_coef"] * logged["train/entropy_loss"]  # ours holds the bonus
        assert info["train/loss_pi"].item() == pytest.approx(pg, abs=1e-5)
        assert info["train/loss_v"].item() == pytest.approx(logged["train/value_loss"], rel=1e-5)
        for g, h in zip(ours, theirs):
            torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-5 * float(h.abs().max()) + 1e-9)

        agent.flat.clip_grad_norm_(agent.config.max_grad_norm)
        agent.optimizer.step()
        for p, q in pairs:
            torch.testing.assert_close(p, q.detach(), rtol=0, atol=1e-7)


def test_pong_frames_equal_stable_baselines3_atari_wrapper_and_frame_stack(ale):
    """PongNoFrameskip-v4, the same seed (so the same no-ops) and the same actions: rlkit's training stack and
    SB3's AtariWrapper + VecFrameStack(4) + VecTransposeImage give the same uint8 4x84x84 observations (oldest frame
    first), rewards and game ends, through a whole game and the reset after it. The two differ only where no
    observation is trained on: at a reset rlkit repeats the first frame where SB3 has zeros (checked below)."""
    pytest.importorskip("stable_baselines3", reason="the SB3 parity checks need stable-baselines3")
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    from rlkit.core.atari import make_atari_env

    ours = make_atari_env("PongNoFrameskip-v4", training=True)
    theirs = VecTransposeImage(VecFrameStack(DummyVecEnv([lambda: AtariWrapper(gym.make("PongNoFrameskip-v4"))]), 4))
    theirs.seed(3)
    o, _ = ours.reset(seed=3)
    s = theirs.reset()[0]
    assert o.shape == s.shape == (4, 84, 84) and o.dtype == s.dtype == np.uint8
    np.testing.assert_array_equal(o[-1], s[-1])
    assert (o == o[-1]).all() and not s[:3].any()  # padding at a reset: the first frame (rlkit) or zeros (SB3)
    actions = [int(a) for a in np.random.default_rng(0).integers(0, 6, 900)]  # random play: one game, ~850 steps
    steps_after_reset, games = 1, 0  # observations since the last reset, that one included
    for a in actions:
        o, r, terminated, truncated, _ = ours.step(a)
        s, sr, sd, _ = theirs.step(np.array([a]))
        assert float(r) == float(sr[0]) and bool(terminated or truncated) == bool(sd[0])
        if terminated or truncated:
            games += 1
            o, _ = ours.reset()
            steps_after_reset = 0
        steps_after_reset += 1
        if steps_after_reset >= 4:  # a stack of frames of this game on both sides
            np.testing.assert_array_equal(o, s[0])
        else:
            np.testing.assert_array_equal(o[-1], s[0][-1])
    assert games == 1
