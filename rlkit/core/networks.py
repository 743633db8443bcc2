"""Networks: the MLP, observation encoding and normalisation, the actor and critic wrappers every agent uses, and
the protocol a user's own network follows.

Every network an agent trains is one plain `nn.Module` that maps ONE float tensor to ONE float tensor; the wrappers
here add what is the same for every network (encoding the observation, the distribution, the Box scaling):

    role                                  input x                        output
    policy, Discrete(n) actions           [B, obs_dim]                   logits [B, n]
    policy, Box actions (d dims)          [B, obs_dim]                   means [B, d] (the wrapper adds log_std)
    policy, MultiDiscrete(nvec) actions   [B, obs_dim]                   logits [B, sum(nvec)], dimension by dimension
    policy, MultiBinary(n) actions        [B, obs_dim]                   logits [B, n] (P(a_d = 1) = sigmoid)
    deterministic policy (DDPG)           [B, obs_dim]                   [B, d], then tanh and scaled to the Box
    V critic                              [B, obs_dim]                   [B] or [B, 1]
    Q critic, Box actions                 [B, obs_dim + d]  (x, action)  [B] or [B, 1]
    Q critic, Discrete(n) actions         [B, obs_dim]                   [B, n]
    Q critic, MultiDiscrete(nvec)         [B, obs_dim]                   [B, sum(nvec)]: Q_d(s, k), summed over d
    Q critic, MultiBinary(n)              [B, obs_dim]                   [B, 2n]: as MultiDiscrete([2] * n)

x is the encoded observation, obs_dim its width (the encoder's out_dim; see "observation encoding" below): a Box
flattened to float32 (normalised with normalize_obs), a Discrete observation one-hot, an image through a CNN
(Nature DQN by default), a Dict as its keys' encodings concatenated in sorted key order. Agents take such a
module, or a factory `f(in_dim, out_dim) -> nn.Module`, through their `policy=` / `critic=` arguments;
`build_network` checks it against this table. The encoder itself can be the user's too (`encoder=`: a module or
a factory `f(observation_space) -> nn.Module`, checked by `build_encoder`). gSDE (use_sde) also needs the
policy to expose `features(x) -> [B, F]` and a final `head: nn.Linear` (the default MLP does).

Every actor has the same surface, so agents never branch on the space:
  sample(obs) -> (action, log_prob)     sample_actions(obs, noise=None) -> action (acting: no log-prob)
  mode(obs) -> action                   dist_params(obs) -> tuple
  log_prob_entropy(obs, actions)        log_prob_from_params(params, actions)   entropy_from_params(params)
  kl(old_params, new_params)
The actors of finite action sets (Discrete, MultiDiscrete, MultiBinary) also give action_probs(obs) in the layout of
their Q critic's all_actions(obs), so E_pi[Q(s, .)] is one product and sum.
"""
from __future__ import annotations

import copy
import importlib
import math
import warnings
from typing import Any, Callable, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rlkit.core import distributions as D

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "relu": torch.relu,
                                                                  "elu": F.elu, "gelu": F.gelu}
NetworkSpec = Union[nn.Module, Callable[[int, int], nn.Module], None]
EncoderSpec = Union[nn.Module, Callable[[gym.Space], nn.Module], None]


class MLP(nn.Module):
    """x -> hidden layers (activation after each) -> linear head. `features(x)` is the last hidden layer.

    Orthogonal initialisation (gain sqrt(2) inside, `output_gain` on the head, zero biases) unless
    orthogonal=False (PyTorch's default Linear initialisation). One module call runs every layer: with the
    8-row batches of acting, nn.Sequential's per-module call overhead would cost more than the arithmetic.
    """

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: str = "tanh",
                 output_gain: float = 1.0, orthogonal: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        sizes = [in_dim, *hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], out_dim)
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        if orthogonal:
            for m in self.hidden:
                nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
                nn.init.zeros_(m.bias)
            nn.init.orthogonal_(self.head.weight, gain=output_gain)
            nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:  # F.linear on the layer's own parameters: nn.Linear's call overhead skipped
            x = self._act(F.linear(x, layer.weight, layer.bias))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.features(x), self.head.weight, self.head.bias)


def obs_dim(space: gym.Space) -> int:
    """Width of the flat float vector an observation becomes (Box: flattened; Discrete: one-hot)."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise TypeError(f"observation space {space} is not supported; supported: Box, Discrete")


def action_dim(space: gym.Space) -> int:
    """Number of actor outputs: K logits for Discrete(K), D means for Box of D dims, sum(nvec) logits for
    MultiDiscrete(nvec), one logit per bit for MultiBinary (multi-dimensional ones flattened)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    raise TypeError(f"action space {space} is not supported; supported: Box, Discrete, MultiDiscrete, MultiBinary")


def action_nvec(space: gym.spaces.MultiDiscrete | gym.spaces.MultiBinary) -> tuple[int, ...]:
    """Choices per action dimension, flattened: nvec for MultiDiscrete, 2 per bit for MultiBinary."""
    if isinstance(space, gym.spaces.MultiBinary):
        return (2,) * int(np.prod(space.shape))
    return tuple(int(n) for n in np.asarray(space.nvec).reshape(-1))


