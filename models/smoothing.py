"""Additive Holt-Winters (level, slow trend, weekly season), one row per series.

The vectorised successor of river's ``HoltWinters`` with the same smoothing constants and the
same seeding: after one season the level is the mean of the open values so far and each slot
of the season is its value minus that level; the trend starts at zero and learns slowly
(small beta), since daily retail demand rarely has a trend that survives a week of
extrapolation. A closed bucket lets time pass as river's model did when fed its own one-step
forecast: the level moves by the trend, the season is untouched. Forecasts are clipped at
zero, and wait for a second season so the seasonal terms have been updated once.

>>> from models.recent import Recent
>>> from models.testing import close_of
>>> r, m = Recent(season=2), HoltWinters(season=2)
>>> for part in (r, m):
...     part.take(np.array([-1]))
>>> for b, y in enumerate([1, 5] * 4):
...     c = close_of(b, [y])
...     m.learn(c, r)
...     r.update(b, True, c.y, c.price)
>>> [round(v) for v in m.forecast(close_of(7, horizon=2), r)[0][0]]
[1, 5]
"""

from __future__ import annotations

import numpy as np

from models.base import Close, Columns
from models.recent import Recent


class HoltWinters(Columns):
    name = "holt_winters"
    version = "ets-additive-1"

    def __init__(
        self, season: int = 7, alpha: float = 0.2, beta: float = 0.01, gamma: float = 0.2
    ) -> None:
        super().__init__()
        self.season, self.alpha, self.beta, self.gamma = season, alpha, beta, gamma
        self.column("level", np.nan)  # NaN until seeded
        self.column("trend", 0.0)
        self.column("seasonal", 0.0, (season,))

    def learn(self, close: Close, features: Recent) -> None:
        """Update from the closed bucket; ``features`` is as of before it."""
        seeded = ~np.isnan(self.level)
        if not close.open:
            self.level = self.level + self.trend
        else:
            slot = close.bucket % self.season
            s_old = self.seasonal[:, slot]
            level = self.alpha * (close.y - s_old) + (1 - self.alpha) * (self.level + self.trend)
            trend = self.beta * (level - self.level) + (1 - self.beta) * self.trend
            self.seasonal[:, slot] = np.where(
                seeded, self.gamma * (close.y - level) + (1 - self.gamma) * s_old, s_old
            )
            self.level = np.where(seeded, level, self.level)
            self.trend = np.where(seeded, trend, self.trend)
        # seed the rows completing their first season with this bucket
        due = ~seeded & (features.age + 1 >= self.season) & (features.count + close.open > 0)
        if due.any():
            values = features.last(features.window)
            if close.open:
                values = np.concatenate([close.y[:, None], values], axis=1)
            known = ~np.isnan(values)
            level = np.nansum(values, axis=1) / np.maximum(known.sum(axis=1), 1)
            slots = features.slots.copy()
            if close.open:
                slots[:, close.bucket % self.season] = close.y
            self.level = np.where(due, level, self.level)
            self.seasonal = np.where(due[:, None], slots - level[:, None], self.seasonal)

    def forecast(self, close: Close, features: Recent) -> tuple[np.ndarray, np.ndarray]:
        h = np.arange(1, close.horizon + 1)
        slots = (close.bucket + h) % self.season
        means = self.level[:, None] + h * self.trend[:, None] + self.seasonal[:, slots]
        ready = ~np.isnan(self.level) & (features.age >= 2 * self.season)
        ready &= features.count >= self.season
        return np.where(ready[:, None], np.maximum(means, 0.0), np.nan), ready
