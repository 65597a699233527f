"""The low-stock alerts of a partition, from their decision to their messages (docs/alerts.md).

An alert is decided once, sequence number included, and kept in its partition's outbox until
its delivery is known: by the apply script for a stock change (its alert walk, the rule of
``transitions``), and for a close by ``close_alerts`` from the close's new reorder points. The
pipeline makes one call here when a close decides; ``streamer.publish.messages.alert_messages``
formats whatever an outbox holds after a stock change or a close, from the outbox record
alone, with the reorder point its alert was compared with as stored, settings included.
"""

from __future__ import annotations

import numpy as np

from streamer.alerts.reorder import (
    CLEARED,
    RAISED,
    ReorderPoints,
    inventory_position,
    transitions,
)
from streamer.config.settings import Settings
from streamer.features.codec import outbox_entry
from streamer.features.store import PartitionClose

__all__ = ["close_alerts"]


def close_alerts(
    s: Settings,
    data: PartitionClose,
    rows: np.ndarray,
    rops: ReorderPoints,
    stored: list[str],
    ts: float,
) -> list[bytes]:
    """The alert transitions of a close as outbox entries: the inventory position of
    ``data``'s ``rows`` (the series that publish) where their stock is known, against their
    new reorder points ``rops`` (``stored`` as the rop hash keeps them), at event time ``ts``.
    """
    on_hand, on_order = data.on_hand[rows], data.on_order[rows]
    up, down = transitions(
        data.raised[rows], inventory_position(on_hand, on_order), rops.value,
        s.alerts.hysteresis, data.previous_rop[rows],
    )  # fmt: skip
    known, seq, pack = data.stock_known[rows], data.alert_seq[rows] + 1, data.pack_size[rows]
    return [
        outbox_entry(
            data.series[rows[j]],
            status,
            int(seq[j]),
            int(on_hand[j]),
            stored[j],
            ts,
            int(on_order[j]),
            int(pack[j]),
        )
        for status, changing in ((RAISED, up), (CLEARED, down))
        for j in np.flatnonzero(changing & known).tolist()
    ]
