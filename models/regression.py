"""An online linear regression per series over lag, rolling, calendar and price features.

river's ``LinearRegression``, trained by SGD one closed bucket at a time. Demand is scaled by
the series' recent level so that the weights describe shape (weekday profile, how much the
same weekday last week matters, price response) rather than volume. Features, for a target
bucket seen from the latest closed one:

* ``wd0`` .. ``wd6``: the target's weekday (one-hot);
* ``lag_season``: demand of the same slot one season before the target;
* ``ma7``, ``ma28``: mean demand of the last 7 and 28 open buckets;
* ``price``: the latest unit price relative to its moving average, minus one.

It learns one-step-ahead examples and applies the same weights at every horizon.

>>> x = [Context(weekday=d % 7) for d in range(200)]
>>> m = OnlineRegression()
>>> for d in range(200):
...     m.learn_one(10.0 if d % 7 == 2 else 2.0, x[d])
>>> [round(v) for v in m.forecast(7, x[193:200])]
[2, 2, 2, 2, 2, 10, 2]
"""

from __future__ import annotations

from collections import deque

from river import linear_model, optim, utils

from models.base import Context, State

PRICE_ALPHA = 0.05


class OnlineRegression:
    name = "online_regression"
    version = "river-lr-1"

    def __init__(self, season: int = 7, lr: float = 0.02) -> None:
        self.season = season
        self._model = linear_model.LinearRegression(
            optimizer=optim.SGD(lr), intercept_lr=lr, clip_gradient=5.0
        )
        self._slots: deque[float] = deque(maxlen=season)  # like SeasonalNaive's
        self._open: deque[float] = deque(maxlen=28)
        self._price: float | None = None
        self._price_avg: float | None = None

    def _scale(self) -> float:
        return max(sum(self._open) / len(self._open), 1.0) if self._open else 1.0

    def _features(self, k: int, weekday: int, scale: float) -> dict[str, float]:
        """Features for the bucket ``k`` steps after the latest one learned (k >= 1)."""
        recent = list(self._open)
        lag = self._slots[k - 1] if len(self._slots) == self.season else 0.0
        feats = {
            f"wd{weekday}": 1.0,
            "lag_season": lag / scale,
            "ma7": sum(recent[-7:]) / max(len(recent[-7:]), 1) / scale,
            "ma28": sum(recent) / max(len(recent), 1) / scale,
        }
        if self._price is not None and self._price_avg:
            feats["price"] = self._price / self._price_avg - 1.0
        return feats

    def learn_one(self, y: float | None, x: Context) -> None:
        if y is not None and len(self._slots) == self.season:
            scale = self._scale()
            self._model.learn_one(self._features(1, x.weekday, scale), y / scale)
        if y is None:
            y_slot = self._slots[0] if len(self._slots) == self.season else 0.0
        else:
            y_slot = float(y)
            self._open.append(y_slot)
        self._slots.append(y_slot)
        if x.price is not None:
            self._price = x.price
            avg = self._price_avg
            self._price_avg = x.price if avg is None else avg + PRICE_ALPHA * (x.price - avg)

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        if len(self._open) < self.season or len(self._slots) < self.season:
            return None
        scale = self._scale()
        return [
            max(self._model.predict_one(self._features(k + 1, xs[k].weekday, scale)) * scale, 0.0)
            for k in range(horizon)
        ]

    def state(self) -> State:
        m = self._model
        return {
            "weights": dict(m._weights),
            "intercept": m.intercept,
            "iterations": m.optimizer.n_iterations,
            "slots": list(self._slots),
            "open": list(self._open),
            "price": self._price,
            "price_avg": self._price_avg,
        }

    def load(self, state: State) -> None:
        m = self._model
        m._weights = utils.VectorDict(dict(state["weights"]))
        m.intercept = state["intercept"]
        m.optimizer.n_iterations = state["iterations"]
        self._slots.extend(state["slots"])
        self._open.extend(state["open"])
        self._price, self._price_avg = state["price"], state["price_avg"]
