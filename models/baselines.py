"""Baselines every other model must beat (M5: they are hard to beat).

>>> from models.base import Context
>>> x = Context(weekday=0)
>>> m = SeasonalNaive(season=3)
>>> for y in [1, 2, 3, 4]:
...     m.learn_one(y, x)
>>> m.forecast(4, [x] * 4)
[2.0, 3.0, 4.0, 2.0]
>>> a = MovingAverage(window=2)
>>> for y in [1, 2, None, 6]:
...     a.learn_one(y, x)
>>> a.forecast(2, [x] * 2)
[4.0, 4.0]
"""

from __future__ import annotations

from collections import deque

from models.base import Context, State


class SeasonalNaive:
    """Repeats the last full season (weekly for daily buckets).

    A closed bucket keeps the value its slot had a season earlier, so the Monday after a
    closed week still repeats the last Monday that traded.
    """

    name = "seasonal_naive"
    version = "2"

    def __init__(self, season: int = 7) -> None:
        self.season = season
        self._last: deque[float] = deque(maxlen=season)
        self._seen = 0  # open buckets learned

    def learn_one(self, y: float | None, x: Context) -> None:
        if y is None:
            # keep the slot's last open value; before a full season, an unknown slot is 0
            y = self._last[0] if len(self._last) == self.season else 0.0
        else:
            self._seen += 1
        self._last.append(float(y))

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        if len(self._last) < self.season or self._seen < self.season:
            return None
        last = list(self._last)
        return [last[h % self.season] for h in range(horizon)]

    def state(self) -> State:
        return {"last": list(self._last), "seen": self._seen}

    def load(self, state: State) -> None:
        self._last.extend(state["last"])
        self._seen = state["seen"]


class MovingAverage:
    """Flat forecast at the mean of the last ``window`` open buckets."""

    name = "moving_average"
    version = "2"

    def __init__(self, window: int = 28) -> None:
        self._last: deque[float] = deque(maxlen=window)

    def learn_one(self, y: float | None, x: Context) -> None:
        if y is not None:
            self._last.append(float(y))

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        if not self._last:
            return None
        # a fresh sum, not a running one: float drift would break restart equality
        return [max(sum(self._last) / len(self._last), 0.0)] * horizon

    def state(self) -> State:
        return {"last": list(self._last)}

    def load(self, state: State) -> None:
        self._last.extend(state["last"])