def action_storage(space: gym.Space) -> tuple[tuple[int, ...], torch.dtype]:
    """(shape, dtype) of one policy action as agents store it: () int64 for Discrete, (D,) int64 for MultiDiscrete
    and MultiBinary (flattened; to_env_actions restores the space's shape, dtype and start), the Box's shape in
    float32 (the unclipped sample)."""
    if isinstance(space, gym.spaces.Discrete):
        return (), torch.int64
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        return (int(np.prod(space.shape)),), torch.int64
    return tuple(space.shape), torch.float32


# ---- user networks: build, check, and name them so a checkpoint can rebuild them -------------------------------
def build_network(spec: NetworkSpec, in_dim: int, out_dim: int, default: Callable[[], nn.Module], role: str,
                  scalar_out: bool = False) -> nn.Module:
    """The network for `role`: default() when spec is None, the module itself, or spec(in_dim, out_dim).

    The result is checked on a zero batch of two rows: it must return [2, out_dim] (or, with scalar_out, [2] or
    [2, 1]); a ValueError names the role and both shapes otherwise."""
    if spec is None:
        net = default()
    elif isinstance(spec, nn.Module):
        net = spec
    elif callable(spec):
        net = spec(in_dim, out_dim)
        if not isinstance(net, nn.Module):
            raise ValueError(f"the {role} factory must return an nn.Module, got {type(net).__name__}")
    else:
        raise ValueError(f"{role} must be an nn.Module or a factory f(in_dim, out_dim) -> nn.Module, "
                         f"got {type(spec).__name__}")
    param = next(net.parameters(), None)
    probe = torch.zeros(2, in_dim, device=param.device if param is not None else None,
                        dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
    with torch.no_grad():
        try:
            out = net(probe)
        except Exception as e:  # noqa: BLE001 - any failure here means the module does not fit the protocol
            raise ValueError(f"the {role} network failed on an input of shape [2, {in_dim}]: {e}") from None
    ok = isinstance(out, torch.Tensor) and (tuple(out.shape) == (2, out_dim)
                                            or (scalar_out and tuple(out.shape) in ((2,), (2, 1))))
    if not ok:
        want = "[B] or [B, 1]" if scalar_out else f"[B, {out_dim}]"
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the {role} network must map [B, {in_dim}] to {want}; for B=2 it returned {got}")
    return net


def network_source(spec: NetworkSpec | EncoderSpec) -> str | None:
    """'module:qualname' of a factory (a top-level function or class) that rebuilds `spec`, for checkpoints.

    None for the default network. A module instance, a lambda, or anything defined in __main__ is recorded
    with a '!' prefix (the checkpoint then asks for the network to be passed to load())."""
    if spec is None:
        return None
    target = spec if not isinstance(spec, nn.Module) else type(spec)
    module, qual = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    name = f"{module}:{qual}"
    if isinstance(spec, nn.Module) or module is None or "<" in qual or module == "__main__":
        return "!" + name
    return name


def load_network_factory(source: str) -> Callable[..., nn.Module]:
    """Import the factory that network_source() named."""
    module, qual = source.split(":", 1)
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def _scalar(out: torch.Tensor) -> torch.Tensor:
    return out.squeeze(-1) if out.dim() == 2 and out.shape[-1] == 1 else out


# ---- observation encoding ----------------------------------------------------------------------------------------
class ObsEncoder(nn.Module):
    """Raw observation batch -> float features [B, out_dim]: flatten a Box (cast to float32, never scaled), one-hot
    a Discrete, then (optionally) normalise by a running mean/std (Welford/Chan parallel update). The statistics
    are buffers, so they travel with state_dict() into checkpoints; they change only when the agent calls
    update_stats() (never in evaluation). No parameters: one instance serves the actor, the critic and targets.
    """

    def __init__(self, space: gym.Space, normalize: bool = False, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.discrete_n = int(space.n) if isinstance(space, gym.spaces.Discrete) else 0
        self.dim = self.out_dim = obs_dim(space)
        self.normalize = normalize
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(self.dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Un-normalised flat features. obs: [B, *obs_shape] (or [B] indices for Discrete)."""
        if self.discrete_n:
            return F.one_hot(obs.long().reshape(-1), self.discrete_n).to(torch.get_default_dtype())
        x = obs if obs.dim() == 2 else obs.reshape(obs.shape[0], self.dim)  # skip no-op calls: acting is per step
        dtype = torch.get_default_dtype()  # float32 unless set otherwise (float64 for exact comparisons)
        return x if x.dtype == dtype else x.to(dtype)

    @torch.no_grad()
    def update_stats(self, obs: torch.Tensor) -> None:
        if not self.normalize:
            return
        x = self.features(obs).to(torch.float64)
        b_mean, b_var, b_count = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean += delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta.pow(2) * self.count * b_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.features(obs)
        if self.normalize:  # statistics in float64 (long runs), applied in the features' dtype
            x = ((x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + self.eps)).clamp(-self.clip, self.clip)
        return x


# Images: detected as Stable-Baselines3 does (is_image_space with check_channels=False), encoded by a CNN.
NATURE_CNN_MIN_SIZE = 36  # the smallest height/width the Nature CNN's three convolutions leave a pixel of


def obs_storage(space: gym.Space) -> tuple[Any, Any]:
    """(shape, torch dtype) in which observations of `space` are stored in buffers and moved to the device: a uint8
    Box stays uint8 (an image crosses host->device as bytes and is scaled on the device), any other Box and a
    Discrete index are float32. For a Dict: ({key: shape}, {key: dtype}) in sorted key order."""
    if isinstance(space, gym.spaces.Dict):
        parts = {k: obs_storage(space.spaces[k]) for k in sorted(space.spaces)}
        return {k: v[0] for k, v in parts.items()}, {k: v[1] for k, v in parts.items()}
    if isinstance(space, gym.spaces.Box) and np.dtype(space.dtype) == np.uint8:
        return tuple(space.shape), torch.uint8
    return tuple(space.shape or ()), torch.float32


def is_image_space(space: gym.Space, image_obs: bool | None = None) -> bool:
    """Whether a (non-Dict) observation space is an image: a Box of rank 3 (HxWxC or CxHxW) of dtype uint8 with
    bounds 0..255 (Stable-Baselines3's rule). image_obs=False: nothing is an image (every Box is flattened into
    the MLP); True: every uint8 Box of rank 3 is one, whatever its bounds."""
    if image_obs is False or not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        return False
    if np.dtype(space.dtype) != np.uint8:
        return False
    return image_obs is True or bool(np.all(space.low == 0) and np.all(space.high == 255))


def has_image_obs(space: gym.Space, image_obs: bool | None = None) -> bool:
    """Whether the space is, or (a Dict) holds, an image."""
    if isinstance(space, gym.spaces.Dict):
        return any(is_image_space(s, image_obs) for s in space.spaces.values())
    return is_image_space(space, image_obs)


def image_channels_first(shape: Sequence[int], override: bool | None = None, name: str = "") -> bool:
    """Whether an image of this shape is CxHxW (else HxWxC). `override` (the config's image_channels_first) decides
    when given; otherwise Stable-Baselines3's rule: channels first when the first dimension is the smallest
    (the first of equal ones wins, so 3x16x3 is channels first). A shape that leaves doubt gets a warning that
    names the override."""
    if override is not None:
        return bool(override)
    smallest = int(np.argmin(shape))
    what = f"image observation{f' {name!r}' if name else ''} of shape {tuple(shape)}"
    if smallest == 1:
        warnings.warn(f"{what}: the middle dimension is the smallest; treated as channels last (HxWxC), set "
                      "image_channels_first to decide", UserWarning, stacklevel=3)
    elif int(shape[0]) == int(shape[-1]):
        warnings.warn(f"{what}: first and last dimensions are equal; treated as channels first (CxHxW), set "
                      "image_channels_first to decide", UserWarning, stacklevel=3)
    return smallest == 0


class ImageScale(nn.Module):
    """uint8 images [B, H, W, C] or [B, C, H, W] -> float32 [B, C, H, W] in [0, 1]. It runs where the batch is
    (the device): the observation crossed host->device as uint8, a quarter of float32's bytes. No parameters;
    running observation normalisation never applies to images (as Stable-Baselines3's VecNormalize skips them).
    The output is contiguous [B, C, H, W]: a permuted [B, H, W, C] batch would otherwise reach the convolutions in
    channels-last strides, and their weights' gradients would come out channels-last, which CUDA's fused Adam
    (DDPG) refuses beside its contiguous moments."""

    def __init__(self, channels_first: bool) -> None:
        super().__init__()
        self.channels_first = channels_first

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs if self.channels_first else obs.permute(0, 3, 1, 2)
        return x.to(torch.float32, memory_format=torch.contiguous_format, copy=True).div_(255.0)  # never the input

    def update_stats(self, obs: torch.Tensor) -> None:
        """Nothing to track: pixels are only scaled to [0, 1]."""


class NatureCNN(nn.Module):
    """The CNN of Mnih et al. (2015), "Human-level control through deep reinforcement learning" (Stable-Baselines3's
    default for images): Conv 32 8x8 stride 4, Conv 64 4x4 stride 2, Conv 64 3x3 stride 1 (ReLU after each),
    flatten, Linear -> features_dim, ReLU. x: float [B, C, H, W] -> [B, features_dim] (out_dim).

    Images need at least NATURE_CNN_MIN_SIZE pixels in height and width; smaller ones are refused with one line
    that suggests a smaller encoder. orthogonal: orthogonal weights (gain sqrt 2, zero biases), as SB3's
    on-policy agents initialise their feature extractor; else PyTorch's default initialisation."""

    def __init__(self, in_shape: Sequence[int], features_dim: int = 512, orthogonal: bool = True,
                 name: str = "") -> None:
        super().__init__()
        c, h, w = (int(d) for d in in_shape)
        sizes = [(h, w)]
        for k, st in ((8, 4), (4, 2), (3, 1)):
            hh, ww = sizes[-1]
            sizes.append(((hh - k) // st + 1 if hh >= k else 0, (ww - k) // st + 1 if ww >= k else 0))
        if min(sizes[-1]) < 1:
            raise ValueError(f"image observation{f' {name!r}' if name else ''} is {h}x{w} pixels (CxHxW {c}x{h}x{w}); "
                             f"the default Nature CNN needs at least {NATURE_CNN_MIN_SIZE}x{NATURE_CNN_MIN_SIZE}: "
                             "pass encoder= a smaller CNN (a factory f(observation_space) -> nn.Module; see "
                             "'Observation spaces' in docs/guide.md) or image_obs=False to flatten it into the MLP")
        self.cnn = nn.Sequential(nn.Conv2d(c, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                 nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Linear(64 * sizes[-1][0] * sizes[-1][1], features_dim)
        self.out_dim = int(features_dim)
        if orthogonal:
            for m in (*self.cnn, self.linear):
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(self.cnn(x)))


class DictObs(nn.Module):
    """{key: raw batch} -> {key: preprocessed batch}, each key by its own parameter-free part (sorted keys): an
    ObsEncoder (flatten or one-hot, running normalisation with normalize_obs) or an ImageScale (images)."""

    def __init__(self, parts: dict[str, nn.Module]) -> None:
        super().__init__()
        self.keys = sorted(parts)
        self.parts = nn.ModuleDict({k: parts[k] for k in self.keys})

    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.parts[k](obs[k]) for k in self.keys}

    @torch.no_grad()
    def update_stats(self, obs: dict[str, torch.Tensor]) -> None:
        for k in self.keys:
            self.parts[k].update_stats(obs[k])


class DictFeatures(nn.Module):
    """{key: preprocessed batch} -> [B, out_dim]: image keys through their own CNN, the other keys as they are (flat
    vectors, one-hot indices), concatenated in sorted key order."""

    def __init__(self, widths: dict[str, int], cnns: dict[str, nn.Module]) -> None:
        super().__init__()
        self.keys = sorted(widths)
        self.cnns = nn.ModuleDict(cnns)
        self.out_dim = sum(cnns[k].out_dim if k in cnns else widths[k] for k in self.keys)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.cnns[k](x[k]) if k in self.cnns else x[k] for k in self.keys], dim=-1)


class FeatureEncoder(nn.Module):
    """An encoder with trainable layers: preprocess (no parameters: image scaling, flatten/one-hot, the running
    normalisation statistics) -> body (a CNN, a Dict's per-key CNNs, or the user's encoder) -> [B, out_dim].

    Agents that train actor and critic with separate losses give each its own FeatureEncoder with the SAME
    preprocess (make_obs_encoder(..., share_statistics=...)): two sets of CNN weights, one set of statistics."""

    def __init__(self, preprocess: nn.Module, body: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.preprocess, self.body, self.out_dim = preprocess, body, int(out_dim)

    def forward(self, obs: Any) -> torch.Tensor:
        return self.body(self.preprocess(obs))

    @torch.no_grad()
    def update_stats(self, obs: Any) -> None:
        self.preprocess.update_stats(obs)


def _image_layout(space: gym.Space, cfg: Any, name: str = "") -> bool | None:
    """channels_first for an image space under cfg's image_obs / image_channels_first; None when not an image."""
    if not is_image_space(space, getattr(cfg, "image_obs", None)):
        return None
    return image_channels_first(space.shape, getattr(cfg, "image_channels_first", None), name)


def _preprocess(space: gym.Space, cfg: Any) -> nn.Module:
    normalize, clip = bool(getattr(cfg, "normalize_obs", False)), float(getattr(cfg, "clip_obs", 10.0))
    if isinstance(space, gym.spaces.Dict):
        return DictObs({k: _preprocess_part(space.spaces[k], cfg, normalize, clip, k) for k in space.spaces})
    return _preprocess_part(space, cfg, normalize, clip, "")


def _preprocess_part(space: gym.Space, cfg: Any, normalize: bool, clip: float, name: str) -> nn.Module:
    channels_first = _image_layout(space, cfg, name)
    return ObsEncoder(space, normalize, clip) if channels_first is None else ImageScale(channels_first)


def encoder_input_space(space: gym.Space, cfg: Any = None) -> gym.Space:
    """The observation space as an encoder sees it, what encoder= factories receive: images channels first
    (C, H, W), uint8 bounds 0..255 (the tensors arrive as float32 in [0, 1]); every other space as it is (a Box
    arrives flattened to [B, prod(shape)] float32, a Discrete one-hot); a Dict key by key."""
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({k: encoder_input_space(space.spaces[k], cfg) for k in sorted(space.spaces)})
    channels_first = _image_layout(space, cfg)
    if channels_first is None or channels_first:
        return space
    h, w, c = space.shape
    return gym.spaces.Box(0, 255, (c, h, w), np.uint8)


def _zeros_batch(space: gym.Space, n: int) -> Any:
    """A raw observation batch of zeros in the storage dtype (what a buffer holds before the first write)."""
    shape, dtype = obs_storage(space)
    if isinstance(shape, dict):
        return {k: torch.zeros((n, *shape[k]), dtype=dtype[k]) for k in shape}
    return torch.zeros((n, *shape), dtype=dtype)


def _describe(x: Any) -> str:
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k!r}: {list(v.shape)}" for k, v in x.items()) + "}"
    return str(list(x.shape))


def build_encoder(spec: EncoderSpec, space: gym.Space, preprocess: nn.Module, cfg: Any = None,
                  role: str = "encoder") -> tuple[nn.Module, int]:
    """(the user's encoder body, its feature width): `spec` itself (a module) or spec(encoder_input_space(space)).

    It is checked on a zero batch of two preprocessed observations: it must return a float [2, F]; F is its
    out_dim attribute when it has one (they must agree), else what it returned. A ValueError names the role and
    the shapes otherwise."""
    if isinstance(spec, nn.Module):
        body = spec
    elif callable(spec):
        body = spec(encoder_input_space(space, cfg))
        if not isinstance(body, nn.Module):
            raise ValueError(f"the {role} factory must return an nn.Module, got {type(body).__name__}")
    else:
        raise ValueError(f"{role} must be an nn.Module or a factory f(observation_space) -> nn.Module, "
                         f"got {type(spec).__name__}")
    param = next(body.parameters(), None)
    with torch.no_grad():
        x = preprocess(_zeros_batch(space, 2))
        if param is not None:
            x = {k: v.to(param.device) for k, v in x.items()} if isinstance(x, dict) else x.to(param.device)
        try:
            out = body(x)
        except Exception as e:  # noqa: BLE001 - any failure here means the module does not fit the protocol
            raise ValueError(f"the {role} network failed on a preprocessed observation batch {_describe(x)}: "
                             f"{e}") from None
    declared = getattr(body, "out_dim", None)
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 2 and out.is_floating_point()
            and (declared is None or int(declared) == out.shape[1])):
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        want = f"[B, {int(declared)}] (its out_dim)" if declared is not None else "[B, F] (float)"
        raise ValueError(f"the {role} network must map a preprocessed observation batch {_describe(x)} to {want}; "
                         f"for B=2 it returned {got}")
    return body, int(out.shape[1])


def make_obs_encoder(space: gym.Space, cfg: Any, spec: EncoderSpec = None, *, share_statistics: nn.Module | None = None,
                     orthogonal: bool = True) -> nn.Module:
    """The encoder an agent's actor or critic reads observations through: raw batch -> float features [B, out_dim].

    cfg supplies normalize_obs, clip_obs, image_obs, image_channels_first and cnn_features_dim (every agent config
    has them). The path is decided here, once:
      vector Box / Discrete   ObsEncoder (flatten or one-hot, optional running normalisation; no parameters)
      image Box               ImageScale (uint8 -> [0, 1], channels first) -> NatureCNN(cnn_features_dim)
      Dict                    per key one of the above; image keys each get their own CNN; concatenated (sorted keys)
      spec given              the same preprocessing -> the user's encoder (build_encoder)
    share_statistics: an encoder this function built for the same space. The result reads its preprocessing (one
    set of normalisation statistics) with its own trainable layers (the default ones built afresh, a factory
    called again, a module instance deep-copied); an encoder without trainable layers is returned as it is.
    orthogonal: initialisation of the default CNN (as the agent's default MLPs)."""
    if share_statistics is not None and not any(p.requires_grad for p in share_statistics.parameters()):
        return share_statistics  # nothing to train: one module serves both (vector observations, as always)
    image_obs = getattr(cfg, "image_obs", None)
    if image_obs is True and not has_image_obs(space, True):
        raise ValueError(f"image_obs=True but observation space {space} holds no uint8 Box of rank 3 (an image)")
    pre = share_statistics.preprocess if isinstance(share_statistics, FeatureEncoder) else _preprocess(space, cfg)
    if spec is not None:
        if isinstance(spec, nn.Module) and share_statistics is not None:
            spec = copy.deepcopy(spec)  # the second role gets its own weights
        body, out_dim = build_encoder(spec, space, pre, cfg)
        return FeatureEncoder(pre, body, out_dim)
    features = int(getattr(cfg, "cnn_features_dim", 512))
    if isinstance(pre, DictObs):
        cnns = {k: NatureCNN(encoder_input_space(space.spaces[k], cfg).shape, features, orthogonal, k)
                for k in pre.keys if isinstance(pre.parts[k], ImageScale)}
        body: nn.Module = DictFeatures({k: getattr(pre.parts[k], "out_dim", 0) for k in pre.keys}, cnns)
        return FeatureEncoder(pre, body, body.out_dim)  # type: ignore[arg-type]
    if isinstance(pre, ImageScale):
        cnn = NatureCNN(encoder_input_space(space, cfg).shape, features, orthogonal)
        return FeatureEncoder(pre, cnn, cnn.out_dim)
    return pre


def tie_statistics(copied: nn.Module, source: nn.Module) -> nn.Module:
    """The encoder for a target network: `copied` (a deep copy of `source`, with its own trainable weights) reading
    source's preprocessing, so one set of observation statistics serves online and target networks; an encoder
    without trainable layers is `source` itself."""
    if isinstance(source, FeatureEncoder):
        copied.preprocess = source.preprocess
        return copied
    return source


# ---- actors ------------------------------------------------------------------------------------------------------
class CategoricalLogits(nn.Module):
    """Discrete(K): pi(a|s) = softmax(logits), logits [B, K] as the network gives them. A LogitActor's `dist`: the
    table of its distribution's functions (rlkit.core.distributions)."""

    noise_kind = "uniform"  # what sample() can take from outside: one U[0, 1) per logit

    def params(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def sample(self, logits: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return D.categorical_sample(logits, noise)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return D.categorical_log_prob(logits, actions)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return D.categorical_entropy(logits)

    def kl(self, p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
        return D.categorical_kl(p_logits, q_logits)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """pi(a|s) for every action [B, K]: the layout of DiscreteQCritic.all_actions (QAC's exact E_pi[Q])."""
        return torch.softmax(logits, -1)


class MultiCategoricalLogits(nn.Module):
    """MultiDiscrete(nvec): pi(a|s) = prod_d softmax(logits_d). The network's flat [B, sum(nvec)] logits are cut into
    one block per dimension and padded to [B, D, max(nvec)] (distributions.multicategorical_*); log-probs,
    entropies and KLs sum over the dimensions. Actions are [B, D] int64 indices from 0 (the env's start is added by
    to_env_actions). Takes no sampling noise from outside (noise_kind None)."""

    noise_kind = None

    def __init__(self, nvec: Sequence[int]):
        super().__init__()
        self.nvec = tuple(int(n) for n in nvec)
        # index tensors (None for a uniform nvec) as non-persistent buffers: they follow .to(device), stay out of
        # checkpoints and are no parameters (TRPO's and A2C's flat parameter vectors never see them)
        self.register_buffer("pad_index", D.multicategorical_pad_index(self.nvec), persistent=False)
        self.register_buffer("real_index", D.multicategorical_real_index(self.nvec), persistent=False)

    def params(self, out: torch.Tensor) -> torch.Tensor:
        """Flat logits [B, sum(nvec)] -> padded logits [B, D, K]."""
        return D.multicategorical_logits(out, len(self.nvec), self.pad_index)

    def sample(self, logits: torch.Tensor, noise: None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError(f"{type(self).__name__} takes no sampling noise from outside (noise_kind None)")
        return D.multicategorical_sample(logits)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return D.multicategorical_mode(logits)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return D.multicategorical_log_prob(logits, actions)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return D.multicategorical_entropy(logits)

    def kl(self, p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
        return D.multicategorical_kl(p_logits, q_logits)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """pi_d(k|s) per dimension and choice, flat [B, sum(nvec)]: the layout of FactorisedQCritic.all_actions."""
        return D.multicategorical_probs(logits, self.real_index)


class BernoulliLogits(nn.Module):
    """MultiBinary(n): pi(a|s) = prod_d Bernoulli(a_d; sigmoid(logits_d)), one logit per bit
    (distributions.bernoulli_*); log-probs, entropies and KLs sum over the bits. Actions are [B, n] int64 0/1.
    Takes no sampling noise from outside (noise_kind None)."""

    noise_kind = None

    def params(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def sample(self, logits: torch.Tensor, noise: None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError(f"{type(self).__name__} takes no sampling noise from outside (noise_kind None)")
        return D.bernoulli_sample(logits)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return D.bernoulli_mode(logits)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return D.bernoulli_log_prob(logits, actions)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return D.bernoulli_entropy(logits)

    def kl(self, p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
        return D.bernoulli_kl(p_logits, q_logits)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(P(a_d = 0), P(a_d = 1)) per bit, flat [B, 2n]: the layout of FactorisedQCritic.all_actions."""
        return D.bernoulli_probs(logits)


LogitDistribution = CategoricalLogits | MultiCategoricalLogits | BernoulliLogits


class LogitActor(nn.Module):
    """pi(a|s) for the discrete action spaces: logits = dist.params(net(encoder(s))), with `dist` saying what they
    mean (CategoricalLogits for Discrete, MultiCategoricalLogits for MultiDiscrete, BernoulliLogits for
    MultiBinary). One actor for the three, its distribution a table of functions: the acting and likelihood code
    below is written once. `noise_kind` is the distribution's (None: sample_actions takes no noise from outside)."""

    def __init__(self, encoder: nn.Module, net: nn.Module, dist: LogitDistribution):
        super().__init__()
        self.encoder, self.net, self.dist = encoder, net, dist
        self.noise_kind = dist.noise_kind

    def reset_noise(self, n: int) -> None:
        """Nothing to redraw (gSDE is for Box actions); here so agents need not branch on the space."""

    def _logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.dist.params(self.net(self.encoder(obs)))

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor]:
        return (self._logits(obs),)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._logits(obs)
        a = self.dist.sample(logits)
        return a, self.dist.log_prob(logits, a)

    def sample_actions(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """sample() without the log-prob (what acting needs: the updates recompute log pi from the batch).
        `noise` (only where noise_kind is "uniform"): U[0, 1) draws of the logits' shape to use instead of torch's
        generator (rlkit.core.seeds draws them from each seed's own stream)."""
        return self.dist.sample(self._logits(obs), noise)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.dist.mode(self._logits(obs))

    def action_probs(self, obs: torch.Tensor) -> torch.Tensor:
        """pi(a|s) of every choice, flat, in the layout of the matching Q critic's all_actions (QAC's exact
        E_pi[Q])."""
        return self.dist.probs(self._logits(obs))

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.dist_params(obs)
        return self.log_prob_from_params(params, actions), self.entropy_from_params(params)

    def entropy_from_params(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.dist.entropy(params[0])

    def log_prob_from_params(self, params: tuple[torch.Tensor, ...], actions: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(params[0], actions)

    def kl(self, old_params: tuple[torch.Tensor, ...], new_params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.dist.kl(old_params[0], new_params[0])


class GaussianActor(nn.Module):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2) with mu = net(encoder(s)) and a state-independent, learned log_std;
    or, with use_sde, gSDE (distributions.sde_*): a = mu(s) + z(s)^T E with z = net.features(x) and per-env noise
    matrices E that reset_noise(n) redraws, so pi(a|s) = N(mu(s), sigma(s)^2) and log_std is [features, act_dim].

    Samples are unbounded; the agent clips them to the Box only when sending them to the env (the stored
    action, and so its log-prob, is the unclipped sample: clipping inside the likelihood would bias it).
    """

    noise_kind = "normal"  # what sample_actions draws: one N(0, 1) per action dimension (gSDE: its matrices instead)

    def __init__(self, encoder: nn.Module, net: nn.Module, act_dim: int, log_std_init: float = 0.0,
                 use_sde: bool = False):
        super().__init__()
        self.encoder, self.net = encoder, net
        self.sde = use_sde
        if use_sde and not (callable(getattr(net, "features", None)) and isinstance(getattr(net, "head", None),
                                                                                      nn.Linear)):
            raise ValueError("use_sde needs a policy network with features(x) and a final nn.Linear `head` "
                             "(as rlkit.core.networks.MLP has)")
        shape = (net.head.in_features, act_dim) if use_sde else (act_dim,)
        self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        self.sde_noise: torch.Tensor | None = None

    def _mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(mean, log std per sample or the parameter, last hidden features (gSDE only, else None))."""
        x = self.encoder(obs)
        if not self.sde:
            return self.net(x), self.log_std, None
        z = self.net.features(x)
        return self.net.head(z), D.sde_log_std(z, self.log_std), z

    def reset_noise(self, n: int) -> None:
        """gSDE: draw one exploration matrix per env (a no-op without use_sde)."""
        if self.sde:
            self.sde_noise = D.sde_matrices(self.log_std, n)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std, _ = self._mean_log_std(obs)
        return mean, log_std.expand_as(mean)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std, z = self._mean_log_std(obs)
        if self.sde:
            if self.sde_noise is None:
                self.reset_noise(1)
            a = mean + D.sde_noise(z, self.sde_noise)
        else:
            a = D.gaussian_sample(mean, log_std)
        return a, D.gaussian_log_prob(mean, log_std, a)

    def sample_actions(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """sample() without the log-prob (what acting needs: the updates recompute log pi from the batch).
        `noise`: N(0, 1) draws of the means' shape [B, D] to use instead of torch's generator (not with gSDE)."""
        mean, log_std, z = self._mean_log_std(obs)
        if self.sde:
            if self.sde_noise is None:
                self.reset_noise(1)
            return mean + D.sde_noise(z, self.sde_noise)
        return D.gaussian_sample(mean, log_std, noise)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.dist_params(obs)
        return self.log_prob_from_params(params, actions), self.entropy_from_params(params)

    def entropy_from_params(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return D.gaussian_entropy(params[0], params[1])

    def log_prob_from_params(self, params: tuple[torch.Tensor, ...], actions: torch.Tensor) -> torch.Tensor:
        return D.gaussian_log_prob(params[0], params[1], actions)

    def kl(self, old_params: tuple[torch.Tensor, ...], new_params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return D.gaussian_kl(old_params[0], old_params[1], new_params[0], new_params[1])


def make_actor(
    obs_space: gym.Space,
    action_space: gym.Space,
    hidden_sizes: Sequence[int],
    activation: str = "tanh",
    log_std_init: float = 0.0,
    encoder: nn.Module | None = None,
    use_sde: bool = False,
    net: NetworkSpec = None,
    orthogonal: bool = True,
) -> LogitActor | GaussianActor:
    """The stochastic actor for a space: categorical for Discrete, one categorical per dimension for MultiDiscrete,
    one Bernoulli per bit for MultiBinary, diagonal Gaussian (gSDE with use_sde) for Box.
    `net` is the user's policy network (module or factory, see the module docstring); default: an MLP with a
    0.01-gain head (near-uniform initial policy)."""
    enc = encoder if encoder is not None else ObsEncoder(obs_space)
    n_out = action_dim(action_space)
    body = build_network(net, enc.out_dim, n_out, lambda: MLP(enc.out_dim, hidden_sizes, n_out, activation, 0.01,
                                                              orthogonal), "policy")
    if isinstance(action_space, gym.spaces.Discrete):
        return LogitActor(enc, body, CategoricalLogits())
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return LogitActor(enc, body, MultiCategoricalLogits(action_nvec(action_space)))
    if isinstance(action_space, gym.spaces.MultiBinary):
        return LogitActor(enc, body, BernoulliLogits())
    return GaussianActor(enc, body, n_out, log_std_init, use_sde)


class DeterministicActor(nn.Module):
    """mu(s) = low + (tanh(net(s)) + 1) / 2 * (high - low): always inside a bounded Box. `unit(obs)` is the tanh
    output in [-1, 1], the action space the agent works in."""

    def __init__(self, encoder: nn.Module, net: nn.Module, action_space: gym.spaces.Box):
        super().__init__()
        self.encoder, self.net = encoder, net
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        self.register_buffer("scale", (high - low) / 2.0)
        self.register_buffer("bias", (high + low) / 2.0)

    def unit(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.encoder(obs)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.unit(obs) * self.scale + self.bias


# ---- critics -----------------------------------------------------------------------------------------------------
class VCritic(nn.Module):
    """V(s): [B, ...] -> [B]."""

    def __init__(self, encoder: nn.Module, net: nn.Module):
        super().__init__()
        self.encoder, self.net = encoder, net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return _scalar(self.net(self.encoder(obs)))


class QCritic(nn.Module):
    """Q(s, a) on the concatenated [features, action] input (Box actions): -> [B]."""

    def __init__(self, encoder: nn.Module, net: nn.Module, act_dim: int):
        super().__init__()
        self.encoder, self.net, self.act_dim = encoder, net, act_dim

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = self.encoder(obs)
        x = torch.cat([x, actions.reshape(actions.shape[0], self.act_dim).to(x.dtype)], dim=-1)
        return _scalar(self.net(x))


class DiscreteQCritic(nn.Module):
    """Q(s, .) with one output per Discrete action; forward(obs, actions) picks Q(s, a): -> [B]."""

    def __init__(self, encoder: nn.Module, net: nn.Module):
        super().__init__()
        self.encoder, self.net = encoder, net

    def all_actions(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.all_actions(obs).gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)


class FactorisedQCritic(nn.Module):
    """Q(s, a) = sum_d Q_d(s, a_d) for MultiDiscrete(nvec) (MultiBinary(n) as nvec = [2] * n): the network gives one
    output per (dimension, choice), flat [B, sum(nvec)]; forward(obs, actions [B, D]) sums the chosen output of each
    dimension: -> [B]. Additive in the dimensions, as the score of the product policy is (sum_d grad log pi_d), so
    under a ~ pi(.|s) its least-squares fit keeps exactly what the policy gradient uses of Q (docs/algorithms/
    actor_critic.md), and E_pi[Q] = sum of action_probs * all_actions is exact."""

    def __init__(self, encoder: nn.Module, net: nn.Module, nvec: Sequence[int]):
        super().__init__()
        self.encoder, self.net = encoder, net
        starts = np.concatenate([[0], np.cumsum(nvec)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.as_tensor(starts), persistent=False)  # where dimension d's block starts

    def all_actions(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        idx = actions.long().reshape(actions.shape[0], -1) + self.offsets
        return self.all_actions(obs).gather(-1, idx).sum(-1)


def make_v_critic(encoder: nn.Module, hidden_sizes: Sequence[int], activation: str, net: NetworkSpec = None,
                  orthogonal: bool = True) -> VCritic:
    """V(s) with the user's network or an MLP (gain-1 head) on the encoder's out_dim features."""
    d = encoder.out_dim
    body = build_network(net, d, 1, lambda: MLP(d, hidden_sizes, 1, activation, 1.0, orthogonal),
                         "critic", scalar_out=True)
    return VCritic(encoder, body)


def make_q_critic(encoder: nn.Module, action_space: gym.Space, hidden_sizes: Sequence[int], activation: str,
                  net: NetworkSpec = None, orthogonal: bool = True) -> QCritic | DiscreteQCritic | FactorisedQCritic:
    """Q(s, .) per action for Discrete(n), Q(s, a) on [features, action] for a Box, a sum of per-dimension
    outputs for MultiDiscrete and MultiBinary (FactorisedQCritic)."""
    f = encoder.out_dim
    if isinstance(action_space, gym.spaces.Discrete):
        n = int(action_space.n)
        body = build_network(net, f, n, lambda: MLP(f, hidden_sizes, n, activation, 1.0, orthogonal), "critic")
        return DiscreteQCritic(encoder, body)
    if isinstance(action_space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        nvec = action_nvec(action_space)
        body = build_network(net, f, sum(nvec), lambda: MLP(f, hidden_sizes, sum(nvec), activation, 1.0, orthogonal),
                             "critic")
        return FactorisedQCritic(encoder, body, nvec)
    d = action_dim(action_space)
    body = build_network(net, f + d, 1, lambda: MLP(f + d, hidden_sizes, 1, activation, 1.0, orthogonal),
                         "critic", scalar_out=True)
    return QCritic(encoder, body, d)
