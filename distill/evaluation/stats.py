"""Percentile bootstrap confidence intervals (Efron & Tibshirani 1993), seeded and numpy-only."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (nan below 1)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    # Cornish-Fisher expansion to second order: within 0.001 of the tables above 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_interval(diffs: list[float]) -> tuple[float, list[float] | None]:
    """Mean of per-seed paired differences and its 95% t interval over seeds (None below 2 finite seeds)."""
    d = np.asarray([x for x in diffs if x is not None and math.isfinite(x)], dtype=float)
    if len(d) == 0:
        return math.nan, None
    m = float(d.mean())
    if len(d) < 2:
        return m, None
    h = t975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return m, [m - h, m + h]


# The vectorised mean path draws an (n_boot, n) index matrix; cap its size so a 100k-sample input does not
# allocate gigabytes. Chunks change nothing but memory: each chunk uses the same generator in order.
_MAX_INDEX_CELLS = 4_000_000


def _as_samples(values: Any) -> tuple[list[np.ndarray], bool]:
    """Split `values` into independent samples. A tuple whose items are all array-like is several samples;
    anything else (a list, an array, a tuple of numbers) is one sample."""
    if isinstance(values, tuple) and values and all(np.ndim(v) >= 1 for v in values):
        return [np.asarray(v) for v in values], True
    return [np.asarray(values)], False


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | tuple[Any, ...],
    statistic: Callable[..., float] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval `(low, high)` of `statistic` at level `1 - alpha`.

    `values` is one sample, shape (n,) or (n, ...) with rows as the resampled units, or a tuple of independent
    samples (e.g. two groups' scores), each resampled separately with replacement at its own size. `statistic`
    receives one resample per sample (`statistic(x)` or `statistic(a, b)`) and returns a float; the default is
    the mean of a single sample. Resamples whose statistic is not finite (e.g. a ratio with a zero denominator)
    are dropped before taking percentiles.

    Returns `(nan, nan)` when any sample is empty or no resample gives a finite statistic. The same `seed` gives
    the same interval; its width shrinks roughly as 1/sqrt(n).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    samples, multi = _as_samples(values)
    if any(len(s) == 0 for s in samples):
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)

    if statistic is None:
        if multi:
            raise ValueError("several samples need a statistic, e.g. lambda a, b: a.mean() - b.mean()")
        x = samples[0].astype(float)
        if x.ndim != 1:
            raise ValueError(f"the default statistic (mean) needs a 1-D sample, got shape {x.shape}")
        n = len(x)
        chunk = max(1, _MAX_INDEX_CELLS // n)
        stats = np.concatenate(
            [
                x[rng.integers(0, n, size=(min(chunk, n_boot - start), n))].mean(axis=1)
                for start in range(0, n_boot, chunk)
            ]
        )
    else:
        stats = np.empty(n_boot, dtype=float)
        for b in range(n_boot):
            resampled = [s[rng.integers(0, len(s), size=len(s))] for s in samples]
            stats[b] = float(statistic(*resampled))

    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return (math.nan, math.nan)
    low, high = np.percentile(finite, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return (float(low), float(high))
