"""`rlkit bench`: the grid runner is idempotent (finished runs skipped, interrupted ones resumed with no progress.csv
row or TensorBoard step twice, runs without a checkpoint restarted, live runs left alone), lists unsupported pairs,
writes a manifest, and a Ctrl-C stops every run with a checkpoint."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlkit.cli import main

TINY = ["--steps", "3000", "--eval-episodes", "1", "--set", "n_steps=32", "--set", "n_envs=2"]


def bench(out: Path, *extra: str, seeds: str = "0,1", algos: str = "reinforce,ddpg") -> list[str]:
    return ["bench", "--algos", algos, "--envs", "CartPole-v1", "--seeds", seeds, "--out", str(out), "--jobs", "2",
            *TINY, *extra]


def csv_steps(run: Path) -> list[float]:
    with (run / "progress.csv").open(newline="") as f:
        return [float(r["step"]) for r in csv.DictReader(f)]


def tb_steps(run: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run))
    ea.Reload()
    return [e.step for e in ea.Scalars("train/loss_pi")]


def test_rerun_skips_finished_resumes_interrupted_restarts_stale_and_leaves_live_runs(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(bench(out)) == 0
    err = capsys.readouterr().err
    assert "skipping ddpg on CartPole-v1: ddpg supports Box actions, CartPole-v1 has Discrete" in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["skipped"] == [{"algo": "ddpg", "env_id": "CartPole-v1",
                             "reason": "ddpg supports Box actions, CartPole-v1 has Discrete"}]
    r0 = m["runs"]["CartPole-v1/reinforce/seed0"]
    assert r0["status"] == "finished" and r0["attempts"] == 1 and r0["seed"] == 0 and r0["steps"] >= 3000
    assert r0["config"]["algo"] == "reinforce" and r0["config"]["n_steps"] == 32 and r0["wall_time_s"] > 0
    assert set(r0["versions"]) >= {"rlkit", "torch", "gymnasium", "python"} and "git_revision" in r0
    assert r0["command"].startswith("python -m rlkit.cli train reinforce CartPole-v1 --seed 0 --device cpu")

    # seed1 "killed" after its last periodic checkpoint: no final.pt, no result.json, rows logged past the checkpoint.
    s1 = out / "CartPole-v1" / "reinforce" / "seed1"
    (s1 / "result.json").unlink()
    (s1 / "checkpoints" / "final.pt").unlink()
    steps = sorted(int(p.stem[5:]) for p in (s1 / "checkpoints").glob("step_*.pt"))
    (s1 / "checkpoints" / f"step_{steps[-1]}.pt").unlink()  # killed before its last periodic checkpoint
    newest = steps[-2]
    assert max(csv_steps(s1)) > newest  # rows after the checkpoint: resuming must drop, not repeat, them
    # seed2 died before its first checkpoint: only a config.json and a progress row.
    s2 = out / "CartPole-v1" / "reinforce" / "seed2"
    s2.mkdir(parents=True)
    (s2 / "config.json").write_text(json.dumps({"algo": "reinforce", "env_id": "CartPole-v1", "seed": 2}))
    (s2 / "progress.csv").write_text("step,train/loss_pi\n1000,0.5\n")
    # seed3 is being trained by a live process elsewhere (its lock names this test's pid).
    s3 = out / "CartPole-v1" / "reinforce" / "seed3"
    s3.mkdir(parents=True)
    (s3 / "config.json").write_text("{}")
    (s3 / ".rlkit.lock").write_text(f"{os.getpid()} {socket.gethostname()} \n")

    assert main(bench(out, seeds="0,1,2,3")) == 0
    err = capsys.readouterr().err
    assert "4 runs (1 finished, 1 to resume, 1 running elsewhere)" in err
    assert "CartPole-v1/reinforce/seed3 is running elsewhere (pid" in err
    assert "CartPole-v1/reinforce/seed2 stopped before its first checkpoint; moved to" in err
    m = json.loads((out / "manifest.json").read_text())["runs"]
    assert m["CartPole-v1/reinforce/seed0"]["attempts"] == 1  # not run again
    assert m["CartPole-v1/reinforce/seed1"]["attempts"] == 2
    assert m["CartPole-v1/reinforce/seed1"]["status"] == "finished"
    assert m["CartPole-v1/reinforce/seed1"]["command"].endswith(f"--resume {s1}/checkpoints/step_{newest}.pt")
    assert m["CartPole-v1/reinforce/seed2"]["status"] == "finished"
    assert m["CartPole-v1/reinforce/seed3"]["status"] == "running elsewhere" and not (s3 / "progress.csv").exists()
    discarded = list((out / "_discarded" / "CartPole-v1" / "reinforce").glob("seed2-*"))
    assert len(discarded) == 1 and (discarded[0] / "progress.csv").read_text().endswith("1000,0.5\n")  # kept
    for run in (s1, out / "CartPole-v1" / "reinforce" / "seed2"):
        steps = csv_steps(run)
        assert len(steps) == len(set(steps)) and steps == sorted(steps) and steps[-1] >= 3000
        assert len(tb_steps(run)) == len(set(tb_steps(run)))
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["seed"] for r in results) == [0, 1, 2]

    # A third invocation has nothing left to do (seed3 is still "running elsewhere").
    (s3 / ".rlkit.lock").unlink()
    (s3 / "config.json").unlink()
    before = {s: (out / "CartPole-v1" / "reinforce" / s / "progress.csv").read_bytes() for s in ("seed0", "seed1")}
    assert main(bench(out, seeds="0,1")) == 0
    assert "2 runs (2 finished, 0 to resume, 0 running elsewhere)" in capsys.readouterr().err
    assert before == {s: (out / "CartPole-v1" / "reinforce" / s / "progress.csv").read_bytes() for s in before}


@pytest.mark.parametrize("argv,needle", [
    (["--envs", "NoSuchEnv-v0"], "--envs names an unknown Gymnasium environment id 'NoSuchEnv-v0'"),
    (["--runs-per-gpu", "0"], "--runs-per-gpu must be >= 1"),
    (["--device", "cuda:7"], "cuda"),
    (["--ray", "127.0.0.1:1"], "Ray"),  # "needs Ray, which is not installed" or "cannot reach the Ray cluster at"
])
def test_bad_grid_is_one_line_before_any_run(argv, needle, tmp_path, capsys):
    import torch

    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("has 8 GPUs")
    args = ["bench", "--algos", "a2c", "--envs", "CartPole-v1", "--out", str(tmp_path / "g"), *argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "g" / "CartPole-v1").exists()


def test_ctrl_c_stops_every_run_with_a_checkpoint_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "grid"
    cmd = [sys.executable, "-m", "rlkit.cli", "bench", "--algos", "reinforce", "--envs", "CartPole-v1", "--seeds",
           "1", "--out", str(out), "--steps", "10000000", "--eval-episodes", "1", "--set", "n_steps=32",
           "--set", "n_envs=2"]
    # SIGINT's default action restored: a shell's background job (`pytest &`) would pass SIG_IGN on to bench.
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = out / "CartPole-v1" / "reinforce" / "seed0" / "progress.csv"
    deadline = time.time() + 120
    while not log.exists() and time.time() < deadline:  # training has begun: its first row is logged
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "re-run the same command to resume" in err
    run = json.loads((out / "manifest.json").read_text())["runs"]["CartPole-v1/reinforce/seed0"]
    assert run["status"] == "interrupted" and run["returncode"] == 130
    ckpts = list((out / "CartPole-v1" / "reinforce" / "seed0" / "checkpoints").glob("step_*.pt"))
    assert ckpts, "the run was stopped without its checkpoint"
    stopped_at = max(int(c.stem[5:]) for c in ckpts)
    # The re-run resumes from it (a smaller --steps than reached ends it at once: only the resume path is checked).
    cmd[cmd.index("10000000")] = str(stopped_at + 64)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "manifest.json").read_text())["runs"]["CartPole-v1/reinforce/seed0"]
    assert run["status"] == "finished" and run["attempts"] == 2 and f"step_{stopped_at}.pt" in run["command"]


def test_device_slots_one_run_per_gpu_by_default_and_one_core_per_pinned_run(monkeypatch):
    import torch

    import rlkit.core.device
    from rlkit.bench import Slot, device_slots

    monkeypatch.setattr(rlkit.core.device, "resolve_device", lambda d: torch.device(d))  # no GPU needed here
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert device_slots("cuda", None, 1, False) == [Slot(f"cuda:{i}") for i in range(4)]
    assert [s.device for s in device_slots("cuda", None, 2, False)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1",
                                                                        "cuda:2", "cuda:2", "cuda:3", "cuda:3"]
    assert device_slots("cuda:2", None, 1, False) == [Slot("cuda:2")]
    assert len(device_slots("cuda", 3, 1, False)) == 3
    assert device_slots("cpu", None, 1, False) == [Slot("cpu")]
    cores = sorted(os.sched_getaffinity(0))
    pinned = device_slots("cpu", len(cores), 1, True)
    assert [s.cores for s in pinned] == [(c,) for c in cores]
    with pytest.raises(ValueError, match="--pin-cores with --jobs"):
        device_slots("cpu", len(cores) + 1, 1, True)


def test_a_grid_run_by_another_bench_is_refused(tmp_path, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / ".rlkit.lock").write_text(f"{os.getpid()} {socket.gethostname()} \n")
    assert main(["bench", "--algos", "a2c", "--envs", "CartPole-v1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {out} is in use by another rlkit bench (pid {os.getpid()})" in err
