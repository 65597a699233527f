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
>>> MovingAverage(2).forecast(close_of(3, horizon=2), r)[0].tolist()
[[3.5, 3.5]]
"""

from __future__ import annotations

import numpy as np

from models.base import SEASON, Close, State
from models.recent import Recent

__all__ = ["MovingAverage", "SeasonalNaive"]


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
    """Flat forecast at the mean of the last ``window`` open buckets."""

    name = "moving_average"
    version = "3"

    def __init__(self, window: int = 28) -> None:
        self.window = window

    def forecast(self, close: Close, features: Recent) -> tuple[np.ndarray, np.ndarray]:
        mean = np.maximum(features.mean(self.window), 0.0)
        ready = ~np.isnan(mean)
        return np.repeat(mean[:, None], close.horizon, axis=1), ready
