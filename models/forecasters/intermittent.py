"""Croston-type forecasts for intermittent demand: most days sell nothing.

TSB (Teunter, Syntetos and Babai, 2011) smooths two things separately: the probability that a
bucket has any demand (updated every open bucket, so it decays while nothing sells, unlike
Croston's) and the size of a non-zero demand (updated only when something sells). The forecast
is their product, flat over the horizon.

>>> from models.testing import close_of
>>> m = TSB(alpha=0.5, beta=0.5)
>>> m.take(np.array([-1]))
>>> for b, y in enumerate([4, 0, 4, 0]):
...     m.learn(close_of(b, [y]), None)
>>> m.forecast(close_of(3, horizon=2), None)[0].tolist()
[[1.5, 1.5]]
"""

from __future__ import annotations

import numpy as np

from models.base import Close, Columns

__all__ = ["TSB"]


class TSB(Columns):
    name = "tsb"
    own_quantiles = False
    version = "2"

    def __init__(self, alpha: float = 0.1, beta: float = 0.1) -> None:
        super().__init__()
        self.alpha = alpha  # smoothing of the demand size
        self.beta = beta  # smoothing of the demand probability
        self.column("p", np.nan, (), np.float32)
        self.column("z", np.nan, (), np.float32)

    def learn(self, close: Close, features: object) -> None:
        if not close.open:
            return
        y = close.y
        sold = y > 0
        self.p[:] = np.where(np.isnan(self.p), sold, self.p + self.beta * (sold - self.p))
        size = np.where(np.isnan(self.z), y, self.z + self.alpha * (y - self.z))
        self.z[:] = np.where(sold, size, self.z)

    def forecast(self, close: Close, features: object) -> tuple[np.ndarray, np.ndarray]:
        mean = self.p * np.nan_to_num(self.z)
        return np.repeat(mean[:, None], close.horizon, axis=1), ~np.isnan(self.p)
