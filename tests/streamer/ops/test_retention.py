"""What every reader of a topic has read leaves the embedded broker (streamer/ops/retention.py),
over real clients of a mock cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.ops.embedded import MockKafkaCluster, mock_cluster
from streamer.ops.retention import Reader, Retention

TOPIC = "t"


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    cluster = MockKafkaCluster([TOPIC], partitions=2)
    yield cluster
    cluster.stop()


def produce_one_a_batch(bootstrap: str, n: int) -> None:
    """``n`` messages to partition 0, each a batch of its own, as the alerts mostly are."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        producer.produce(TOPIC, str(i).encode(), partition=0)
        producer.flush(10)


def reader_of(bootstrap: str, group: str) -> tuple[Consumer, list[TopicPartition]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    parts = [TopicPartition(TOPIC, p, 0) for p in (0, 1)]
    consumer.assign(parts)
    return consumer, parts


def read(consumer: Consumer, n: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < n:
        got += [m.value() for m in consumer.consume(n - len(got), timeout=5) if not m.error()]
    return got


def log_start(consumer: Consumer) -> int:
    return consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)[0]


def test_what_every_reader_read_is_deleted_and_the_rest_is_still_read(
    cluster: MockKafkaCluster,
) -> None:
    assert mock_cluster(cluster.bootstrap) is cluster
    produce_one_a_batch(cluster.bootstrap, 40)
    retention = Retention(cluster)
    fast, parts = reader_of(cluster.bootstrap, "fast")
    slow, _ = reader_of(cluster.bootstrap, "slow")
    readers = [
        Reader(retention, name, c, parts, every=0) for name, c in (("fast", fast), ("slow", slow))
    ]

    assert read(fast, 30) == [str(i).encode() for i in range(30)]
    readers[0].read()
    assert log_start(fast) == 0  # the slow reader has read nothing yet

    read(slow, 10)
    readers[1].read()
    assert log_start(fast) == 10  # what both have read, and not one message more

    assert read(slow, 30) == [str(i).encode() for i in range(10, 40)]  # the rest is all there
    readers[1].read()
    assert log_start(fast) == 30
    for consumer in (fast, slow):
        consumer.close()


def test_a_broker_of_its_own_is_never_trimmed(cluster: MockKafkaCluster) -> None:
    produce_one_a_batch(cluster.bootstrap, 5)
    consumer, parts = reader_of(cluster.bootstrap, "only")
    read(consumer, 5)
    Reader(Retention(None), "only", consumer, parts, every=0).read()
    assert log_start(consumer) == 0
    consumer.close()
