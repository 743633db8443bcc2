"""Logger: TensorBoard scalars + progress.csv + console summaries + a progress bar, one metric vocabulary.

Metric names (identical for every agent so curves overlay), all keyed by ENVIRONMENT steps:
  rollout/episode_return  rollout/episode_length  train/loss_pi  train/loss_v  train/loss_q  train/entropy
  train/kl  train/explained_variance  train/line_search_accepted  time/sps
The only module in rlkit that imports tensorboard.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from rlkit.core.config import config_to_dict
from rlkit.core.device import to_host


def default_run_dir(env_id: str, algo: str, seed: int | None, root: str | os.PathLike = "runs") -> Path:
    """runs/<env_id>/<algo>/seed<S>-<YYYYmmdd-HHMMSS>/ (a numeric suffix if that exists already)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / env_id.replace("/", "_") / algo / f"seed{seed if seed is not None else 'none'}-{stamp}"
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


def scalar_metric(v: torch.Tensor) -> torch.Tensor:
    """A tensor metric as the 0-dim value that is logged: its mean (in float32, float64 kept)."""
    v = v.detach()
    return v.mean() if v.dtype == torch.float64 else v.float().mean()


def _rewrite_csv(path: Path, keys: list[str], rows: list[dict[str, str]]) -> None:
    """Replace `path` atomically (temp file + os.replace); the temp file never survives a failed write."""
    tmp = path.with_suffix(".csv.tmp")
    try:
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def truncate_progress_csv(path: str | os.PathLike, last_step: int) -> list[str]:
    """Drop the rows of progress.csv logged after `last_step` (a run resumed from an older checkpoint repeats
    those steps) and return the header. Rewrites the file only when something is dropped."""
    p = Path(path)
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        keys = list(reader.fieldnames or [])
        rows = list(reader)

    def step_of(row: dict[str, str]) -> float:
        try:
            return float(row.get("step") or "nan")
        except ValueError:
            return math.nan

    kept = [r for r in rows if step_of(r) <= last_step]  # a row without a readable step is dropped too
    if len(kept) != len(rows):
        _rewrite_csv(p, keys, kept)
    return keys


class Logger:
    """Write metrics for one run to `run_dir` (created). Switch parts off with tensorboard=False, csv=False,
    console=False, progress=False. `record(metrics, step)` is the only call in a training loop."""

    def __init__(
        self,
        run_dir: str | os.PathLike | None,
        config: Any = None,
        total_steps: int | None = None,
        start_step: int = 0,
        progress: bool = True,
        console: bool = True,
        console_interval_s: float = 10.0,
        tensorboard: bool = True,
        csv_file: bool = True,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.console = console
        self.console_interval_s = console_interval_s
        self._last_console = time.monotonic()
        self._writer = None
        self._csv_path: Path | None = None
        self._csv_keys: list[str] = []
        self.latest: dict[str, float] = {}
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg = config_to_dict(config) if config is not None and not isinstance(config, dict) else (config or {})
            meta = {**(hparams or {}), **cfg}
            (self.run_dir / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            if csv_file:
                self._csv_path = self.run_dir / "progress.csv"
                if self._csv_path.exists():  # resuming from start_step: keep the rows up to it, append after them
                    if start_step > 0:  # (a new run into a used directory is refused by rundir.open_run_dir)
                        self._csv_keys = truncate_progress_csv(self._csv_path, start_step)
                    else:
                        with self._csv_path.open(newline="") as f:
                            self._csv_keys = next(csv.reader(f), [])
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                # Resuming from step S: events after S (logged past the checkpoint before the run stopped)
                # are purged, so no step appears twice in TensorBoard.
                purge = start_step + 1 if start_step > 0 else None
                self._writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge)
                self._write_hparams(meta)
        self._bar = None
        if progress and total_steps:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                             file=sys.stderr, smoothing=0.1)
        self._bar_step = start_step

    def _write_hparams(self, meta: dict[str, Any]) -> None:
        """Config as a TensorBoard hyperparameter table in this run's own event file, plus a text dump."""
        from torch.utils.tensorboard.summary import hparams

        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in meta.items()}
        exp, ssi, sei = hparams(flat, {"rollout/episode_return": math.nan})
        fw = self._writer._get_file_writer()
        fw.add_summary(exp)
        fw.add_summary(ssi)
        fw.add_summary(sei)
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(flat.items()))
        self._writer.add_text("config", "| key | value |\n|---|---|\n" + rows, 0)

    def record(self, metrics: dict[str, Any], step: int) -> dict[str, float]:
        """Log scalars at environment step `step`. Tensors are read here, all in one host transfer (one sync per
        call, not per metric, and none in the hot loop). Returns the float values."""
        host = to_host({k: scalar_metric(v) if isinstance(v, torch.Tensor) else v for k, v in metrics.items()
                        if v is not None})
        values = {k: float(v) for k, v in host.items()}
        self.latest.update(values)
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
        if self._csv_path is not None:
            self._write_csv({"step": step, **values})
        if self._bar is not None:
            self._bar.update(max(0, step - self._bar_step))
            self._bar_step = step
            post = {}
            if "time/sps" in self.latest:
                post["sps"] = f"{self.latest['time/sps']:.0f}"
            if "rollout/episode_return" in self.latest:
                post["return"] = f"{self.latest['rollout/episode_return']:.1f}"
            self._bar.set_postfix(post, refresh=False)
        now = time.monotonic()
        if self.console and now - self._last_console >= self.console_interval_s:
            self._last_console = now
            self._print_summary(step)
        return values

    def _write_csv(self, row: dict[str, float]) -> None:
        assert self._csv_path is not None
        new_keys = [k for k in row if k not in self._csv_keys]
        if new_keys:
            # A new metric appeared: rewrite the file with the widened header (rare: first rows only).
            old_rows: list[dict[str, str]] = []
            if self._csv_path.exists():
                with self._csv_path.open(newline="") as f:
                    old_rows = list(csv.DictReader(f))
            self._csv_keys = self._csv_keys + new_keys
            _rewrite_csv(self._csv_path, self._csv_keys, old_rows)
        with self._csv_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._csv_keys).writerow(row)

    def flush(self) -> None:
        """Push TensorBoard events to disk (CSV rows are written as they come)."""
        if self._writer is not None:
            self._writer.flush()

    def _print_summary(self, step: int) -> None:
        lines = [f"step {step:,}"] + [f"  {k:<32} {v:.5g}" for k, v in sorted(self.latest.items())]
        text = "\n".join(lines)
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
