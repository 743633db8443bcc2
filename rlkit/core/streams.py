"""Counter-based random streams: random numbers as a pure function of (key, counter, element index).

A CounterStream holds a key (two 32-bit words, from the seed) and an int64 `counter` on the device. A draw of
shape S is hash(key, counter, i) for every element index i of S, computed by a few elementwise torch integer
ops, and then advances `counter` by one, in place. Nothing is read back to the host and nothing depends on a
host value, so a draw inside a CUDA graph is replayed correctly (each replay advances the counter on the device;
no generator needs registering), and CPU and CUDA compute the same bits.

Streams can be batched: a CounterStream with keys [K, 2] and counters [K] draws [K, *S] in ONE set of kernels,
row k exactly what the lone stream (key k, counter k) draws. So K seeds, each with its own stream, cost one draw
(rlkit.core.seeds stacks the seeds' streams; each seed's counter becomes a view of its row). A block of `steps`
consecutive draws can be taken at once (steps=T: [T, *S], counters counter..counter+T-1): exactly the T single
draws, in one set of kernels.

The hash. Every value is a 32-bit word held in an int64 tensor; the mixing function is hash-prospector's
two-round 32-bit finaliser (xorshift 16, multiply 0x21f0aaad, xorshift 15, multiply 0x735a2d97, xorshift 15;
avalanche bias about 0.11, as its 0xd35a2d97 twin), whose multipliers are below 2^31, so a product of a 32-bit
word stays below 2^63: no int64 op overflows and the results are exact on every device. With h = mix:

    lane(key, i)  = h(h(i ^ key0) ^ key1)        one per element index; a bijection of i for a fixed key
    c(key, n)     = h(n ^ key1)                  the counter word of draw n (a bijection of n)
    word(n, i)    = h(lane(key, i) ^ c(key, n))

lane() does not depend on the counter and is computed once per shape and kept. Within one draw the words are
distinct (a bijection of i); consecutive draws differ by a fully mixed word; two keys have unrelated lanes and
counter words. A float32 uniform takes the top 24 bits of one word, a float64 one 53 bits of two (elements i
and n + i of a draw of 2n words); normals are Box-Muller, sqrt(-2 log u1) cos(2 pi u2), from two uniforms (so
their last bits may differ between devices, as log and cos do). A stream holds 2^32 draws (the counter's low 32
bits enter the hash): at 10,000 draws a second, five days. tests/core/test_streams.py checks the hash against a
pure-Python oracle and the draws' quality (uniformity, serial and cross-key correlation, normal moments).
"""
from __future__ import annotations

import math
import weakref
from typing import Sequence

import numpy as np
import torch

_M32 = 0xFFFFFFFF
_MUL1, _MUL2 = 0x21F0AAAD, 0x735A2D97  # both < 2^31: a 32-bit word times either stays below 2^63

# Stream ids: one agent seed gives each of its streams its own key (numpy SeedSequence([seed, id])).
ENV_RESETS = 0  # a TorchVecEnv's reset states
ACTION_NOISE = 0x6E6F6973  # the collector's action noise on a torch env ("nois")


def mix32(x: torch.Tensor) -> torch.Tensor:
    """hash-prospector's two-round 32-bit finaliser on 32-bit words held in int64 (a new tensor; a bijection)."""
    return _mix32_after_xorshift(x ^ (x >> 16))


def _mix32_after_xorshift(x: torch.Tensor) -> torch.Tensor:
    """mix32 without its first step x ^ (x >> 16), in place. That step distributes over xor ((a ^ b) ^ ((a ^ b) >>
    16) = (a ^ (a >> 16)) ^ (b ^ (b >> 16))), so a draw applies it to the kept lanes and the small counter words
    instead of to every element: two passes over the draw fewer, the same words."""
    x.mul_(_MUL1).bitwise_and_(_M32)
    x.bitwise_xor_(x >> 15)
    x.mul_(_MUL2).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 15)


def stream_key(seed: int | None, stream: int) -> tuple[int, int]:
    """The two 32-bit key words of stream `stream` of a seed: numpy's SeedSequence([seed, stream]) (adjacent seeds
    give unrelated keys); seed None: fresh entropy from the OS (a nondeterministic stream)."""
    ss = np.random.SeedSequence() if seed is None else np.random.SeedSequence([int(seed), int(stream)])
    k0, k1 = (int(w) for w in ss.generate_state(2, dtype=np.uint32))
    return k0, k1


