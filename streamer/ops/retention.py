"""What every reader of a backtest's output has read leaves the embedded broker.

librdkafka's mock cluster keeps a partition's batches in a list, up to 5 MiB or 100,000 of
them, and finds a fetch's offset by walking that list from the oldest batch
(``rd_kafka_mock_msgset_find``: "FIXME: Maintain an index"). The alerts go out a few at a time,
spread over their partitions, so nearly every alert is a batch of its own: a partition kept
about 10,000 of them, and each new alert's fetch walked them all, once for each reader. That
walk was three quarters of the mock's thread, which used a quarter of a core over a full-year
backtest (docs/benchmark.md). A backtest knows every reader of its outputs, so it deletes what
all of them have read. A real broker indexes its log and keeps its own retention: nothing is
deleted there. The same walk slowed ``shelfcast bench``'s latency phase: its orders go out
one a batch, and the worker's fetches walked every one sent before (``GroupReader``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamer.config.settings import Settings
from streamer.ops.embedded import MockKafkaCluster
from streamer.pipeline.offsets import KafkaUnavailable, committed, input_topics

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

__all__ = ["GroupReader", "Reader", "Retention"]

# Seconds between two trims by one reader: each trim is a call into the mock's thread per
# partition, and a partition then holds what arrived meanwhile (a few dozen alerts)
TRIM_EVERY = 0.5


class Retention:
    """The records of each partition that every registered reader of its topic has read,
    deleted from ``cluster``; nothing is deleted without a cluster (a broker of its own).

    Every reader of a topic registers before any reports: a reader that came later could
    ask for what is gone.

    >>> retention = Retention(None)
    >>> retention.register("alerts", "planner")
    >>> retention.report("alerts", "planner", {0: 5})  # no mock cluster: nothing to delete
    """

    def __init__(self, cluster: MockKafkaCluster | None) -> None:
        self.cluster = cluster
        self._lock = threading.Lock()
        self._read: dict[str, dict[str, dict[int, int]]] = {}  # topic -> reader -> positions
        self._start: dict[tuple[str, int], int] = {}  # where each partition was cut

    def register(self, topic: str, reader: str) -> None:
        """Keep what ``reader`` has not read of ``topic`` from now on."""
        with self._lock:
            readers = self._read.setdefault(topic, {})
            if reader in readers:
                raise ValueError(f"{reader!r} already reads {topic!r}: a reader's name is its own")
            if any(t == topic for t, _ in self._start):
                raise ValueError(f"{topic!r} was trimmed already: {reader!r} registers too late")
            readers[reader] = {}

    def report(self, topic: str, reader: str, positions: dict[int, int]) -> None:
        """``reader`` of ``topic`` has read each partition up to its position (the next
        offset it reads): delete what every reader has read."""
        # under the lock, the mock call included: the mock moves a partition's start to
        # whatever it is given, so two deletes must not pass each other
        with self._lock:
            if self.cluster is None:
                return
            readers = self._read[topic]
            readers[reader].update(positions)
            for partition in positions:
                before = min(read.get(partition, 0) for read in readers.values())
                if before > self._start.get((topic, partition), 0):
                    self.cluster.delete_records(topic, partition, before)
                    self._start[(topic, partition)] = before

    def close(self) -> None:
        """Delete nothing more: the cluster is about to stop, and a reader's thread may
        still report (a backtest that failed leaves its collectors reading)."""
        with self._lock:
            self.cluster = None


class Reader:
    """One consumer's reports to a ``Retention``: ``read`` after each read, from the thread
    that owns the consumer."""

    def __init__(
        self,
        retention: Retention,
        name: str,
        consumer: Consumer,
        partitions: Sequence[TopicPartition],
        every: float = TRIM_EVERY,
    ) -> None:
        self.retention, self.name, self.every = retention, name, every
        self._consumer, self._partitions = consumer, list(partitions)
        self._topics = {tp.topic for tp in self._partitions}
        self._last = 0.0
        for topic in self._topics:
            retention.register(topic, name)

    def read(self) -> None:
        """Report the consumer's positions, at most every ``every`` seconds."""
        if time.monotonic() - self._last < self.every:
            return
        self._last = time.monotonic()
        # the next offset to read, or a negative one where nothing was read yet
        done = [tp for tp in self._consumer.position(self._partitions) if tp.offset >= 0]
        for topic in self._topics:
            positions = {tp.partition: tp.offset for tp in done if tp.topic == topic}
            self.retention.report(topic, self.name, positions)


class GroupReader(threading.Thread):
    """The worker consumer group's committed offsets of its input topics, reported to a
    ``Retention`` every ``every`` seconds until ``stop``: what the group committed, Redis holds
    (docs/delivery.md), so no worker reads below it again."""

    def __init__(self, retention: Retention, settings: Settings, every: float = TRIM_EVERY) -> None:
        super().__init__(name="group-reader", daemon=True)
        self.retention, self.settings, self.every = retention, settings, every
        self.topics = input_topics(settings)
        self._stopped = threading.Event()
        for topic in self.topics:
            retention.register(topic, settings.kafka.app_id)

    def run(self) -> None:
        partitions = range(self.settings.kafka.partitions)
        while not self._stopped.wait(self.every):
            try:
                read = committed(self.settings, partitions, timeout=self.every * 4)
            except KafkaUnavailable:
                continue  # the broker is busy or going: the next turn asks again
            for topic in self.topics:
                positions = {
                    int(p): offset for field, offset in read.items()
                    for t, p in [field.rsplit(":", 1)] if t == topic
                }  # fmt: skip
                self.retention.report(topic, self.settings.kafka.app_id, positions)

    def stop(self) -> None:
        self._stopped.set()
        self.join()
