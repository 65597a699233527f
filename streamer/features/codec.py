"""The wire format between the feature store and its Lua scripts, defined once.

What crosses is positional (arrays and ``|``-joined values, to keep a segment's arguments and a
close's hashes small) and enumerated (bare status numbers, one-letter event kinds): this
module names every field of every record in its order (``RECORDS``) and every enum value
(``ENUMS``). The scripts take the same definition (``LUA_WIRE``) with their key scheme and
find each field by its name; docs/redis-layout.md (Wire format) lists them in tables that
tests/streamer/features/test_codec.py checks against this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import IntEnum, StrEnum
from operator import attrgetter

import numpy as np
import orjson

from models.signals import SIGNALS

__all__ = [
    "ENUMS",
    "EVENT_FIELDS",
    "LUA_WIRE",
    "OUTBOX_FIELDS",
    "PENDING_FIELDS",
    "RECORDS",
    "ROLLING_FIELDS",
    "ROP_FIELDS",
    "ROP_FIELDS_V1",
    "ROP_FIELDS_V2",
    "SIGNAL_FIELDS",
    "AlertRecord",
    "AlertStatus",
    "EventKind",
    "Status",
    "StockEffect",
    "encode_events",
    "outbox_entry",
    "packed_rows",
    "rop_values",
    "unpack_rop",
]


class AlertStatus(StrEnum):
    """A series' low-stock alert state, as stored (docs/redis-layout.md) and published."""

    RAISED = "raised"
    CLEARED = "cleared"


RAISED, CLEARED = AlertStatus.RAISED, AlertStatus.CLEARED


class Status(IntEnum):
    """What the apply script did with an event."""

    DUPLICATE = 0
    APPLIED = 1
    STALE = 2  # a stock snapshot older than what the series already counts
    OFFSET_REGRESSION = 3  # a new event below an offset already applied: a recreated topic

    @property
    def counter(self) -> str:
        """The field of the partition's stats that counts it."""
        return "stale_snapshot" if self is Status.STALE else self.name.lower()


class EventKind(StrEnum):
    ORDER = "o"
    SNAPSHOT = "s"  # stock on hand, absolute
    DELTA = "d"  # a delivery or an adjustment
    PURCHASE_ORDER = "p"  # units ordered (negative: cancelled)


@dataclass(slots=True)
class StockEffect:
    """One event as the apply script sees it: its fields, in order, are an event record.

    Built once an event on the hot path and read once: not frozen, since a frozen one's
    ``__init__`` sets each field through ``object.__setattr__`` (2.1 µs an event against
    0.7)."""

    kind: EventKind
    series: str
    event_id: str
    bucket: int
    ts_ms: int
    quantity: int  # order quantity, stock on hand, delta or units ordered, by kind
    unit_price: float | None
    offsets_field: str  # topic:partition
    offset: int
    lead_time_days: float | None = None
    moves_clock: bool = True  # an order the pipeline holds to be skewed far ahead does not
    po_id: str | None = None  # the purchase order a "p" changes or a delivery ("d") fills
    pack_size: int | None = None
    customer_id: str | None = None  # an order's customer (models.signals)
    promo: bool = False  # an order sold on promotion


EVENT_FIELDS = tuple(f.name for f in fields(StockEffect))
_event_values = attrgetter(*EVENT_FIELDS)
# sent as their exact text, which the script stores and adds (HINCRBYFLOAT) as it is
_TEXT_AT = [EVENT_FIELDS.index(name) for name in ("unit_price", "lead_time_days")]
# A stock event stamped after the partition's stock clock, waiting in its pending set (entries
# written before purchase orders have the first four fields)
PENDING_FIELDS = ("series", "event_id", "quantity", "bucket", "kind", "po_id")
# An alert decided and kept in the partition's outbox until its delivery is known, with the
# reorder point it was compared with as the rop hash keeps it (entries written before stock on
# order have the first six fields)
OUTBOX_FIELDS = ("series", "status", "seq", "on_hand", "rop", "ts_ms", "on_order", "pack_size")
# A value of the partition's rop hash, a JSON array: the whole reorder point (its value, the
# demand over the protection interval, the safety stock, the forecast's daily mean, the lead
# time), the settings it was computed with (the service measure by its value, ``cycle`` or
# ``fill_rate``), and the forecast it came from
ROP_FIELDS = (
    "rop", "lt_demand", "safety", "daily_mean", "rop_lead", "service_level", "review_days",
    "service_measure", "forecast_id",
)  # fmt: skip
# A rop value written before it kept its service measure: the same array without it
ROP_FIELDS_V2 = tuple(f for f in ROP_FIELDS if f != "service_measure")
# A rop value written before it kept its settings (no version of its own: it does not start
# with ``[``), ``|``-joined, the forecast id (which has ``|``) last
ROP_FIELDS_V1 = ("rop", "lt_demand", "safety", "daily_mean", "rop_lead", "forecast_id")
# A value of the partition's rolling hash, ``|``-joined
ROLLING_FIELDS = ("demand_sum_7", "demand_sum_28", "demand_ewma")
# A value of a series' signals hash and of the partition's per-bucket one: the customer and
# promotion signals of the series in the bucket (models.signals)
SIGNAL_FIELDS = SIGNALS

