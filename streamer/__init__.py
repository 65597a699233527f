"""shelfcast streaming service: orders in, forecasts and low-stock alerts out.

What a user imports, loaded on first use (PEP 562) so that ``shelfcast --help`` does not pay
for torch and pandas::

    from streamer import Settings, Harness, order
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Settings": "streamer.config.settings",
    "SettingsError": "streamer.config.settings",
    "Pipeline": "streamer.pipeline.batch",
    "Record": "streamer.pipeline.batch",
    "BatchResult": "streamer.pipeline.batch",
    "FeatureStore": "streamer.features.store",
    "Output": "streamer.publish.messages",
    "parse_order": "streamer.topics.events",
    "parse_inventory": "streamer.topics.events",
    "reorder_point": "streamer.alerts.reorder",
    "run_worker": "streamer.ingest.app",
    "run_backtest": "streamer.ops.backtest",
    "Harness": "streamer.testing",
    "order": "streamer.testing",
    "stock": "streamer.testing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
