"""Observation encoding pieces: image detection (SB3's rule), the Nature CNN, Dict encoders and their sharing,
uint8/dict storage in both buffers with their memory estimates, and space records for checkpoints."""
from __future__ import annotations

import types
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlkit.core.buffers import (ReplayBuffer, RolloutBuffer, obs_cat, obs_index, obs_where, rollout_buffer_nbytes)
from rlkit.core.envs import SpaceError, check_spaces, space_from_dict, space_signature, space_to_dict
from rlkit.core.networks import (DictFeatures, FeatureEncoder, ImageScale, NatureCNN, ObsEncoder,
                                 encoder_input_space, image_channels_first, is_image_space, make_obs_encoder,
                                 obs_storage, tie_statistics)

IMG = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
DICT = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (3,), np.float32), "image": IMG,
                        "index": gym.spaces.Discrete(4)})


def cfg(**kw):
    base = dict(normalize_obs=False, clip_obs=10.0, image_obs=None, image_channels_first=None, cnn_features_dim=512)
    return types.SimpleNamespace(**{**base, **kw})


def test_images_are_detected_as_stable_baselines3_does():
    assert is_image_space(IMG) and is_image_space(gym.spaces.Box(0, 255, (1, 84, 84), np.uint8))
    assert not is_image_space(gym.spaces.Box(0, 255, (36, 36, 3), np.float32))  # not uint8
    assert not is_image_space(gym.spaces.Box(0, 10, (36, 36, 3), np.uint8))  # bounds not 0..255
    assert is_image_space(gym.spaces.Box(0, 10, (36, 36, 3), np.uint8), image_obs=True)  # bounds not checked
    assert not is_image_space(gym.spaces.Box(0, 255, (36, 108), np.uint8))  # rank 2
    assert not is_image_space(IMG, image_obs=False)
    assert not is_image_space(gym.spaces.Discrete(3))


def test_channels_first_when_the_first_dimension_is_the_smallest_and_overridable():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # clear shapes: no warning
        assert image_channels_first((3, 84, 84)) and image_channels_first((4, 84, 84))
        assert image_channels_first((1, 16, 16))
        assert not image_channels_first((84, 84, 3)) and not image_channels_first((12, 12, 1))
    with pytest.warns(UserWarning, match="middle dimension is the smallest; treated as channels last.*set "
                                         "image_channels_first"):
        assert not image_channels_first((16, 3, 16))
    with pytest.warns(UserWarning, match="first and last dimensions are equal; treated as channels first"):
        assert image_channels_first((3, 16, 3))  # the first of equal minima wins, as numpy's argmin in SB3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice is never second-guessed
        assert image_channels_first((3, 16, 3), override=False) is False
        assert image_channels_first((84, 84, 3), override=True) is True


def test_nature_cnn_layers_output_and_size_check():
    cnn = NatureCNN((3, 84, 84), features_dim=512)
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)),
                                                                           (64, (3, 3), (1, 1))]
    assert cnn.linear.in_features == 64 * 7 * 7 and cnn.out_dim == 512
    out = cnn(torch.rand(2, 3, 84, 84))
    assert out.shape == (2, 512) and (out >= 0).all()  # ReLU after the Linear
    assert NatureCNN((1, 36, 36), 16)(torch.rand(1, 1, 36, 36)).shape == (1, 16)
    with pytest.raises(ValueError, match=r"image observation 'cam' is 35x40 pixels.*at least 36x36"):
        NatureCNN((3, 35, 40), name="cam")


def test_image_encoder_scales_on_the_device_and_permutes_channels_last():
    enc = make_obs_encoder(IMG, cfg(cnn_features_dim=8))
    assert isinstance(enc, FeatureEncoder) and isinstance(enc.preprocess, ImageScale) and enc.out_dim == 8
    x = torch.randint(0, 256, (2, 36, 36, 3), dtype=torch.uint8)
    pre = enc.preprocess(x)
    assert pre.dtype == torch.float32 and pre.shape == (2, 3, 36, 36)
    assert torch.equal(pre, x.permute(0, 3, 1, 2).float() / 255.0)
    assert enc(x).shape == (2, 8)
    enc.update_stats(x)  # nothing to track for pixels
    assert encoder_input_space(IMG, cfg()).shape == (3, 36, 36)


def test_dict_encoder_concatenates_keys_in_sorted_order():
    enc = make_obs_encoder(DICT, cfg(cnn_features_dim=8, normalize_obs=True))
    assert isinstance(enc.body, DictFeatures) and enc.body.keys == ["image", "index", "vector"]
    assert enc.out_dim == 8 + 4 + 3 and list(enc.body.cnns) == ["image"]
    obs = {"vector": torch.tensor([[0.5, -0.5, 1.0]]), "image": torch.zeros(1, 36, 36, 3, dtype=torch.uint8),
           "index": torch.tensor([2.0])}
    out = enc(obs)
    assert torch.equal(out[0, 8:12], torch.tensor([0.0, 0.0, 1.0, 0.0]))  # one-hot index after the image
    assert torch.allclose(out[0, 12:], torch.tensor([0.5, -0.5, 1.0]), atol=1e-3)  # prior statistics: ~identity
    enc.update_stats({**obs, "vector": torch.randn(64, 3), "image": torch.zeros(64, 36, 36, 3, dtype=torch.uint8),
                      "index": torch.zeros(64)})
    assert enc.preprocess.parts["vector"].count > 60  # the vector key's statistics moved
    assert not hasattr(enc.preprocess.parts["image"], "count")  # images have none


