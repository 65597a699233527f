"""One online linear regression per partition, learned across all its series (river).

river's ``LinearRegression`` learns with ``learn_many`` on one mini-batch per close: every
series of the partition that traded contributes one row, so a sparse series is forecast from
what the others taught the model. Demand is scaled by each series' recent level, so the
weights describe shape (weekday profile, how much the same weekday last week matters, price
response) rather than volume. Features, for a target bucket seen from the latest closed one:

* ``wd0`` .. ``wd6``: the target's weekday (one-hot);
* ``lag_season``: demand of the same slot one season before the target;
* ``ma7``, ``ma28``: mean demand of the last 7 and 28 open buckets;
* ``price``: the latest unit price relative to its moving average, minus one (0 unknown).

It learns one-step-ahead examples and applies the same weights at every horizon. Forecasts
are the weights applied to the feature matrix in numpy: the same sum river's
``predict_one`` makes, for all rows at once.

>>> from models.recent import Recent
>>> from models.testing import close_of
>>> r, m = Recent(), OnlineRegression()
>>> for part in (r, m):
...     part.take(np.array([-1, -1]))
>>> for b in range(300):
...     y = np.array([10.0, 20.0]) if b % 7 == 2 else np.array([2.0, 4.0])
...     c = close_of(b, y)
...     m.learn(c, r)
...     r.update(b, True, c.y, c.price)
>>> means, ready = m.forecast(close_of(299), r)
>>> [round(v) for v in means[1]]
[4, 4, 4, 20, 4, 4, 4]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from river import linear_model, optim, utils

from models.base import SEASON, Close, State
from models.recent import Recent

__all__ = ["FEATURES", "OnlineRegression"]

FEATURES = (*(f"wd{d}" for d in range(7)), "lag_season", "ma7", "ma28", "price")


class OnlineRegression:
    name = "online_regression"
    own_quantiles = False
    version = "river-lr-global-1"

    def __init__(self, season: int = SEASON, lr: float = 0.1) -> None:
        self.season = season
        self._model = linear_model.LinearRegression(
            optimizer=optim.SGD(lr), intercept_lr=lr, clip_gradient=5.0
        )

    def take(self, index: np.ndarray) -> None:
        """Nothing per row: the weights are the partition's."""

    def _matrix(
        self, f: Recent, k: int, weekday: int, bucket: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features ``[n, len(FEATURES)]`` for the bucket ``k`` after ``bucket``, and the
        per-row scale they are divided by."""
        scale = np.maximum(np.nan_to_num(f.mean(f.window)), 1.0)
        full = f.age >= self.season
        x = np.zeros((f.rows, len(FEATURES)))
        x[:, weekday] = 1.0
        x[:, 7] = np.where(full, f.slots[:, (bucket + k) % self.season], 0.0) / scale
        x[:, 8] = np.nan_to_num(f.mean(7)) / scale
        x[:, 9] = np.nan_to_num(f.mean(f.window)) / scale
        with np.errstate(invalid="ignore", divide="ignore"):
            x[:, 10] = np.nan_to_num(f.price / f.price_avg - 1.0, posinf=0.0, neginf=0.0)
        return x, scale

    def learn(self, close: Close, features: Recent) -> None:
        """One mini-batch of every row that traded and has a full season behind it."""
        if not close.open:
            return
        rows = features.age >= self.season
        if not rows.any():
            return
        x, scale = self._matrix(features, 0, close.weekday, close.bucket)
        self._model.learn_many(
            pd.DataFrame(x[rows], columns=FEATURES), pd.Series(close.y[rows] / scale[rows])
        )

    def _weights(self) -> np.ndarray:
        w = self._model._weights
        return np.array([w.get(name, 0.0) for name in FEATURES])

    def forecast(self, close: Close, features: Recent) -> tuple[np.ndarray, np.ndarray]:
        ready = (features.count >= self.season) & (features.age >= self.season)
        w, b = self._weights(), self._model.intercept
        means = np.empty((features.rows, close.horizon))
        for k in range(close.horizon):
            x, scale = self._matrix(features, k + 1, int(close.ahead_weekday[k]), close.bucket)
            means[:, k] = np.maximum((x @ w + b) * scale, 0.0)
        return np.where(ready[:, None], means, np.nan), ready

    def state(self) -> State:
        return {
            "weights": self._weights(),
            "intercept": np.array(self._model.intercept),
            "iterations": np.array(self._model.optimizer.n_iterations),
        }

    def load(self, state: State) -> None:
        m = self._model
        m._weights = utils.VectorDict(dict(zip(FEATURES, state["weights"].tolist(), strict=True)))
        m.intercept = float(state["intercept"])
        m.optimizer.n_iterations = int(state["iterations"])
