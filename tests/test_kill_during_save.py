"""SIGKILL at random moments while checkpointing, repeated: the newest checkpoint always loads, and the temp
files a killed save leaves are gone once the next run starts on the directory (rlkit.core.rundir)."""
from __future__ import annotations

import os
import random
import signal
import time

import torch

from rlkit.core import checkpoint
from rlkit.core.checkpoint import load_checkpoint, rotate_checkpoints, save_checkpoint
from rlkit.core.rundir import latest_checkpoint, open_run_dir


def _child_saves_forever(run_dir) -> None:
    """In a forked child: save step_N.pt over and over, fsync slowed so kills often land inside a save."""
    real_fsync = os.fsync

    def slow_fsync(fd):
        time.sleep(0.01)
        real_fsync(fd)

    checkpoint.os.fsync = slow_fsync
    ck = run_dir / "checkpoints"
    n = 0
    while True:
        n += 1
        save_checkpoint(ck / f"step_{n}.pt", {"algo": "x", "n": n, "w": torch.full((64, 1024), float(n))})
        rotate_checkpoints(ck, keep=2)


def test_sigkill_during_saves_never_loses_the_newest_checkpoint(tmp_path):
    rng = random.Random(0)
    saw_temp = 0
    for rep in range(10):
        pid = os.fork()
        if pid == 0:  # child
            try:
                _child_saves_forever(tmp_path)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.05, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        saw_temp += bool(list((tmp_path / "checkpoints").glob(".*.tmp")))
        newest = latest_checkpoint(tmp_path)
        if newest is None:
            continue  # killed before the first save completed
        payload = load_checkpoint(newest)
        assert torch.equal(payload["w"], torch.full((64, 1024), float(payload["n"])))
        lock = open_run_dir(tmp_path, resuming=True)  # what the next run (a resume) does first
        try:
            assert not list(tmp_path.rglob("*.tmp")), rep
        finally:
            lock.release()
    assert saw_temp >= 1  # the kills did land inside saves
