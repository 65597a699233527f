"""Yardsticks from the truths themselves: what a calibrated band covers on count data, and
what a forecast that knew each series' level around each day would score.

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

``local_level`` is a forecast no one can make: for each scored point, the median and the mean
of its series' demand over the ``k`` open buckets before the day and the ``k`` after it, the
day itself left out. It knows the series' level and its mix of quiet and busy days as they
were at that time of year, which a forecast from the past can only estimate; what it cannot
know is which of those days the orders fall on. A forecast that beats it by much knows more
than the recent level (a customer's reorder cycle, a promotion).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.quantiles import inverted_cdf_rank

__all__ = ["local_level", "oracle_coverage"]

CHUNK = 1 << 19  # points a pass: their windows, float32, are 2**19 x (2k + 1) x 4 bytes


def oracle_coverage(codes: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """p10-p90 coverage, and each tail's misses, of the per-series oracle band over the points
    with series ``codes`` (integers) and truths ``y``; NaN for no points."""
    if not len(y):
        return {"coverage": math.nan, "below_p10": math.nan, "above_p90": math.nan}
    order = np.lexsort((y, codes))
    codes, y = codes[order], y[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sizes = np.diff(np.r_[starts, len(codes)])
    rank = inverted_cdf_rank(np.array([0.1, 0.9]), sizes)
    lo, hi = y[starts + rank[:, 0]], y[starts + rank[:, 1]]
    lo, hi = np.repeat(lo, sizes), np.repeat(hi, sizes)
    return {
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
        "below_p10": float(np.mean(y < lo)),
        "above_p90": float(np.mean(y > hi)),
    }


def local_level(
    y: np.ndarray, is_open: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int = 28
) -> tuple[np.ndarray, np.ndarray]:
    """The median and the mean ``[n]`` of ``y [series, bucket]`` over the ``k`` open buckets
    either side of each point (``rows``, ``cols``: an open bucket), the point left out: fewer
    near either end of ``y``, and zeros where the series did not trade (before its first
    order, after its last). The median of an even count averages its two middle values.

    >>> y = np.array([[0.0, 4.0, 0.0, 2.0, 9.0, 6.0]])
    >>> is_open = np.array([True, True, True, False, True, True])
    >>> median, mean = local_level(y, is_open, np.array([0, 0]), np.array([2, 4]), k=1)
    >>> median.tolist(), mean.tolist()  # bucket 3 is closed: 4 and 9 are bucket 2's neighbours
    ([6.5, 3.0], [6.5, 3.0])
    """
    if not is_open[cols].all():
        raise ValueError("local_level scores open buckets only: a closed one has no demand")
    open_cols = np.flatnonzero(is_open)
    position = np.cumsum(is_open) - 1  # of an open bucket among the open ones
    padded = np.pad(y[:, open_cols].astype(np.float32), ((0, 0), (k, k)), constant_values=np.nan)
    windows = sliding_window_view(padded, 2 * k + 1, axis=1)
    median, mean = np.empty(len(rows)), np.empty(len(rows))
    for start in range(0, len(rows), CHUNK):
        part = slice(start, start + CHUNK)
        w = windows[rows[part], position[cols[part]]]  # a copy: the view's rows picked
        w[:, k] = np.nan
        w.sort(axis=1)  # NaN last: np.nanmedian's masked sort is ten times slower
        n = np.sum(~np.isnan(w), axis=1)
        middle = np.take_along_axis(w, np.stack([(n - 1) // 2, n // 2], axis=1), axis=1)
        median[part] = middle.mean(axis=1)
        mean[part] = np.nansum(w, axis=1) / n
    return median, mean
