"""The low-stock alerts of a partition, from their decision to their messages (docs/alerts.md).

An alert is decided once, sequence number included, and kept in its partition's outbox until
its delivery is known: by the apply script for a stock change (its alert walk, the rule of
``transitions``), and for a close by ``close_alerts`` from the close's new reorder points. The
pipeline makes one call here for each: ``close_alerts`` when a close decides, ``messages`` for
whatever an outbox holds after a stock change or a close. A message is built from the outbox
record alone, with the reorder point its alert was compared with as stored, settings included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamer.alerts.reorder import (
    CLEARED,
    RAISED,
    ReorderPoint,
    ReorderPoints,
    inventory_position,
    transitions,
)
from streamer.config.settings import Settings
from streamer.features.codec import AlertRecord, outbox_entry
from streamer.features.store import PartitionClose
from streamer.publish.messages import Output, alert_message, output


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
        s.alert_hysteresis, data.previous_rop[rows],
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


def messages(s: Settings, outbox: Sequence[AlertRecord]) -> list[Output]:
    """The messages of a partition's alert ``outbox``, in its order."""
    return [output(s.topics["alerts"], a.series, _message(s, a)) for a in outbox]


def _message(s: Settings, a: AlertRecord) -> dict[str, object]:
    return alert_message(
        a.series, a.status, a.seq, a.on_hand, _reorder_point(s, a.rop), str(a.rop["forecast_id"]),
        a.ts, a.on_order, a.pack_size,
    )  # fmt: skip


def _reorder_point(s: Settings, stored: dict[str, float | str]) -> ReorderPoint:
    """The reorder point an alert was compared with, as a close stored it with its settings
    (one stored before it kept them: the settings of the day, as then)."""
    return ReorderPoint(
        float(stored["rop_lead"]),
        float(stored["lt_demand"]),
        float(stored["safety"]),
        float(stored["daily_mean"]),
        float(stored.get("service_level", s.service_level)),
        float(stored.get("review_days", s.review_days)),
    )
