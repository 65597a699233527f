"""Baselines every other model must beat (M5: they are hard to beat).

>>> m = SeasonalNaive(season=3)
>>> for y in [1, 2, 3, 4]:
...     m.learn_one(y)
>>> m.forecast(4)
[2.0, 3.0, 4.0, 2.0]
>>> a = MovingAverage(window=2)
>>> for y in [1, 2, 6]:
...     a.learn_one(y)
>>> a.forecast(2)
[4.0, 4.0]
"""

from __future__ import annotations

from collections import deque


class SeasonalNaive:
    """Repeats the last full season (weekly for daily buckets)."""

    name = "seasonal_naive"
    version = "1"

    def __init__(self, season: int = 7) -> None:
        self.season = season
        self._last: deque[float] = deque(maxlen=season)

    def learn_one(self, y: float) -> None:
        self._last.append(float(y))

    def forecast(self, horizon: int) -> list[float] | None:
        if len(self._last) < self.season:
            return None
        last = list(self._last)
        return [last[h % self.season] for h in range(horizon)]


class MovingAverage:
    """Flat forecast at the mean of the last ``window`` buckets."""

    name = "moving_average"
    version = "1"

    def __init__(self, window: int = 28) -> None:
        self._last: deque[float] = deque(maxlen=window)
        self._sum = 0.0

    def learn_one(self, y: float) -> None:
        if len(self._last) == self._last.maxlen:
            self._sum -= self._last[0]
        self._last.append(float(y))
        self._sum += float(y)

    def forecast(self, horizon: int) -> list[float] | None:
        if not self._last:
            return None
        return [max(self._sum / len(self._last), 0.0)] * horizon
