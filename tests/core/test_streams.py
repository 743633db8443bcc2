"""Counter-based random streams (rlkit.core.streams): the hash against a pure-Python oracle, batches and blocks of
draws against lone single draws, the quality of the draws (uniformity, bits, serial and cross-key correlation,
normal moments), the torch env's reset stream, and CUDA (the same bits as the CPU; draws inside a CUDA graph)."""
from __future__ import annotations

import math

import pytest
import torch

from rlkit.core.streams import ACTION_NOISE, ENV_RESETS, CounterStream, mix32, stream_key

M = 0xFFFFFFFF


# ---- the oracle: the documented hash in plain Python integers -------------------------------------------------------
def h(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M
    x ^= x >> 15
    x = (x * 0x735A2D97) & M
    return x ^ (x >> 15)


def word(key: tuple[int, int], n: int, i: int) -> int:
    lane = h(h(i ^ key[0]) ^ key[1])
    return h(lane ^ h((n & M) ^ key[1]))


def test_mix32_is_the_documented_finaliser_and_a_bijection():
    xs = [0, 1, 2, 0x7FFFFFFF, 0x80000000, M, 0x12345678, 0xDEADBEEF]
    assert mix32(torch.tensor(xs)).tolist() == [h(x) for x in xs]
    lows = torch.arange(1 << 16)
    assert mix32(lows).unique().numel() == 1 << 16 and int(mix32(lows).max()) <= M  # distinct 32-bit words


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_draws_match_the_oracle(dtype):
    s = CounterStream.seeded(7, ACTION_NOISE)
    key = stream_key(7, ACTION_NOISE)
    assert s.keys.tolist() == list(key) and int(s.counter) == 0
    s.counter.fill_(2**32 - 2)  # the counter's low 32 bits enter the hash
    w = s.words(5)
    assert w.tolist() == [word(key, 2**32 - 2, i) for i in range(5)] and int(s.counter) == 2**32 - 1
    u = s.uniform((2, 3), dtype)
    n = int(s.counter) - 1
    if dtype == torch.float32:
        expect = [(word(key, n, i) >> 8) / 2**24 for i in range(6)]
    else:
        expect = [((word(key, n, i) >> 5) * 2**26 + (word(key, n, 6 + i) >> 6)) / 2**53 for i in range(6)]
    assert u.dtype == dtype and u.shape == (2, 3) and u.flatten().tolist() == expect
    z = s.normal((4,), dtype)  # Box-Muller from words [0, per * 4) (u1, in (0, 1]) and [per * 4, per * 8) (u2)
    n, per = int(s.counter) - 1, 1 if dtype == torch.float32 else 2

    def unit(j: int, low: bool) -> float:
        if per == 1:
            k = word(key, n, j) >> 8
        else:
            k = (word(key, n, j) >> 5) * 2**26 + (word(key, n, j + 4) >> 6)
        return (k + low) / 2 ** (24 if per == 1 else 53)

    for i in range(4):
        u1, u2 = unit(i, True), unit(4 * per + i, False)
        assert float(z[i]) == pytest.approx(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2), abs=1e-5)


def test_a_batch_draws_each_lone_stream_and_a_block_draws_consecutive_draws():
    lone = [CounterStream.seeded(s, ENV_RESETS) for s in (0, 1, 2)]
    lone[1].counter.fill_(5)
    batch = CounterStream(torch.stack([s.keys for s in lone]), torch.stack([s.counter for s in lone]))
    for kind, dtype in (("uniform", torch.float32), ("uniform", torch.float64), ("normal", torch.float32),
                        ("normal", torch.float64)):
        block = batch.draw(kind, (4, 3), dtype, steps=3)  # [K, T, 4, 3]
        single = batch.draw(kind, (4, 3), dtype)  # [K, 4, 3]: the draw after the block
        assert block.shape == (3, 3, 4, 3) and single.shape == (3, 4, 3) and block.dtype == dtype
        for k, s in enumerate(lone):
            for t in range(3):
                assert torch.equal(block[k, t], s.draw(kind, (4, 3), dtype))
            assert torch.equal(single[k], s.draw(kind, (4, 3), dtype))
    assert batch.counter.tolist() == [int(s.counter) for s in lone] == [16, 21, 16]
    assert not torch.equal(block[0], block[2])  # the seeds' streams differ


