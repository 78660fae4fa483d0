"""Is a row of the results table better than the baseline, worse, or within noise? Both rows are measured
on the *same* test images, so the comparison is paired by image: what varies is which seeds were drawn and
which images happened to be in the test set, and that is what the interval covers.

``paired_comparison`` takes each seed's per-image correctness (0/1) on the shared test images and splits the
variance of the difference in mean accuracy into

- a seed part, from the spread of each row's per-seed accuracies (``s²/n``: a new seed), and
- an image part, the spread over images of the per-image difference beyond what the seeds' own noise puts
  there (two-way ANOVA residuals of each row: a new sample of images of these classes),

then a t interval with Satterthwaite's degrees of freedom. With one seed in a row the seed part cannot be
estimated: the comparison is on the images alone (conditional on those seeds), and says so.
``independent_comparison`` is the method for runs without per-image predictions (older runs, the regression
task): each row's seed spread plus an independent binomial error per row, which is very conservative for
rows that share one test set. ``tests/test_compare.py`` checks both by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Comparison:
    """A row against the baseline: the difference in mean metric, its 95% interval, p for "no difference"."""

    delta: float
    low: float
    high: float
    p_value: float
    method: str  # "paired" (images and seeds), "images" (one seed in a row), "independent"
    higher_is_better: bool = True  # accuracy; False for an error such as mse

    @property
    def verdict(self) -> str:
        if math.isnan(self.low):
            return "unknown"  # one run in each row, no per-image predictions: nothing to measure the noise by
        if self.low > 0:
            return "better" if self.higher_is_better else "worse"
        if self.high < 0:
            return "worse" if self.higher_is_better else "better"
        return "within noise"


def _verdict_interval(delta: float, se: float, df: float, method: str) -> Comparison:
    if not se > 0:  # the rows' predictions agree on every image, or nothing varies
        return Comparison(delta, delta, delta, 1.0 if delta == 0 else 0.0, method)
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return Comparison(delta, delta - half, delta + half, p, method)


def _residual_ms(correct: np.ndarray) -> float:
    """The two-way ANOVA residual mean square of a (seeds, images) 0/1 matrix: the per-cell noise left once
    each seed's and each image's mean are taken out."""
    k, n = correct.shape
    resid = correct - correct.mean(1, keepdims=True) - correct.mean(0, keepdims=True) + correct.mean()
    return float((resid**2).sum() / ((k - 1) * (n - 1)))


def paired_comparison(base: np.ndarray, row: np.ndarray) -> Comparison:
    """``base`` (m seeds, N images) and ``row`` (n seeds, N images): 1 where a seed's model classified the
    image correctly. The difference is in mean accuracy (row minus baseline)."""
    base, row = np.asarray(base, dtype=np.float64), np.asarray(row, dtype=np.float64)
    if base.ndim != 2 or row.ndim != 2 or base.shape[1] != row.shape[1] or base.shape[1] < 2:
        raise ValueError(f"need (seeds, images) matrices on the same images, got {base.shape} and {row.shape}")
    m, n, images = len(base), len(row), base.shape[1]
    delta = float(row.mean() - base.mean())
    per_image = row.mean(0) - base.mean(0)
    spread = float(per_image.var(ddof=1))
    if m < 2 or n < 2:
        return _verdict_interval(delta, math.sqrt(spread / images), images - 1, "images")
    image_part = max(0.0, spread - _residual_ms(row) / n - _residual_ms(base) / m) / images
    parts = [(image_part, images - 1), (float(row.mean(1).var(ddof=1)) / n, n - 1),
             (float(base.mean(1).var(ddof=1)) / m, m - 1)]  # fmt: skip
    variance = sum(v for v, _ in parts)
    df = variance**2 / sum(v**2 / d for v, d in parts if v > 0) if variance > 0 else images - 1
    return _verdict_interval(delta, math.sqrt(variance), df, "paired")


def independent_comparison(base: Sequence[float], row: Sequence[float], n_test: int = 0,
                           higher_is_better: bool = True) -> Comparison:  # fmt: skip
    """From each run's summary value alone: the seeds' spread (std/√n) of each row plus, for accuracies
    measured on ``n_test`` images, an independent binomial error per row; a normal interval."""

    def variance(values: Sequence[float]) -> float:
        mean = float(np.mean(values))
        seeds = float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0
        return seeds + (max(mean * (1 - mean), 0.0) / n_test if n_test else 0.0)

    delta = float(np.mean(row) - np.mean(base))
    se = math.sqrt(variance(base) + variance(row))
    if not se > 0:
        return Comparison(delta, math.nan, math.nan, math.nan, "independent", higher_is_better)
    half = float(stats.norm.ppf(0.5 + LEVEL / 2)) * se
    p = float(2 * stats.norm.sf(abs(delta) / se))
    return Comparison(delta, delta - half, delta + half, p, "independent", higher_is_better)
