"""Typed settings, read from the environment in one place (``Settings.from_env``).

Every knob is an environment variable. Each field's variable and accepted range are in
``RULES``; a bad value is refused with both, so the message says what to change.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from streamer.config.security import KafkaSecurity
from streamer.eventtime.trading_calendar import TradingCalendar, parse_dates, parse_weekdays

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
ALL_WINDOWS = 0  # SHELFCAST_LSTM_WINDOWS_PER_EPOCH=all


class SettingsError(ValueError):
    """One or more bad settings; the message names each variable and its accepted range."""


@dataclass(frozen=True)
class Rule:
    """The variable behind a field, how to read it, and the values it accepts."""

    var: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is refused
    high_open: bool = False
    choices: tuple[str, ...] = ()
    words: tuple[tuple[str, object], ...] = ()  # spelled-out values, e.g. ("all", None)

    def accepted(self) -> str:
        said = "".join(f" or {word}" for word, _ in self.words)
        return self._accepted() + said

    def _accepted(self) -> str:
        if self.kind is bool:
            return f"one of {', '.join(TRUE)} / {', '.join(FALSE)}"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        noun = "an integer" if self.kind is int else "a number"
        if self.low is None and self.high is None:
            return noun
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{noun} {' and '.join(parts)}"

    def parse(self, raw: str) -> object:
        text = raw.strip()
        for word, value in self.words:
            if text.lower() == word:
                return value
        if self.kind is bool:
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError(text)
        if self.kind is int:
            return int(text)
        if self.kind is float:
            return float(text)
        if self.kind is Path:
            return Path(text).expanduser()
        return text.lower() if self.choices else text

    def problem(self, value: object) -> str | None:
        """None when ``value`` is accepted, else what is wrong with it."""
        if self.choices:
            return None if value in self.choices else self.accepted()
        if value is None or any(value == said for _, said in self.words):
            # an optional setting left to its consumer's default, or a spelled-out value
            return None
        if self.kind in (int, float) and not isinstance(value, bool):
            number = float(value)  # type: ignore[arg-type]
            if math.isnan(number) or math.isinf(number):
                return self.accepted()
            too_low = self.low is not None and (
                number < self.low or (self.low_open and number == self.low)
            )
            too_high = self.high is not None and (
                number > self.high or (self.high_open and number == self.high)
            )
            if too_low or too_high:
                return self.accepted()
        return None


_PORT = {"low": 1, "high": 65_535}
RULES: dict[str, Rule] = {
    "kafka_bootstrap_servers": Rule("KAFKA_BOOTSTRAP_SERVERS", str),
    "redis_url": Rule("REDIS_URL", str),
    "redis_cluster": Rule("SHELFCAST_REDIS_CLUSTER", bool),
    "redis_password": Rule("REDIS_PASSWORD", str),
    "redis_ssl_ca_file": Rule("REDIS_SSL_CA_FILE", str),
    "allow_mixed_services": Rule("SHELFCAST_MIXED_SERVICES", bool),
    "startup_timeout_seconds": Rule("SHELFCAST_STARTUP_TIMEOUT_SECONDS", float, low=0),
    "home": Rule("SHELFCAST_HOME", Path),
    "data_dir": Rule("SHELFCAST_DATA_DIR", Path),
    "app_id": Rule("SHELFCAST_APP_ID", str),
    "partitions": Rule("SHELFCAST_PARTITIONS", int, low=1, high=10_000),
    "web_bind": Rule("SHELFCAST_WEB_BIND", str),
    "web_port": Rule("SHELFCAST_WEB_PORT", int, **_PORT),
    "bucket_seconds": Rule("SHELFCAST_BUCKET_SECONDS", int, low=1),
    "lateness_seconds": Rule("SHELFCAST_LATENESS_SECONDS", int, low=0),
    "max_skew_seconds": Rule("SHELFCAST_MAX_SKEW_SECONDS", float, low=0),
    "max_future_seconds": Rule("SHELFCAST_MAX_FUTURE_SECONDS", float, low=0),
    "clock_tolerance_seconds": Rule("SHELFCAST_CLOCK_TOLERANCE_SECONDS", float, low=0),
    "idle_advance_seconds": Rule("SHELFCAST_IDLE_ADVANCE_SECONDS", float, low=0),
    "active_buckets": Rule("SHELFCAST_ACTIVE_BUCKETS", int, low=1),
    "history_buckets": Rule("SHELFCAST_HISTORY_BUCKETS", int, low=1),
    "horizon": Rule("SHELFCAST_HORIZON", int, low=1),
    "batch_size": Rule("SHELFCAST_BATCH_SIZE", int, low=1),
    "batch_within": Rule("SHELFCAST_BATCH_WITHIN", float, low=0),
    "fetch_max_wait_ms": Rule("SHELFCAST_FETCH_MAX_WAIT_MS", int, low=0),
    "max_message_bytes": Rule("SHELFCAST_MAX_MESSAGE_BYTES", int, low=1),
    "dedupe_ttl_seconds": Rule("SHELFCAST_DEDUPE_TTL_SECONDS", int, low=1),
    "series_ttl_seconds": Rule("SHELFCAST_SERIES_TTL_SECONDS", int, low=1),
    "lead_time_days": Rule("SHELFCAST_LEAD_TIME_DAYS", float, low=0),
    "review_days": Rule("SHELFCAST_REVIEW_DAYS", float, low=0),
    # a quantile: 0 and 1 have no finite safety stock
    "service_level": Rule(
        "SHELFCAST_SERVICE_LEVEL", float, low=0, high=1, low_open=True, high_open=True
    ),
    "alert_hysteresis": Rule("SHELFCAST_ALERT_HYSTERESIS", float, low=0),
    "closed_weekdays": Rule("SHELFCAST_CLOSED_WEEKDAYS", str),
    "closed_dates": Rule("SHELFCAST_CLOSED_DATES", str),
    "closed_when_no_orders": Rule("SHELFCAST_CLOSED_WHEN_NO_ORDERS", bool),
    "snapshot_seconds": Rule("SHELFCAST_SNAPSHOT_SECONDS", float, low=0),
    "model_dir": Rule("SHELFCAST_MODEL_DIR", Path),
    "train_minutes": Rule("SHELFCAST_TRAIN_MINUTES", float, low=0, low_open=True),
    "train_every_buckets": Rule("SHELFCAST_TRAIN_EVERY_BUCKETS", int, low=1),
    "train_delay_buckets": Rule("SHELFCAST_TRAIN_DELAY_BUCKETS", int, low=0),
    "trainer_port": Rule("SHELFCAST_TRAINER_PORT", int, **_PORT),
    "torch_threads": Rule("SHELFCAST_TORCH_THREADS", int, low=1),
    "lstm_seq_len": Rule("SHELFCAST_LSTM_SEQ_LEN", int, low=1),
    "lstm_hidden": Rule("SHELFCAST_LSTM_HIDDEN", int, low=1),
    "lstm_epochs": Rule("SHELFCAST_LSTM_EPOCHS", int, low=1),
    "lstm_warm_epochs": Rule("SHELFCAST_LSTM_WARM_EPOCHS", int, low=1),
    "lstm_windows_per_epoch": Rule(
        "SHELFCAST_LSTM_WINDOWS_PER_EPOCH", int, low=1, words=(("all", ALL_WINDOWS),)
    ),
    "log_level": Rule("SHELFCAST_LOG_LEVEL", str, choices=LOG_LEVELS),
}


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where ``shelfcast data fetch`` keeps downloads: the user's cache, shared by every clone."""
    cache = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache") / "shelfcast"


