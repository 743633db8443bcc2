"""`rlkit bench --ray` runs the same grid as the local runner: same directory layout, same manifest, same results
(Ray is the optional extra rlkit[ray]; skipped where it is absent, as in CI)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlkit.cli import main

pytest.importorskip("ray")


def grid(out: Path, *extra: str) -> list[str]:
    return ["bench", "--algos", "reinforce,ddpg", "--envs", "CartPole-v1", "--seeds", "0,1", "--steps", "1024",
            "--jobs", "2", "--eval-episodes", "2", "--set", "n_steps=32", "--set", "n_envs=2", "--out", str(out),
            *extra]


def comparable(out: Path) -> dict:
    m = json.loads((out / "manifest.json").read_text())
    keep = ("algo", "env_id", "seed", "run_dir", "status", "config", "versions", "git_revision", "steps",
            "mean_return", "std_return", "attempts", "returncode")
    runs = {k: {f: r.get(f) for f in keep} | {"command": r["command"].replace(str(out), "OUT")}
            for k, r in m["runs"].items()}
    return {"grid": {k: v for k, v in m["grid"].items() if k != "launcher"}, "skipped": m["skipped"], "runs": runs}


def test_ray_grid_matches_the_local_grid_and_resumes_the_same_way(tmp_path, capsys):
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    assert main(grid(local)) == 0
    assert main(grid(ray_out, "--ray")) == 0
    assert "on Ray (local)" in capsys.readouterr().err
    a, b = comparable(local), comparable(ray_out)
    assert a == b  # same runs, commands, configs, versions and (seeded CPU training) the same returns
    assert json.loads((ray_out / "manifest.json").read_text())["grid"]["launcher"] == "ray"
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "events.out" not in p.name)
    assert files(local) == files(ray_out)
    ra = json.loads((local / "results.json").read_text())
    rb = json.loads((ray_out / "results.json").read_text())
    assert [(r["seed"], r["mean_return"]) for r in ra] == [(r["seed"], r["mean_return"]) for r in rb]
    # Resume through Ray: a run without its result and final checkpoint continues from its newest step checkpoint.
    s1 = ray_out / "CartPole-v1" / "reinforce" / "seed1"
    (s1 / "result.json").unlink()
    (s1 / "checkpoints" / "final.pt").unlink()
    assert main(grid(ray_out, "--ray")) == 0
    assert "2 runs (1 finished, 1 to resume" in capsys.readouterr().err
    run = json.loads((ray_out / "manifest.json").read_text())["runs"]["CartPole-v1/reinforce/seed1"]
    assert run["status"] == "finished" and run["attempts"] == 2 and "--resume" in run["command"]
