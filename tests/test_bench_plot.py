"""`rlkit plot`: curves only where seeds logged (never before the first point), a fixed colour per algorithm,
words on the axes, seed counts in the legend, PNG >= 150 dpi + PDF + SVG, and the table with the peer figure.
Built from hand-written run directories (no training), so it costs about a second."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlkit.cli import main
from rlkit.plotting import colour, curves_figure, find_runs, mean_curve, peer_for, read_peers

def write_run(root: Path, env: str, algo: str, seed: int, rows: list[tuple[int, float]], result: float | None = None,
              column: str = "rollout/episode_return") -> None:
    d = root / env / algo / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"algo": algo, "env_id": env, "seed": seed}))
    (d / "progress.csv").write_text(f"step,{column},time/sps\n" + "".join(f"{s},{v},100\n" for s, v in rows))
    if result is not None:
        (d / "result.json").write_text(json.dumps({"algo": algo, "env_id": env, "seed": seed, "mean_return": result}))


def test_mean_curve_spans_only_where_every_seed_logged():
    a = [(1000.0, 1.0), (2000.0, 2.0), (3000.0, 3.0), (4000.0, 4.0)]
    b = [(2000.0, 0.0), (3000.0, 1.0), (3500.0, 2.0)]
    x, mu, lo, hi = mean_curve([a, b])
    assert x[0] == 2000 and x[-1] == 3500  # nothing invented before a seed's first point or after its last
    assert list(x) == [2000, 3000, 3500] and mu[0] == pytest.approx(1.0) and mu[2] == pytest.approx(2.75)
    assert np.all(lo <= mu) and np.all(mu <= hi)
    assert mean_curve([a, []]) is None and mean_curve([[(5.0, 1.0)], [(1.0, 0.0), (2.0, 0.0)]]) is None


def test_plot_writes_figures_and_a_table_with_peers(tmp_path, capsys):
    pytest.importorskip("matplotlib")  # the optional extra rlkit[bench]
    root = tmp_path / "grid"
    rng = np.random.default_rng(0)
    for env, scale in (("CartPole-v1", 500), ("Acrobot-v1", -100)):
        for algo in ("a2c", "trpo"):
            for seed in range(3):
                rows = [(s, scale * s / 4000 + rng.normal()) for s in range(1000, 4001, 1000)]
                write_run(root, env, algo, seed, rows, result=scale * (0.8 + 0.1 * seed))
    write_run(root, "Pendulum-v1", "ddpg", 0, [(200, -1200.0), (400, -900.0)])  # no result.json
    assert main(["plot", str(root), "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert ("| a2c | CartPole-v1 | 3 | final eval | 450.0 +/- 50.0 | 450.0 [400.0, 500.0] | 400.0, 450.0, 500.0 | "
            "500 | rl-baselines3-zoo benchmark.md (A2C, 500k steps) |") in out
    assert "| ddpg | Pendulum-v1 | 1 | last training return | -900.0 +/- n/a | -900.0 [-900.0, -900.0] | -900.0 | " \
           "-152.10 |" in out
    figs = tmp_path / "figs"
    for name in ("curves", "aggregate"):
        for ext in ("png", "pdf", "svg"):
            if name == "aggregate" and not _has_rliable():
                continue
            assert (figs / f"{name}.{ext}").stat().st_size > 1000, (name, ext)
    from PIL import Image

    assert min(Image.open(figs / "curves.png").info["dpi"]) >= 150
    assert (figs / "results.md").read_text().strip() == out.strip()


def test_curves_figure_colours_labels_and_eval_axis(tmp_path):
    pytest.importorskip("matplotlib")
    root = tmp_path / "grid"
    for seed in range(2):
        write_run(root, "CartPole-v1", "a2c", seed, [(1000, 10.0), (2000, 20.0)])
        write_run(root, "CartPole-v1", "trpo", seed, [(1000, 30.0), (2000, 40.0)])
        write_run(root, "Acrobot-v1", "a2c", seed, [(1500, -400.0), (2500, -200.0)], column="eval/mean_return")
    fig = curves_figure(find_runs(root), None)
    acro, cart = fig.axes
    assert acro.get_ylabel().startswith("evaluation return (deterministic policy)")
    assert cart.get_ylabel().startswith("training return\n(stochastic policy")
    assert acro.get_xlabel() == cart.get_xlabel() == "environment steps"
    lines = {ax.get_title(): {ln.get_label(): ln for ln in ax.get_lines()} for ax in fig.axes}
    assert set(lines["CartPole-v1"]) == {"a2c (n=2 seeds)", "trpo (n=2 seeds)"}
    assert lines["CartPole-v1"]["a2c (n=2 seeds)"].get_color() == lines["Acrobot-v1"]["a2c (n=2 seeds)"].get_color() \
        == colour("a2c") != colour("trpo")
    assert min(lines["Acrobot-v1"]["a2c (n=2 seeds)"].get_xdata()) == 1500  # starts at the first logged point


def test_peer_figures_match_versions_and_any_algo():
    peers = read_peers()
    assert peer_for(peers, "ddpg", "HalfCheetah-v5")["figure"] == "10374.07"
    assert "CleanRL" in peer_for(peers, "ddpg", "HalfCheetah-v5")["source"]
    assert peer_for(peers, "reinforce", "LunarLander-v3")["figure"] == "200"
    assert peer_for(peers, "qac", "CartPole-v1") is None


def test_plot_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "is not a directory" in err[0] and "no run directories" in err[1]


def _has_rliable() -> bool:
    try:
        import rliable.library  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


def test_table_reports_final_and_best_evaluation_labelled():
    from rlkit.plotting import results_table

    results = [{"algo": "a2c", "env_id": "CartPole-v1", "seed": s, "mean_return": 400.0 + s,
                "best_eval_return": 480.0 + s, "best_eval_step": 1000} for s in range(3)]
    table = results_table(results, peers=[])
    final = [row for row in table.splitlines() if "| final eval |" in row]
    best = [row for row in table.splitlines() if "| best eval during training |" in row]
    assert len(final) == 1 and "400.0, 401.0, 402.0" in final[0] and "401.0 +/-" in final[0]
    assert len(best) == 1 and "480.0, 481.0, 482.0" in best[0] and "481.0 +/-" in best[0]
    only_final = results_table([{k: v for k, v in r.items() if not k.startswith("best")} for r in results], peers=[])
    assert "best eval" not in only_final
