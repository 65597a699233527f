"""The worker's sink over the embedded broker: every output acknowledged, on the partition
Faust's producer picked before it, and a clear error when the brokers never answer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, TopicPartition

from streamer.config.settings import Settings
from streamer.ops.embedded import MockKafkaCluster, free_port
from streamer.publish.messages import Output
from streamer.publish.sink import DeliveryFailed, KafkaSink

TOPIC = "shelfcast-dlq"  # nothing else in the session writes to it


def read_all(bootstrap: str, n: int) -> list[tuple[int, bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sink-test"})
    parts = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in parts])
    got: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error() is None:
                got.append((msg.partition(), msg.key(), msg.value()))
    consumer.close()
    return got


def test_every_output_is_acknowledged_on_the_partition_faust_picked(
    kafka: MockKafkaCluster,
) -> None:
    sink = KafkaSink(Settings.of(kafka_bootstrap_servers=kafka.bootstrap))
    first = [Output(TOPIC, f"S{i}@L{i % 3}".encode(), b'{"n":%d}' % i) for i in range(3000)]
    second = [Output(TOPIC, b"S1@L1", b'{"n":-1}')]

    async def both() -> None:  # two partitions' batches in flight at once
        await asyncio.gather(sink(first), sink(second))

    asyncio.run(both())
    sink.close()
    assert sink.delivered == 3001
    got = read_all(kafka.bootstrap, 3001)
    assert sorted(v for _, _, v in got) == sorted(o.value for o in first + second)
    faust = DefaultPartitioner()
    for partition, key, _ in got:
        assert partition == faust(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_an_unreachable_broker_fails_the_batch_naming_the_fix() -> None:
    settings = Settings.of(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    sink = KafkaSink(settings, timeout_ms=1500)
    try:
        with pytest.raises(DeliveryFailed, match="KAFKA_BOOTSTRAP_SERVERS") as failed:
            asyncio.run(sink([Output(TOPIC, b"k", b"v")] * 3))
    finally:
        sink.close()  # or its producer keeps dialling the closed port for the whole session
    assert "3 of 3 outputs" in str(failed.value)
    assert sink.delivered == 0


def test_a_cancelled_batch_is_no_error_and_the_next_one_delivers(kafka: MockKafkaCluster) -> None:
    """A partition's task cancelled while its batch waits (a rebalance): the reports that
    come later resolve nothing and log nothing, and the sink goes on."""
    sink = KafkaSink(Settings.of(kafka_bootstrap_servers=kafka.bootstrap))
    errors: list[dict[str, object]] = []

    async def run() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        waiting = asyncio.create_task(sink([Output(TOPIC, b"c", b"x")] * 50))
        await asyncio.sleep(0)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await sink([Output(TOPIC, b"c", b"y")])
        await asyncio.sleep(0.5)  # the cancelled batch's reports have come by now

    asyncio.run(run())
    sink.close()
    assert errors == []
    assert sink.delivered == 1


def test_a_flush_that_raises_fails_its_batches_and_the_sink_goes_on(
    kafka: MockKafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sink's flushing thread must outlive an error: a batch it never settled would
    wait forever, and every later one behind it."""
    sink = KafkaSink(Settings.of(kafka_bootstrap_servers=kafka.bootstrap))
    drain = sink._drain

    def broken(timeout: float) -> int:
        raise RuntimeError("librdkafka said no")

    async def run() -> None:
        monkeypatch.setattr(sink, "_drain", broken)
        with pytest.raises(DeliveryFailed, match="librdkafka said no"):
            await asyncio.wait_for(sink([Output(TOPIC, b"f", b"x")]), timeout=30)
        monkeypatch.setattr(sink, "_drain", drain)
        await asyncio.wait_for(sink([Output(TOPIC, b"f", b"y")]), timeout=30)

    try:
        asyncio.run(run())
    finally:
        sink.close()  # or its producer outlives the test
    assert sink.delivered == 1
