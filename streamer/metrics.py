"""Prometheus metrics. Names follow docs/metrics.md: ``shelfcast_`` prefix, base units, no
per-SKU labels (per-SKU detail belongs in the topics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = [
    "ACTIVE_SERIES",
    "ALERTS",
    "BATCH_SECONDS",
    "BUCKETS_CLOSED",
    "BUCKET_CLOSE_SECONDS",
    "CLOSED_BUCKETS",
    "CONSUMER_LAG",
    "DLQ",
    "EVENTS",
    "EVENT_TIME_LAG",
    "FENCED",
    "FORECASTS",
    "GAUGED",
    "LSTM_CHAMPION_VERSION",
    "LSTM_REFRESHES",
    "LSTM_SERVED_VERSION",
    "LSTM_TRAINING_SECONDS",
    "LSTM_VALIDATION_MAE",
    "MODEL_ERROR",
    "MODEL_WEIGHT",
    "ORDERS_PAUSED",
    "ORDERS_WAITED",
    "PROCESSING_LATENCY",
    "REDIS_BEHIND",
    "REDIS_ERRORS",
    "REDIS_ROUNDTRIPS",
    "SNAPSHOT_REBUILDS",
    "TRAINER_REGISTRY",
    "publish_evaluation",
]

EVENTS = Counter(
    "shelfcast_events", "Input events by topic and outcome", ["topic", "outcome"]
)  # outcome: applied, duplicate, invalid, late, stale
DLQ = Counter("shelfcast_dlq", "Messages sent to the dead-letter topic", ["topic", "reason"])
BATCH_SECONDS = Histogram(
    "shelfcast_batch_duration_seconds",
    "Wall time to process one micro-batch, outputs sent",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# From the producer's timestamp (CreateTime) of a record to the moment its batch's effects are
# in Redis and its outputs (alerts included) acknowledged by the broker: what a user waits.
PROCESSING_LATENCY = Histogram(
    "shelfcast_processing_latency_seconds",
    "Wall time from an input record's produce to its effects: features written, outputs sent",
    buckets=(
        0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
        1, 2.5, 5, 10, 30, 60, 300,
    ),
)  # fmt: skip
CONSUMER_LAG = Gauge(
    "shelfcast_consumer_lag_messages",
    "Messages in an input partition not processed yet (high watermark minus position)",
    ["topic", "partition"],
)
BUCKET_CLOSE_SECONDS = Histogram(
    "shelfcast_bucket_close_seconds",
    "Wall time to close one bucket of one partition: learn, forecast, alerts, outputs sent",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EVENT_TIME_LAG = Gauge(
    "shelfcast_event_time_lag_seconds", "Wall clock minus the newest event time processed"
)
BUCKETS_CLOSED = Counter("shelfcast_buckets_closed", "Time buckets closed (per partition)")
FORECASTS = Counter("shelfcast_forecasts_published", "Forecast messages published", ["model"])
ALERTS = Counter("shelfcast_alerts_published", "Low-stock alert state changes", ["status"])
MODEL_ERROR = Gauge(
    "shelfcast_model_error",
    "Prequential forecast error of this worker's series, per model (or 'published') and horizon "
    "('all' pools them)",
    ["model", "horizon", "metric"],
)  # metric: mae, rmse, mase, pinball, coverage_p10_p90
MODEL_WEIGHT = Gauge(
    "shelfcast_model_weight",
    "Each model's mean weight in the published forecasts since this worker started",
    ["model"],
)
CLOSED_BUCKETS = Counter(
    "shelfcast_closed_buckets", "Buckets closed in which the shop did not trade (per partition)"
)
ACTIVE_SERIES = Gauge("shelfcast_active_series", "Series closed at the latest bucket close")
REDIS_ROUNDTRIPS = Counter("shelfcast_redis_roundtrips", "Round trips to Redis")
REDIS_ERRORS = Counter("shelfcast_redis_errors", "Redis calls that failed")
REDIS_BEHIND = Counter(
    "shelfcast_redis_behind",
    "Partitions found with Redis's input offsets below the consumer group's committed ones",
)
SNAPSHOT_REBUILDS = Counter(
    "shelfcast_snapshot_rebuilds",
    "Partition model snapshots that could not be used (unreadable, or ahead of the recorded "
    "closes): the models were rebuilt from history",
)
FENCED = Counter(
    "shelfcast_partitions_fenced",
    "Partitions this worker dropped because another took them over (its writes were refused)",
)
ORDERS_WAITED = Counter(
    "shelfcast_orders_waited",
    "Times a partition's orders stopped being fetched until its inventory, read behind them in "
    "event time, caught up",
)
ORDERS_PAUSED = Gauge(
    "shelfcast_orders_paused",
    "1 while a partition's orders are not fetched until its inventory catches up; their lag "
    "gauge stands still meanwhile",
    ["partition"],
)
LSTM_SERVED_VERSION = Gauge(
    "shelfcast_lstm_served_version", "LSTM version this worker serves (0: none yet)"
)

# The LSTM trainer (streamer/trainer/service.py) serves only these, plus its own process
# figures: on a worker they would read 0 forever, and the worker's families would read 0 on
# the trainer.
TRAINER_REGISTRY = CollectorRegistry()
ProcessCollector(registry=TRAINER_REGISTRY)
LSTM_TRAINING_SECONDS = Histogram(
    "shelfcast_lstm_training_seconds",
    "Wall time to train one LSTM candidate (validation and saving excluded)",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=TRAINER_REGISTRY,
)
LSTM_REFRESHES = Counter(
    "shelfcast_lstm_refreshes",
    "LSTM refreshes by outcome",
    ["outcome"],
    registry=TRAINER_REGISTRY,
)  # outcome: promoted, rejected, skipped (too little data), failed (an error)
LSTM_CHAMPION_VERSION = Gauge(
    "shelfcast_lstm_champion_version",
    "Checkpoint version the workers are told to serve (0: none yet)",
    registry=TRAINER_REGISTRY,
)
LSTM_VALIDATION_MAE = Gauge(
    "shelfcast_lstm_validation_mae",
    "Validation MAE in units of the latest refresh, on the same points for every model "
    "(NaN: no champion was compared)",
    ["model"],
    registry=TRAINER_REGISTRY,
)  # model: candidate, champion, seasonal_naive

GAUGED = ("mae", "rmse", "mase", "pinball", "coverage_p10_p90")


def publish_evaluation(summary: dict[str, dict[str, object]]) -> None:
    """Set the error gauges from a ``Prequential.summary()``."""
    for model, overall in summary.items():
        if "weight" in overall:
            MODEL_WEIGHT.labels(model).set(float(overall["weight"]))  # type: ignore[arg-type]
        rows = [("all", overall)]
        rows += [(str(k), h) for k, h in enumerate(overall.get("horizons", []), 1)]  # type: ignore[call-overload]
        for horizon, values in rows:
            for metric in GAUGED:
                value = values.get(metric)
                if isinstance(value, float):
                    MODEL_ERROR.labels(model, horizon, metric).set(value)