def test_sharing_statistics_gives_own_trainable_layers_and_targets_tie_back():
    vec = make_obs_encoder(gym.spaces.Box(-1, 1, (4,)), cfg())
    assert isinstance(vec, ObsEncoder) and make_obs_encoder(gym.spaces.Box(-1, 1, (4,)), cfg(),
                                                            share_statistics=vec) is vec
    actor = make_obs_encoder(DICT, cfg(cnn_features_dim=8))
    critic = make_obs_encoder(DICT, cfg(cnn_features_dim=8), share_statistics=actor)
    assert critic is not actor and critic.preprocess is actor.preprocess
    assert not {id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()}
    import copy

    target = tie_statistics(copy.deepcopy(actor), actor)
    assert target.preprocess is actor.preprocess and target.body is not actor.body
    assert tie_statistics(copy.deepcopy(vec), vec) is vec
    no_images = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)), "b": gym.spaces.Discrete(3)})
    shared = make_obs_encoder(no_images, cfg())
    assert make_obs_encoder(no_images, cfg(), share_statistics=shared) is shared  # nothing trainable: one module


def test_obs_storage_keeps_uint8_and_lists_dict_keys_sorted():
    assert obs_storage(IMG) == ((36, 36, 3), torch.uint8)
    assert obs_storage(gym.spaces.Box(-1, 1, (2,), np.float64)) == ((2,), torch.float32)
    assert obs_storage(gym.spaces.Discrete(3)) == ((), torch.float32)
    shapes, dtypes = obs_storage(DICT)
    assert list(shapes) == ["image", "index", "vector"] and shapes["image"] == (36, 36, 3)
    assert dtypes == {"image": torch.uint8, "index": torch.float32, "vector": torch.float32}


def test_rollout_buffer_stores_images_as_uint8_and_counts_their_bytes():
    shapes, dtypes = obs_storage(DICT)
    buf = RolloutBuffer(4, 2, shapes, (), torch.int64, torch.device("cpu"), dtypes)
    assert buf.obs["image"].dtype == torch.uint8 and buf.final_obs["image"].shape == (4, 2, 36, 36, 3)
    assert buf.last_obs["vector"].shape == (2, 3) and buf.flat(buf.obs)["image"].shape == (8, 36, 36, 3)
    per_obs = 36 * 36 * 3 + 4 + 3 * 4
    assert buf.nbytes == 4 * 2 * (2 * per_obs + 8 + 4 + 2) + 2 * per_obs
    img = rollout_buffer_nbytes(10, 1, (84, 84, 4), (), torch.int64, torch.uint8)
    assert img == 10 * (2 * 84 * 84 * 4 + 8 + 6) + 84 * 84 * 4  # one byte per pixel, not four
    with pytest.raises(MemoryError, match="lower n_steps or n_envs"):
        RolloutBuffer(10**9, 8, (84, 84, 4), (), torch.int64, torch.device("cpu"), torch.uint8)