def test_seeding_reseeding_and_bad_inputs():
    a, b = CounterStream.seeded(3, ENV_RESETS), CounterStream.seeded(3, ENV_RESETS)
    assert torch.equal(a.uniform((8,)), b.uniform((8,)))
    assert not torch.equal(CounterStream.seeded(3, ACTION_NOISE).uniform((8,)), a.uniform((8,)))
    assert not torch.equal(CounterStream.seeded(None, 0).uniform((8,)), CounterStream.seeded(None, 0).uniform((8,)))
    first = a.uniform((8,))
    a.reseed_(3, ENV_RESETS)
    assert int(a.counter) == 0 and torch.equal(a.uniform((8,)), CounterStream.seeded(3, ENV_RESETS).uniform((8,)))
    a.reseed_(4, ENV_RESETS)  # what was computed from the old key is forgotten
    assert torch.equal(a.uniform((8,)), CounterStream.seeded(4, ENV_RESETS).uniform((8,)))
    assert not torch.equal(first, a.uniform((8,)))
    with pytest.raises(ValueError, match="draws float32 or float64, not torch.float16"):
        a.uniform((2,), torch.float16)
    with pytest.raises(ValueError, match="draws 'uniform' or 'normal' noise, not 'gumbel'"):
        a.draw("gumbel", (2,))
    with pytest.raises(ValueError, match="int64 keys"):
        CounterStream(torch.zeros(3, dtype=torch.int64), torch.zeros((), dtype=torch.int64))
    batch = CounterStream(torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="re-keys a single stream"):
        batch.reseed_(1, 0)


def test_reseeding_a_stream_refreshes_its_kept_words_in_place_and_those_of_its_batch():
    """env.reset(seed=...) on a seed of a batch (or of a lone run whose rollout is a CUDA graph): the lane words
    kept from the old key are recomputed in the same tensors, so the batch and a captured graph draw the new key's
    stream, as a fresh stream of that seed would."""
    from rlkit.core.seeds import _stack_streams
    a, b = CounterStream.seeded(1, ENV_RESETS), CounterStream.seeded(2, ENV_RESETS)
    batch = _stack_streams([a, b])
    batch.uniform((5,), steps=3)
    kept = a._lane_words(5)
    a.uniform((5,))
    a.reseed_(7, ENV_RESETS)
    assert a._lane_words(5) is kept  # the same storage, new words
    b_next = CounterStream.seeded(2, ENV_RESETS)
    b_next.counter.fill_(3)
    rows = batch.uniform((5,))
    assert torch.equal(rows[0], CounterStream.seeded(7, ENV_RESETS).uniform((5,)))
    assert torch.equal(rows[1], b_next.uniform((5,)))


# ---- quality --------------------------------------------------------------------------------------------------------
def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    return float(torch.corrcoef(torch.stack([x, y]))[0, 1])


def test_uniforms_are_uniform_and_their_bits_fair():
    s = CounterStream.seeded(0, ENV_RESETS)
    u = s.uniform((64, 64), steps=32).flatten()  # 131,072 draws: 32 draws of 4,096 elements
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.histc(u, bins=256, min=0.0, max=1.0)
    expected = u.numel() / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())  # 255 degrees of freedom: mean 255, sd 22.6
    assert 255 - 5 * 22.6 < chi2 < 255 + 5 * 22.6, chi2
    w = s.words(4096, steps=32).flatten()
    bits = torch.stack([(w >> b) & 1 for b in range(32)]).double().mean(1)  # each bit set half the time
    assert (bits - 0.5).abs().max() < 5 * 0.5 / math.sqrt(w.numel()), bits
    u64 = s.uniform((4096,), torch.float64)
    assert ((u64 * 2**53) % 2**29 != 0).float().mean() > 0.99  # 53 random bits, not float32's 24


