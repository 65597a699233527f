"""Before the worker starts: wait for Kafka and Redis, with one clear line per service.

A worker started before its services (compose, Kubernetes) should wait for them, not crash
with a stack trace; one pointed at a wrong address should say which address and give up
after ``SHELFCAST_STARTUP_TIMEOUT_SECONDS`` with a non-zero exit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import redis

from streamer.config.security import redact
from streamer.config.settings import Settings, all_topics
from streamer.features.connect import connect

__all__ = ["Unreachable", "kafka_problem", "redis_problem", "wait_until_reachable"]


class Unreachable(RuntimeError):
    pass


def kafka_problem(settings: Settings) -> str | None:
    """None when the brokers answer and every topic exists, else what is wrong."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "log_level": 0,  # the reason is reported here, once, not as librdkafka log lines
            "socket.connection.setup.timeout.ms": 3000,
            **settings.kafka.security.confluent(),
        }
    )
    try:
        metadata = admin.list_topics(timeout=3)
    except KafkaException as exc:
        return str(exc.args[0].str() if exc.args else exc)
    missing = [t for t in all_topics(settings)[:-1] if t not in metadata.topics]
    if missing:
        return f"topics missing: {', '.join(missing)} (create them: docs/deployment.md)"
    return None


def redis_problem(settings: Settings) -> str | None:
    client = connect(settings, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def wait_until_reachable(settings: Settings, out: TextIO = sys.stderr) -> None:
    """Return once Kafka and Redis answer; raise ``Unreachable`` after the startup timeout."""
    timeout = settings.startup_timeout_seconds
    deadline = time.monotonic() + timeout
    checks: list[tuple[str, str, Callable[[Settings], str | None]]] = [
        ("Kafka", settings.kafka.bootstrap_servers, kafka_problem),
        ("Redis", redact(settings.redis.url), redis_problem),
    ]
    for name, address, check in checks:
        told = False
        while (problem := check(settings)) is not None:
            if not told:
                print(
                    f"shelfcast worker: cannot reach {name} at {address} ({problem}); "
                    f"retrying for up to {timeout:.0f}s",
                    file=out,
                    flush=True,
                )
                told = True
            if time.monotonic() >= deadline:
                raise Unreachable(
                    f"{name} at {address} unreachable after {timeout:.0f}s: {problem}"
                )
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
