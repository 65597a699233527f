"""Forecasting models for shelfcast: every model's state as arrays over a partition's series.

What a user imports, loaded on first use (PEP 562) so that importing one model does not load
torch or river::

    from models import Bank, SeasonalNaive, TSB
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Forecaster": "models.base",
    "Close": "models.base",
    "Bank": "models.bank",
    "Bands": "models.quantiles",
    "Combination": "models.combination",
    "SeasonalNaive": "models.forecasters.baselines",
    "MovingAverage": "models.forecasters.baselines",
    "TSB": "models.forecasters.intermittent",
    "OnlineRegression": "models.forecasters.regression",
    "Injected": "models.forecasters.injected",
    "GlobalLSTM": "models.lstm.network",
    "LSTMConfig": "models.lstm.network",
    "Registry": "models.lstm.registry",
    "Prequential": "models.evaluation",
    "pack": "models.snapshot",
    "unpack": "models.snapshot",
    "check_model": "models.testing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
