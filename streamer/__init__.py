"""shelfcast streaming service: orders in, forecasts and low-stock alerts out.

What a user imports, loaded on first use (``models.exports``) so that ``shelfcast --help`` does
not pay for torch and pandas::

    from streamer import Settings, Harness, order
"""

from __future__ import annotations

from models.exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "streamer.config.settings": ("Settings", "SettingsError"),
        "streamer.pipeline.batch": ("BatchResult", "Pipeline", "Record"),
        "streamer.features.store": ("FeatureStore",),
        "streamer.publish.messages": ("Output",),
        "streamer.topics.events": ("parse_inventory", "parse_order"),
        "streamer.alerts.reorder": ("reorder_point",),
        "streamer.ingest.app": ("run_worker",),
        "streamer.ops.backtest": ("run_backtest",),
        "streamer.testing": ("Harness", "order", "stock"),
    },
)
