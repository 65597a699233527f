"""Per-series model choice: the model with the lowest recent error publishes.

A model without enough scored forecasts yet cannot win; then seasonal naive publishes if it is
ready, else the first ready model in the bank's order.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.quantiles import Conformal, Step

FALLBACK = "seasonal_naive"


def select(models: Mapping[str, Conformal], forecasts: Mapping[str, list[Step]]) -> str | None:
    scored = [(mae, name) for name in forecasts if (mae := models[name].recent_mae()) is not None]
    if scored:
        return min(scored)[1]
    if FALLBACK in forecasts:
        return FALLBACK
    return next(iter(forecasts), None)
