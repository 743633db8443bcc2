"""Atomic save, verified load, and every way a checkpoint file can be bad."""
from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from rlkit.core import checkpoint as ck
from rlkit.core.checkpoint import CheckpointError, load_checkpoint, rotate_checkpoints, save_checkpoint

PAYLOAD = {"algo": "reinforce", "state": {"w": torch.arange(6.0).reshape(2, 3)}, "n": 3, "name": "x"}


def test_round_trip(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", PAYLOAD)
    out = load_checkpoint(p, algo="reinforce")
    assert torch.equal(out["state"]["w"], PAYLOAD["state"]["w"]) and out["n"] == 3 and out["name"] == "x"


def test_failed_save_leaves_previous_file_identical_and_no_temp(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "a.pt", PAYLOAD)
    before = p.read_bytes()

    def boom(fd):
        raise OSError("disk full (simulated crash mid-save)")

    monkeypatch.setattr(ck.os, "fsync", boom)
    with pytest.raises(ck.CheckpointWriteError, match="cannot write checkpoint .*a.pt: disk full .simulated"):
        save_checkpoint(p, {**PAYLOAD, "n": 4})
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.pt"]


def _corrupt(tmp_path, fn):
    p = save_checkpoint(tmp_path / "c.pt", PAYLOAD)
    raw = bytearray(p.read_bytes())
    p.write_bytes(bytes(fn(raw)))
    return p


@pytest.mark.parametrize("name,mutate,reason", [
    ("truncated", lambda b: b[: len(b) // 2], "checksum mismatch"),
    ("empty", lambda b: b"", "is empty"),
    ("random", lambda b: os.urandom(300), "not an rlkit checkpoint"),
    ("bitflip", lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "checksum mismatch"),
    ("header-only", lambda b: b[:40], "truncated"),
])
def test_bad_files_raise_naming_file_and_reason(tmp_path, name, mutate, reason):
    p = _corrupt(tmp_path, mutate)
    with pytest.raises(CheckpointError, match=reason) as e:
        load_checkpoint(p)
    assert str(p) in str(e.value)


def test_missing_wrong_algo_and_wrong_version(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    p = save_checkpoint(tmp_path / "a.pt", PAYLOAD)
    with pytest.raises(CheckpointError, match="written by 'reinforce', not 'a2c'"):
        load_checkpoint(p, algo="a2c")
    old = ck.FORMAT_VERSION
    try:
        ck.FORMAT_VERSION = 99
        save_checkpoint(tmp_path / "v.pt", PAYLOAD)
    finally:
        ck.FORMAT_VERSION = old
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_callable_is_refused(tmp_path):
    """A file with a valid header and digest but a malicious pickle is still refused by weights_only."""
    buf = io.BytesIO()
    torch.save({"format_version": 1, "algo": "reinforce", "x": Evil()}, buf, pickle_module=pickle)
    data = buf.getvalue()
    import hashlib

    p = tmp_path / "evil.pt"
    p.write_bytes(ck.MAGIC + hashlib.sha256(data).digest() + data)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(p)


def test_rotation_keeps_last_k_and_final(tmp_path):
    for s in [100, 200, 300, 400, 1000]:
        save_checkpoint(tmp_path / f"step_{s}.pt", PAYLOAD)
    save_checkpoint(tmp_path / "final.pt", PAYLOAD)
    rotate_checkpoints(tmp_path, keep=2)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["final.pt", "step_1000.pt", "step_400.pt"]
