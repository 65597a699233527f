"""The typed sections of the settings: Kafka, Redis, time, models, alerts and the trainer.

Each section is frozen and checks its own fields against its ``RULES`` (variable and range),
so a value set in code or by ``replace`` is held to the same ranges as one read from the
environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from streamer.config.rules import ALL_WINDOWS, Rule, SettingsError
from streamer.config.security import KafkaSecurity
from streamer.eventtime.trading_calendar import TradingCalendar, parse_dates, parse_weekdays

__all__ = [
    "AlertSettings",
    "KafkaSettings",
    "ModelSettings",
    "RedisSettings",
    "Section",
    "TimeSettings",
    "TrainerSettings",
]

_PORT = {"low": 1, "high": 65_535}


class Section:
    """A frozen group of settings whose ``RULES`` name each field's variable and range."""

    RULES: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        if problems := self.problems():
            raise SettingsError("; ".join(problems))

    def problems(self) -> list[str]:
        return [
            f"{rule.var}={getattr(self, name)!r}: expected {expected}"
            for name, rule in self.RULES.items()
            if (expected := rule.problem(getattr(self, name))) is not None
        ]

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class KafkaSettings(Section):
    """The brokers, the consumer group and its topics, and how records are batched."""

    RULES: ClassVar[dict[str, Rule]] = {
        "bootstrap_servers": Rule("KAFKA_BOOTSTRAP_SERVERS", str),
        "app_id": Rule("SHELFCAST_APP_ID", str),
        "partitions": Rule("SHELFCAST_PARTITIONS", int, low=1, high=10_000),
        "batch_size": Rule("SHELFCAST_BATCH_SIZE", int, low=1),
        "batch_within": Rule("SHELFCAST_BATCH_WITHIN", float, low=0),
        "fetch_max_wait_ms": Rule("SHELFCAST_FETCH_MAX_WAIT_MS", int, low=0),
        "max_message_bytes": Rule("SHELFCAST_MAX_MESSAGE_BYTES", int, low=1),
    }

    bootstrap_servers: str = ""  # empty: the embedded broker
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    app_id: str = "shelfcast"  # the consumer group and Faust app
    partitions: int = 8
    batch_size: int = 500
    # A micro-batch waits at most this long to fill: the floor of order -> alert latency when
    # orders trickle in. Under load batches fill first, so it costs no throughput.
    batch_within: float = 0.01
    # Real Kafka answers a waiting fetch as soon as data arrives; the embedded broker only when
    # the wait runs out, so on it the wait is EMBEDDED_FETCH_MAX_WAIT_MS (streamer/ops/embedded.py).
    fetch_max_wait_ms: int = 500
    max_message_bytes: int = 65_536
    topics: dict[str, str] = field(
        default_factory=lambda: {
            "orders": "orders",
            "inventory": "inventory",
            "forecasts": "forecasts",
            "alerts": "low-stock-alerts",
            "dlq": "shelfcast-dlq",
        }
    )


@dataclass(frozen=True)
class RedisSettings(Section):
    """The feature store's server, and how long its per-event and per-series keys live."""

    RULES: ClassVar[dict[str, Rule]] = {
        "url": Rule("REDIS_URL", str),
        "cluster": Rule("SHELFCAST_REDIS_CLUSTER", bool),
        "password": Rule("REDIS_PASSWORD", str),
        "ssl_ca_file": Rule("REDIS_SSL_CA_FILE", str),
        "dedupe_ttl_seconds": Rule("SHELFCAST_DEDUPE_TTL_SECONDS", int, low=1),
        "series_ttl_seconds": Rule("SHELFCAST_SERIES_TTL_SECONDS", int, low=1),
    }

    url: str = field(default="", repr=False)  # may carry a password; empty: embedded Redis
    cluster: bool = False  # the URL names one node of a Redis Cluster
    # apart from the URL, so a URL printed or passed around carries no secret
    password: str = field(default="", repr=False)
    ssl_ca_file: str = ""
    dedupe_ttl_seconds: int = 35 * 86_400
    series_ttl_seconds: int = 90 * 86_400


@dataclass(frozen=True)
class TimeSettings(Section):
    """Event time: the bucket, how late and how far ahead an event may be, the trading days."""

    RULES: ClassVar[dict[str, Rule]] = {
        "bucket_seconds": Rule("SHELFCAST_BUCKET_SECONDS", int, low=1),
        "lateness_seconds": Rule("SHELFCAST_LATENESS_SECONDS", int, low=0),
        "max_skew_seconds": Rule("SHELFCAST_MAX_SKEW_SECONDS", float, low=0),
        "max_future_seconds": Rule("SHELFCAST_MAX_FUTURE_SECONDS", float, low=0),
        "clock_tolerance_seconds": Rule("SHELFCAST_CLOCK_TOLERANCE_SECONDS", float, low=0),
        "idle_advance_seconds": Rule("SHELFCAST_IDLE_ADVANCE_SECONDS", float, low=0),
        "closed_weekdays": Rule("SHELFCAST_CLOSED_WEEKDAYS", str),
        "closed_dates": Rule("SHELFCAST_CLOSED_DATES", str),
        "closed_when_no_orders": Rule("SHELFCAST_CLOSED_WHEN_NO_ORDERS", bool),
    }

    bucket_seconds: int = 86_400
    lateness_seconds: int = 3_600
    max_skew_seconds: float = 31 * 86_400
    max_future_seconds: float = 86_400
    # live: an order stamped further ahead of the wall clock moves the watermark only this far
    clock_tolerance_seconds: float = 300.0
    idle_advance_seconds: float = 30.0
    closed_weekdays: str = ""
    closed_dates: str = ""
    closed_when_no_orders: bool = True

    def problems(self) -> list[str]:
        problems = super().problems()
        for value, parse in (
            (self.closed_weekdays, parse_weekdays),
            (self.closed_dates, parse_dates),
        ):
            try:
                parse(value)
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def calendar(self) -> TradingCalendar:
        return TradingCalendar(
            parse_weekdays(self.closed_weekdays),
            parse_dates(self.closed_dates),
            self.bucket_seconds,
            self.closed_when_no_orders,
        )


