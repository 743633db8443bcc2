"""Networks: mlp(), observation encoding and normalisation, actors (categorical, Gaussian, deterministic
tanh-scaled) and critics (V, Q on concatenated input, Q per discrete action).

Every actor exposes the same small surface so agents never branch on the space:
  sample(obs) -> (action, log_prob)     mode(obs) -> action
  dist_params(obs) -> tuple             log_prob_entropy(obs, actions) -> (log_prob, entropy)
  kl(obs, old_params) -> per-sample KL(old || new)
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlkit.core import distributions as D

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def mlp(
    in_dim: int,
    hidden_sizes: Sequence[int],
    out_dim: int,
    activation: str = "tanh",
    output_gain: float = 1.0,
    orthogonal: bool = True,
) -> nn.Sequential:
    """in -> hidden... -> out, with orthogonal init (gain sqrt(2) inside, `output_gain` on the last layer)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], out_dim))
    if orthogonal:
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        for i, m in enumerate(linears):
            nn.init.orthogonal_(m.weight, gain=output_gain if i == len(linears) - 1 else math.sqrt(2))
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def obs_dim(space: gym.Space) -> int:
    """Width of the flat float vector an observation becomes (Box: flattened; Discrete: one-hot)."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise TypeError(f"observation space {space} is not supported; supported: Box, Discrete")


def action_dim(space: gym.Space) -> int:
    """Number of actor outputs: K logits for Discrete(K), D means for Box of D dims."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"action space {space} is not supported; supported: Box, Discrete")


