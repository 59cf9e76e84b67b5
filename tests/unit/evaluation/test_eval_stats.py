"""bootstrap_ci: empty input, determinism, coverage of the truth, shrinking with n, several samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distill.evaluation.stats import bootstrap_ci


def test_empty_input_gives_nan():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci(([1.0, 2.0], []), lambda a, b: a.mean() - b.mean()))


def test_constant_sample_has_zero_width():
    assert bootstrap_ci([3.0] * 20) == (3.0, 3.0)


def test_seeded_and_deterministic():
    x = np.random.default_rng(1).normal(size=200)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci(x, seed=7) != bootstrap_ci(x, seed=8)


def test_interval_contains_sample_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 500, 5000):
        x = rng.normal(loc=2.0, size=n)
        low, high = bootstrap_ci(x, n_boot=500)
        assert low < x.mean() < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    # The width of a 95% interval of a mean is about 2 * 1.96 / sqrt(n) for unit variance.
    assert widths[2] == pytest.approx(2 * 1.96 / math.sqrt(5000), rel=0.2)


def test_two_samples_resampled_independently():
    a, b = np.full(30, 1.0), np.full(40, -1.0)
    assert bootstrap_ci((a, b), lambda x, y: x.mean() - y.mean()) == (2.0, 2.0)
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, size=300), rng.normal(0.0, size=300)
    low, high = bootstrap_ci((a, b), lambda x, y: x.mean() - y.mean())
    assert low < a.mean() - b.mean() < high


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_custom_statistic_and_non_finite_resamples_dropped():
    x = np.array([0.0, 0.0, 1.0, 2.0])
    # The ratio is inf/nan when a resample has no non-zero value; those resamples are dropped.
    low, high = bootstrap_ci(x, lambda s: s.sum() / (s > 0).sum())
    assert 1.0 <= low <= high <= 2.0
    assert all(math.isnan(v) for v in bootstrap_ci([0.0, 0.0], lambda s: s.sum() / (s > 0).sum()))


def test_rows_of_a_2d_sample_are_the_units():
    pairs = np.array([[1.0, 1.0], [1.0, 1.0], [3.0, 1.0]])  # statistic: ratio of column sums
    low, high = bootstrap_ci(pairs, lambda s: s[:, 0].sum() / s[:, 1].sum())
    assert 1.0 <= low <= high <= 3.0


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"alpha": 1.0}, {"n_boot": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], **kwargs)


def test_several_samples_need_a_statistic():
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(([1.0], [2.0]))
