"""What a calibrated band covers on count data: the yardstick for p10-p90 coverage.

A band whose p10 and p90 are the truth's own 10% and 90% quantiles misses below p10 at most
10% of the time and above p90 at most 10%, so on continuous demand it covers 80%. Demand is
a count, and on an intermittent series most truths sit on one value, 0: a p10 and p90 of 0
are then the right quantiles, and the band holds every zero. Its coverage is 80% plus what
the atoms hold, and a coverage target of "80% give or take 2" cannot be met by calibrated
quantiles there.

``oracle_coverage`` measures it on the very points a forecast was scored on: for each series,
the 10% and 90% quantiles (inverted CDF, the smallest value with at least that share of
truths at or below it) of the truths it was scored against, as if known in advance. Here a
series sold on 2 of 10 days, and another sold 1 to 10 units every day:

>>> codes = np.array([0] * 10 + [1] * 10)
>>> y = np.array([0] * 8 + [3, 5] + list(range(1, 11)), float)
>>> {k: round(v, 2) for k, v in oracle_coverage(codes, y).items()}
{'coverage': 0.9, 'below_p10': 0.0, 'above_p90': 0.1}
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["oracle_coverage"]


def oracle_coverage(codes: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """p10-p90 coverage, and each tail's misses, of the per-series oracle band over the points
    with series ``codes`` (integers) and truths ``y``; NaN for no points."""
    if not len(y):
        return {"coverage": math.nan, "below_p10": math.nan, "above_p90": math.nan}
    order = np.lexsort((y, codes))
    codes, y = codes[order], y[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sizes = np.diff(np.r_[starts, len(codes)])
    # the smallest k with (k + 1) / n >= q; the epsilon keeps 0.9 * 10 from rounding up
    lo = y[starts + np.ceil(0.1 * sizes - 1e-9).astype(np.int64) - 1]
    hi = y[starts + np.ceil(0.9 * sizes - 1e-9).astype(np.int64) - 1]
    lo, hi = np.repeat(lo, sizes), np.repeat(hi, sizes)
    return {
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
        "below_p10": float(np.mean(y < lo)),
        "above_p90": float(np.mean(y > hi)),
    }