def test_replay_buffer_keeps_images_apart_as_uint8_and_round_trips():
    shapes, dtypes = obs_storage(DICT)
    rb = ReplayBuffer(5, shapes, (2,), torch.device("cpu"), obs_dtype=dtypes)
    assert rb.split_obs and rb.obs_data["image"].dtype == torch.uint8 and rb.width == 4
    per_obs = 36 * 36 * 3 + 4 + 3 * 4
    assert rb.nbytes == 5 * (4 * 4 + 2 * per_obs)
    rng = np.random.default_rng(0)

    def batch(n, start):
        return ({"image": rng.integers(0, 256, (n, 36, 36, 3), dtype=np.uint8),
                 "index": np.arange(start, start + n) % 4, "vector": rng.random((n, 3), dtype=np.float32)})

    obs, nxt = batch(3, 0), batch(3, 1)
    rb.add(obs, np.ones((3, 2)), np.arange(3.0), nxt, np.array([False, True, False]))
    obs2, nxt2 = batch(3, 3), batch(3, 4)
    rb.add(obs2, np.zeros((3, 2)), np.arange(3.0, 6.0), nxt2, np.zeros(3, bool))  # wraps: slots 3, 4, 0
    assert len(rb) == 5 and rb.pos == 1
    b = rb.gather(torch.tensor([0, 1, 4]))
    assert b.obs["image"].dtype == torch.uint8
    assert torch.equal(b.obs["image"][0], torch.from_numpy(obs2["image"][2]))  # slot 0 was overwritten
    assert torch.equal(b.next_obs["image"][1], torch.from_numpy(nxt["image"][1]))
    assert torch.equal(b.rewards, torch.tensor([5.0, 1.0, 4.0])) and torch.equal(b.terminated, torch.tensor([0., 1, 0]))
    assert torch.equal(b.obs["vector"][2], torch.from_numpy(obs2["vector"][1]))
    back = ReplayBuffer(5, shapes, (2,), torch.device("cpu"), obs_dtype=dtypes)
    back.load_state_dict(rb.state_dict())
    b2 = back.gather(torch.tensor([0, 1, 4]))
    assert all(torch.equal(b.obs[k], b2.obs[k]) for k in b.obs) and torch.equal(b.actions, b2.actions)
    lone = ReplayBuffer(3, (36, 36, 3), (1,), torch.device("cpu"), obs_dtype=torch.uint8)
    assert lone.split_obs and lone.obs_data.dtype == torch.uint8 and lone.nbytes == 3 * (3 * 4 + 2 * 36 * 36 * 3)
    img = torch.randint(0, 256, (2, 36, 36, 3), dtype=torch.uint8)
    lone.add(img, torch.ones(2, 1), torch.ones(2), img.flip(0), torch.zeros(2))  # tensors go straight in
    assert torch.equal(lone.gather(torch.tensor([1])).next_obs[0], img[0])
    with pytest.raises(ValueError, match=r"obs batch of shape \(2, 36, 36\) does not fit the buffer's 2 x"):
        lone.add(img[..., 0], torch.ones(2, 1), torch.ones(2), img, torch.zeros(2))
    with pytest.raises(MemoryError, match=rf"\({3 * 4 + 2 * 84 * 84 * 4} bytes per transition\)"):
        ReplayBuffer(10**9, (84, 84, 4), (1,), torch.device("cpu"), obs_dtype=torch.uint8)
    vec = ReplayBuffer(3, (4,), (1,), torch.device("cpu"))
    assert not vec.split_obs and vec.width == 2 * 4 + 1 + 2  # vector observations: one float32 row, as before


def test_obs_helpers_work_on_tensors_and_dicts_alike():
    t = torch.arange(6.0).view(2, 3)
    d = {"a": t, "b": t.long()}
    assert torch.equal(obs_cat([t, t]), torch.cat([t, t]))
    assert torch.equal(obs_cat([d, d])["b"], torch.cat([t, t]).long())
    assert torch.equal(obs_index(d, torch.tensor([1]))["a"], t[1:])
    mask = torch.tensor([True, False])
    out = obs_where(mask, d, {"a": -t, "b": -t.long()})
    assert torch.equal(out["a"], torch.stack([t[0], -t[1]]))


def test_dict_spaces_and_image_boxes_are_recorded_for_checkpoints():
    for space in (IMG, DICT):
        back = space_from_dict(space_to_dict(space))
        assert back == space and space_signature(back, gym.spaces.Discrete(2)) == space_signature(
            space, gym.spaces.Discrete(2))
    assert space_from_dict(space_to_dict(IMG)).dtype == np.uint8
    assert space_signature(DICT, gym.spaces.Discrete(2)) == \
        "obs=Dict(image=Box(36, 36, 3), index=Discrete(4), vector=Box(3,)) act=Discrete(2)"
    weights_only = torch.load(_saved(space_to_dict(DICT)), weights_only=True)
    assert space_from_dict(weights_only) == DICT


def _saved(obj):
    import io

    f = io.BytesIO()
    torch.save(obj, f)
    f.seek(0)
    return f


def test_dict_space_checks_name_the_key():
    act = gym.spaces.Discrete(2)
    check_spaces("A2C", DICT, act, ("Discrete",))
    with pytest.raises(SpaceError, match=r"Discrete observations \(key 'k'\) must start at 0"):
        check_spaces("A2C", gym.spaces.Dict({"k": gym.spaces.Discrete(3, start=1)}), act, ("Discrete",))
    with pytest.raises(SpaceError, match=r"zero-sized dimension \(key 'v'\)"):
        check_spaces("A2C", gym.spaces.Dict({"v": gym.spaces.Box(0, 1, (0,))}), act, ("Discrete",))
    with pytest.raises(SpaceError, match="Dict keys must be non-empty strings without '.', got 'a.b'"):
        check_spaces("A2C", gym.spaces.Dict({"a.b": gym.spaces.Discrete(2)}), act, ("Discrete",))
    with pytest.raises(SpaceError, match="the Dict has no keys"):
        check_spaces("A2C", gym.spaces.Dict({}), act, ("Discrete",))
    with pytest.raises(SpaceError, match="key 't' holds a Tuple"):
        check_spaces("A2C", gym.spaces.Dict({"t": gym.spaces.Tuple((act,))}), act, ("Discrete",))
