"""Typed settings, read from the environment in one place (``Settings.from_env``).

Every knob is an environment variable. ``Settings`` holds the process's own (home, HTTP,
logging) and one typed section per subsystem: ``kafka``, ``redis``, ``time``, ``models``,
``alerts`` and ``trainer`` (streamer/config/sections.py). Each field declares its variable
and accepted range (``setting``); a bad value is refused with both, so the message says what
to change.

Code builds settings by their flat names, the environment variables' own words::

    Settings.of(partitions=4, service_level=0.9).alerts.service_level  # 0.9

``FLAT`` says which section field each flat name sets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from streamer.config.rules import LOG_LEVELS, Rule, SettingsError, setting
from streamer.config.sections import (
    PORT,
    AlertSettings,
    KafkaSettings,
    ModelSettings,
    RedisSettings,
    Section,
    TimeSettings,
    TrainerSettings,
)
from streamer.config.security import KafkaSecurity

__all__ = [
    "FLAT",
    "Settings",
    "SettingsError",
    "all_topics",
    "child_environment",
    "default_data_dir",
    "leader_topic",
]


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where ``shelfcast data fetch`` keeps downloads: the user's cache, shared by every clone."""
    cache = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache) if cache else Path.home() / ".cache") / "shelfcast"


@dataclass(frozen=True)
class Settings(Section):
    """Runtime settings: the process's own fields, and a section per subsystem."""

    SECTIONS: ClassVar[dict[str, type[Section]]] = {
        "kafka": KafkaSettings,
        "redis": RedisSettings,
        "time": TimeSettings,
        "models": ModelSettings,
        "alerts": AlertSettings,
        "trainer": TrainerSettings,
    }

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    time: TimeSettings = field(default_factory=TimeSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    # Embedded Kafka with an external Redis (or the reverse) only when asked for: a worker
    # pointed at one real service and silently given a throwaway other loses its state.
    allow_mixed_services: bool = setting("SHELFCAST_MIXED_SERVICES", bool, default=False)
    startup_timeout_seconds: float = setting(
        "SHELFCAST_STARTUP_TIMEOUT_SECONDS", float, default=60.0, low=0
    )
    home: Path = setting("SHELFCAST_HOME", Path, default=Path(".shelfcast"))
    data_dir: Path = setting(
        "SHELFCAST_DATA_DIR", Path, default_factory=lambda: default_data_dir({})
    )
    web_bind: str = setting("SHELFCAST_WEB_BIND", str, default="127.0.0.1")
    web_port: int = setting("SHELFCAST_WEB_PORT", int, default=6066, **PORT)
    log_level: str = setting("SHELFCAST_LOG_LEVEL", str, default="info", choices=LOG_LEVELS)

    @classmethod
    def of(cls, **flat: Any) -> Settings:
        """Settings with these changes from the defaults, by flat name (``FLAT``)."""
        return cls().replace(**flat)

    def replace(self, **flat: Any) -> Settings:  # type: ignore[override]
        """A copy with these changes, by flat name (``FLAT``); every value is checked."""
        unknown = flat.keys() - FLAT.keys()
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for name, value in flat.items():
            section, key = FLAT[name]
            (sections.setdefault(section, {}) if section else top)[key] = value
        rules = self.rules()
        problems = [  # the process's own fields, so one error names every bad value
            f"{rules[key].var}={value!r}: expected {expected}"
            for key, value in top.items()
            if key in rules and (expected := rules[key].problem(value)) is not None
        ]
        for section, changes in sections.items():
            try:
                top[section] = getattr(self, section).replace(**changes)
            except SettingsError as exc:
                problems.append(str(exc))
        if problems:
            raise SettingsError("; ".join(problems))
        return dataclasses.replace(self, **top)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default ``os.environ``); unset or empty variables keep their
        defaults. Raises ``SettingsError`` naming every bad variable and its accepted range.
        The only place shelfcast reads its environment (``child_environment`` copies it)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        problems: list[str] = []
        for name, rule in _RULES.items():
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
        values.setdefault("data_dir", default_data_dir(env))
        try:
            values["kafka_security"] = KafkaSecurity.from_env(env)  # names its own variables
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise SettingsError("; ".join(problems))
        return cls.of(**values)

    def mixing_problem(self) -> str | None:
        """Why these settings must not start with one service embedded and the other real, or
        None when they may (both set, neither set, or SHELFCAST_MIXED_SERVICES says so)."""
        kafka, redis = self.kafka.bootstrap_servers, self.redis.url
        if bool(kafka) == bool(redis) or self.allow_mixed_services:
            return None
        have, missing = (
            ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
            if kafka
            else ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
        )
        return (
            f"{have} is set but {missing} is not, so an embedded, throwaway service would stand "
            f"in for it: set {missing} too, or set SHELFCAST_MIXED_SERVICES=1 if that is wanted"
        )

    def models_path(self) -> Path:
        return self.models.model_dir if self.models.model_dir is not None else self.home / "models"


# Section fields whose flat name keeps the section's word, as their variables do (REDIS_URL)
_PREFIXED = {
    ("kafka", "bootstrap_servers"): "kafka_bootstrap_servers",
    ("kafka", "security"): "kafka_security",
    ("redis", "url"): "redis_url",
    ("redis", "cluster"): "redis_cluster",
    ("redis", "password"): "redis_password",
    ("redis", "ssl_ca_file"): "redis_ssl_ca_file",
    ("alerts", "hysteresis"): "alert_hysteresis",
    ("trainer", "minutes"): "train_minutes",
    ("trainer", "every_buckets"): "train_every_buckets",
    ("trainer", "delay_buckets"): "train_delay_buckets",
    ("trainer", "port"): "trainer_port",
}
# The flat name of every setting -> (its section, or "" for the process's own, and its field
# there): what ``Settings.of`` and ``replace`` take, and the key of ``_RULES``.
FLAT: dict[str, tuple[str, str]] = {
    **{name: ("", name) for name in Settings.rules()},
    **{
        _PREFIXED.get((section, f.name), f.name): (section, f.name)
        for section, kind in Settings.SECTIONS.items()
        for f in dataclasses.fields(kind)  # type: ignore[arg-type]
    },
}
_RULES: dict[str, Rule] = {
    name: rule
    for name, (section, key) in FLAT.items()
    if (rule := (Settings.SECTIONS[section] if section else Settings).rules().get(key))
}


def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with ``overrides``: what a child process started with other
    settings (an embedded service's address, its own port) gets."""
    return {**os.environ, **overrides}


# Topics the worker reads and writes, plus Faust's leader topic (created even though the
# leader is disabled, so a worker started with other settings still finds it).
def all_topics(settings: Settings) -> list[str]:
    return [*settings.kafka.topics.values(), leader_topic(settings.kafka.app_id)]


def leader_topic(app_id: str) -> str:
    return f"{app_id}-__assignor-__leader"
