"""Baselines every other model must beat (M5: they are hard to beat).

Both read the bank's shared ``Recent`` window and keep nothing of their own.

>>> from models.recent import Recent
>>> from models.testing import close_of
>>> r = Recent(season=3)
>>> r.take(np.array([-1]))
>>> for b, y in enumerate([1, 2, 3, 4]):
...     r.update(b, True, np.array([float(y)]), np.array([np.nan]))
>>> means, ready = SeasonalNaive(3).forecast(close_of(3, horizon=4), r)
>>> means.tolist(), ready.tolist()
([[2.0, 3.0, 4.0, 2.0]], [True])
>>> MovingAverage(window=3, sample=2).forecast(close_of(3, horizon=2), r)[0].tolist()
[[[3.0, 3.0, 3.0, 4.0], [3.0, 3.0, 3.0, 4.0]]]
"""

from __future__ import annotations

import numpy as np

from models.base import SEASON, Close, State
from models.quantiles import LEVELS, inverted_cdf_rank
from models.recent import Recent

__all__ = ["MovingAverage", "SeasonalNaive", "sample_quantiles"]


class _Stateless:
    own_quantiles = False

    def take(self, index: np.ndarray) -> None:
        """Nothing per row: the bank's ``Recent`` holds what these models read."""

    def learn(self, close: Close, features: Recent) -> None:
        """Nothing to learn beyond the shared window."""

    def state(self) -> State:
        return {}

    def load(self, state: State) -> None:
        """Nothing to restore."""


class SeasonalNaive(_Stateless):
    """Repeats the last full season (weekly for daily buckets).

    A closed bucket keeps the value its slot had a season earlier, so the Monday after a
    closed week still repeats the last Monday that traded.
    """

    name = "seasonal_naive"
    version = "3"

    def __init__(self, season: int = SEASON) -> None:
        self.season = season

    def forecast(self, close: Close, features: Recent) -> tuple[np.ndarray, np.ndarray]:
        slots = (close.bucket + 1 + np.arange(close.horizon)) % self.season
        ready = features.full_season()
        means = features.slots[:, slots]
        return np.where(ready[:, None], means, np.nan), ready


class MovingAverage(_Stateless):
    """A flat forecast at the mean of the last ``window`` open buckets, with the 10%, 50% and
    90% quantiles of the last ``sample`` of them: the recent days as a sample of each of the
    next.

    The sample's own quantiles, not a band around the mean: on intermittent demand the median
    of the last weeks is 0 on most days while the mean is not, and on the full year the median
    of the last 14 open days alone scored a lower MAE than the combination of all the bank's
    models had. A shorter sample than the mean's follows a change of level sooner, which the
    median can afford and the mean, read for squared error, cannot (docs/accuracy.md, "The
    moving average's own quantiles"). A series with few open buckets yet has a narrow band
    (after one, p10 = p50 = p90 = that day), where a band of errors started Poisson-like: the
    published band is the combination's, calibrated from its misses.
    """

    name = "moving_average"
    version = "4"
    own_quantiles = True

    def __init__(self, window: int = 28, sample: int = 14) -> None:
        self.window, self.sample = window, sample

    def forecast(self, close: Close, features: Recent) -> tuple[np.ndarray, np.ndarray]:
        mean = np.maximum(features.mean(self.window), 0.0)
        ready = ~np.isnan(mean)
        quantiles = sample_quantiles(features.last(self.sample), LEVELS)
        steps = np.concatenate([mean[:, None], quantiles], axis=1)
        return np.repeat(steps[:, None, :], close.horizon, axis=1), ready


def sample_quantiles(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Each row's quantiles ``[n, len(levels)]`` of its values ``[n, k]`` (NaN: none), by the
    inverted CDF: the smallest value with at least that share of the row at or below it, a
    count that sold. NaN for a row without values.

    >>> sample_quantiles(np.array([[0, 0, 0, 5, 9], [2, 1, np.nan, np.nan, np.nan]]),
    ...                  np.array([0.1, 0.5, 0.9])).tolist()
    [[0.0, 0.0, 9.0], [1.0, 1.0, 2.0]]
    """
    ordered = np.sort(values, axis=1)  # NaN last
    n = np.sum(~np.isnan(values), axis=1)
    k = np.maximum(inverted_cdf_rank(levels, n), 0)
    return np.where(n[:, None] > 0, np.take_along_axis(ordered, k, axis=1), np.nan)
