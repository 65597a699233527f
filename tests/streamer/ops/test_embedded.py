"""Embedded broker and Redis: real clients over TCP, and no process left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from confluent_kafka import Consumer, Producer

from streamer.config.settings import Settings, all_topics
from streamer.features.keys import STATS
from streamer.features.store import summed_stats
from streamer.ops.embedded import (
    STATE_FILE,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    MockKafkaCluster,
    discover,
    free_port,
)
from streamer.testing import order
from tests.conftest import ROOT


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_mock_cluster_has_every_topic_and_speaks_kafka_to_both_clients(
    kafka: MockKafkaCluster,
) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "partitioner": "murmur2_random"})
    metadata = producer.list_topics(timeout=10)
    for topic in all_topics(Settings()):
        assert topic in metadata.topics
    assert len(metadata.topics["orders"].partitions) == 4
    for i in range(20):
        producer.produce("inventory", key=f"k{i}".encode(), value=b"v")
    assert producer.flush(10) == 0

    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": "t", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["inventory"])
    got = 0
    deadline = time.monotonic() + 20
    while got < 20 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        got += msg is not None and msg.error() is None
    consumer.close()
    assert got == 20

    async def aiokafka_reads() -> int:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(
            "inventory", bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest"
        )
        await c.start()
        try:
            n = 0
            while n < 20:
                batches = await c.getmany(timeout_ms=1000)
                if not batches:
                    break
                n += sum(len(v) for v in batches.values())
            return n
        finally:
            await c.stop()

    assert asyncio.run(aiokafka_reads()) == 20


def test_embedded_redis_persists_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    redis.Redis.from_url(server.url).set("k", "v")
    server.stop()
    again = EmbeddedRedis(tmp_path, port=free_port())
    again.start()
    try:
        assert redis.Redis.from_url(again.url).get("k") == b"v"
    finally:
        again.stop()


@pytest.mark.parametrize(("durable", "appendonly"), [(True, "yes"), (False, "no")])
def test_only_a_durable_server_writes_an_append_only_file(
    tmp_path: Path, durable: bool, appendonly: str
) -> None:
    """A backtest's Redis (``durable=False``) skips the fsync a write that a durable one
    pays; the durable default keeps it."""
    server = EmbeddedRedis(tmp_path, durable=durable)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.config_get("appendonly") == {"appendonly": appendonly}
    finally:
        server.stop()
    assert any(tmp_path.rglob("*.aof")) is durable


def key_counts(cluster: EmbeddedRedisCluster) -> list[int]:
    """Keys per node, asked of each node directly rather than through a cluster client."""
    return [int(redis.Redis.from_url(node.url).dbsize()) for node in cluster.nodes]


def check_hash_tags_spread(client: redis.cluster.RedisCluster) -> None:
    for i in range(8):
        client.set(f"{{p{i}}}:count", i)
    assert client.get("{p5}:count") == b"5"


def check_lua_on_one_slot(client: redis.cluster.RedisCluster) -> None:
    script = client.register_script(
        "local n = redis.call('INCRBY', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], n) return n"
    )
    assert script(keys=["{lua}:n", "{lua}:copy"], args=[3]) == 3
    assert script(keys=["{lua}:n", "{lua}:copy"], args=[4]) == 7
    assert client.get("{lua}:copy") == b"7"


async def check_async_client(url: str) -> None:
    client = redis.asyncio.cluster.RedisCluster.from_url(url)
    try:
        await client.set("{tx}:a", "1")
        assert await client.get("{tx}:a") == b"1"
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("{tx}:a").set("{tx}:b", "x").get("{tx}:b")
            assert await pipe.execute() == [2, True, b"x"]
    finally:
        await client.aclose()


def test_embedded_redis_cluster_serves_cluster_clients_and_stops(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(tmp_path)
    cluster.start()
    try:
        assert cluster.url == f"redis://127.0.0.1:{cluster.nodes[0].port}"
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        check_hash_tags_spread(client)
        counts = key_counts(cluster)
        assert sum(counts) == 8 and sum(n > 0 for n in counts) > 1, counts
        check_lua_on_one_slot(client)
        asyncio.run(check_async_client(cluster.url))
        client.close()
        cluster.flushall()
        assert key_counts(cluster) == [0, 0, 0]
    finally:
        pids = [node.proc.pid for node in cluster.nodes if node.proc]
        cluster.stop()
    assert len(pids) == 3
    assert all(node.proc is None for node in cluster.nodes)
    for pid in pids:
        wait_for(lambda pid=pid: not alive(pid), 10, f"cluster node {pid} to stop")


def test_embedded_redis_cluster_refuses_a_directory_from_another_cluster(tmp_path: Path) -> None:
    cluster = EmbeddedRedisCluster(tmp_path, masters=1)
    conf = tmp_path / "node0" / "nodes.conf"
    conf.parent.mkdir()
    conf.write_text("abc 127.0.0.1:1@10001 myself,master - 0 0 1 connected 0-16383\n")
    with pytest.raises(RuntimeError, match=r"earlier cluster on other ports .* remove"):
        cluster.start()
    assert cluster.nodes[0].proc is None


def start_worker(home: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    env.update(
        SHELFCAST_HOME=str(home),
        SHELFCAST_WEB_PORT=str(free_port()),
        SHELFCAST_PARTITIONS="2",
        SHELFCAST_LOG_LEVEL="warning",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home / "worker.log").open("wb"),
    )


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_worker_on_embedded_services_is_found_by_replay_and_leaves_nothing_behind(
    tmp_path: Path, stop: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    worker = start_worker(home)
    try:
        wait_for(lambda: (home / STATE_FILE).exists(), 30, "the worker's state file")
        state = json.loads((home / STATE_FILE).read_text())
        assert state["pid"] == worker.pid
        found = discover(Settings.of(home=home))
        assert found.kafka.bootstrap_servers == state["kafka_bootstrap_servers"]
        assert found.redis.url == state["redis_url"]
        redis_pids = children(worker.pid)
        assert redis_pids, "the embedded redis-server runs as the worker's child"

        lines = [order(f"e{i}", "2011-01-04T10:00:00", 2, sku=f"S{i % 3}") for i in range(30)]
        lines.append(b"not json")
        orders = tmp_path / "orders.jsonl"
        orders.write_bytes(b"\n".join(lines) + b"\n")
        env = {
            k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
        }
        replay = subprocess.run(
            [sys.executable, "-m", "streamer.cli", "replay", str(orders), "--no-progress"],
            cwd=ROOT,
            env={**env, "SHELFCAST_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        client = redis.Redis.from_url(state["redis_url"])
        wait_for(
            lambda: int(client.hget(STATS, "events_done") or 0) >= 31, 60, "the worker to process"
        )
        assert summed_stats(client, 2)["applied"] == 30
        assert int(client.hget(STATS, "dlq") or 0) == 1
    finally:
        worker.send_signal(signal.SIGTERM if stop == "sigterm" else signal.SIGKILL)
        worker.wait(30)
    for pid in redis_pids:
        wait_for(lambda pid=pid: not alive(pid), 10, f"redis-server {pid} to stop")
    if stop == "sigterm":
        assert worker.returncode == 0
        assert not (home / STATE_FILE).exists()
    else:  # the state file outlives a kill -9, but nobody trusts it: its pid is dead
        assert discover(Settings.of(home=home)).kafka.bootstrap_servers == ""
