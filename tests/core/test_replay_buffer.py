"""ReplayBuffer: ring order, batches from N envs, sampling only filled slots, no autograd graphs kept,
memory reported and checked up front, state round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rlkit.core.buffers import ReplayBuffer

CPU = torch.device("cpu")


def add_item(buf: ReplayBuffer, i: float, n: int = 1) -> None:
    """n transitions whose every field encodes the item number i (next_obs = i + 0.5)."""
    v = np.full((n, 1), i, dtype=np.float32)
    buf.add(np.hstack([v, v]), v, v[:, 0], np.hstack([v, v]) + 0.5, v[:, 0] % 2 == 0)


def test_capacity_5_after_7_adds_holds_items_2_to_6():
    buf = ReplayBuffer(5, (2,), (1,), CPU)
    for i in range(7):
        add_item(buf, i)
    assert len(buf) == 5 and buf.pos == 2
    b = buf.gather(torch.arange(5))
    assert b.obs[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert sorted(b.actions[:, 0].tolist()) == [2, 3, 4, 5, 6]
    assert torch.equal(b.next_obs, b.obs + 0.5) and torch.equal(b.rewards, b.obs[:, 0])
    assert b.terminated.tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_batch_from_n_envs_wraps_around():
    buf = ReplayBuffer(5, (2,), (1,), CPU)
    obs = np.arange(6, dtype=np.float32).reshape(3, 2)
    buf.add(obs, np.zeros((3, 1)), np.array([0.0, 1, 2]), obs, np.zeros(3, bool))
    buf.add(obs + 100, np.ones((3, 1)), np.array([3.0, 4, 5]), obs, np.ones(3, bool))
    assert buf.pos == 1 and len(buf) == 5
    assert buf.gather(torch.arange(5)).rewards.tolist() == [5, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="capacity 5"):
        buf.add(*(np.zeros((6, k)) for k in (2, 1, 1, 2, 1)))


def test_samples_never_touch_empty_slots():
    buf = ReplayBuffer(1000, (2,), (1,), CPU)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4)
    for i in range(1, 8):
        add_item(buf, i)
    b = buf.sample(20_000)
    assert set(b.obs[:, 0].tolist()) == {1, 2, 3, 4, 5, 6, 7}  # every filled slot, never a zero row
    add_item(buf, 8)  # the size on the device follows the fill level
    assert 8.0 in set(buf.sample(20_000).obs[:, 0].tolist())


def test_stored_tensors_carry_no_graph_and_memory_is_reported():
    buf = ReplayBuffer(10, (3,), (2,), CPU)
    x = torch.ones(2, 3, requires_grad=True)
    a = torch.ones(2, 2, requires_grad=True) * 2
    buf.add(x * 2, a, torch.ones(2), x * 3, torch.zeros(2))
    assert buf.data.grad_fn is None and not buf.data.requires_grad
    b = buf.sample(4)
    assert all(t.grad_fn is None for t in b)
    assert buf.nbytes == 10 * (3 + 2 + 1 + 3 + 1) * 4 == buf.data.numel() * buf.data.element_size()


def test_capacity_that_cannot_fit_fails_at_construction_naming_gib():
    with pytest.raises(MemoryError, match=r"GiB"):
        ReplayBuffer(10**13, (3,), (1,), CPU)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="capacity"):
            ReplayBuffer(bad, (3,), (1,), CPU)


def test_state_dict_round_trip():
    buf = ReplayBuffer(5, (2,), (1,), CPU)
    for i in range(7):
        add_item(buf, i)
    other = ReplayBuffer(5, (2,), (1,), CPU)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.data, buf.data) and (other.pos, other.size) == (buf.pos, buf.size)
    assert float(other.size_t) == 5
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(6, (2,), (1,), CPU).load_state_dict(buf.state_dict())


def test_stacked_buffers_store_what_each_buffer_stores_alone_and_stay_whole():
    from rlkit.core.buffers import StackedReplayBuffers

    K, n, cap = 3, 2, 5
    alone = [ReplayBuffer(cap, (2,), (1,), CPU) for _ in range(K)]
    mine = [ReplayBuffer(cap, (2,), (1,), CPU) for _ in range(K)]
    add_item(mine[1], -1.0, n)  # written alone first: the stacking keeps what is there
    add_item(alone[1], -1.0, n)
    for b, a in zip(mine, alone):
        if b is not mine[1]:
            add_item(b, -1.0, n)
            add_item(a, -1.0, n)
    stacked = StackedReplayBuffers(mine)
    assert stacked.data.shape == (K, cap, mine[0].width)
    for i in range(4):  # 5 vector steps of 2 in a capacity of 5: the writes wrap around
        v = [np.full((n, 1), 10 * k + i, dtype=np.float32) for k in range(K)]
        stacked.add([np.hstack([x, x]) for x in v], np.stack(v), [x[:, 0] for x in v],
                    [np.hstack([x, x]) + 0.5 for x in v], [x[:, 0] % 2 == 0 for x in v])
        for k in range(K):
            add_item(alone[k], 10 * k + i, n)
    for a, b in zip(alone, mine):
        assert (a.pos, a.size) == (b.pos, b.size) and torch.equal(a.data, b.data) and float(b.size_t) == b.size
        assert b.data.data_ptr() == stacked.data[mine.index(b)].data_ptr()  # a view of its row
    u = torch.rand(K, 7, dtype=torch.float64)  # sampling all K at once: each buffer's own indices and rows
    for field, *own in zip(stacked.sample(u), *(b.gather(b.sample_indices(7, u[k])) for k, b in enumerate(mine))):
        assert field.shape[:2] == (K, 7) and all(torch.equal(field[k], o) for k, o in enumerate(own))
    with pytest.raises(TypeError, match="float64"):
        stacked.sample(u.float())
    add_item(mine[2], 99.0)  # a buffer written alone afterwards writes its own row only
    assert stacked.data[2, mine[2].pos - 1, 0] == 99.0 and not (stacked.data[:2] == 99.0).any()
    with pytest.raises(ValueError, match="no longer at the same write position"):
        z = np.zeros((1, 2), np.float32)
        stacked.add([z] * K, np.zeros((K, 1, 1)), [np.zeros(1)] * K, [z] * K, [np.zeros(1, bool)] * K)
    # stacking buffers that already are one stack's rows reuses that storage (no copy of a large buffer)
    again = StackedReplayBuffers(mine[:2])
    assert again.data.data_ptr() == stacked.data.data_ptr() and again.data.shape[0] == 2
    with pytest.raises(ValueError, match="equal capacity, width and device at the same fill level"):
        StackedReplayBuffers([ReplayBuffer(5, (2,), (1,), CPU), ReplayBuffer(6, (2,), (1,), CPU)])
    with pytest.raises(ValueError, match="needs the one-row layout"):
        StackedReplayBuffers([ReplayBuffer(5, (2,), (1,), CPU, obs_dtype=torch.uint8)] * 2)


def test_a_stacked_buffers_checkpoint_holds_its_own_filled_rows_only_and_any_lone_write_is_caught():
    """state_dict() copies: torch.save of a view writes its whole storage (the full capacity, and for a stacked
    buffer every seed's rows). A buffer in the middle of a stack written alone is refused by the next stacked add."""
    import io

    from rlkit.core.buffers import StackedReplayBuffers

    bufs = [ReplayBuffer(1000, (2,), (1,), CPU) for _ in range(4)]
    stacked = StackedReplayBuffers(bufs)
    z = np.zeros((2, 2), np.float32)
    stacked.add([z] * 4, np.zeros((4, 2, 1)), [np.zeros(2)] * 4, [z] * 4, [np.zeros(2, bool)] * 4)
    f = io.BytesIO()
    torch.save(bufs[1].state_dict(), f)
    assert len(f.getvalue()) < 10_000  # 2 rows of 7 floats, not 4 x 1000 rows (112 kB)
    f.seek(0)
    back = ReplayBuffer(1000, (2,), (1,), CPU)
    back.load_state_dict(torch.load(f))
    assert torch.equal(back.data, bufs[1].data) and back.size == 2
    add_item(bufs[1], 5.0)
    with pytest.raises(ValueError, match="no longer at the same write position"):
        stacked.add([z] * 4, np.zeros((4, 2, 1)), [np.zeros(2)] * 4, [z] * 4, [np.zeros(2, bool)] * 4)
    # a buffer that loads a state at the stack's write position but another fill level is refused as well
    bufs = [ReplayBuffer(4, (2,), (1,), CPU) for _ in range(2)]
    stacked = StackedReplayBuffers(bufs)
    full = ReplayBuffer(4, (2,), (1,), CPU)
    for i in range(4):
        add_item(full, i)
    bufs[1].load_state_dict(full.state_dict())  # pos 0 as the stack's, size 4 against 0
    with pytest.raises(ValueError, match="no longer at the same write position and fill level"):
        stacked.add([z] * 2, np.zeros((2, 2, 1)), [np.zeros(2)] * 2, [z] * 2, [np.zeros(2, bool)] * 2)
