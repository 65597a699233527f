"""Shared fixtures: a real redis-server and librdkafka's mock Kafka cluster, over TCP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streamer.config import Settings, all_topics
from streamer.embedded import EmbeddedRedis, MockKafkaCluster

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "streamer" / "data" / "online_retail_sample.csv.gz"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """A real Redis, emptied before each test."""
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def kafka() -> Iterator[MockKafkaCluster]:
    cluster = MockKafkaCluster(all_topics(Settings()), partitions=4)
    yield cluster
    cluster.stop()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, home=tmp_path / "home", partitions=4)


def order(
    event_id: str,
    ts: str,
    quantity: int,
    sku: str = "A1",
    location: str = "UK",
    price: float | None = 1.5,
) -> bytes:
    msg: dict[str, object] = {
        "event_id": event_id,
        "ts": ts,
        "sku": sku,
        "location": location,
        "quantity": quantity,
    }
    if price is not None:
        msg["unit_price"] = price
    return json.dumps(msg).encode()


def stock(event_id: str, ts: str, sku: str = "A1", location: str = "UK", **fields: object) -> bytes:
    return json.dumps(
        {"event_id": event_id, "ts": ts, "sku": sku, "location": location, **fields}
    ).encode()


def sample_backtest(out: Path, limit: int) -> Path:
    """A backtest of the first ``limit`` lines of the shipped sample into ``out``."""
    from streamer.backtest import run_backtest
    from streamer.simulation import SimulationSettings

    run_backtest(
        SAMPLE,
        out,
        Settings(partitions=4),
        SimulationSettings(opening_weeks=2, lead_time_days=3),
        limit=limit,
        progress=False,
        timeout=300,
    )
    return out