def test_draws_are_uncorrelated_across_counters_elements_and_keys():
    n, T = 1024, 128
    lim = 5 / math.sqrt(n * (T - 1))
    a = CounterStream.seeded(0, ENV_RESETS).uniform((n,), steps=T)  # [T, n]
    b = CounterStream.seeded(1, ENV_RESETS).uniform((n,), steps=T)  # the adjacent seed
    c = CounterStream.seeded(0, ACTION_NOISE).uniform((n,), steps=T)  # another stream of the same seed
    assert abs(_corr(a[1:], a[:-1])) < lim  # serial: each element's draw n+1 against draw n
    assert abs(_corr(a[:, 1:], a[:, :-1])) < lim  # neighbouring elements of a draw
    assert abs(_corr(a, b)) < lim and abs(_corr(a, c)) < lim  # keys
    # consecutive draws differ in half of their 32 bits on average (the counter word is fully mixed)
    s = CounterStream.seeded(0, ENV_RESETS)
    w = s.words(n, steps=T)
    flips = torch.stack([((w[1:] ^ w[:-1]) >> b) & 1 for b in range(32)]).double().sum(0).mean()
    assert abs(float(flips) - 16) < 5 * math.sqrt(8 / (n * (T - 1)))
    # products of pairs stay at 1/4: no dependence that correlation would miss (squares of neighbours)
    sq = a.double() ** 2
    assert abs(_corr(sq[1:], sq[:-1])) < lim and abs(_corr(sq, b.double() ** 2)) < lim


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normals_have_normal_moments(dtype):
    z = CounterStream.seeded(5, ACTION_NOISE).normal((1024,), dtype, steps=128).double().flatten()
    n = z.numel()
    assert torch.isfinite(z).all()
    mean, var = float(z.mean()), float(z.var())
    skew = float(((z - mean) ** 3).mean()) / var ** 1.5
    kurt = float(((z - mean) ** 4).mean()) / var ** 2 - 3
    assert abs(mean) < 5 / math.sqrt(n) and abs(var - 1) < 5 * math.sqrt(2 / n)
    assert abs(skew) < 5 * math.sqrt(6 / n) and abs(kurt) < 5 * math.sqrt(24 / n)
    tail = float((z.abs() > 2).double().mean())  # P(|z| > 2) = 0.0455
    assert abs(tail - 0.0455) < 5 * math.sqrt(0.0455 * 0.9545 / n)
    assert abs(_corr(z.view(128, 1024)[1:], z.view(128, 1024)[:-1])) < 5 / math.sqrt(n)


# ---- the torch env's reset stream -----------------------------------------------------------------------------------
def test_a_torch_env_draws_its_resets_from_its_counter_stream_and_a_block_equals_its_steps():
    from rlkit import make_vec_env

    a = make_vec_env("CartPole-v1", 16, seed=3, backend="torch", device="cpu")
    b = make_vec_env("CartPole-v1", 16, seed=3, backend="torch", device="cpu")
    assert int(a.stream.counter) == 1  # the reset drew once
    assert torch.equal(a.state, a.reset_states(CounterStream.seeded(3, ENV_RESETS).uniform((16, 4))))
    actions = torch.ones(16, dtype=torch.int64)
    block = b.draw_resets(30)  # [30, 16, 4], the draws of b's next 30 steps
    for t in range(30):
        a.step(actions)
        b.step(actions, block[t])
    assert torch.equal(a.state, b.state) and torch.equal(a.elapsed, b.elapsed)
    assert int(a.stream.counter) == int(b.stream.counter) == 31 and int((a.elapsed < 29).sum()) > 0


# ---- CUDA -----------------------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_draws_the_cpu_bits_and_a_cuda_graph_advances_the_counter_on_each_replay():
    from rlkit.core.device import GraphedStep

    cpu = CounterStream.seeded(11, ACTION_NOISE)
    gpu = CounterStream.seeded(11, ACTION_NOISE, "cuda")
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(cpu.words(4096, steps=3), gpu.words(4096, steps=3).cpu())
        assert torch.equal(cpu.uniform((64, 8), dtype, steps=2), gpu.uniform((64, 8), dtype, steps=2).cpu())
        assert torch.allclose(cpu.normal((64, 8), dtype), gpu.normal((64, 8), dtype).cpu(), atol=1e-5)
    eager = CounterStream.seeded(2, ENV_RESETS, "cuda")
    graphed = CounterStream.seeded(2, ENV_RESETS, "cuda")
    out = torch.zeros(5, 3, 256, device="cuda")

    def fn() -> torch.Tensor:
        out.copy_(graphed.uniform((3, 256), steps=5))  # one block per call, into a tensor the host reads
        return out

    step = GraphedStep(fn, True, "counter stream draws", warmup=1)
    for _ in range(6):  # one eager call, the capture (and its replay), four replays
        got = step().clone()
        assert torch.equal(got, eager.uniform((3, 256), steps=5))
    assert step.graph is not None and int(graphed.counter) == int(eager.counter) == 30
