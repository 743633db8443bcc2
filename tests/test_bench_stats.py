"""rlkit.stats (the interval arithmetic behind `rlkit plot`) against scipy on synthetic data."""
from __future__ import annotations

import numpy as np
import pytest

from rlkit.stats import bootstrap_ci, iqm, mean

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 10, 33])
def test_iqm_is_scipy_trim_mean_a_quarter(n):
    x = np.random.default_rng(n).standard_t(df=2, size=n) * 100
    assert iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25), rel=1e-12, abs=1e-12)


def test_iqm_reduces_the_given_axis():
    x = np.random.default_rng(0).normal(size=(7, 11))
    assert np.allclose(iqm(x, axis=0), scipy_stats.trim_mean(x, 0.25, axis=0))
    assert np.allclose(iqm(x, axis=1), scipy_stats.trim_mean(x, 0.25, axis=1))


@pytest.mark.parametrize("stat_name,n", [("mean", 5), ("mean", 20), ("iqm", 10), ("iqm", 40)])
def test_bootstrap_interval_matches_scipy_percentile_bootstrap(stat_name, n):
    rng = np.random.default_rng(42 + n)
    x = rng.lognormal(mean=3.0, sigma=0.8, size=n)  # skewed, like returns
    ours = {"mean": mean, "iqm": iqm}[stat_name]
    theirs = {"mean": np.mean, "iqm": lambda s, axis: scipy_stats.trim_mean(s, 0.25, axis=axis)}[stat_name]
    lo, hi = bootstrap_ci(x, ours, confidence=0.95, n_resamples=20000, seed=1)
    ref = scipy_stats.bootstrap((x,), theirs, confidence_level=0.95, n_resamples=20000, method="percentile",
                                random_state=np.random.default_rng(2)).confidence_interval
    width = ref.high - ref.low
    # Two independent 20k-resample Monte Carlo estimates of the same quantiles: they agree to a few % of the width.
    assert lo == pytest.approx(ref.low, abs=0.05 * width) and hi == pytest.approx(ref.high, abs=0.05 * width)
    assert lo < ours(x, axis=0) < hi


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(400):
        x = rng.normal(10.0, 2.0, size=30)
        lo, hi = bootstrap_ci(x, n_resamples=500, seed=int(rng.integers(1 << 31)))
        hits += lo <= 10.0 <= hi
    assert 0.90 <= hits / 400 <= 0.98  # the percentile bootstrap under-covers a little at n=30


def test_bootstrap_of_curves_is_per_point_and_one_seed_gives_a_zero_width_band():
    curves = np.random.default_rng(3).normal(size=(6, 50)).cumsum(axis=1)
    lo, hi = bootstrap_ci(curves, n_resamples=4000)
    m = curves.mean(0)
    assert lo.shape == hi.shape == (50,) and np.all(lo <= m + 1e-12) and np.all(m <= hi + 1e-12)
    for t in (0, 25, 49):  # a column alone gives the same interval (the same resampled seeds)
        lo_t, hi_t = bootstrap_ci(curves[:, t], n_resamples=4000)
        assert lo_t == pytest.approx(lo[t]) and hi_t == pytest.approx(hi[t])
    lo1, hi1 = bootstrap_ci(curves[:1])
    assert np.array_equal(lo1, curves[0]) and np.array_equal(hi1, curves[0])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_ci(np.ones(3), confidence=95)
    with pytest.raises(ValueError, match="empty"):
        iqm(np.array([]))
