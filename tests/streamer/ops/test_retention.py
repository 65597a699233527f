"""What every reader of a topic has read leaves the embedded broker (streamer/ops/retention.py),
over real clients of a mock cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.config.settings import Settings
from streamer.ops.embedded import MockKafkaCluster, mock_cluster
from streamer.ops.retention import GroupReader, Reader, Retention

TOPIC = "t"
PARTS = [TopicPartition(TOPIC, p, 0) for p in (0, 1)]


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    cluster = MockKafkaCluster([TOPIC], partitions=2)
    yield cluster
    cluster.stop()


def produce(bootstrap: str, values: range, batch: int = 1) -> None:
    """``values`` to partition 0, ``batch`` messages a batch (one: as the alerts mostly are)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1000})
    for lo in range(values.start, values.stop, batch):
        for i in range(lo, min(lo + batch, values.stop)):
            producer.produce(TOPIC, str(i).encode(), partition=0)
        producer.flush(10)


def reader_of(bootstrap: str, group: str, at: int = 0) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            # an offset that is gone fails the read instead of silently skipping to the end
            "auto.offset.reset": "error",
        }
    )
    consumer.assign([TopicPartition(TOPIC, 0, at), TopicPartition(TOPIC, 1, 0)])
    return consumer


def read(consumer: Consumer, n: int) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + 20
    while len(got) < n:
        assert time.monotonic() < deadline, f"read {got} of {n}"
        for m in consumer.consume(n - len(got), timeout=1):
            assert m.error() is None, m.error()
            got.append(int(m.value()))
    return got


def log_start(consumer: Consumer) -> int:
    return consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)[0]


def test_what_every_reader_read_is_deleted_and_the_rest_is_still_read(
    cluster: MockKafkaCluster,
) -> None:
    assert mock_cluster(cluster.bootstrap) is cluster
    assert mock_cluster("elsewhere:9092") is None
    produce(cluster.bootstrap, range(40))
    retention = Retention(cluster)
    fast, slow = reader_of(cluster.bootstrap, "fast"), reader_of(cluster.bootstrap, "slow")
    readers = [
        Reader(retention, name, c, PARTS, every=0) for name, c in (("fast", fast), ("slow", slow))
    ]

    assert read(fast, 30) == list(range(30))
    readers[0].read()
    assert log_start(fast) == 0  # the slow reader has read nothing yet

    assert read(slow, 10) == list(range(10))
    readers[1].read()
    assert log_start(fast) == 10  # what both have read, and not one message more

    # what arrives after the trim is fetched from the broker, from where each reader is
    produce(cluster.bootstrap, range(40, 60))
    assert read(slow, 50) == list(range(10, 60))
    assert read(fast, 30) == list(range(30, 60))
    for reader in readers:
        reader.read()
    assert log_start(fast) == 60
    for consumer in (fast, slow):
        consumer.close()


def test_a_cut_inside_a_batch_keeps_the_batch_and_a_new_reader_starts_there(
    cluster: MockKafkaCluster,
) -> None:
    produce(cluster.bootstrap, range(30), batch=10)
    retention = Retention(cluster)
    only = reader_of(cluster.bootstrap, "only")
    reader = Reader(retention, "only", only, PARTS, every=0)
    read(only, 15)
    reader.read()
    assert log_start(only) == 15
    later = reader_of(cluster.bootstrap, "later", at=15)
    assert read(later, 15) == list(range(15, 30))
    with pytest.raises(ValueError, match="too late"):
        Reader(retention, "later", later, PARTS)
    twice = Retention(cluster)
    twice.register(TOPIC, "twice")
    with pytest.raises(ValueError, match="already reads"):
        twice.register(TOPIC, "twice")
    for consumer in (only, later):
        consumer.close()


def test_nothing_is_deleted_without_a_mock_cluster_or_once_it_is_closed(
    cluster: MockKafkaCluster,
) -> None:
    produce(cluster.bootstrap, range(5))
    consumer = reader_of(cluster.bootstrap, "only")
    read(consumer, 5)
    Reader(Retention(None), "only", consumer, PARTS, every=0).read()
    closed = Retention(cluster)
    reader = Reader(closed, "only", consumer, PARTS, every=0)
    closed.close()
    reader.read()
    assert log_start(consumer) == 0
    consumer.close()


def test_what_the_worker_group_committed_is_deleted_from_its_inputs() -> None:
    settings = Settings.of(app_id="workers", partitions=2)
    orders, inventory = settings.kafka.topics["orders"], settings.kafka.topics["inventory"]
    cluster = MockKafkaCluster([orders, inventory], partitions=2)
    try:
        settings = settings.replace(kafka_bootstrap_servers=cluster.bootstrap)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "linger.ms": 1000})
        for i in range(10):  # a batch each, as the bench's paced orders
            producer.produce(orders, str(i).encode(), partition=0)
            producer.flush(10)
        group = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "workers"})
        group.commit(offsets=[TopicPartition(orders, 0, 6)], asynchronous=False)
        reader = GroupReader(Retention(cluster), settings, every=0.05)
        reader.start()
        deadline = time.monotonic() + 20
        start = 0
        while start < 6 and time.monotonic() < deadline:
            start = group.get_watermark_offsets(TopicPartition(orders, 0), timeout=10)[0]
            time.sleep(0.05)
        reader.stop()
        assert start == 6  # below what the group committed, not past it
        assert group.get_watermark_offsets(TopicPartition(orders, 1), timeout=10) == (0, 0)
        group.close()
    finally:
        cluster.stop()
