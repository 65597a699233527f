"""Prometheus metrics. Names follow docs/metrics.md: ``shelfcast_`` prefix, base units, no
per-SKU labels (per-SKU detail belongs in the topics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "shelfcast_events", "Input events by topic and outcome", ["topic", "outcome"]
)  # outcome: applied, duplicate, invalid, late, stale
DLQ = Counter("shelfcast_dlq", "Messages sent to the dead-letter topic", ["topic", "reason"])
BATCH_SECONDS = Histogram(
    "shelfcast_batch_duration_seconds",
    "Wall time to process one micro-batch, outputs sent",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_TIME_LAG = Gauge(
    "shelfcast_event_time_lag_seconds", "Wall clock minus the newest event time processed"
)
BUCKETS_CLOSED = Counter("shelfcast_buckets_closed", "Time buckets closed (per partition)")
FORECASTS = Counter("shelfcast_forecasts_published", "Forecast messages published", ["model"])
ALERTS = Counter("shelfcast_alerts_published", "Low-stock alert state changes", ["status"])
MODEL_ERROR = Gauge(
    "shelfcast_model_error", "Running one-step forecast error", ["model", "metric"]
)  # metric: mae, rmse
ACTIVE_SERIES = Gauge("shelfcast_active_series", "Series closed at the latest bucket close")
REDIS_ROUNDTRIPS = Counter("shelfcast_redis_roundtrips", "Round trips to Redis")
REDIS_ERRORS = Counter("shelfcast_redis_errors", "Redis calls that failed")
