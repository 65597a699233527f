"""Thin Faust agents: they hand micro-batches to ``Pipeline`` and send what it returns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import NoReturn, TypeVar

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamer import metrics
from streamer.config.settings import Settings
from streamer.features.store import FeatureStore
from streamer.ingest import web
from streamer.ingest.app import redis_client
from streamer.pipeline import offsets
from streamer.pipeline.batch import BatchResult, Pipeline, Record
from streamer.pipeline.offsets import KafkaUnavailable, RedisBehind
from streamer.publish.messages import Output

log = logging.getLogger(__name__)

T = TypeVar("T")
# a cluster client with no reachable node raises RedisClusterException
REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    RedisClusterException,
)
# replies of a Redis that is up but refuses for now: out of memory at maxmemory, a replica
# or a failing-over primary, a failed RDB save, a busy script, still loading its data, a
# cluster with a slot not served (a node down) or being moved
REFUSALS = ("OOM", "READONLY", "MISCONF", "BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN")
MAX_BACKOFF = 5.0
SNAPSHOT_ON_REVOKE_SECONDS = 10.0
EXIT_HALTED = 78  # EX_CONFIG: the state needs an operator (RedisBehind), not a restart


def register(app: faust.App, settings: Settings) -> None:
    inputs = app.topic(
        settings.topics["orders"],
        settings.topics["inventory"],
        key_serializer="raw",
        value_serializer="raw",
    )

    async def deliver(batch: list[Output]) -> None:
        """Send and wait for the broker's acknowledgement of every message.

        Straight to the app's producer: outputs are already bytes, and Faust's per-message
        Topic.send layer cost a tenth of the worker's time at bucket close. Partitioning is the
        same (murmur2 of the key).
        """
        producer = app.producer
        pending = [await producer.send(o.topic, o.key, o.value, None, None, None) for o in batch]
        await asyncio.gather(*pending)

    store = FeatureStore.of(redis_client(settings), settings)

    async def committed(partition: int) -> dict[str, int]:
        return await asyncio.to_thread(offsets.committed, settings, [partition])

    pipeline = Pipeline(settings, store, deliver, committed)
    web.register(app, settings, store.r)
    lock = asyncio.Lock()  # the idle timer and the agent share the pipeline's clocks
    owned: set[int] = set()
    input_topics = {settings.topics["orders"], settings.topics["inventory"]}
    positions: dict[TP, int] = {}  # next offset to process, per input partition

    def held() -> set[TP]:
        return {tp for tp in app.consumer.assignment() if tp.topic in input_topics}

    def forget(tps: Iterable[TP]) -> None:
        for tp in list(tps):
            positions.pop(tp, None)
            with contextlib.suppress(KeyError):  # never observed
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))

    async def observe_lag() -> None:
        # High watermarks are the consumer's cached ones, from its latest fetches. A partition
        # not processed yet counts from the consumer's position, so a backlog taken over in a
        # rebalance shows before its first batch completes.
        for tp in held() - positions.keys():
            # a rebalance during an earlier await may have taken ``tp`` away
            with contextlib.suppress(IllegalStateError):
                if (position := await app.consumer.position(tp)) is not None:
                    positions[tp] = position
        # a rebalance may have run during those awaits, and a batch taken before it may have
        # recorded a partition given up since: the gauges show only what is held now
        assigned = held()
        forget(positions.keys() - assigned)
        for tp in assigned & positions.keys():
            if (highwater := app.consumer.highwater(tp)) is not None:
                lag = max(highwater - positions[tp], 0)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: set[TP], **_: object) -> None:
        # another worker may have advanced a partition since this one last owned it
        now = {tp.partition for tp in assigned if tp.topic in input_topics}
        if app.rebalancing_count <= 1:  # a line a script can wait for, as /readyz says
            print(
                f"shelfcast worker: ready, consuming {len(now)} of {settings.partitions} "
                f"partitions; state at http://{settings.web_bind}:{settings.web_port}/readyz",
                flush=True,
            )
        pipeline.assign(now - owned)
        owned.clear()
        owned.update(now)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: object, revoked: set[TP], **_: object) -> None:
        lost = {tp.partition for tp in revoked if tp.topic in input_topics}
        try:
            # the next owner restores from here instead of replaying up to a schedule's worth
            await asyncio.wait_for(pipeline.snapshot(lost), SNAPSHOT_ON_REVOKE_SECONDS)
        except (TimeoutError, *REDIS_DOWN) as exc:
            log.warning("no model snapshot on revoke (%s); the next owner replays history", exc)
        pipeline.revoke(lost)
        owned.difference_update(lost)
        forget(revoked)

    async def run(step: str, work: Callable[[], Awaitable[T]]) -> T:
        async with lock:
            return await retrying(step, work)

    async def account(result: BatchResult) -> None:
        await store.count(
            events_done=result.records,
            dlq=result.dlq,
            forecasts=result.forecasts,
            alerts=result.alerts,
        )

    @app.agent(inputs)
    async def process(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            started = time.perf_counter()
            messages = [e.message for e in events]
            records = [Record(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
            try:
                result = await run("batch", lambda records=records: pipeline.process(records))
                await run("accounting", lambda result=result: account(result))
            except RedisBehind as exc:
                halt(str(exc))
            except Exception:
                fatal("processing a batch failed")
            hold_back(messages, pipeline.applies)
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
            done = time.time()
            for m in messages:
                if (m.timestamp or 0) > 0:  # a record without one arrives as -0.001
                    metrics.PROCESSING_LATENCY.observe(max(done - m.timestamp, 0.0))
                positions[m.tp] = max(positions.get(m.tp, 0), m.offset + 1)
            await observe_lag()

    @app.timer(interval=max(settings.idle_advance_seconds / 3, 1.0))
    async def advance_idle_partitions() -> None:
        await observe_lag()  # lag keeps growing on the dashboard while a batch is stuck
        try:
            result = await run("idle advance", lambda: pipeline.advance_idle(time.time(), owned))
            await run("accounting", lambda: account(result))
        except RedisBehind as exc:
            halt(str(exc))
        except Exception:
            fatal("advancing idle partitions failed")


def hold_back(messages: Iterable[Message], applies: Callable[[int], bool]) -> None:
    """Keep the records of a partition dropped in this batch (fenced or revoked) from being
    committed: ``take_events`` acks every event it yielded, and a commit past records this
    worker never applied would lose them for the partition's next owner (Redis behind Kafka).

    Each is marked acknowledged without telling the consumer: ``take_events``' ack then does
    nothing and its offset never joins the committable ones (Faust commits only consecutive
    acked offsets), while the consumer still counts it as done, so a rebalance's or a
    shutdown's wait for unacknowledged messages (``stream_wait_empty``) does not wait on it
    forever. The partition's next assignment fetches from the committed offset again."""
    with ack_lock:  # Faust's own lock around a message's ack state
        for m in messages:
            if not applies(m.partition):
                m.acked = True


