"""Statistics for results over seeds: the interquartile mean and percentile-bootstrap confidence intervals.

NumPy only, so `rlkit plot` needs nothing more for its curves and tables; tests/test_bench_stats.py checks them
against scipy.stats.trim_mean and scipy.stats.bootstrap on synthetic data. (rliable, an optional extra, is used
only for the aggregates across environments.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: drop the lowest and highest int(0.25 * n) values along `axis`, average the rest
    (scipy.stats.trim_mean(x, 0.25), which rliable's IQM also uses; with fewer than 4 values it is the mean)."""
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("iqm of an empty sample")
    k = int(0.25 * n)
    return np.take(x, np.arange(k, n - k), axis=axis).mean(axis=axis)


def mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).mean(axis=axis)


def bootstrap_ci(samples: np.ndarray, statistic: Callable[..., np.ndarray] = mean, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of `statistic` over the FIRST axis of `samples` (the seeds).

    `samples` is [n] or [n, T] (T points of a learning curve, resampled jointly so one resample is a set of whole
    runs). `statistic(x, axis=...)` must reduce the given axis. Returns (low, high), each of shape [] or [T]. With
    one sample the interval is that sample (no spread can be estimated): callers show the seed count with it.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(samples, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    stats = statistic(x[idx], axis=1)  # [n_resamples, ...]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha], axis=0)
    return low, high
