"""`rlkit plot RUNS_DIR`: learning curves and a results table that a paper can use, from the files runs write
(config.json, progress.csv, result.json), like any user would.

Curves: per environment, the evaluation return when every run of the panel logged one (else the training return,
and the axis says so) against environment steps; the mean over seeds with a 95% percentile-bootstrap band, drawn
only where every seed has logged points on both sides (interpolated between logged points, never before the first
or after the last); one fixed colour per algorithm; the seed count in the legend; PNG (200 dpi), PDF and SVG.
Table: per (algo, env) mean +/- std over seeds, the interquartile mean with its 95% bootstrap interval, the
per-seed values, and the peer figure with its source (experiments/peer_results.csv).
Across environments (optional extra rlkit[bench], with rliable): aggregate IQM and performance profiles.
Interval arithmetic: rlkit/stats.py.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlkit.stats import bootstrap_ci, iqm

TRAIN_RETURN = "rollout/episode_return"
BEST_EVAL = "best eval during training"
EVAL_RETURNS = ("eval/mean_return", "eval/episode_return", "eval/return")  # evaluation during training, if logged
LABELS = {
    TRAIN_RETURN: "training return\n(stochastic policy, mean of the last 100 episodes)",
    **{k: "evaluation return (deterministic policy)" for k in EVAL_RETURNS},
    "rollout/episode_length": "training episode length (steps)",
    "train/loss_pi": "policy loss", "train/loss_v": "value loss", "train/loss_q": "Q loss",
    "train/entropy": "policy entropy", "train/kl": "KL divergence (old || new policy)",
    "train/explained_variance": "explained variance of the value function", "time/sps": "environment steps per second",
}
# One colour per algorithm, the same in every panel and every figure (matplotlib's tab10 order).
COLOURS = {"reinforce": "#1f77b4", "qac": "#ff7f0e", "a2c": "#2ca02c", "trpo": "#d62728", "ddpg": "#9467bd"}
PEERS = Path(__file__).resolve().parent.parent / "experiments" / "peer_results.csv"
DPI = 200


def colour(algo: str) -> str:
    extra = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    return COLOURS.get(algo, extra[sum(map(ord, algo)) % len(extra)])


def find_runs(root: Path) -> list[dict[str, Any]]:
    """Every run directory under root (one with a config.json naming algo and env_id), outside _discarded/."""
    runs = []
    for cfg_path in sorted(root.rglob("config.json")):
        if "_discarded" in cfg_path.relative_to(root).parts:
            continue
        meta = json.loads(cfg_path.read_text())
        if "algo" not in meta or "env_id" not in meta:
            continue
        run: dict[str, Any] = {"dir": cfg_path.parent, "algo": str(meta["algo"]), "env_id": str(meta["env_id"]),
                               "seed": meta.get("seed"), "columns": {}}
        prog = cfg_path.parent / "progress.csv"
        if prog.is_file():
            with prog.open(newline="") as f:
                for row in csv.DictReader(f):
                    for k, v in row.items():
                        if k != "step" and v not in (None, ""):
                            run["columns"].setdefault(k, []).append((float(row["step"]), float(v)))
        res = cfg_path.parent / "result.json"
        if res.is_file():
            run["result"] = json.loads(res.read_text())
        runs.append(run)
    return runs


def panel_metric(runs: list[dict[str, Any]], metric: str | None) -> str:
    """The metric a panel shows: the one asked for, else the evaluation return when every run logged it."""
    if metric:
        return metric
    for m in EVAL_RETURNS:
        if all(m in r["columns"] for r in runs):
            return m
    return TRAIN_RETURN


def mean_curve(series: list[list[tuple[float, float]]], n_points: int = 200) -> tuple[np.ndarray, ...] | None:
    """(steps, mean, low, high) over seeds, where every seed has logged points on both sides: from the latest first
    logged step to the earliest last one. None when the seeds share no such range."""
    curves = [np.array(sorted(s)) for s in series if s]
    if len(curves) != len(series):
        return None
    lo_step, hi_step = max(c[0, 0] for c in curves), min(c[-1, 0] for c in curves)
    if hi_step < lo_step:
        return None
    logged = np.unique(np.concatenate([c[:, 0] for c in curves]))
    x = logged[(logged >= lo_step) & (logged <= hi_step)]
    if len(x) > n_points:
        x = np.linspace(lo_step, hi_step, n_points)
    ys = np.stack([np.interp(x, c[:, 0], c[:, 1]) for c in curves])
    low, high = bootstrap_ci(ys)
    return x, ys.mean(0), low, high


def curves_figure(runs: list[dict[str, Any]], metric: str | None) -> Any:
    """One panel per environment, one line (mean) and band (95% bootstrap CI) per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env_id"] for r in runs})
    fig, axes = plt.subplots(1, len(envs), figsize=(4.6 * len(envs), 3.6), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        panel = [r for r in runs if r["env_id"] == env_id]
        m = panel_metric(panel, metric)
        for algo in sorted({r["algo"] for r in panel}):
            series = [r["columns"].get(m, []) for r in panel if r["algo"] == algo]
            curve = mean_curve(series)
            if curve is None:
                continue
            x, mu, low, high = curve
            c = colour(algo)
            ax.plot(x, mu, color=c, lw=1.6, label=f"{algo} (n={len(series)} seed{'s' * (len(series) != 1)})")
            ax.fill_between(x, low, high, color=c, alpha=0.2, lw=0)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(LABELS.get(m, m))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="mean, 95% bootstrap CI", title_fontsize=8)
    fig.tight_layout()
    return fig