class ObsEncoder(nn.Module):
    """Raw observation batch -> float features: flatten a Box, one-hot a Discrete, then (optionally) normalise
    by a running mean/std (Welford/Chan parallel update). The statistics are buffers, so they travel with
    state_dict() into checkpoints; they change only when the agent calls update_stats() (never in evaluation).
    """

    def __init__(self, space: gym.Space, normalize: bool = False, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.discrete_n = int(space.n) if isinstance(space, gym.spaces.Discrete) else 0
        self.dim = obs_dim(space)
        self.normalize = normalize
        self.clip = clip
        self.eps = eps
        self.register_buffer("mean", torch.zeros(self.dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Un-normalised flat features. obs: [B, *obs_shape] (or [B] indices for Discrete)."""
        if self.discrete_n:
            return nn.functional.one_hot(obs.long().reshape(-1), self.discrete_n).to(torch.float32)
        return obs.reshape(obs.shape[0], self.dim).to(torch.float32)

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
        if self.normalize:
            x = ((x - self.mean.float()) / torch.sqrt(self.var.float() + self.eps)).clamp(-self.clip, self.clip)
        return x


class CategoricalActor(nn.Module):
    """pi(a|s) = softmax(logits(s)) over Discrete(K)."""

    def __init__(self, encoder: ObsEncoder, n_actions: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.encoder = encoder
        self.net = mlp(encoder.dim, hidden_sizes, n_actions, activation, output_gain=0.01)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(self.encoder(obs)),)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(self.encoder(obs))
        a = D.categorical_sample(logits)
        return a, D.categorical_log_prob(logits, a)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs)).argmax(-1)

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(self.encoder(obs))
        return D.categorical_log_prob(logits, actions), D.categorical_entropy(logits)

    def log_prob_from_params(self, params: tuple[torch.Tensor, ...], actions: torch.Tensor) -> torch.Tensor:
        return D.categorical_log_prob(params[0], actions)

    def kl(self, old_params: tuple[torch.Tensor, ...], new_params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return D.categorical_kl(old_params[0], new_params[0])


class GaussianActor(nn.Module):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2) with a state-independent, learned log_std; or, with use_sde,
    gSDE (distributions.sde_*): a = mu(s) + z(s)^T E with per-env noise matrices E that reset_noise(n) redraws,
    so pi(a|s) = N(mu(s), sigma(s)^2) and log_std is a [features, act_dim] parameter.

    Samples are unbounded; the agent clips them to the Box only when sending them to the env (the stored
    action, and so its log-prob, is the unclipped sample: clipping inside the likelihood would bias it).
    """

    def __init__(
        self,
        encoder: ObsEncoder,
        act_dim: int,
        hidden_sizes: Sequence[int],
        activation: str,
        log_std_init: float = 0.0,
        use_sde: bool = False,
    ):
        super().__init__()
        self.encoder = encoder
        self.net = mlp(encoder.dim, hidden_sizes, act_dim, activation, output_gain=0.01)
        self.sde = use_sde
        shape = ((hidden_sizes[-1] if hidden_sizes else encoder.dim), act_dim) if use_sde else (act_dim,)
        self.log_std = nn.Parameter(torch.full(shape, float(log_std_init)))
        self.sde_noise: torch.Tensor | None = None

    def _mean_log_std(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, log std per sample or the parameter, last hidden features (gSDE only, else None))."""
        if not self.sde:
            return self.net(self.encoder(obs)), self.log_std, None
        z = self.net[:-1](self.encoder(obs))
        return self.net[-1](z), D.sde_log_std(z, self.log_std), z

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

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def log_prob_entropy(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std, _ = self._mean_log_std(obs)
        return D.gaussian_log_prob(mean, log_std, actions), D.gaussian_entropy(mean, log_std)

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
    encoder: ObsEncoder | None = None,
    use_sde: bool = False,
) -> CategoricalActor | GaussianActor:
    """The stochastic actor for a space: categorical for Discrete, diagonal Gaussian (gSDE with use_sde) for Box."""
    enc = encoder if encoder is not None else ObsEncoder(obs_space)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalActor(enc, int(action_space.n), hidden_sizes, activation)
    if isinstance(action_space, gym.spaces.Box):
        return GaussianActor(enc, action_dim(action_space), hidden_sizes, activation, log_std_init, use_sde)
    raise TypeError(f"action space {action_space} is not supported; supported: Box, Discrete")


class DeterministicActor(nn.Module):
    """mu(s) = low + (tanh(net(s)) + 1) / 2 * (high - low): always inside a bounded Box."""

    def __init__(self, encoder: ObsEncoder, action_space: gym.spaces.Box, hidden_sizes: Sequence[int],
                 activation: str = "relu"):
        super().__init__()
        self.encoder = encoder
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        self.register_buffer("scale", (high - low) / 2.0)
        self.register_buffer("bias", (high + low) / 2.0)
        self.net = mlp(encoder.dim, hidden_sizes, low.numel(), activation, orthogonal=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(self.encoder(obs))) * self.scale + self.bias


class VCritic(nn.Module):
    """V(s): [B, ...] -> [B]."""

    def __init__(self, encoder: ObsEncoder, hidden_sizes: Sequence[int], activation: str = "tanh"):
        super().__init__()
        self.encoder = encoder
        self.net = mlp(encoder.dim, hidden_sizes, 1, activation, output_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs)).squeeze(-1)


class QCritic(nn.Module):
    """Q(s, a) on the concatenated [features, action] input (Box actions): -> [B]."""

    def __init__(self, encoder: ObsEncoder, act_dim: int, hidden_sizes: Sequence[int], activation: str = "relu",
                 orthogonal: bool = False):
        super().__init__()
        self.encoder = encoder
        self.act_dim = act_dim
        self.net = mlp(encoder.dim + act_dim, hidden_sizes, 1, activation, orthogonal=orthogonal)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.encoder(obs), actions.reshape(actions.shape[0], self.act_dim).float()], dim=-1)
        return self.net(x).squeeze(-1)


class DiscreteQCritic(nn.Module):
    """Q(s, .) with one output per Discrete action; forward(obs, actions) picks Q(s, a): -> [B]."""

    def __init__(self, encoder: ObsEncoder, n_actions: int, hidden_sizes: Sequence[int], activation: str = "tanh"):
        super().__init__()
        self.encoder = encoder
        self.net = mlp(encoder.dim, hidden_sizes, n_actions, activation, output_gain=1.0)

    def all_actions(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoder(obs))

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.all_actions(obs).gather(-1, actions.long().reshape(-1, 1)).squeeze(-1)


class NumpyEncoder:
    """ObsEncoder.forward in NumPy, reading the encoder's live statistics through zero-copy views (update_stats and
    load_state_dict write them in place)."""

    def __init__(self, encoder: ObsEncoder) -> None:
        self.discrete_obs, self.dim, self.normalize = encoder.discrete_n, encoder.dim, encoder.normalize
        self.mean, self.var, self.eps, self.clip = encoder.mean.numpy(), encoder.var.numpy(), encoder.eps, encoder.clip

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.eye(self.dim, dtype=np.float32)[x.astype(np.int64).reshape(-1)] if self.discrete_obs \
            else x.reshape(x.shape[0], self.dim)
        if self.normalize:
            x = np.clip((x - self.mean) / np.sqrt(self.var + self.eps), -self.clip, self.clip).astype(np.float32)
        return x


class NumpyMLP:
    """Linear layers of torch modules run in NumPy on zero-copy views of their parameters: a forward pass that
    keeps every layer's output, and the matching backward pass, which WRITES each parameter's .grad (a view too).

    Why: on the CPU, a batch of tens of rows through a 64-64 MLP costs per-op overhead, not arithmetic, and a NumPy
    op costs a quarter to a half of a torch op (A2C's forward + backward of two 64-64 trunks on 40 rows: ~250 us
    in NumPy, ~1,300 us with torch ops, ~2,000 us with autograd, on the 2-core benchmark machine). Optimisers,
    load_state_dict and FlatParameters write the same memory, so the views always see the current weights.
    Layers: h_{l+1} = act(h_l W_l^T + b_l), except the last, which is linear unless out_activation (a trunk).
    """

    def __init__(self, linears: Sequence[tuple[torch.Tensor, torch.Tensor]], activation: str,
                 out_activation: bool = False) -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"NumpyMLP supports tanh and relu hidden layers, not {activation!r}")
        self.linears = list(linears)
        self.wt = [w.detach().numpy().T for w, _ in self.linears]  # x @ W^T without a transpose per call
        self.b = [b.detach().numpy() for _, b in self.linears]
        self.tanh = activation == "tanh"
        self.n_act = len(self.linears) if out_activation else len(self.linears) - 1
        self._grads: list[tuple[np.ndarray, np.ndarray]] | None = None

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """[x, h_1, ..., output] (the list backward() needs; output = the last entry)."""
        hs = [x]
        for i, (wt, b) in enumerate(zip(self.wt, self.b)):
            h = hs[-1] @ wt
            h += b
            if i < self.n_act:
                np.tanh(h, out=h) if self.tanh else np.maximum(h, 0.0, out=h)
            hs.append(h)
        return hs

    def backward(self, hs: Sequence[np.ndarray], g: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """g = d loss / d output [B, out]; writes d loss / d W = g_l^T h_l and d loss / d b = sum_B g_l into the
        parameters' .grad (which must exist: FlatParameters makes them). hs may hold more rows than g (rows
        without a loss term, e.g. bootstrap observations): only the first B are used. Returns d loss / d x when
        input_grad."""
        if self._grads is None:
            if any(w.grad is None or b.grad is None for w, b in self.linears):
                raise RuntimeError("NumpyMLP.backward needs every parameter's .grad to exist (use FlatParameters)")
            self._grads = [(w.grad.numpy(), b.grad.numpy()) for w, b in self.linears]
        rows = g.shape[0]
        for i in range(len(self.wt) - 1, -1, -1):
            if i < self.n_act:  # act'(x) from the output y: tanh' = 1 - y^2, relu' = [y > 0]
                y = hs[i + 1][:rows]
                g = g * (1.0 - y * y) if self.tanh else g * (y > 0.0)
            gw, gb = self._grads[i]
            np.matmul(g.T, hs[i][:rows], out=gw)
            np.sum(g, axis=0, out=gb)
            if i > 0 or input_grad:
                g = g @ self.wt[i].T
        return g if input_grad else None


class NumpyPolicy:
    """A stochastic actor's sample() on the CPU in NumPy (NumpyEncoder + NumpyMLP on the actor's own parameters).

    Why: an acting batch is n_envs rows, so its cost is per-op overhead, not arithmetic. Noise is drawn from
    torch's generator exactly as CategoricalActor/GaussianActor.sample draw it, so seeding and checkpointed RNG
    state behave the same. Supports tanh and relu hidden layers.

    linears: the (weight, bias) of each Linear layer in order, the output layer last. With sde_noise (gSDE,
    distributions.sde_*), log_std is the [features, act_dim] parameter and sde_noise() returns the current noise
    matrices [n_envs, features, act_dim] (a CPU tensor the agent redraws).
    """

    def __init__(self, encoder: ObsEncoder, linears: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 activation: str, log_std: torch.Tensor | None,
                 sde_noise: Callable[[], torch.Tensor] | None = None) -> None:
        self.encode = NumpyEncoder(encoder)
        self.mlp = NumpyMLP(linears, activation)
        self.log_std = None if log_std is None else log_std.detach().numpy()
        self.sde_noise = sde_noise
        self._noise: dict[tuple[int, ...], tuple[torch.Tensor, np.ndarray]] = {}

    def _draw(self, shape: tuple[int, ...]) -> np.ndarray:
        """torch.rand(shape) (Discrete) or torch.randn(shape) (Box) into a reused buffer: the same draws from
        torch's generator, without allocating a tensor per step."""
        if shape not in self._noise:
            buf = torch.empty(shape)
            self._noise[shape] = (buf, buf.numpy())
        buf, arr = self._noise[shape]
        buf.uniform_() if self.log_std is None else buf.normal_()
        return arr

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, logp = self.sample_numpy(obs.numpy())
        return torch.from_numpy(a), torch.from_numpy(logp)

    def sample_numpy(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(actions, log-probs) for a NumPy observation batch."""
        hs = self.mlp.forward(self.encode(obs))
        out = hs[-1]
        if self.sde_noise is not None:  # gSDE: a = mu + z^T E, as distributions.sde_noise / sde_log_std
            z, e = hs[-2], self.sde_noise().numpy()
            e = e if e.shape[0] == z.shape[0] else np.broadcast_to(e[:1], (z.shape[0], *e.shape[1:]))
            noise = np.matmul(z[:, None, :], e)[:, 0, :]
            log_std = 0.5 * np.log((z * z) @ np.exp(2.0 * self.log_std) + np.float32(1e-6))
            a = out + noise
            logp = (-0.5 * (noise * np.exp(-log_std)) ** 2 - log_std - np.float32(0.5 * math.log(2.0 * math.pi)))
            return a.astype(np.float32, copy=False), logp.sum(-1, dtype=np.float32)
        if self.log_std is None:  # Gumbel-max sample and log-softmax, as distributions.categorical_*
            u = self._draw(out.shape)
            a = np.argmax(out - np.log(-np.log(np.maximum(u, 1e-20))), axis=-1)
            z = out - out.max(-1, keepdims=True)
            return a, z[np.arange(z.shape[0]), a] - np.log(np.exp(z).sum(-1))
        noise = self._draw(out.shape)  # a = mean + std * eps, as distributions.gaussian_*
        a = out + np.exp(self.log_std) * noise
        logp = (-0.5 * noise * noise - self.log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1, dtype=np.float32)
        return a.astype(np.float32, copy=False), logp