@dataclass(frozen=True)
class ModelSettings(Section):
    """What the models of a worker see and keep: the activity window, history and horizon."""

    RULES: ClassVar[dict[str, Rule]] = {
        "active_buckets": Rule("SHELFCAST_ACTIVE_BUCKETS", int, low=1),
        "history_buckets": Rule("SHELFCAST_HISTORY_BUCKETS", int, low=1),
        "horizon": Rule("SHELFCAST_HORIZON", int, low=1),
        "snapshot_seconds": Rule("SHELFCAST_SNAPSHOT_SECONDS", float, low=0),
        "model_dir": Rule("SHELFCAST_MODEL_DIR", Path),
        "torch_threads": Rule("SHELFCAST_TORCH_THREADS", int, low=1),
    }

    active_buckets: int = 56
    # 16 weeks: the LSTM trains on these bounded histories (56 input + 7 target buckets,
    # plus its validation span), and a hash this small stays compact in Redis (< 128 fields)
    history_buckets: int = 112
    horizon: int = 7
    snapshot_seconds: float = 300.0
    model_dir: Path | None = None  # LSTM checkpoints (models/lstm/registry.py); None: {home}/models
    # torch CPU threads in the trainer and in each worker's LSTM inference: two on a busy
    # 2-core machine wait on each other at every LSTM step
    torch_threads: int = 1


@dataclass(frozen=True)
class AlertSettings(Section):
    """The reorder point's inputs and the alert's hysteresis."""

    RULES: ClassVar[dict[str, Rule]] = {
        "lead_time_days": Rule("SHELFCAST_LEAD_TIME_DAYS", float, low=0),
        "review_days": Rule("SHELFCAST_REVIEW_DAYS", float, low=0),
        # a quantile: 0 and 1 have no finite safety stock
        "service_level": Rule(
            "SHELFCAST_SERVICE_LEVEL", float, low=0, high=1, low_open=True, high_open=True
        ),
        "hysteresis": Rule("SHELFCAST_ALERT_HYSTERESIS", float, low=0),
    }

    lead_time_days: float = 3.0
    # time until the next chance to reorder: the reorder point covers lead time + review
    review_days: float = 7.0
    service_level: float = 0.95
    hysteresis: float = 0.5


@dataclass(frozen=True)
class TrainerSettings(Section):
    """When the LSTM is refreshed, where its metrics are served, and its model overrides."""

    RULES: ClassVar[dict[str, Rule]] = {
        "minutes": Rule("SHELFCAST_TRAIN_MINUTES", float, low=0, low_open=True),
        "every_buckets": Rule("SHELFCAST_TRAIN_EVERY_BUCKETS", int, low=1),
        "delay_buckets": Rule("SHELFCAST_TRAIN_DELAY_BUCKETS", int, low=0),
        "port": Rule("SHELFCAST_TRAINER_PORT", int, **_PORT),
        "lstm_seq_len": Rule("SHELFCAST_LSTM_SEQ_LEN", int, low=1),
        "lstm_hidden": Rule("SHELFCAST_LSTM_HIDDEN", int, low=1),
        "lstm_epochs": Rule("SHELFCAST_LSTM_EPOCHS", int, low=1),
        "lstm_warm_epochs": Rule("SHELFCAST_LSTM_WARM_EPOCHS", int, low=1),
        "lstm_windows_per_epoch": Rule(
            "SHELFCAST_LSTM_WINDOWS_PER_EPOCH", int, low=1, words=(("all", ALL_WINDOWS),)
        ),
    }

    minutes: float = 60.0  # live trainer: one refresh every this many minutes
    every_buckets: int = 28  # backtest: one refresh every this many closed buckets
    # backtest: a refresh trained through bucket T is served from the close of T + this, and
    # trains beside the replay meanwhile, as a live trainer's refresh takes time to land (14
    # measured no faster on 2 cores than 7: the two then share the cores, docs/benchmark.md)
    delay_buckets: int = 7
    port: int = 6067  # the trainer's /metrics
    # LSTM overrides (docs/lstm.md); None keeps models.lstm.network.LSTMConfig's default
    lstm_seq_len: int | None = None
    lstm_hidden: int | None = None
    lstm_epochs: int | None = None
    lstm_warm_epochs: int | None = None
    lstm_windows_per_epoch: int | None = None  # ALL_WINDOWS ("all"): every eligible window
