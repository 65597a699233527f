"""The one protocol every shelfcast model implements.

Like river's ``time_series.base.Forecaster``: a model learns one observation at a time and
forecasts a horizon of point values. Quantiles, selection and evaluation are built on top of
this protocol, so they never need to know which model they are handling.

A bucket in which the shop was closed has no observation: ``learn_one(None, x)``. A closed day
is not a day of zero demand, so a model must not learn it as one; it only lets time pass.

``state()`` and ``load()`` carry the model through a restart as plain JSON (no pickle), so a
restored model forecasts exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Context:
    """What is known about a bucket besides its demand: calendar and price."""

    weekday: int  # 0 = Monday, of the bucket's start
    closed: bool = False  # the shop does not trade in this bucket
    price: float | None = None  # mean unit price sold in the bucket, None when nothing sold


State = dict[str, Any]


class Forecaster(Protocol):
    name: str
    version: str

    def learn_one(self, y: float | None, x: Context) -> None:
        """Learn the bucket that just closed; ``y`` is None when the shop was closed."""

    def forecast(self, horizon: int, xs: list[Context]) -> list[float] | None:
        """Point (mean) forecasts for the next ``horizon`` buckets, or None while not ready.

        ``xs`` describes those buckets, as far as it is known at forecast time.
        """

    def state(self) -> State:
        """Everything learned so far, as JSON-compatible values."""

    def load(self, state: State) -> None:
        """Continue from a ``state()`` of a model built with the same settings."""