def transient(exc: BaseException) -> bool:
    """Whether a Redis failure passes by itself: unreachable, or up but refusing for now
    (also inside a script, whose error wraps the refusal: ``... -OOM command not allowed``)."""
    if isinstance(
        exc, (*REDIS_DOWN, OutOfMemoryError, ReadOnlyError, TryAgainError, ClusterDownError)
    ):
        return True
    if isinstance(exc, (AttributeError, TypeError)) and _in_redis_transport(exc):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError) and any(
        text.startswith(code) or f"-{code} " in text for code in REFUSALS
    )


def _in_redis_transport(exc: BaseException) -> bool:
    """Whether ``exc`` was raised writing to a Redis connection the peer had closed: redis-py
    8.1 lets asyncio's ``'NoneType' object has no attribute 'writelines'`` (or ``... is not
    callable``) through instead of a ConnectionError (redis/redis-py#4287). The connection
    reconnects on its next use, so this is a lost connection like any other."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("redis/asyncio/connection.py"):
            return True
        tb = tb.tb_next
    return False


class _Outage:
    """This process's view of Redis being away, shared by every step: one log line when it
    goes and one when it is back, however many steps and connections notice. A failure just
    after Redis came back is logged only if it lasts: a pooled connection that died in the
    outage fails once more then."""

    GRACE = 2.0

    def __init__(self) -> None:
        self.since: float | None = None
        self.back_at = -math.inf
        self.logged = False

    def failed(self, step: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since, self.logged = now, False
        lasting = now - self.back_at >= self.GRACE or now - self.since >= self.GRACE
        if not self.logged and lasting:
            self.logged = True
            log.error("%s: retrying %s with backoff (%s)", _why(exc), step, exc)

    def succeeded(self, step: str) -> None:
        if self.since is not None:
            if self.logged:
                elapsed = time.monotonic() - self.since
                log.warning("Redis is back after %.1fs; %s resumed", elapsed, step)
            self.since, self.back_at = None, time.monotonic()


_outage = _Outage()


async def retrying(step: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a pipeline step, retrying with backoff while Redis is unreachable or refuses.

    Every effect is idempotent, so a step retried after a partial failure applies the rest
    and skips what was done. Any other error is a bug and propagates.
    """
    delay = 0.2
    while True:
        try:
            result = await work()
        except Exception as exc:
            if not transient(exc):
                raise
            metrics.REDIS_ERRORS.inc()
            _outage.failed(step, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        else:
            _outage.succeeded(step)
            return result


def _why(exc: BaseException) -> str:
    if isinstance(exc, KafkaUnavailable):
        return "Kafka unreachable"
    if isinstance(exc, REDIS_DOWN):
        return "Redis unreachable"
    if isinstance(exc, OutOfMemoryError) or "OOM" in str(exc):
        return "Redis is full (maxmemory): raise it or free memory, with noeviction kept"
    return "Redis refuses writes for now"


def halt(why: str) -> NoReturn:
    """Stop the worker on a condition an operator must resolve, saying how (no traceback: it is
    no bug). Its input stays uncommitted."""
    log.critical("%s", why)
    logging.shutdown()
    os._exit(EXIT_HALTED)


def fatal(what: str) -> NoReturn:
    """Exit the process on a bug instead of letting Faust restart the agent.

    A restarted Faust agent does not get the batch it crashed on back, so it would stall or
    skip input. Exiting leaves the input uncommitted; the restarted worker reprocesses it, and
    every effect is idempotent.
    """
    log.exception("%s; exiting so the worker restarts from its last committed input", what)
    logging.shutdown()
    os._exit(70)