class CounterStream:
    """A counter-based random stream (see the module docstring), or a batch of them.

    `keys` int64 [*B, 2] (two 32-bit words per stream), `counter` int64 [*B] on the same device: B is the batch
    shape, () for one stream. Draws have shape [*B, *shape] (with steps=T: [*B, T, *shape]). The key is fixed
    while drawing (reseed_() changes it and forgets what was computed from it)."""

    def __init__(self, keys: torch.Tensor, counter: torch.Tensor) -> None:
        if keys.dtype != torch.int64 or keys.shape[-1:] != (2,) or counter.dtype != torch.int64 \
                or tuple(counter.shape) != tuple(keys.shape[:-1]) or counter.device != keys.device:
            raise ValueError(f"CounterStream takes int64 keys [*B, 2] and an int64 counter [*B] on one device, got "
                             f"keys {keys.dtype} {tuple(keys.shape)} and counter {counter.dtype} "
                             f"{tuple(counter.shape)}")
        self.keys, self.counter = keys, counter
        self._lanes: dict[int, torch.Tensor] = {}  # lane words [*B, n] by n: they depend on the key only
        self._offsets: dict[int, torch.Tensor] = {}  # arange(steps) by steps
        # batches whose keys alias this stream's (stack_streams): reseed_() refreshes their lane words too
        self._batches: weakref.WeakSet[CounterStream] = weakref.WeakSet()

    @classmethod
    def seeded(cls, seed: int | None, stream: int, device: torch.device | str = "cpu") -> "CounterStream":
        """One stream keyed by stream_key(seed, stream), at counter 0."""
        return cls(torch.tensor(stream_key(seed, stream), dtype=torch.int64, device=device),
                   torch.zeros((), dtype=torch.int64, device=device))

    @property
    def device(self) -> torch.device:
        return self.counter.device

    def reseed_(self, seed: int | None, stream: int) -> None:
        """Re-key a single stream (in place: tensors that alias it follow) and restart it at counter 0."""
        if self.counter.dim() != 0:
            raise ValueError("reseed_ re-keys a single stream, not a batch of them")
        self.keys.copy_(torch.tensor(stream_key(seed, stream), dtype=torch.int64))
        self.counter.zero_()
        for s in (self, *self._batches):
            s._refresh_lanes()

    def _refresh_lanes(self) -> None:
        """Recompute the kept lane words from the (new) key IN PLACE: a CUDA graph that captured them, and a
        batch whose keys alias this stream's, read the new words."""
        for n, lanes in self._lanes.items():
            lanes.copy_(self._compute_lanes(n))

    # ---- the words ------------------------------------------------------------------------------------------
    def _compute_lanes(self, n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.int64, device=self.device)
        k0, k1 = self.keys[..., 0:1], self.keys[..., 1:2]
        lanes = mix32(mix32(i ^ k0) ^ k1)
        return lanes ^ (lanes >> 16)  # kept with mix32's first step applied (words())

    def _lane_words(self, n: int) -> torch.Tensor:
        lanes = self._lanes.get(n)
        if lanes is None:
            lanes = self._lanes[n] = self._compute_lanes(n)
        return lanes

    def words(self, n: int, steps: int | None = None) -> torch.Tensor:
        """The next draw of n 32-bit words [*B, n] (steps=T: the next T draws [*B, T, n]); advances the counter."""
        lanes = self._lane_words(n)
        k1 = self.keys[..., 1]
        if steps is None:
            c = mix32((self.counter & _M32) ^ k1)
            out = _mix32_after_xorshift(lanes ^ (c ^ (c >> 16)).unsqueeze(-1))  # = mix32(lane ^ c)
            self.counter.add_(1)
            return out
        offsets = self._offsets.get(steps)
        if offsets is None:
            offsets = self._offsets[steps] = torch.arange(steps, dtype=torch.int64, device=self.device)
        c = mix32(((self.counter.unsqueeze(-1) + offsets) & _M32) ^ k1.unsqueeze(-1))  # [*B, T]
        out = _mix32_after_xorshift(lanes.unsqueeze(-2) ^ (c ^ (c >> 16)).unsqueeze(-1))  # = mix32(lane ^ c)
        self.counter.add_(steps)
        return out

    # ---- floats ---------------------------------------------------------------------------------------------
    def uniform(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, steps: int | None = None
                ) -> torch.Tensor:
        """U[0, 1) draws [*B, *shape] (steps=T: [*B, T, *shape]) of float32 (24 random bits) or float64 (53)."""
        n = math.prod(shape)
        bits = self._bits(dtype)
        w = self.words(n * (2 if bits == 53 else 1), steps)
        return self._unit(w, n, bits, dtype, open_low=False).view(*w.shape[:-1], *shape)

    def normal(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, steps: int | None = None
               ) -> torch.Tensor:
        """N(0, 1) draws [*B, *shape] (steps=T: [*B, T, *shape]) by Box-Muller from two uniforms per element."""
        n = math.prod(shape)
        bits = self._bits(dtype)
        per = 2 if bits == 53 else 1
        w = self.words(2 * n * per, steps)
        u1 = self._unit(w[..., :n * per], n, bits, dtype, open_low=True)  # (0, 1]: log(u1) is finite
        u2 = self._unit(w[..., n * per:], n, bits, dtype, open_low=False)
        z = u1.log_().mul_(-2.0).sqrt_().mul_(torch.cos(u2.mul_(2 * math.pi)))
        return z.view(*w.shape[:-1], *shape)

    def draw(self, kind: str, shape: Sequence[int], dtype: torch.dtype = torch.float32, steps: int | None = None
             ) -> torch.Tensor:
        """uniform() for kind "uniform", normal() for "normal" (an actor's noise_kind)."""
        if kind == "uniform":
            return self.uniform(shape, dtype, steps)
        if kind == "normal":
            return self.normal(shape, dtype, steps)
        raise ValueError(f"a CounterStream draws 'uniform' or 'normal' noise, not {kind!r}")

    @staticmethod
    def _bits(dtype: torch.dtype) -> int:
        if dtype == torch.float32:
            return 24
        if dtype == torch.float64:
            return 53
        raise ValueError(f"a CounterStream draws float32 or float64, not {dtype}")

    @staticmethod
    def _unit(w: torch.Tensor, n: int, bits: int, dtype: torch.dtype, open_low: bool) -> torch.Tensor:
        """Words -> k/2^bits in [0, 1) (open_low: (k + 1)/2^bits in (0, 1]); 53 bits join words i and n + i."""
        if bits == 24:
            k = w >> 8
        else:
            k = torch.add(w[..., n:] >> 6, w[..., :n] >> 5, alpha=1 << 26)  # 27 + 26 bits
        if open_low:
            k = k + 1
        return k.to(dtype).mul_(2.0 ** -bits)