def _save(fig: Any, base: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf", "svg"):
        p = base.with_suffix(f".{ext}")
        fig.savefig(p, dpi=DPI, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def read_peers(path: Path | None = None) -> list[dict[str, str]]:
    path = PEERS if path is None else path
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def peer_for(peers: list[dict[str, str]], algo: str, env_id: str) -> dict[str, str] | None:
    """The peer row for (algo, env): an exact env id, else the same name without its version (HalfCheetah for
    HalfCheetah-v5: the source column names the version measured); algo '*' is a figure for any algorithm."""
    name = env_id.split("-v")[0]
    for want in (env_id, name):
        for p in peers:
            if p["algo"] in (algo, "*") and p["env"] == want:
                return p
    return None


def final_scores(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One score per run: the final deterministic evaluation (result.json) when present, else the last training
    return (the table's 'measure' column says which)."""
    out = []
    for r in runs:
        if "result" in r and "mean_return" in r["result"]:
            out.append({"algo": r["algo"], "env_id": r["env_id"], "seed": r["seed"],
                        "mean_return": r["result"]["mean_return"], "measure": "final eval"})
            if "best_eval_return" in r["result"]:
                out.append({"algo": r["algo"], "env_id": r["env_id"], "seed": r["seed"],
                            "mean_return": r["result"]["best_eval_return"], "measure": BEST_EVAL})
        elif r["columns"].get(TRAIN_RETURN):
            out.append({"algo": r["algo"], "env_id": r["env_id"], "seed": r["seed"],
                        "mean_return": r["columns"][TRAIN_RETURN][-1][1], "measure": "last training return"})
    return out


def results_table(results: list[dict[str, Any]], peers: list[dict[str, str]] | None = None) -> str:
    """Markdown: per (algo, env) the score over seeds (mean +/- sample std, IQM with its 95% bootstrap interval,
    per-seed values) beside the peer figure and its source. A result without 'measure' is a final deterministic
    evaluation (result.json); one that also has 'best_eval_return' (evaluation during training, --eval-freq) adds
    a row labelled "best eval during training"."""
    peers = read_peers() if peers is None else peers
    groups: dict[tuple[str, str, str], list[tuple[Any, float]]] = {}
    for r in results:
        if "mean_return" in r:
            key = (r["algo"], r["env_id"], r.get("measure", "final eval"))
            groups.setdefault(key, []).append((r.get("seed"), float(r["mean_return"])))
        if "best_eval_return" in r and "measure" not in r:
            groups.setdefault((r["algo"], r["env_id"], BEST_EVAL), []).append((r.get("seed"),
                                                                              float(r["best_eval_return"])))
    lines = ["| algo | env | seeds | measure | mean +/- std | IQM [95% CI] | per seed | peer | peer source |",
             "|---|---|---:|---|---:|---:|---|---:|---|"]
    for (algo, env_id, measure), vals in sorted(groups.items()):
        vals.sort(key=lambda t: (t[0] is None, t[0]))
        v = np.array([x for _, x in vals])
        std = f"{v.std(ddof=1):.1f}" if len(v) > 1 else "n/a"
        lo, hi = bootstrap_ci(v, iqm)
        p = peer_for(peers, algo, env_id)
        lines.append(f"| {algo} | {env_id} | {len(v)} | {measure} | {v.mean():.1f} +/- {std} | {iqm(v):.1f} "
                     f"[{lo:.1f}, {hi:.1f}] | {', '.join(f'{x:.1f}' for x in v)} | "
                     f"{p['figure'] if p else 'n/a'} | {p['source'] if p else ''} |")
    return "\n".join(lines)


def draw_aggregates(scores: list[dict[str, Any]], out_base: Path) -> list[Path] | str:
    """Aggregate IQM (with rliable's stratified-bootstrap 95% CIs) and performance profiles across the environments
    every algorithm ran, on scores min-max normalised per environment over all runs of the grid. Returns the files
    written, or the reason nothing was drawn."""
    try:
        from rliable import library as rly
        from rliable import metrics, plot_utils
    except ImportError:
        return 'aggregates across environments need rliable: pip install "rlkit[bench]"'
    except Exception as e:  # noqa: BLE001 - e.g. arch 7.2 with pandas 3 fails at import: name it, keep the rest
        return f"rliable does not import ({type(e).__name__}: {e}); pip install \"rlkit[bench]\" pins what it needs"
    import matplotlib.pyplot as plt

    ran = {a: {s["env_id"] for s in scores if s["algo"] == a} for a in {s["algo"] for s in scores}}
    algos = sorted(a for a in ran if len(ran[a]) >= 2)  # e.g. DDPG on the one Box env of a grid is left out
    envs = sorted(set.intersection(*(ran[a] for a in algos))) if algos else []
    if len(envs) < 2:
        return "aggregates across environments need at least two environments that the algorithms share"
    left_out = sorted(set(ran) - set(algos))
    scores = [s for s in scores if s["algo"] in algos and s["env_id"] in envs]
    norm: dict[str, tuple[float, float]] = {}
    for e in envs:
        v = [s["mean_return"] for s in scores if s["env_id"] == e]
        norm[e] = (min(v), max(v) - min(v) or 1.0)
    matrix = {}
    for a in algos:
        cols = [sorted((s["seed"], (s["mean_return"] - norm[e][0]) / norm[e][1]) for s in scores
                       if s["algo"] == a and s["env_id"] == e) for e in envs]
        n = min(len(c) for c in cols)  # rliable needs as many runs on every environment
        matrix[a] = np.array([[c[i][1] for c in cols] for i in range(n)])
    point, interval = rly.get_interval_estimates(matrix, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=2000)
    taus = np.linspace(0.0, 1.0, 51)
    profiles, profile_cis = rly.create_performance_profile(matrix, taus)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1, 1.4]})
    for i, a in enumerate(algos):
        ax1.barh(i, interval[a][1, 0] - interval[a][0, 0], left=interval[a][0, 0], color=colour(a), alpha=0.75)
        ax1.vlines(point[a][0], i - 0.4, i + 0.4, color="k", lw=1.5)
    ax1.set_yticks(range(len(algos)), [f"{a} (n={len(matrix[a])})" for a in algos])
    ax1.set_xlabel("IQM of normalised score (95% CI)")
    ax1.set_title(f"aggregate over {len(envs)} environments", fontsize=9)
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=profile_cis,
                                         colors={a: colour(a) for a in algos}, ax=ax2, labelsize=10,
                                         ticklabelsize=9, xlabel=r"normalised score $\tau$",
                                         ylabel=r"fraction of runs with score > $\tau$")
    from matplotlib.lines import Line2D

    ax2.legend([Line2D([], [], color=colour(a), lw=2) for a in algos], [f"{a} (n={len(matrix[a])})" for a in algos],
               fontsize=8, loc="lower left", title="performance profile, 95% CI", title_fontsize=8)
    note = f"; not on all of them: {', '.join(left_out)}" if left_out else ""
    fig.text(0.01, -0.04, "score normalised per environment to [0, 1] by the lowest and highest final score of all "
             f"runs in this grid ({', '.join(envs)}){note}", fontsize=7)
    fig.tight_layout()
    return _save(fig, out_base)


