"""Builders for the output messages: forecasts, low-stock alerts and dead letters.

Every output id is deterministic (a function of the series, the bucket or alert sequence and the
model version), so a consumer can drop copies redelivered after a crash. Schemas: schemas/.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from models.bank import SeriesForecast
from streamer.alerts import ReorderPoint, days_of_cover, severity
from streamer.clock import bucket_label, bucket_start, iso
from streamer.contracts import SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: bytes | None  # None spreads keyless dead letters over partitions
    value: bytes


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def forecast_id(series: str, bucket: int, model: str, version: str) -> str:
    return f"{series}|{bucket}|{model}@{version}"


def split_series(series: str) -> tuple[str, str]:
    sku, _, location = series.partition("@")
    return sku, location


def forecast_message(
    series: str, bucket: int, size: int, fc: SeriesForecast, locations: int | None = None
) -> dict[str, object]:
    """The forecast a series published when ``bucket`` closed, for the buckets after it; a
    rollup (location ``*``) also says how many ``locations`` it sums."""
    sku, location = split_series(series)
    return {
        "schema_version": SCHEMA_VERSION,
        "forecast_id": forecast_id(series, bucket, fc.model, fc.version),
        "sku": sku,
        "location": location,
        "issued_at": iso(bucket_start(bucket + 1, size)),
        "bucket": bucket_label(size),
        "horizon": [
            {
                "start": iso(bucket_start(bucket + 1 + k, size)),
                "mean": round(s.mean, 4),
                "p10": round(s.p10, 4),
                "p50": round(s.p50, 4),
                "p90": round(s.p90, 4),
            }
            for k, s in enumerate(fc.steps)
        ],
        "model": fc.model,
        "model_version": fc.version,
        "locations": locations,
    }


def alert_message(
    series: str,
    status: str,
    seq: int,
    on_hand: int,
    rop: ReorderPoint,
    forecast: str,
    ts: float,
) -> dict[str, object]:
    sku, location = split_series(series)
    cover = days_of_cover(on_hand, rop.daily_mean)
    return {
        "schema_version": SCHEMA_VERSION,
        "alert_id": f"{series}|{seq}|{status}",
        "sku": sku,
        "location": location,
        "status": status,
        "severity": severity(on_hand, rop.daily_mean, rop.lead_time_days),
        "on_hand": on_hand,
        "reorder_point": round(rop.value, 3),
        "lead_time_demand": round(rop.lead_time_demand, 3),
        "safety_stock": round(rop.safety_stock, 3),
        "days_of_cover": None if cover is None else round(cover, 3),
        "service_level": rop.service_level,
        "lead_time_days": rop.lead_time_days,
        "review_days": rop.review_days,
        "forecast_id": forecast,
        "ts": iso(ts),
    }


def dlq_message(
    raw: bytes, key: bytes | None, reason: str, detail: str, topic: str, partition: int, offset: int
) -> dict[str, object]:
    return {
        "schema_version": SCHEMA_VERSION,
        "reason": reason,
        "detail": detail,
        "source_topic": topic,
        "partition": partition,
        "offset": offset,
        "key_b64": None if key is None else base64.b64encode(key).decode(),
        "value_b64": base64.b64encode(raw).decode(),
    }


def output(topic: str, key: str | bytes | None, message: dict[str, object]) -> Output:
    return Output(topic, key.encode() if isinstance(key, str) else key, _dumps(message))
