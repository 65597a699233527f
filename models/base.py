"""The one protocol every shelfcast model implements.

Like river's ``time_series.base.Forecaster``: a model learns one observation at a time and
forecasts a horizon of point values. Quantiles, selection and evaluation are built on top of
this protocol, so they never need to know which model they are handling.
"""

from __future__ import annotations

from typing import Protocol


class Forecaster(Protocol):
    name: str
    version: str

    def learn_one(self, y: float) -> None:
        """Learn the value of the bucket that just closed."""

    def forecast(self, horizon: int) -> list[float] | None:
        """Point forecasts for the next ``horizon`` buckets, or None while not ready."""
