"""A member of the bank whose forecasts come from outside it: the global LSTM.

The LSTM is trained on all series at once by the trainer process and run for all series of a
partition in one batch at each bucket close (``streamer/serving/lstm.py``). In the bank it
still behaves like any model: its forecasts are issued, scored when the truth arrives, and
weighed in the published combination. It is offered (mean, p10, p50, p90) ``[n, horizon,
4]`` and keeps the network's own quantiles: trained for them on every series, they beat a
band around its mean (on the full year its own p50 had a tenth lower MAE), so the bank keeps
no band of errors for it. It learns nothing itself, and forecasts nothing in a close that
did not ``offer`` it a forecast (no champion yet, or a replay after a restart).

>>> from models.testing import close_of
>>> m = Injected("lstm")
>>> m.forecast(close_of(0, horizon=2), None)[1].tolist()
[False]
>>> m.offer("v3", np.array([[[1.5, 0.0, 1.0, 4.0]] * 2]))  # (mean, p10, p50, p90) of 2 steps
>>> m.version, m.forecast(close_of(0, horizon=2), None)[0][0, 1].tolist()
('v3', [1.5, 0.0, 1.0, 4.0])
>>> m.forecast(close_of(1, horizon=2), None)[1].tolist()  # an offer is for one close
[False]
"""

from __future__ import annotations

import numpy as np

from models.base import Close, State

__all__ = ["Injected"]


class Injected:
    own_quantiles = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.version = "none"
        self._offered: np.ndarray | None = None

    def offer(self, version: str, forecasts: np.ndarray) -> None:
        """The forecasts to give at the next ``forecast``, from ``version``: (mean, p10, p50,
        p90) ``[n, horizon, 4]`` (``streamer.serving.lstm.with_mean`` makes them from a
        network's quantiles)."""
        if np.ndim(forecasts) != 3 or np.shape(forecasts)[2] != 4:
            raise ValueError(
                f"{self.name} takes (mean, p10, p50, p90) [series, horizon, 4], got the shape "
                f"{np.shape(forecasts)}: give means their quantiles with with_mean()"
            )
        self.version = version
        self._offered = forecasts

    def take(self, index: np.ndarray) -> None:
        """Nothing per row: an offer is for the rows of one close."""

    def learn(self, close: Close, features: object) -> None:
        """Nothing per series: the model learns across all series in the trainer."""

    def forecast(self, close: Close, features: object) -> tuple[np.ndarray, np.ndarray]:
        offered, self._offered = self._offered, None
        if offered is None:
            return np.full((close.n, close.horizon, 4), np.nan), np.zeros(close.n, bool)
        forecasts = np.asarray(offered, np.float64)[:, : close.horizon]
        # a row with a non-finite forecast (a diverged model) is not ready: published, an
        # infinity would fail every close of the partition
        ready = np.isfinite(forecasts.reshape(close.n, -1)).all(axis=1)
        return np.where(ready[:, None, None], forecasts, np.nan), ready

    def state(self) -> State:
        return {"version": np.array(self.version)}

    def load(self, state: State) -> None:
        self.version = str(state["version"])