def plot_command(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    runs = find_runs(root)
    if not runs:
        raise ValueError(f"no run directories (config.json with algo and env_id) under {root}")
    if args.metric and not any(args.metric in r["columns"] for r in runs):
        raise ValueError(f"no progress.csv under {root} logs the metric {args.metric!r}")
    out = Path(args.out) if args.out else root / "plots"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; it names a directory for the figures and the table")
    out.mkdir(parents=True, exist_ok=True)
    peers = read_peers(Path(args.peers) if args.peers else None)
    scores = final_scores(runs)
    table = results_table(scores, peers)
    (out / "results.md").write_text(table + "\n")
    print(table)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f'rlkit plot: matplotlib is not installed (pip install "rlkit[bench]"); wrote {out / "results.md"} '
              "only", file=sys.stderr)
        return 0
    written = _save(curves_figure(runs, args.metric), out / "curves")
    agg = draw_aggregates(scores, out / "aggregate") if not args.metric else "not drawn for --metric"
    if isinstance(agg, str):
        print(f"rlkit plot: no aggregate figure: {agg}", file=sys.stderr)
    else:
        written += agg
    print(f"rlkit plot: wrote {', '.join(p.name for p in written)} and results.md to {out}", file=sys.stderr)
    return 0


def add_plot_arguments(pl: argparse.ArgumentParser) -> None:
    pl.add_argument("root", help="directory searched for run directories (config.json, progress.csv, result.json)")
    pl.add_argument("--out", default=None, help="directory for curves.{png,pdf,svg}, aggregate.*, results.md "
                    "(default <root>/plots)")
    pl.add_argument("--metric", default=None, help="plot this progress.csv column instead of the return")
    pl.add_argument("--peers", default=None, help=f"CSV of peer figures (algo,env,figure,source); default {PEERS.name} "
                    "under experiments/")
