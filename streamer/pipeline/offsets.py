"""Input offsets: what Redis has applied, against what the consumer group committed in Kafka.

A worker commits its Kafka input only after Redis acknowledged the batch's effects, and every
record it takes (dead letters included) moves the partition's offsets in Redis
(``shelfcast:{pP}:offsets``). So Redis is never behind the group's committed offsets, unless
Redis lost acknowledged writes: a restart without AOF, a failover to a replica that lagged,
an eviction. Then the records in between were counted by Kafka as consumed and by Redis not
at all, and going on would lose them silently. On taking a partition over, the worker
compares the two (``check``) and stops with ``RedisBehind``; ``shelfcast offsets rewind``
moves the group's committed offsets back to Redis's, so the workers replay what Redis lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from streamer.config.settings import Settings
from streamer.features.keys import part_key
from streamer.features.store import as_text

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = [
    "Gap", "KafkaUnavailable", "RedisBehind", "commit", "committed", "gaps", "low_watermarks",
    "rewind_plan", "skip_to", "stored",
]  # fmt: skip

REWIND_HINT = (
    "stop every worker, then run `shelfcast offsets rewind` to replay from Redis's offsets "
    "(docs/delivery.md, Loss detection)"
)


@dataclass(frozen=True, slots=True)
class Gap:
    """An input partition (``topic:partition``) whose offset in Redis is below Kafka's."""

    field: str
    redis: int  # the next offset Redis has applied
    committed: int  # the next offset the consumer group committed

    def __str__(self) -> str:
        return f"{self.field}: Redis at {self.redis}, Kafka committed {self.committed}"


class KafkaUnavailable(ConnectionError):
    """Kafka did not answer: the worker retries the step with backoff, as for Redis."""


class RedisBehind(RuntimeError):
    """Redis lost writes that Kafka counts as consumed: going on would lose them silently."""

    def __init__(self, partition: int, found: list[Gap], seen: str = "") -> None:
        lost = sum(g.committed - g.redis for g in found)
        what = seen or f"{'; '.join(map(str, found))}: {lost} records were acknowledged"
        super().__init__(
            f"partition {partition}: Redis is behind the consumer group's committed input "
            f"({what}), and their effects are not in Redis (a Redis restart without AOF, a "
            "failover to a lagging replica, or an eviction). Not going on with partial "
            f"numbers: {REWIND_HINT}"
        )
        self.partition = partition
        self.gaps = found


def gaps(stored: Mapping[str, int], committed_offsets: Mapping[str, int]) -> list[Gap]:
    """The input partitions where Redis's next offset is below the committed one.

    >>> gaps({"orders:3": 120}, {"orders:3": 150, "inventory:3": 0})
    [Gap(field='orders:3', redis=120, committed=150)]
    """
    return [
        Gap(field, stored.get(field, 0), n)
        for field, n in sorted(committed_offsets.items())
        if stored.get(field, 0) < n
    ]


def _admin(settings: Settings) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    return AdminClient(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "log_level": 0,
            **settings.kafka.security.confluent(),
        }
    )


def input_topics(settings: Settings) -> tuple[str, str]:
    return settings.kafka.topics["orders"], settings.kafka.topics["inventory"]


def committed(
    settings: Settings, partitions: Iterable[int], timeout: float = 10.0
) -> dict[str, int]:
    """The consumer group's committed next offsets of ``partitions`` of both input topics, as
    ``topic:partition`` fields (none where nothing is committed)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

    tps = [TopicPartition(t, p) for t in input_topics(settings) for p in partitions]
    request = ConsumerGroupTopicPartitions(settings.kafka.app_id, tps)
    admin = _admin(settings)  # held until the answer: a dropped client cancels its requests
    try:
        answer = admin.list_consumer_group_offsets([request])[settings.kafka.app_id].result(timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot read the group's committed offsets: {exc}") from exc
    return {
        f"{tp.topic}:{tp.partition}": tp.offset for tp in answer.topic_partitions if tp.offset >= 0
    }


def rewind_plan(
    stored: Mapping[str, int], committed_offsets: Mapping[str, int], low: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """Where to move the group's offsets: each partition behind goes back to Redis's offset,
    or to the oldest the log still holds (``low``). Returns (targets, records lost for good).

    >>> rewind_plan({"orders:0": 10, "orders:1": 5}, {"orders:0": 40, "orders:1": 5},
    ...             {"orders:0": 25, "orders:1": 0})
    ({'orders:0': 25}, {'orders:0': 15})
    """
    targets, lost = {}, {}
    for gap in gaps(stored, committed_offsets):
        targets[gap.field] = max(gap.redis, low.get(gap.field, 0))
        if gap.redis < low.get(gap.field, 0):
            lost[gap.field] = low[gap.field] - gap.redis
    return targets, lost


def skip_to(client: redis.Redis, targets: Mapping[str, int]) -> None:
    """Move Redis's offsets up to ``targets``: the records before them are gone from the log
    for good, and the workers must not find Redis behind for them again."""
    pipe = client.pipeline(transaction=False)
    for field, offset in targets.items():
        pipe.hset(part_key(int(field.rpartition(":")[2]), "offsets"), field, offset)
    pipe.execute()


def stored(client: redis.Redis, partitions: Iterable[int]) -> dict[str, int]:
    """Redis's next offsets of ``partitions`` (every input topic's field), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for p in partitions:
        pipe.hgetall(part_key(p, "offsets"))
    return {as_text(k): int(v) for values in pipe.execute() for k, v in values.items()}


def low_watermarks(
    settings: Settings, fields: Iterable[str], timeout: float = 10.0
) -> dict[str, int]:
    """The oldest offset each input partition's log still holds."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.kafka.app_id,
            "log_level": 0,
            **settings.kafka.security.confluent(),
        }
    )
    try:
        out = {}
        for field in fields:
            topic, _, p = field.rpartition(":")
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, int(p)), timeout)
            out[field] = low
        return out
    finally:
        consumer.close()


def commit(settings: Settings, targets: Mapping[str, int], timeout: float = 60.0) -> None:
    """Set the consumer group's committed offsets, while no worker is in the group.

    It joins the group and commits as a member: a commit from outside the group is refused
    by librdkafka's mock broker once the group exists (a real broker takes both). Given only
    some of the input partitions, it shares the group with a worker, and leaves without
    committing.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.kafka.app_id,
            "enable.auto.commit": False,
            # the workers' session: the group waits this long for a member that died
            "session.timeout.ms": 10_000,
            "log_level": 0,
            **settings.kafka.security.confluent(),
        }
    )
    try:
        topics = list(input_topics(settings))
        metadata = consumer.list_topics(timeout=timeout).topics
        every = {(t, p) for t in topics for p in metadata[t].partitions}
        consumer.subscribe(topics)
        deadline = time.monotonic() + timeout
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no partitions assigned within {timeout:.0f}s")
            consumer.poll(0.2)
        held = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        if held != every:
            raise RuntimeError(
                f"the consumer group {settings.kafka.app_id!r} has other members: stop every "
                "worker first (a worker that died stays a member for the session timeout, 10 s)"
            )
        tps = [
            TopicPartition(field.rpartition(":")[0], int(field.rpartition(":")[2]), offset)
            for field, offset in sorted(targets.items())
        ]
        refused = [tp for tp in consumer.commit(offsets=tps, asynchronous=False) if tp.error]
        if refused:
            raise KafkaException(refused[0].error)
    except KafkaException as exc:
        raise RuntimeError(
            f"Kafka refused the new offsets of {settings.kafka.app_id!r}: {exc}"
        ) from exc
    finally:
        consumer.close()
