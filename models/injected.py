"""A member of a series' bank whose forecasts come from outside it: the global LSTM.

The LSTM is trained on all series at once by the trainer process and run for all series of a
partition in one batch at each bucket close (``streamer/lstm_serving.py``). Inside each
series' bank it still behaves like any model: its forecasts are issued, scored when the truth
arrives, given conformal quantiles from its own errors, and compete in the per-series
selection. It learns nothing per series, and forecasts nothing in a close that did not
``offer`` it a forecast (no champion yet, or a replay after a restart).

>>> m = Injected("lstm")
>>> m.forecast(2, []) is None
True
>>> m.offer("v3", [1.0, 2.0])
>>> m.version, m.forecast(2, []), m.forecast(2, [])
('v3', [1.0, 2.0], None)
"""

from __future__ import annotations

from models.base import Context, State


class Injected:
    def __init__(self, name: str) -> None:
        self.name = name
        self.version = "none"
        self._offered: list[float] | None = None

    def offer(self, version: str, means: list[float]) -> None:
        """The forecast to give at the next ``forecast`` call, from model ``version``."""
        self.version = version
        self._offered = means

    def learn_one(self, y: float | None, x: Context) -> None:
        """Nothing per series: the model learns across all series in the trainer."""

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        offered, self._offered = self._offered, None
        return None if offered is None else offered[:horizon]

    def state(self) -> State:
        return {"version": self.version}

    def load(self, state: State) -> None:
        self.version = state["version"]