RECORDS = {
    "event": EVENT_FIELDS,
    "pending": PENDING_FIELDS,
    "outbox": OUTBOX_FIELDS,
    "rop": ROP_FIELDS,
    "rop_v1": ROP_FIELDS_V1,
    "rop_v2": ROP_FIELDS_V2,
    "rolling": ROLLING_FIELDS,
    "signals": SIGNAL_FIELDS,
}
ENUMS: dict[str, type[IntEnum] | type[StrEnum]] = {
    "status": Status,
    "kind": EventKind,
    "alert": AlertStatus,
}
# What the scripts take (streamer/features/lua/scheme.lua): the records' field names, each
# enum's values by lower-case name, and the stats field counting each status
LUA_WIRE = {
    "records": RECORDS,
    "enums": {name: {m.name.lower(): m.value for m in enum} for name, enum in ENUMS.items()},
    "counters": {str(s.value): s.counter for s in Status},
}


def encode_events(effects: Sequence[StockEffect]) -> bytes:
    """``effects`` as the apply script takes them: one JSON array of event records."""
    rows = []
    for e in effects:
        row = list(_event_values(e))
        for i in _TEXT_AT:
            if row[i] is not None:
                row[i] = repr(row[i])
        rows.append(row)
    return orjson.dumps(rows)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert the apply script decided and keeps in the partition's outbox until the
    worker says it was delivered: sent again after a crash, it is the same message."""

    series: str
    status: AlertStatus
    seq: int
    on_hand: int
    rop: dict[str, float | str]  # the reorder point it was compared with (``unpack_rop``)
    ts: float
    on_order: int = 0
    pack_size: int | None = None

    @classmethod
    def parse(cls, raw: bytes | str) -> AlertRecord:
        record = dict(zip(OUTBOX_FIELDS, orjson.loads(raw), strict=False))
        return cls(
            record["series"], AlertStatus(record["status"]), int(record["seq"]),
            int(record["on_hand"]), unpack_rop(record["rop"]), record["ts_ms"] / 1000,
            int(record.get("on_order", 0)), int(record.get("pack_size", 0)) or None,
        )  # fmt: skip


def outbox_entry(
    series: str,
    status: str,
    seq: int,
    on_hand: int,
    packed_rop: str,
    ts: float,
    on_order: int = 0,
    pack_size: int | None = None,
) -> bytes:
    """An alert as a partition's outbox keeps it (``AlertRecord.parse`` reads it back), with
    the reorder point it was compared with as ``shelfcast:{pP}:rop`` packs it, the stock on
    order and the pack size (0: none) when it was decided.

    >>> AlertRecord.parse(outbox_entry("A1@UK", "raised", 3, 4, "", 86_400.5, 12, 6)).on_order
    12
    """
    record = {
        "series": series, "status": status, "seq": seq, "on_hand": on_hand, "rop": packed_rop,
        "ts_ms": round(ts * 1000), "on_order": on_order, "pack_size": pack_size or 0,
    }  # fmt: skip
    return orjson.dumps([record[name] for name in OUTBOX_FIELDS])


def unpack_rop(packed: str) -> dict[str, float | str]:
    """A ``shelfcast:{pP}:rop`` value as its fields: ROP_FIELDS, ROP_FIELDS_V2 for a value
    written before it kept its service measure, or ROP_FIELDS_V1 for one written before the
    reorder point kept its settings (none when there is no value).

    >>> unpack_rop("4.5|3.0|1.5|1.0|3.0|A1@UK|9|tsb@2")["forecast_id"]
    'A1@UK|9|tsb@2'
    >>> unpack_rop('[4.5,3.0,1.5,1.0,3.0,0.95,7.0,"A1@UK|9|tsb@2"]')["review_days"]
    7.0
    >>> unpack_rop('[4.5,3.0,1.5,1.0,3.0,0.95,7.0,"fill_rate","A1@UK|9|tsb@2"]')["service_measure"]
    'fill_rate'
    """
    if packed.startswith("["):
        # orjson writes a NaN as null: it reads back as the NaN it was
        values = [math.nan if v is None else v for v in orjson.loads(packed)]
        names = ROP_FIELDS_V2 if len(values) == len(ROP_FIELDS_V2) else ROP_FIELDS
        return dict(zip(names, values, strict=True))
    if not packed:
        return {}
    values = packed.split("|", len(ROP_FIELDS_V1) - 1)
    fields = dict(zip(ROP_FIELDS_V1, values, strict=True))
    return {k: v if k == "forecast_id" else float(v) for k, v in fields.items()}


def rop_values(packed: Sequence[str | bool]) -> np.ndarray:
    """The reorder points of ``shelfcast:{pP}:rop`` values (NaN where there is none, False):
    the first number of either format, read without parsing the rest.

    >>> rop_values(['[4.5,3.0,1.5,1.0,3.0,0.95,7.0,"cycle","A@UK|9|x"]', "2.0|1|1|1|3|a", False])
    array([4.5, 2. , nan])
    """
    return np.array([_first_number(v) if v else "nan" for v in packed], np.float64)


def _first_number(packed: str) -> str:
    if packed[0] != "[":
        return packed[: packed.index("|")]
    first = packed[1 : packed.index(",")]
    return "nan" if first == "null" else first  # orjson writes a NaN as null


def packed_rows(columns: np.ndarray) -> list[str]:
    """Each row of ``columns [n, k]`` as its numbers joined by ``|`` (NaN as ``nan``), the
    values of the partition's per-series hashes: orjson writes all of them in one call,
    where formatting them one series at a time cost a close about 2 us a series.

    >>> packed_rows(np.array([[1.5, 2.0], [np.nan, 0.25]]))
    ['1.5|2.0', 'nan|0.25']
    """
    if not len(columns):
        return []
    flat = np.ascontiguousarray(columns, np.float64).reshape(len(columns), -1)
    text = orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    rows = text[2:-2].replace(",", "|").split("]|[")
    return [row.replace("null", "nan") for row in rows] if "null" in text else rows
