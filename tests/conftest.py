"""Shared fixtures: a real redis-server and librdkafka's mock Kafka cluster, over TCP.

``SHELFCAST_TEST_REDIS=cluster`` runs the Redis tests against a local 3-master Redis Cluster
of the same binary instead of one server (``.ci/run`` does both).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from streamer.config.settings import Settings, all_topics
from streamer.ops.embedded import EmbeddedRedis, EmbeddedRedisCluster, MockKafkaCluster

CLUSTER = os.environ.get("SHELFCAST_TEST_REDIS", "").lower() == "cluster"

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "streamer" / "data" / "online_retail_sample.csv.gz"


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client of the test Redis, a cluster client in cluster mode."""
    if CLUSTER:
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def async_redis_client(url: str, **options: Any) -> aioredis.Redis:
    if CLUSTER:
        return AsyncRedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(url, **options)


def new_redis(folder: Path) -> EmbeddedRedis | EmbeddedRedisCluster:
    """A Redis of the test mode, to start: one server, or a cluster in cluster mode."""
    return EmbeddedRedisCluster(folder) if CLUSTER else EmbeddedRedis(folder)


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EmbeddedRedis | EmbeddedRedisCluster]:
    server = new_redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(
    redis_server: EmbeddedRedis | EmbeddedRedisCluster, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A real Redis, emptied before each test."""
    if isinstance(redis_server, EmbeddedRedisCluster):
        redis_server.flushall()
        # the processes a test starts (worker, trainer, CLI) talk to it as a cluster too
        monkeypatch.setenv("SHELFCAST_REDIS_CLUSTER", "1")
    else:
        redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def kafka() -> Iterator[MockKafkaCluster]:
    cluster = MockKafkaCluster(all_topics(Settings()), partitions=4)
    yield cluster
    cluster.stop()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings.of(
        redis_url=redis_url, redis_cluster=CLUSTER, home=tmp_path / "home", partitions=4
    )


def sample_backtest(out: Path, limit: int, workers: int = 1) -> Path:
    """A backtest of the first ``limit`` lines of the shipped sample into ``out``."""
    from streamer.ops.backtest import run_backtest
    from streamer.ops.simulation import SimulationSettings

    run_backtest(
        SAMPLE,
        out,
        Settings.of(partitions=4),
        SimulationSettings(opening_weeks=2, lead_time_days=3),
        limit=limit,
        progress=False,
        timeout=300,
        workers=workers,
    )
    return out


def alert_problems(alerts: list[tuple[object, ...]]) -> list[str]:
    """What breaks the alert contract: per series, sequence numbers 1..n without a gap or a
    reuse, statuses alternating from raised, and one content per id (copies are equal)."""
    problems = []
    content: dict[str, str] = {}
    seqs: dict[str, set[int]] = defaultdict(set)
    for alert_id, *rest in alerts:
        body = json.dumps(rest)
        if content.setdefault(str(alert_id), body) != body:
            problems.append(f"{alert_id}: two contents")
        series, seq, status = str(alert_id).rsplit("|", 2)
        seqs[series].add(int(seq))
        if status != ("raised" if int(seq) % 2 else "cleared"):
            problems.append(f"{alert_id}: status out of turn")
    problems += [
        f"{s}: seqs {sorted(n)}" for s, n in seqs.items() if n != set(range(1, len(n) + 1))
    ]
    return problems
