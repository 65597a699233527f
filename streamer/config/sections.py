"""The typed sections of the settings: Kafka, Redis, time, models, alerts and the trainer.

Each section is frozen and checks its fields against their rules (variable and range, declared
with ``setting``), so a value set in code or by ``replace`` is held to the same ranges as one
read from the environment.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from models.lstm.kinds import Architecture
from streamer.config.rules import ALL_WINDOWS, RULE, Rule, SettingsError, setting
from streamer.config.security import KafkaSecurity
from streamer.eventtime.trading_calendar import TradingCalendar, parse_dates, parse_weekdays

__all__ = [
    "PORT",
    "AlertSettings",
    "KafkaSettings",
    "ModelSettings",
    "RedisSettings",
    "Section",
    "ServiceMeasure",
    "TimeSettings",
    "TrainerSettings",
]

PORT = {"low": 1, "high": 65_535}  # a TCP port


class Section:
    """A frozen group of settings whose fields name their variable and range (``setting``)."""

    @classmethod
    @functools.cache
    def rules(cls) -> dict[str, Rule]:
        """Each field read from a variable, and its rule."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return {f.name: f.metadata[RULE] for f in fields if RULE in f.metadata}

    def __post_init__(self) -> None:
        if problems := self.problems():
            raise SettingsError("; ".join(problems))

    def problems(self) -> list[str]:
        return [
            f"{rule.var}={getattr(self, name)!r}: expected {expected}"
            for name, rule in self.rules().items()
            if (expected := rule.problem(getattr(self, name))) is not None
        ]

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class KafkaSettings(Section):
    """The brokers, the consumer group and its topics, and how records are batched."""

    # empty: the embedded broker
    bootstrap_servers: str = setting("KAFKA_BOOTSTRAP_SERVERS", str, default="")
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # the consumer group and Faust app
    app_id: str = setting("SHELFCAST_APP_ID", str, default="shelfcast")
    partitions: int = setting("SHELFCAST_PARTITIONS", int, default=8, low=1, high=10_000)
    batch_size: int = setting("SHELFCAST_BATCH_SIZE", int, default=500, low=1)
    # A micro-batch waits at most this long to fill: the floor of order -> alert latency when
    # orders trickle in. Under load batches fill first, so it costs no throughput.
    batch_within: float = setting("SHELFCAST_BATCH_WITHIN", float, default=0.01, low=0)
    # Real Kafka answers a waiting fetch as soon as data arrives; the embedded broker only when
    # the wait runs out, so on it the wait is EMBEDDED_FETCH_MAX_WAIT_MS (streamer/ops/embedded.py).
    fetch_max_wait_ms: int = setting("SHELFCAST_FETCH_MAX_WAIT_MS", int, default=500, low=0)
    max_message_bytes: int = setting("SHELFCAST_MAX_MESSAGE_BYTES", int, default=65_536, low=1)
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

    # may carry a password; empty: embedded Redis
    url: str = setting("REDIS_URL", str, default="", repr=False)
    # the URL names one node of a Redis Cluster
    cluster: bool = setting("SHELFCAST_REDIS_CLUSTER", bool, default=False)
    # apart from the URL, so a URL printed or passed around carries no secret
    password: str = setting("REDIS_PASSWORD", str, default="", repr=False)
    ssl_ca_file: str = setting("REDIS_SSL_CA_FILE", str, default="")
    dedupe_ttl_seconds: int = setting(
        "SHELFCAST_DEDUPE_TTL_SECONDS", int, default=35 * 86_400, low=1
    )
    series_ttl_seconds: int = setting(
        "SHELFCAST_SERIES_TTL_SECONDS", int, default=90 * 86_400, low=1
    )


@dataclass(frozen=True)
class TimeSettings(Section):
    """Event time: the bucket, how late and how far ahead an event may be, the trading days."""

    bucket_seconds: int = setting("SHELFCAST_BUCKET_SECONDS", int, default=86_400, low=1)
    lateness_seconds: int = setting("SHELFCAST_LATENESS_SECONDS", int, default=3_600, low=0)
    max_skew_seconds: float = setting(
        "SHELFCAST_MAX_SKEW_SECONDS", float, default=31 * 86_400, low=0
    )
    # a partition's orders read further ahead of its inventory, in event time, wait for it
    topic_lead_seconds: float = setting(
        "SHELFCAST_TOPIC_LEAD_SECONDS", float, default=3_600.0, low=0
    )
    max_future_seconds: float = setting(
        "SHELFCAST_MAX_FUTURE_SECONDS", float, default=86_400, low=0
    )
    # live: an order stamped further ahead of the wall clock moves the watermark only this far
    clock_tolerance_seconds: float = setting(
        "SHELFCAST_CLOCK_TOLERANCE_SECONDS", float, default=300.0, low=0
    )
    idle_advance_seconds: float = setting(
        "SHELFCAST_IDLE_ADVANCE_SECONDS", float, default=30.0, low=0
    )
    closed_weekdays: str = setting("SHELFCAST_CLOSED_WEEKDAYS", str, default="")
    closed_dates: str = setting("SHELFCAST_CLOSED_DATES", str, default="")
    closed_when_no_orders: bool = setting("SHELFCAST_CLOSED_WHEN_NO_ORDERS", bool, default=True)

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

    active_buckets: int = setting("SHELFCAST_ACTIVE_BUCKETS", int, default=56, low=1)
    # 16 weeks: the LSTM trains on these bounded histories (56 input + 7 target buckets,
    # plus its validation span), and a hash this small stays compact in Redis (< 128 fields)
    history_buckets: int = setting("SHELFCAST_HISTORY_BUCKETS", int, default=112, low=1)
    horizon: int = setting("SHELFCAST_HORIZON", int, default=7, low=1)
    snapshot_seconds: float = setting("SHELFCAST_SNAPSHOT_SECONDS", float, default=300.0, low=0)
    # LSTM checkpoints (models/lstm/registry.py); None: {home}/models
    model_dir: Path | None = setting("SHELFCAST_MODEL_DIR", Path, default=None)
    # torch CPU threads in the trainer and in each worker's LSTM inference: two on a busy
    # 2-core machine wait on each other at every LSTM step
    torch_threads: int = setting("SHELFCAST_TORCH_THREADS", int, default=1, low=1)


