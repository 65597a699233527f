"""Typed settings read from the environment (every knob is an environment variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from streamer.security import KafkaSecurity
from streamer.trading_calendar import TradingCalendar, parse_dates, parse_weekdays


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Runtime settings. ``from_env`` documents the variable behind each field."""

    kafka_bootstrap_servers: str = ""
    redis_url: str = field(default="", repr=False)  # may carry a password
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    startup_timeout_seconds: float = 60.0
    home: Path = Path(".shelfcast")
    app_id: str = "shelfcast"
    partitions: int = 8
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    bucket_seconds: int = 86_400
    lateness_seconds: int = 3_600
    max_skew_seconds: float = 31 * 86_400
    max_future_seconds: float = 86_400
    idle_advance_seconds: float = 30.0
    active_buckets: int = 56
    # 16 weeks: the LSTM trains on these bounded histories (56 input + 7 target buckets,
    # plus its validation span), and a hash this small stays compact in Redis (< 128 fields)
    history_buckets: int = 112
    horizon: int = 7
    batch_size: int = 500
    # A micro-batch waits at most this long to fill: the floor of order -> alert latency when
    # orders trickle in. Under load batches fill first, so it costs no throughput.
    batch_within: float = 0.01
    # Real Kafka answers a waiting fetch as soon as data arrives; the embedded broker only when
    # the wait runs out, so on it the wait is EMBEDDED_FETCH_MAX_WAIT_MS (streamer/embedded.py).
    fetch_max_wait_ms: int = 500
    max_message_bytes: int = 65_536
    dedupe_ttl_seconds: int = 35 * 86_400
    series_ttl_seconds: int = 90 * 86_400
    lead_time_days: float = 3.0
    # time until the next chance to reorder: the reorder point covers lead time + review
    review_days: float = 7.0
    service_level: float = 0.95
    alert_hysteresis: float = 0.5
    closed_weekdays: str = ""
    closed_dates: str = ""
    closed_when_no_orders: bool = True
    snapshot_seconds: float = 300.0
    model_dir: Path | None = None  # LSTM checkpoints (models/registry.py); None: {home}/models
    train_minutes: float = 60.0  # live trainer: one refresh every this many minutes
    train_every_buckets: int = 28  # backtest: one refresh every this many closed buckets
    log_level: str = "info"
    topics: dict[str, str] = field(
        default_factory=lambda: {
            "orders": "orders",
            "inventory": "inventory",
            "forecasts": "forecasts",
            "alerts": "low-stock-alerts",
            "dlq": "shelfcast-dlq",
        }
    )

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", ""),
            redis_url=_env("REDIS_URL", ""),
            kafka_security=KafkaSecurity.from_env(),
            startup_timeout_seconds=float(_env("SHELFCAST_STARTUP_TIMEOUT_SECONDS", "60")),
            home=Path(_env("SHELFCAST_HOME", ".shelfcast")),
            app_id=_env("SHELFCAST_APP_ID", "shelfcast"),
            partitions=int(_env("SHELFCAST_PARTITIONS", "8")),
            web_bind=_env("SHELFCAST_WEB_BIND", "127.0.0.1"),
            web_port=int(_env("SHELFCAST_WEB_PORT", "6066")),
            bucket_seconds=int(_env("SHELFCAST_BUCKET_SECONDS", "86400")),
            lateness_seconds=int(_env("SHELFCAST_LATENESS_SECONDS", "3600")),
            max_skew_seconds=float(_env("SHELFCAST_MAX_SKEW_SECONDS", str(31 * 86_400))),
            max_future_seconds=float(_env("SHELFCAST_MAX_FUTURE_SECONDS", "86400")),
            idle_advance_seconds=float(_env("SHELFCAST_IDLE_ADVANCE_SECONDS", "30")),
            active_buckets=int(_env("SHELFCAST_ACTIVE_BUCKETS", "56")),
            history_buckets=int(_env("SHELFCAST_HISTORY_BUCKETS", "112")),
            horizon=int(_env("SHELFCAST_HORIZON", "7")),
            batch_size=int(_env("SHELFCAST_BATCH_SIZE", "500")),
            batch_within=float(_env("SHELFCAST_BATCH_WITHIN", "0.01")),
            fetch_max_wait_ms=int(_env("SHELFCAST_FETCH_MAX_WAIT_MS", "500")),
            max_message_bytes=int(_env("SHELFCAST_MAX_MESSAGE_BYTES", "65536")),
            dedupe_ttl_seconds=int(_env("SHELFCAST_DEDUPE_TTL_SECONDS", str(35 * 86_400))),
            series_ttl_seconds=int(_env("SHELFCAST_SERIES_TTL_SECONDS", str(90 * 86_400))),
            lead_time_days=float(_env("SHELFCAST_LEAD_TIME_DAYS", "3")),
            review_days=float(_env("SHELFCAST_REVIEW_DAYS", "7")),
            service_level=float(_env("SHELFCAST_SERVICE_LEVEL", "0.95")),
            alert_hysteresis=float(_env("SHELFCAST_ALERT_HYSTERESIS", "0.5")),
            closed_weekdays=_env("SHELFCAST_CLOSED_WEEKDAYS", ""),
            closed_dates=_env("SHELFCAST_CLOSED_DATES", ""),
            closed_when_no_orders=_env("SHELFCAST_CLOSED_WHEN_NO_ORDERS", "1")
            not in ("0", "false"),
            model_dir=Path(d) if (d := _env("SHELFCAST_MODEL_DIR", "")) else None,
            train_minutes=float(_env("SHELFCAST_TRAIN_MINUTES", "60")),
            train_every_buckets=int(_env("SHELFCAST_TRAIN_EVERY_BUCKETS", "28")),
            snapshot_seconds=float(_env("SHELFCAST_SNAPSHOT_SECONDS", "300")),
            log_level=_env("SHELFCAST_LOG_LEVEL", "info"),
        )

    def models_path(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.home / "models"

    def calendar(self) -> TradingCalendar:
        return TradingCalendar(
            parse_weekdays(self.closed_weekdays),
            parse_dates(self.closed_dates),
            self.bucket_seconds,
            self.closed_when_no_orders,
        )

    def replace(self, **changes: object) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)  # type: ignore[arg-type]


# Topics the worker reads and writes, plus Faust's leader topic (created even though the
# leader is disabled, so a worker started with other settings still finds it).
def all_topics(settings: Settings) -> list[str]:
    return [*settings.topics.values(), leader_topic(settings.app_id)]


def leader_topic(app_id: str) -> str:
    return f"{app_id}-__assignor-__leader"
