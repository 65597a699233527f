"""Thin Faust agents: they hand micro-batches to ``Pipeline`` and send what it returns.

``Agents`` holds what the agent, the idle timer and the rebalance callbacks share (the
partitions owned, the consumer positions for the lag gauges, the lock around the pipeline's
clocks); the composition root (``streamer.ingest.app.compose``) builds the pipeline and
connects it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP, Message
from faust.types.tuples import ack_lock

from streamer import metrics
from streamer.config.settings import Settings
from streamer.features.store import FeatureStore
from streamer.ingest.microbatch import consume
from streamer.ingest.retry import REDIS_DOWN, fatal, halt, retrying
from streamer.pipeline.batch import BatchResult, Pipeline, Record
from streamer.pipeline.offsets import RedisBehind

__all__ = ["Agents", "hold_back"]

log = logging.getLogger(__name__)

T = TypeVar("T")
SNAPSHOT_ON_REVOKE_SECONDS = 10.0


class Agents:
    """The worker's agent over both input topics, its idle timer and its rebalance callbacks."""

    def __init__(
        self, app: faust.App, settings: Settings, pipeline: Pipeline, store: FeatureStore
    ) -> None:
        self.app, self.settings, self.pipeline, self.store = app, settings, pipeline, store
        self.lock = asyncio.Lock()  # the idle timer and the agent share the pipeline's clocks
        self.owned: set[int] = set()
        self.input_topics = {settings.kafka.topics["orders"], settings.kafka.topics["inventory"]}
        self.positions: dict[TP, int] = {}  # next offset to process, per input partition
        # orders partitions paused until their inventory caught up; None: not known since a
        # rebalance replaced the client's assignment, and the next ``align`` sets it whole
        self.waiting: set[TP] | None = None
        # a pause is recorded before the next is computed (``keep_aligned``)
        self.aligning = asyncio.Lock()

    def connect(self) -> None:
        """Register the agent, the timer and the callbacks with the app."""
        app, settings = self.app, self.settings
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_partitions_revoked.connect(self.on_revoked)
        for role in ("orders", "inventory"):
            # an agent, and so a buffer, per topic: under one buffer the orders of a backlog
            # crowd the inventory out (Faust stops fetching whichever partition's record
            # meets a full buffer, until it drains)
            topic = settings.kafka.topics[role]
            inputs = app.topic(topic, key_serializer="raw", value_serializer="raw")
            app.agent(inputs, name=f"{__name__}.process_{role}")(self.process)
        interval = max(settings.time.idle_advance_seconds / 3, 1.0)
        app.timer(interval=interval, name=f"{__name__}.advance_idle")(self.advance_idle)

    def held(self) -> set[TP]:
        return {tp for tp in self.app.consumer.assignment() if tp.topic in self.input_topics}

    def forget(self, tps: Iterable[TP]) -> None:
        for tp in list(tps):
            self.positions.pop(tp, None)
            if self.waiting is not None:
                self.waiting.discard(tp)
            with contextlib.suppress(KeyError):  # never observed
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
            if tp.topic == self.settings.kafka.topics["orders"]:
                with contextlib.suppress(KeyError):  # never aligned
                    metrics.ORDERS_PAUSED.remove(str(tp.partition))

    async def observe_lag(self) -> dict[TP, int]:
        # High watermarks are the consumer's cached ones, from its latest fetches. A partition
        # not processed yet counts from the consumer's position, so a backlog taken over in a
        # rebalance shows before its first batch completes.
        consumer = self.app.consumer
        for tp in self.held() - self.positions.keys():
            # a rebalance during an earlier await may have taken ``tp`` away
            with contextlib.suppress(IllegalStateError):
                if (position := await consumer.position(tp)) is not None:
                    self.positions[tp] = position
        # a rebalance may have run during those awaits, and a batch taken before it may have
        # recorded a partition given up since: the gauges show only what is held now
        assigned = self.held()
        self.forget(self.positions.keys() - assigned)
        lags: dict[TP, int] = {}
        for tp in assigned & self.positions.keys():
            if (highwater := consumer.highwater(tp)) is not None:
                lags[tp] = max(highwater - self.positions[tp], 0)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lags[tp])
        return lags

    async def keep_aligned(self) -> None:
        """Observe the lags and ``align`` the topics by them, one caller at a time.

        The two agents' batches and the idle timer all call this. Run side by side, two calls
        could each pause other partitions and record only their own, and a partition paused
        but not recorded was never resumed: the worker stopped short of its input with every
        lag gauge at 0 (a paused partition's high watermark is not fetched either)."""
        async with self.aligning:
            await self.align(await self.observe_lag())

    async def align(self, lags: dict[TP, int]) -> None:
        """Pause fetching a partition's orders while they are more than
        ``SHELFCAST_TOPIC_LEAD_SECONDS`` of event time ahead of its inventory and the inventory
        has records left to read; resume them once it caught up or ran out.

        Nothing else orders the two topics: a worker catching up on a backlog (a restart, a
        Redis outage) could read weeks of orders before the inventory stamped among them, and a
        snapshot read that late is stale (docs/alerts.md). Inventory is never paused: what it
        brings ahead of the orders waits in Redis until the orders reach it (apply.lua)."""
        if self.app.rebalancing:
            return  # the next call after it sets the new assignment's paused partitions
        orders = self.settings.kafka.topics["orders"]
        inventory = self.settings.kafka.topics["inventory"]
        limit = self.settings.time.topic_lead_seconds
        behind = {
            TP(orders, tp.partition) for tp, lag in lags.items()
            if tp.topic == inventory and lag > 0
            and self.pipeline.orders_lead(tp.partition) > limit
        }  # fmt: skip
        if behind != self.waiting:
            metrics.ORDERS_WAITED.inc(len(behind - (self.waiting or set())))
            rebalances = self.app.rebalancing_count
            # the app's consumer is streamer.ingest.app's FetchConsumer
            await self.app.consumer.fetch_paused(orders, behind)  # type: ignore[attr-defined]
            # a rebalance meanwhile replaced the assignment before or after the call landed
            self.waiting = behind if self.app.rebalancing_count == rebalances else None
            for tp in self.held():
                if tp.topic == orders:
                    metrics.ORDERS_PAUSED.labels(str(tp.partition)).set(int(tp in behind))

    async def on_assigned(self, sender: object, assigned: set[TP], **_: object) -> None:
        # another worker may have advanced a partition since this one last owned it
        now = {tp.partition for tp in assigned if tp.topic in self.input_topics}
        settings = self.settings
        if self.app.rebalancing_count <= 1:  # a line a script can wait for, as /readyz says
            print(
                f"shelfcast worker: ready, consuming {len(now)} of {settings.kafka.partitions} "
                f"partitions; state at http://{settings.web_bind}:{settings.web_port}/readyz",
                flush=True,
            )
        self.pipeline.assign(now - self.owned)
        self.waiting = None  # the client's new assignment, whatever a call in flight did to it
        self.owned.clear()
        self.owned.update(now)

    async def on_revoked(self, sender: object, revoked: set[TP], **_: object) -> None:
        lost = {tp.partition for tp in revoked if tp.topic in self.input_topics}
        try:
            # the next owner restores from here instead of replaying up to a schedule's worth
            await asyncio.wait_for(self.pipeline.snapshot(lost), SNAPSHOT_ON_REVOKE_SECONDS)
        except (TimeoutError, *REDIS_DOWN) as exc:
            log.warning("no model snapshot on revoke (%s); the next owner replays history", exc)
        self.pipeline.revoke(lost)
        self.owned.difference_update(lost)
        self.forget(revoked)

    async def run(self, step: str, work: Callable[[], Awaitable[T]]) -> T:
        async with self.lock:
            return await retrying(step, work)

    async def account(self, result: BatchResult) -> None:
        await self.store.count(
            events_done=result.records,
            dlq=result.dlq,
            forecasts=result.forecasts,
            alerts=result.alerts,
        )

    async def process(self, stream: faust.StreamT) -> None:
        """Hand the stream's micro-batches to the pipeline while the next gathers
        (``consume``); a batch's events are acknowledged once Redis holds its effects."""
        kafka = self.settings.kafka
        await consume(stream, kafka.batch_size, kafka.batch_within, self.batch)

    async def batch(self, events: list[faust.EventT]) -> None:
        started = time.perf_counter()
        messages = [e.message for e in events]
        records = [Record(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
        pipeline = self.pipeline
        try:
            result = await self.run("batch", lambda: pipeline.process(records))
            await self.run("accounting", lambda: self.account(result))
        except RedisBehind as exc:
            halt(str(exc))  # anything else exits the process too (``consume``)
        hold_back(messages, pipeline.applies)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self.observe_done(messages)
        await self.keep_aligned()

    def observe_done(self, messages: list[Message]) -> None:
        done = time.time()
        for m in messages:
            if (m.timestamp or 0) > 0:  # a record without one arrives as -0.001
                metrics.PROCESSING_LATENCY.observe(max(done - m.timestamp, 0.0))
            self.positions[m.tp] = max(self.positions.get(m.tp, 0), m.offset + 1)

    async def advance_idle(self) -> None:
        # lag keeps growing on the dashboard while a batch is stuck
        await self.keep_aligned()
        try:
            result = await self.run(
                "idle advance", lambda: self.pipeline.advance_idle(time.time(), self.owned)
            )
            await self.run("accounting", lambda: self.account(result))
        except RedisBehind as exc:
            halt(str(exc))
        except Exception:
            fatal("advancing idle partitions failed")


def hold_back(messages: Iterable[Message], applies: Callable[[int], bool]) -> None:
    """Keep the records of a partition dropped in this batch (fenced or revoked) from being
    committed: the agent acks every event of a batch it processed, and a commit past records this
    worker never applied would lose them for the partition's next owner (Redis behind Kafka).

    Each is marked acknowledged without telling the consumer: the agent's ack then does
    nothing and its offset never joins the committable ones (Faust commits only consecutive
    acked offsets), while the consumer still counts it as done, so a rebalance's or a
    shutdown's wait for unacknowledged messages (``stream_wait_empty``) does not wait on it
    forever. The partition's next assignment fetches from the committed offset again."""
    with ack_lock:  # Faust's own lock around a message's ack state
        for m in messages:
            if not applies(m.partition):
                m.acked = True