class ServiceMeasure(enum.StrEnum):
    """What the service level of the reorder points promises (streamer/alerts/reorder.py)."""

    FILL_RATE = "fill_rate"  # units served / units demanded: what a planner is judged by
    CYCLE = "cycle"  # the chance that a protection interval passes without a stock-out


@dataclass(frozen=True)
class AlertSettings(Section):
    """The reorder point's inputs and the alert's hysteresis."""

    lead_time_days: float = setting("SHELFCAST_LEAD_TIME_DAYS", float, default=3.0, low=0)
    # time until the next chance to reorder: the reorder point covers lead time + review
    review_days: float = setting("SHELFCAST_REVIEW_DAYS", float, default=7.0, low=0)
    # a quantile: 0 and 1 have no finite safety stock
    service_level: float = setting(
        "SHELFCAST_SERVICE_LEVEL", float, default=0.95, low=0, high=1, low_open=True, high_open=True
    )
    # what the service level promises; on the full year a fill-rate target did not serve
    # more at the same stock than a cycle level (docs/alerts.md)
    service_measure: str = setting(
        "SHELFCAST_SERVICE_MEASURE", str, default=ServiceMeasure.CYCLE.value,
        choices=tuple(m.value for m in ServiceMeasure),
    )  # fmt: skip
    hysteresis: float = setting("SHELFCAST_ALERT_HYSTERESIS", float, default=0.5, low=0)
    # the reorder point never falls below the series' largest demand over a protection
    # interval, fading by half over this many days; 0: no such floor (docs/alerts.md)
    peak_half_life_days: float = setting(
        "SHELFCAST_PEAK_HALF_LIFE_DAYS", float, default=365.0, low=0
    )

    @property
    def measure(self) -> ServiceMeasure:
        return ServiceMeasure(self.service_measure)


@dataclass(frozen=True)
class TrainerSettings(Section):
    """When the LSTM is refreshed, where its metrics are served, and its model overrides."""

    # live trainer: one refresh every this many minutes
    minutes: float = setting("SHELFCAST_TRAIN_MINUTES", float, default=60.0, low=0, low_open=True)
    # backtest: one refresh every this many closed buckets
    every_buckets: int = setting("SHELFCAST_TRAIN_EVERY_BUCKETS", int, default=28, low=1)
    # backtest: a refresh trained through bucket T is served from the close of T + this, and
    # trains beside the replay meanwhile, as a live trainer's refresh takes time to land (14
    # measured no faster on 2 cores than 7: the two then share the cores, docs/benchmark.md)
    delay_buckets: int = setting("SHELFCAST_TRAIN_DELAY_BUCKETS", int, default=7, low=0)
    port: int = setting("SHELFCAST_TRAINER_PORT", int, default=6067, **PORT)  # its /metrics
    # the global models each refresh trains and validates alike; the best one is the candidate
    # (docs/lstm.md, "The tournament")
    tournament: tuple[str, ...] = setting(
        "SHELFCAST_TOURNAMENT", tuple, default=(Architecture.LSTM.value,),
        choices=tuple(a.value for a in Architecture),
    )  # fmt: skip
    # LSTM overrides (docs/lstm.md); None keeps models.lstm.network.LSTMConfig's default
    lstm_seq_len: int | None = setting("SHELFCAST_LSTM_SEQ_LEN", int, default=None, low=1)
    lstm_hidden: int | None = setting("SHELFCAST_LSTM_HIDDEN", int, default=None, low=1)
    lstm_epochs: int | None = setting("SHELFCAST_LSTM_EPOCHS", int, default=None, low=1)
    lstm_warm_epochs: int | None = setting("SHELFCAST_LSTM_WARM_EPOCHS", int, default=None, low=1)
    # the global models read the customer and promotion signals (models.signals)
    lstm_signals: bool | None = setting("SHELFCAST_LSTM_SIGNALS", bool, default=None)
    # off: train in float32 on a CPU with native bfloat16 too
    lstm_bfloat16: bool | None = setting("SHELFCAST_LSTM_BFLOAT16", bool, default=None)
    # ALL_WINDOWS ("all"): every eligible window
    lstm_windows_per_epoch: int | None = setting(
        "SHELFCAST_LSTM_WINDOWS_PER_EPOCH", int, default=None, low=1, words=(("all", ALL_WINDOWS),)
    )
    # windows a training step (None: 256, 1,024 on a GPU, which larger batches fill: docs/lstm.md,
    # "On a GPU") and its Adam step size
    lstm_batch_size: int | None = setting("SHELFCAST_LSTM_BATCH_SIZE", int, default=None, low=1)
    lstm_lr: float | None = setting("SHELFCAST_LSTM_LR", float, default=None, low=0, low_open=True)
