"""Croston-type forecasts for intermittent demand: most days sell nothing.

TSB (Teunter, Syntetos and Babai, 2011) smooths two things separately: the probability that a
bucket has any demand (updated every open bucket, so it decays while nothing sells, unlike
Croston's) and the size of a non-zero demand (updated only when something sells). The forecast
is their product, flat over the horizon.

>>> from models.base import Context
>>> x = Context(weekday=0)
>>> m = TSB(alpha=0.5, beta=0.5)
>>> for y in [4, 0, 4, 0]:
...     m.learn_one(y, x)
>>> m.forecast(2, [x] * 2)
[1.5, 1.5]
"""

from __future__ import annotations

from models.base import Context, State


class TSB:
    name = "tsb"
    version = "1"

    def __init__(self, alpha: float = 0.1, beta: float = 0.1) -> None:
        self.alpha = alpha  # smoothing of the demand size
        self.beta = beta  # smoothing of the demand probability
        self._p: float | None = None
        self._z: float | None = None

    def learn_one(self, y: float | None, x: Context) -> None:
        if y is None:
            return
        sold = y > 0
        if self._p is None:
            self._p = float(sold)
        else:
            self._p += self.beta * (float(sold) - self._p)
        if sold:
            self._z = float(y) if self._z is None else self._z + self.alpha * (y - self._z)

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        if self._p is None:
            return None
        return [self._p * (self._z or 0.0)] * horizon

    def state(self) -> State:
        return {"p": self._p, "z": self._z}

    def load(self, state: State) -> None:
        self._p, self._z = state["p"], state["z"]
