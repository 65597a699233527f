"""The current state of a SKU's series as Redis holds it: the latest published forecast, the
stock, the reorder point and the alert. Served by ``shelfcast status`` and the worker's
``/series/{sku}`` endpoint (docs/redis-layout.md, Current state)."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka.partitioner import murmur2

from models.series import split_series
from streamer.config.settings import Settings
from streamer.eventtime.clock import iso
from streamer.features.codec import unpack_rop
from streamer.features.keys import part_key, part_series_key, series_base
from streamer.publish.messages import stored_message
from streamer.topics.events import series_key

__all__ = ["SCAN_COUNT", "SHOWN_FIELDS", "kafka_partition", "render", "series_status"]

SHOWN_FIELDS = ("on_hand", "stock_known", "lead_time", "alert", "alert_seq", "alert_ts")
SCAN_COUNT = 10_000


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as librdkafka's ``murmur2_random``
    and Java's) gives a keyed record: inputs are keyed by SKU, so all its series live there."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def _glob_escaped(text: str) -> str:
    """``text`` matched literally by a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _series_in(r: aioredis.Redis, p: int, sku: str) -> list[str]:
    """The active series of ``sku`` in partition ``p``."""
    pattern = _glob_escaped(series_key(sku, "")) + "*"
    found = [
        _text(member)
        async for member, _ in r.zscan_iter(part_series_key(p), match=pattern, count=SCAN_COUNT)
    ]
    return sorted(found)


async def _locate(
    r: aioredis.Redis, partitions: int, sku: str, location: str | None
) -> tuple[int, list[str]] | None:
    """The partition of ``sku`` and the series asked for; its home partition first, then the
    others (a producer that keys with another partitioner)."""
    home = kafka_partition(sku, partitions)
    for p in [home, *(q for q in range(partitions) if q != home)]:
        if location is not None:
            name = series_key(sku, location)
            if await r.zscore(part_series_key(p), name) is not None:
                return p, [name]
        elif series := await _series_in(r, p, sku):
            return p, series
    return None


async def series_status(
    r: aioredis.Redis, s: Settings, sku: str, location: str | None = None
) -> list[dict[str, Any]]:
    """One entry per active series of ``sku`` (only ``location``'s when given), in one
    pipelined round trip once the series are found; empty when none is active."""
    found = await _locate(r, s.kafka.partitions, sku, location)
    if found is None:
        return []
    p, names = found
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.zscore(part_series_key(p), name)
        pipe.hmget(series_base(name, p) + "state", *SHOWN_FIELDS)
        pipe.hget(part_key(p, "rop"), name)
        pipe.hget(part_key(p, "forecast"), name)
    replies = await pipe.execute()
    return [
        _entry(name, p, s.time.bucket_seconds, *replies[4 * i : 4 * i + 4])
        for i, name in enumerate(names)
    ]


def _entry(
    name: str, p: int, size: int, last: float | None, state: list[Any], rop: Any, forecast: Any
) -> dict[str, Any]:
    fields = dict(
        zip(SHOWN_FIELDS, (_text(v) if v is not None else None for v in state), strict=True)
    )
    sku, location = split_series(name)
    return {
        "series": name,
        "sku": sku,
        "location": location,
        "partition": p,
        "last_order_bucket": None if last is None else int(last),
        "stock": {
            "on_hand": _number(fields["on_hand"]) if fields["stock_known"] else None,
            "known": bool(fields["stock_known"]),
            "lead_time_days": _number(fields["lead_time"]),
        },
        "reorder_point": _reorder_point(rop),
        "alert": {
            "status": fields["alert"],
            "seq": int(fields["alert_seq"] or 0),
            "ts": iso(float(fields["alert_ts"])) if fields["alert_ts"] else None,
        }
        if fields["alert"]
        else None,
        "forecast": None if forecast is None else _message(name, forecast, size),
    }


def _message(name: str, stored: object, size: int) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(stored_message(name, _text(stored), size))
    return message


def _reorder_point(packed: Any) -> dict[str, Any] | None:
    if packed is None:
        return None
    # the forecast id and the service measure are text, every other field a number
    return {k: v if isinstance(v, str) else float(v) for k, v in unpack_rop(_text(packed)).items()}


def _number(v: str | None) -> float | None:
    return None if v in (None, "") else float(v)


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def render(entries: list[dict[str, Any]]) -> str:
    """``entries`` as a few lines each, for a terminal."""
    lines = []
    for e in entries:
        stock, rop, alert, fc = e["stock"], e["reorder_point"], e["alert"], e["forecast"]
        lines.append(f"{e['series']}  (partition {e['partition']})")
        on_hand = "unknown (no inventory event yet)" if not stock["known"] else stock["on_hand"]
        lines.append(f"  stock on hand:  {_fmt(on_hand)}")
        if rop is not None:
            lines.append(
                f"  reorder point:  {rop['rop']:.1f}  (lead-time demand {rop['lt_demand']:.1f}"
                f" + safety {rop['safety']:.1f}, over {rop['rop_lead']:g} days)"
            )
        status = "none" if alert is None else f"{alert['status']} (#{alert['seq']}, {alert['ts']})"
        lines.append(f"  alert:          {status}")
        if fc is None:
            lines.append("  forecast:       none yet (its models are not ready)")
            continue
        lines.append(f"  forecast:       {fc['forecast_id']}  issued {fc['issued_at']}")
        for step in fc["horizon"]:
            lines.append(
                f"    {step['start'][:10]}  mean {step['mean']:8.2f}   p10 {step['p10']:8.2f}"
                f"   p50 {step['p50']:8.2f}   p90 {step['p90']:8.2f}"
            )
    return "\n".join(lines)


def _fmt(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
