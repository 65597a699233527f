"""river online models, adapted to the shelfcast ``Forecaster`` protocol."""

from __future__ import annotations

import statistics

from river import time_series

from models.base import Context, State


class _AdditiveSeededHoltWinters(time_series.HoltWinters):
    """river's HoltWinters with the additive season seeded as ``y - level``.

    river 0.26 seeds the seasonal components as ratios ``y / level`` even in additive mode,
    which biases the first seasons and divides by zero when a sparse SKU's first season is all
    zeros. The trend is seeded at zero: the mean difference over one noisy week of daily demand
    is no trend estimate, and river would extrapolate it for weeks.
    """

    def learn_one(self, y: float, x: dict | None = None) -> None:
        if self._initialized or len(self._first_values) + 1 < max(2, self.seasonality):
            super().learn_one(y, x)
            return
        self._first_values.append(y)
        level = statistics.mean(self._first_values)
        self.level.append(level)
        self.trend.append(0.0)
        self.season.extend([v - level for v in self._first_values])
        self._initialized = True


class HoltWinters:
    """Additive Holt-Winters (level, slow trend, weekly season) from river.

    Daily retail demand rarely has a trend that survives a week of extrapolation, so the trend
    starts at zero and learns slowly (small beta). Forecasts are clipped at zero. A closed
    bucket is filled with the model's own one-step forecast: time moves on, and nothing is
    learned from it (before the first season is complete, with the mean so far).

    >>> x = Context(weekday=0)
    >>> m = HoltWinters(season=2)
    >>> for y in [1, 5] * 4:
    ...     m.learn_one(y, x)
    >>> [round(v) for v in m.forecast(2, [x] * 2)]
    [1, 5]
    """

    name = "holt_winters"
    version = "river-hw-2"

    def __init__(
        self, season: int = 7, alpha: float = 0.2, beta: float = 0.01, gamma: float = 0.2
    ) -> None:
        self.season = season
        self._model = _AdditiveSeededHoltWinters(
            alpha=alpha, beta=beta, gamma=gamma, seasonality=season, multiplicative=False
        )
        self._n = 0

    def learn_one(self, y: float | None, x: Context) -> None:
        m = self._model
        if y is None:
            if m._initialized:
                y = m.forecast(horizon=1)[0]
            else:
                y = statistics.mean(m._first_values) if m._first_values else 0.0
        m.learn_one(float(y))
        self._n += 1

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        # Wait for a second season so the seasonal terms have been updated once.
        if self._n < 2 * self.season:
            return None
        return [max(float(v), 0.0) for v in self._model.forecast(horizon=horizon)]

    def state(self) -> State:
        m = self._model
        return {
            "n": self._n,
            "first": list(m._first_values),
            "initialized": m._initialized,
            "level": list(m.level),
            "trend": list(m.trend),
            "season": list(m.season),
        }

    def load(self, state: State) -> None:
        m = self._model
        self._n = state["n"]
        m._first_values = list(state["first"])
        m._initialized = state["initialized"]
        m.level.extend(state["level"])
        m.trend.extend(state["trend"])
        m.season.extend(state["season"])