@dataclass(frozen=True)
class Settings:
    """Runtime settings. ``RULES`` names the variable behind each field and its range."""

    kafka_bootstrap_servers: str = ""
    redis_url: str = field(default="", repr=False)  # may carry a password
    redis_cluster: bool = False  # REDIS_URL names one node of a Redis Cluster
    # apart from the URL, so a URL printed or passed around carries no secret
    redis_password: str = field(default="", repr=False)
    redis_ssl_ca_file: str = ""
    # Embedded Kafka with an external Redis (or the reverse) only when asked for: a worker
    # pointed at one real service and silently given a throwaway other loses its state.
    allow_mixed_services: bool = False
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    startup_timeout_seconds: float = 60.0
    home: Path = Path(".shelfcast")
    data_dir: Path = field(default_factory=lambda: default_data_dir({}))
    app_id: str = "shelfcast"
    partitions: int = 8
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    bucket_seconds: int = 86_400
    lateness_seconds: int = 3_600
    max_skew_seconds: float = 31 * 86_400
    max_future_seconds: float = 86_400
    # live: an order stamped further ahead of the wall clock moves the watermark only this far
    clock_tolerance_seconds: float = 300.0
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
    # the wait runs out, so on it the wait is EMBEDDED_FETCH_MAX_WAIT_MS (streamer/ops/embedded.py).
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
    model_dir: Path | None = None  # LSTM checkpoints (models/lstm/registry.py); None: {home}/models
    train_minutes: float = 60.0  # live trainer: one refresh every this many minutes
    train_every_buckets: int = 28  # backtest: one refresh every this many closed buckets
    # backtest: a refresh trained through bucket T is served from the close of T + this, and
    # trains beside the replay meanwhile, as a live trainer's refresh takes time to land (14
    # measured no faster on 2 cores than 7: the two then share the cores, docs/benchmark.md)
    train_delay_buckets: int = 7
    trainer_port: int = 6067  # the trainer's /metrics
    # torch CPU threads in the trainer and in each worker's LSTM inference: two on a busy
    # 2-core machine wait on each other at every LSTM step
    torch_threads: int = 1
    # LSTM overrides (docs/lstm.md); None keeps models.lstm.network.LSTMConfig's default
    lstm_seq_len: int | None = None
    lstm_hidden: int | None = None
    lstm_epochs: int | None = None
    lstm_warm_epochs: int | None = None
    lstm_windows_per_epoch: int | None = None  # ALL_WINDOWS ("all"): every eligible window
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

    def __post_init__(self) -> None:
        # Checked here, not only in from_env, so a value set in code or by replace() is held
        # to the same ranges.
        problems = [
            f"{rule.var}={getattr(self, name)!r}: expected {expected}"
            for name, rule in RULES.items()
            if (expected := rule.problem(getattr(self, name))) is not None
        ]
        for name, parse in (("closed_weekdays", parse_weekdays), ("closed_dates", parse_dates)):
            try:
                parse(getattr(self, name))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default ``os.environ``); unset or empty variables keep their
        defaults. Raises ``SettingsError`` naming every bad variable and its accepted range.
        The only place shelfcast reads its environment (``child_environment`` copies it)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        for name, rule in RULES.items():
            raw = env.get(rule.var, "")
            if not raw.strip():
                continue
            try:
                values[name] = value = rule.parse(raw)
            except ValueError:
                problems.append(f"{rule.var}={raw!r}: expected {rule.accepted()}")
                continue
            if (expected := rule.problem(value)) is not None:
                problems.append(f"{rule.var}={raw!r}: expected {expected}")
        if "data_dir" not in values:
            values["data_dir"] = default_data_dir(env)
        if problems:
            raise SettingsError("; ".join(problems))
        try:
            security = KafkaSecurity.from_env(env)  # names its own variables
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        return cls(kafka_security=security, **values)  # type: ignore[arg-type]

    def mixing_problem(self) -> str | None:
        """Why these settings must not start with one service embedded and the other real, or
        None when they may (both set, neither set, or SHELFCAST_MIXED_SERVICES says so)."""
        if bool(self.kafka_bootstrap_servers) == bool(self.redis_url) or (
            self.allow_mixed_services
        ):
            return None
        have, missing = (
            ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
            if self.kafka_bootstrap_servers
            else ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
        )
        return (
            f"{have} is set but {missing} is not, so an embedded, throwaway service would stand "
            f"in for it: set {missing} too, or set SHELFCAST_MIXED_SERVICES=1 if that is wanted"
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


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with ``overrides``: what a child process started with other
    settings (an embedded service's address, its own port) gets."""
    return {**os.environ, **overrides}
