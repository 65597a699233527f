"""Forecasting models for shelfcast: every model's state as arrays over a partition's series.

What a user imports, loaded on first use (``models.exports``) so that importing one model does
not load torch or river::

    from models import Bank, SeasonalNaive, TSB
"""

from __future__ import annotations

from models.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "models.base": ("Close", "Forecaster"),
        "models.bank": ("Bank",),
        "models.quantiles": ("Bands",),
        "models.combination": ("Combination",),
        "models.forecasters.baselines": ("MovingAverage", "SeasonalNaive"),
        "models.forecasters.intermittent": ("TSB",),
        "models.forecasters.regression": ("OnlineRegression",),
        "models.forecasters.injected": ("Injected",),
        "models.lstm.network": ("GlobalLSTM", "LSTMConfig"),
        "models.lstm.registry": ("Registry",),
        "models.evaluation": ("Prequential",),
        "models.snapshot": ("pack", "unpack"),
        "models.testing": ("check_model",),
    },
)
