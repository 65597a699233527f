"""The stream processor, without Faust: raw records in, output messages out.

For each micro-batch: validate every record (bad ones become dead letters); per partition,
apply the valid events to Redis in segments cut where the watermark crosses a bucket end; after
each segment, close the buckets the watermark passed (learn, forecast, reorder point, alerts);
walk stock changes event by event for alert transitions. Cutting at watermark crossings, rather
than at batch ends, makes every output independent of how the stream happened to be batched, so
a replay after a crash produces the same ids and values.

A bucket close's forecasts go to ``sink``, which returns once they are delivered, *before* the
Redis write that records the close (reorder points, partition clock): a crash in between
re-derives the same forecasts with the same ids on replay. An alert is decided, sequence number
included, and recorded in the partition's outbox before it leaves: by the script that applies a
stock change, or for a close by the call that starts its outputs (``begin_close``); it stays
there until its delivery is known, so a crash or a retry re-sends the same message. Duplicates,
never losses.

A process writes a partition's state only under the owner generation it took on first touching
the partition after its assignment (``FeatureStore.claim``): once another worker has taken it,
every write is refused (``Fenced``) and this process drops the partition until it is assigned
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from models.bank import COMBINED, Bank, Settled
from models.base import Close
from models.evaluation import Prequential
from models.lstm.network import GlobalModel
from models.lstm.registry import Registry
from models.rollup import ROLLUP
from models.snapshot import SnapshotError, pack, unpack
from streamer import metrics
from streamer.alerts.reorder import peak_rule
from streamer.config.settings import Settings
from streamer.eventtime.clock import DAY_SECONDS, bucket_of, bucket_start, iso, last_closable
from streamer.features.codec import AlertRecord, EventKind, Status, StockEffect
from streamer.features.keys import part_key
from streamer.features.states import KeptStates
from streamer.features.store import FeatureStore, Fenced, PartitionClose, Window
from streamer.pipeline.close import Computed, Decision, close_of, compute, learn_and_forecast
from streamer.pipeline.offsets import RedisBehind, gaps
from streamer.publish.messages import DLQ_KEY_BYTES, Output, alert_messages, dlq_message, output
from streamer.serving.lstm import LSTMServing, version_name, version_number, window_of
from streamer.topics.events import (
    Invalid,
    InventoryEvent,
    OrderEvent,
    check_context,
    parse_inventory,
    parse_order,
)

__all__ = [
    "CONCURRENT_CLOSES",
    "BatchResult",
    "Committed",
    "Event",
    "Pipeline",
    "Record",
    "Sink",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
CONCURRENT_CLOSES = 2


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the pipeline takes it: where it came from, and its raw bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Sink = Callable[[list[Output]], Awaitable[None]]
# the consumer group's committed next offsets of a partition's input, as topic:partition fields
Committed = Callable[[int], Awaitable[dict[str, int]]]


@dataclass
class BatchResult:
    """What a batch did, for the process's counters: records done, and the messages sent."""

    records: int = 0
    dlq: int = 0
    forecasts: int = 0
    alerts: int = 0


Event = OrderEvent | InventoryEvent


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        store: FeatureStore,
        sink: Sink,
        committed: Committed | None = None,
    ) -> None:
        self.s = settings
        self.store = store
        self.sink = sink
        self.committed = committed
        self.banks: dict[int, Bank] = {}  # by partition
        self.max_ts: dict[int, float] = {}
        self.closed: dict[int, int] = {}
        self.last_event_wall: dict[int, tuple[float, float]] = {}  # p -> (max_ts, wall)
        self.inventory_ts: dict[int, float] = {}  # newest inventory event time read, by partition
        self.calendar = settings.time.calendar()
        self.lstm = LSTMServing(
            Registry(settings.models_path()), self.calendar, settings.models.torch_threads
        )
        # a replay reads an activity window before its snapshot: both must fit the history
        history, active = settings.models.history_buckets, settings.models.active_buckets
        self._snapshot_every = max(min(history // 2, history - active), 1)
        self.evaluation = Prequential()  # this process's share, for the gauges
        self.states = KeptStates()  # each partition's series states, read again when touched
        self._settled: dict[int, Settled] = {}  # each partition's latest learn
        # per partition, held by a close and by a revoke's snapshot: the close runs its
        # arrays in a thread, and a snapshot of a bank half-way through a learn would be
        # learned twice
        self._closing: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Partitions close concurrently, this many at a time: while one computes in a
        # thread, another's Redis scripts run in the Redis process (four measured slower
        # than two: docs/benchmark.md).
        self._close_slots = asyncio.Semaphore(CONCURRENT_CLOSES)
        self._snapshot_at: dict[int, float] = {}
        self._snapshot_bucket: dict[int, int] = {}
        self.active: dict[int, int] = {}  # partition -> series closed at its latest close
        self.generation: dict[int, int] = {}  # partition -> this process's owner generation
        self._lost: set[int] = set()  # fenced or revoked: not touched until assigned again
        self._delivered: dict[int, int] = {}  # alerts at the head of each outbox, sent
        self._stale: set[int] = set()
        self._warned_regression: set[str] = set()

    async def _own(self, p: int) -> int | None:
        """This process's owner generation of partition ``p``, taken (with its clock) on first
        touching it since its assignment; None for a partition it lost."""
        if p in self._lost:
            return None
        if (generation := self.generation.get(p)) is None:
            generation = await self.store.claim(p)
            await self._check_offsets(p)
            closed, max_ts = await self.store.load_clock(p)
            if closed is not None:
                self.closed[p] = closed
            if max_ts is not None:
                self.max_ts[p] = max_ts
                # quiet from now on unless an order comes: the idle advance then moves event
                # time on, and with it the deliveries waiting for it
                self.last_event_wall[p] = (max_ts, time.time())
            self.generation[p] = generation
        return generation

    async def _check_offsets(self, p: int) -> None:
        """Stop rather than go on when Redis lost writes that Kafka counts as consumed."""
        if self.committed is None:
            return
        found = gaps(await self.store.offsets(p), await self.committed(p))
        if found:
            metrics.REDIS_BEHIND.inc()
            raise RedisBehind(p, found)

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions this process was (re)assigned: another worker may have advanced them
        meanwhile, so their clocks are reloaded from Redis and their models rebuilt from it,
        under a new owner generation. Called from Faust's rebalance signals, so it only marks;
        the next batch or idle advance acts on it."""
        partitions = set(partitions)
        self._stale.update(partitions)
        self._lost.difference_update(partitions)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions this process lost: nothing of them is touched until assigned again."""
        partitions = set(partitions)
        self._stale.update(partitions)
        self._lost.update(partitions)

    def orders_lead(self, p: int) -> float:
        """How far partition ``p``'s orders were read ahead of its inventory, in event-time
        seconds: infinite while no inventory event was read since it was taken over, and
        minus infinity before its first order."""
        if p not in self.max_ts:
            return -math.inf
        return self.max_ts[p] - self.inventory_ts.get(p, -math.inf)

    def applies(self, p: int) -> bool:
        """Whether records of partition ``p`` taken now are applied here: not when it was revoked
        or fenced, for then its new owner reads them itself."""
        return p not in self._lost

    def _drop_stale(self) -> None:
        for p in self._stale:
            self._drop(p)
        self._stale.clear()

    def _drop(self, p: int) -> None:
        for table in (
            self.closed, self.max_ts, self.last_event_wall, self.inventory_ts, self.active,
            self.banks, self._settled, self._snapshot_bucket, self.generation, self._delivered,
        ):  # fmt: skip
            table.pop(p, None)
        self.lstm.windows.forget(p)
        self.states.forget(p)

    def _fenced(self, exc: Fenced) -> None:
        """Another worker owns the partition now: drop it, once, loudly. An owner generation
        that went back means Redis lost writes instead: stop (RedisBehind), for while Kafka
        still assigns the partition here, a drop would let Faust commit input never applied."""
        mine = self.generation.get(exc.partition, 0)
        if exc.owner is None or exc.owner < mine:
            metrics.REDIS_BEHIND.inc()
            raise RedisBehind(
                exc.partition, [], f"its owner generation went from {mine} to {exc.owner}"
            )
        metrics.FENCED.inc()
        log.error(
            "%s; this worker no longer owns it (it was paused past the session timeout?) "
            "and drops it until it is assigned again: none of its writes there landed", exc,
        )  # fmt: skip
        self._drop(exc.partition)
        self._lost.add(exc.partition)

    def _parse(self, rec: Record, now: float) -> Event | Invalid:
        raw = rec.value or b""
        if rec.topic == self.s.kafka.topics["orders"]:
            parsed: Event | Invalid = parse_order(raw, self.s.kafka.max_message_bytes)
        else:
            parsed = parse_inventory(raw, self.s.kafka.max_message_bytes)
        if isinstance(parsed, Invalid):
            return parsed
        return check_context(parsed, rec.key, now, self.s.time.max_future_seconds)

    async def process(self, records: Sequence[Record]) -> BatchResult:
        if self._stale:
            self._drop_stale()
        result = BatchResult(records=len(records))
        dead: list[Output] = []
        # orders and inventory of a partition hold the same series: one sequence, in arrival order
        by_partition: dict[int, list[tuple[Record, Event]]] = defaultdict(list)
        # per partition, the input whose newest record is a dead letter: Redis's offsets still
        # move past it, or they would look behind Kafka's committed ones (offsets.py)
        floors: dict[int, dict[str, int]] = defaultdict(dict)
        now = time.time()
        for rec in records:
            parsed = self._parse(rec, now)
            field = f"{rec.topic}:{rec.partition}"
            if isinstance(parsed, Invalid):
                dead.append(self._dead_letter(rec, parsed))
                floors[rec.partition][field] = rec.offset + 1
            else:
                by_partition[rec.partition].append((rec, parsed))
                floors[rec.partition].pop(field, None)
                if not isinstance(parsed, OrderEvent):
                    read = self.inventory_ts.get(rec.partition, parsed.ts)
                    self.inventory_ts[rec.partition] = max(read, parsed.ts)
        if dead:
            await self.sink(dead)
            result.dlq += len(dead)
        # Partitions hold disjoint series and keys: each runs its own sequence of applies and
        # closes, concurrently with the others.
        partitions = by_partition.keys() | floors.keys()
        watermarks = {p: (self.max_ts.get(p), self.last_event_wall.get(p)) for p in partitions}
        try:
            await _together(
                self._partition(p, by_partition.get(p, []), now, result, floors.get(p, {}))
                for p in partitions
            )
        except BaseException:
            # The batch is retried whole: its events must move the watermark again, or the
            # retry would close a bucket before applying the events the failure left unapplied
            for p, (newest, wall) in watermarks.items():
                _put_back(self.max_ts, p, newest)
                _put_back(self.last_event_wall, p, wall)
            raise
        times = [
            ev.ts for items in by_partition.values() for _, ev in items
            if isinstance(ev, OrderEvent)
        ]  # fmt: skip
        if times:
            metrics.EVENT_TIME_LAG.set(max(now - max(times), 0.0))
        return result

    async def _partition(
        self,
        p: int,
        items: list[tuple[Record, Event]],
        now: float,
        result: BatchResult,
        floor: dict[str, int],
    ) -> None:
        """Apply partition ``p``'s events in order up to each one that lets a bucket close, and
        close it; then the events after the last close, and the ``floor`` of its offsets."""
        try:
            if await self._own(p) is None:
                return  # revoked or fenced: its new owner reads these records itself
            segment: list[tuple[Record, Event]] = []
            for rec, ev in items:
                segment.append((rec, ev))
                if not isinstance(ev, OrderEvent):
                    continue
                target = self._advance(p, ev.ts, now)
                if target is not None:
                    await self._apply(p, segment, result)
                    segment = []
                    await self._close_through(p, target, result)
            await self._apply(p, segment, result, floor=floor)
        except Fenced as exc:
            self._fenced(exc)

    def _advance(self, p: int, ts: float, now: float) -> int | None:
        """Move partition ``p``'s event time; the bucket to close through, if any.

        An order far ahead of the partition's newest event time (a typo, a wrong clock) is
        applied but does not move the watermark: one bad timestamp must not close weeks of
        buckets for every series and turn all later input into late input.
        """
        newest = self.max_ts.get(p)
        ahead = now + self.s.time.clock_tolerance_seconds
        if self.s.time.idle_advance_seconds > 0 and ts > ahead:
            # live, one till with a wrong clock (naive local time ten hours east) must not
            # make every other series' orders of the day late: the watermark follows the
            # wall clock, the order still counts in its own bucket
            metrics.EVENTS.labels("orders", "ahead_of_clock").inc()
            ts = ahead
        if newest is not None and ts > newest + self.s.time.max_skew_seconds:
            metrics.EVENTS.labels("orders", "skewed").inc()
            log.warning(
                "partition %d: order at %s is %.0f days ahead of the partition's event time; "
                "not advancing the watermark",
                p, iso(ts), (ts - newest) / DAY_SECONDS,
            )  # fmt: skip
            return None
        self.max_ts[p] = max(newest if newest is not None else ts, ts)
        self.last_event_wall[p] = (self.max_ts[p], now)
        self.closed.setdefault(p, bucket_of(ts, self.s.time.bucket_seconds) - 1)
        target = last_closable(
            self.max_ts[p], self.s.time.lateness_seconds, self.s.time.bucket_seconds
        )
        return target if target > self.closed[p] else None

    async def advance_idle(self, now: float, owned: Collection[int] | None = None) -> BatchResult:
        """Take over the ``owned`` partitions not touched yet; live mode: a quiet partition's
        event time advances with the wall clock. Only the ``owned`` partitions (all known,
        when None): closing another worker's would publish for its series and learn a bucket
        before its owner applied it."""
        result = BatchResult()
        if self._stale:
            self._drop_stale()  # never advance a partition this worker just lost
        # a partition assigned but quiet since is taken over here (its offsets checked and its
        # clock loaded), idle advance or not
        for p in sorted(owned or ()):  # a copy: a rebalance may change ``owned`` meanwhile
            if owned is not None and p in owned:
                await self._own(p)
        if self.s.time.idle_advance_seconds <= 0:
            return result
        quiet = [
            p for p, (_, wall) in self.last_event_wall.items()
            if now - wall >= self.s.time.idle_advance_seconds and (owned is None or p in owned)
        ]  # fmt: skip
        await _together(self._advance_idle(p, now, result) for p in quiet)
        return result

    async def _advance_idle(self, p: int, now: float, result: BatchResult) -> None:
        ts, wall = self.last_event_wall[p]
        self.max_ts[p] = max(self.max_ts[p], ts + (now - wall))
        target = last_closable(
            self.max_ts[p], self.s.time.lateness_seconds, self.s.time.bucket_seconds
        )
        try:
            # deliveries stamped up to the new event time take effect
            await self._apply(p, [], result, int(self.max_ts[p] * 1000))
            if target > self.closed.get(p, target):
                await self._close_through(p, target, result)
        except Fenced as exc:
            self._fenced(exc)

    async def close_through(self, targets: dict[int, int], result: BatchResult) -> None:
        """Close each partition's buckets up to its target, the partitions concurrently."""

        async def one(p: int, target: int) -> None:
            try:
                if await self._own(p) is not None:
                    await self._close_through(p, target, result)
            except Fenced as exc:
                self._fenced(exc)

        await _together(one(p, b) for p, b in targets.items())

    def _dead_letter(self, rec: Record, bad: Invalid) -> Output:
        topic = "orders" if rec.topic == self.s.kafka.topics["orders"] else "inventory"
        metrics.EVENTS.labels(topic, "invalid").inc()
        metrics.DLQ.labels(topic, bad.reason).inc()
        log.debug("dead letter %s:%d@%d: %s", rec.topic, rec.partition, rec.offset, bad.detail)
        msg = dlq_message(
            rec.value or b"", rec.key, bad.reason, bad.detail, rec.topic, rec.partition,
            rec.offset, self.s.kafka.max_message_bytes,
        )  # fmt: skip
        key = rec.key if rec.key is None or len(rec.key) <= DLQ_KEY_BYTES else None
        return output(self.s.kafka.topics["dlq"], key, msg)

    def _effect(self, p: int, rec: Record, ev: Event) -> StockEffect:
        po_id = pack = customer = None
        promo = False
        if isinstance(ev, OrderEvent):
            kind, qty, price, lead = EventKind.ORDER, ev.quantity, ev.unit_price, None
            customer, promo = ev.customer_id, ev.promo
        else:
            kind, qty = _stock_kind(ev)
            price, lead, po_id, pack = None, ev.lead_time_days, ev.po_id, ev.pack_size
        # max_ts only grows, so an order _advance held to be skewed still is
        newest = self.max_ts.get(p, ev.ts)
        return StockEffect(
            kind,
            ev.series,
            ev.event_id,
            bucket_of(ev.ts, self.s.time.bucket_seconds),
            int(ev.ts * 1000),
            qty,
            price,
            f"{rec.topic}:{rec.partition}",
            rec.offset,
            lead,
            moves_clock=ev.ts <= newest + self.s.time.max_skew_seconds,
            po_id=po_id,
            pack_size=pack,
            customer_id=customer,
            promo=promo,
        )

    async def _apply(
        self,
        p: int,
        segment: Sequence[tuple[Record, Event]],
        result: BatchResult,
        advance_ms: int | None = None,
        floor: dict[str, int] | None = None,
    ) -> None:
        """Apply partition ``p``'s ``segment``, then move its stock clock on to
        ``advance_ms`` and its offsets to at least ``floor``; send the alerts its stock
        changes led to."""
        if not segment and advance_ms is None and not floor:
            return
        generation = self.generation[p]
        effects = [self._effect(p, rec, ev) for rec, ev in segment]
        # forgotten before the call: if its reply is lost and the step is retried, the alerts
        # it added must not be trimmed unsent (the delivered ones are sent again: copies)
        delivered = self._delivered.pop(p, 0)
        res = await self.store.apply(p, generation, effects, advance_ms, delivered, floor)
        closed = self.closed.get(p)
        # counted once a call: a labelled counter's lookup an event was a microsecond each
        counts: Counter[tuple[str, str]] = Counter()
        for (_, ev), effect, status in zip(segment, effects, res.statuses, strict=True):
            topic = "orders" if isinstance(ev, OrderEvent) else "inventory"
            if status == Status.APPLIED:
                late = isinstance(ev, OrderEvent) and closed is not None and effect.bucket <= closed
                counts[topic, "late" if late else "applied"] += 1
                if late:  # it changed a closed bucket the LSTM's kept window holds
                    self.lstm.windows.forget(p)
            elif status == Status.OFFSET_REGRESSION:
                self._offset_regression(p, effect.offsets_field)
            else:
                counts[topic, "duplicate" if status == Status.DUPLICATE else "stale"] += 1
        for labels, n in counts.items():
            metrics.EVENTS.labels(*labels).inc(n)
        await self._send(p, [], res.outbox, result)

    async def _send(
        self, p: int, outs: list[Output], outbox: list[AlertRecord], result: BatchResult
    ) -> None:
        """Send ``outs`` and partition ``p``'s alert ``outbox``: what an earlier call left (a
        crash before its delivery was known) goes again, the same messages. The next call
        that writes the partition trims the outbox of what was delivered here."""
        outs = outs + alert_messages(self.s, outbox)
        if outs:
            await self.sink(outs)
        self._delivered[p] = len(outbox)
        result.alerts += len(outbox)
        for a in outbox:
            metrics.ALERTS.labels(a.status).inc()

    def _offset_regression(self, p: int, topic_partition: str) -> None:
        metrics.EVENTS.labels(topic_partition.split(":")[0], "offset_regression").inc()
        if topic_partition not in self._warned_regression:
            self._warned_regression.add(topic_partition)
            log.error(
                "%s: new events at offsets below those already applied; was the topic "
                "recreated? They are skipped until its field in %s is reset (docs/delivery.md)",
                topic_partition,
                part_key(p, "offsets"),
            )

    async def _close_through(self, p: int, target: int, result: BatchResult) -> None:
        while self.closed[p] < target:
            await self._close_bucket(p, self.closed[p] + 1, result)
            self.closed[p] += 1

    def _close_of(
        self, b: int, closed: dict[int, bool], demand: np.ndarray, revenue: np.ndarray
    ) -> Close:
        return close_of(self.calendar, self.s.models.horizon, b, closed, demand, revenue)

    async def _bank(self, p: int, b: int, series: list[str], firsts: np.ndarray) -> Bank:
        """The partition's bank, learned through ``b - 1`` and with ``series`` as its rows.

        A bank not in memory (a restart, or a partition gained in a rebalance) starts from
        the partition's snapshot when there is one no newer than ``b - 1``, else from scratch
        at the start of the bounded history, and replays the buckets after it from the
        history exactly as the live closes did. A series joins at its first bucket.
        """
        bank = self.banks.get(p)
        if bank is None or (bank.through if bank.through is not None else -math.inf) < b - 1:
            bank = await self._restore(p, b - 1, series, firsts)
            self.banks[p] = bank
        await _whole(lambda: bank.align(series))
        return bank

    def _new_bank(self) -> Bank:
        peak = peak_rule(self.s.alerts, self.s.time.bucket_seconds)
        return Bank.default(self.s.models.horizon, self.calendar.season, peak)

    async def _restore(self, p: int, through: int, series: list[str], firsts: np.ndarray) -> Bank:
        bank = self._new_bank()
        blob = await self.store.read_partition_snapshot(p)
        start = max(
            int(firsts.min(initial=through + 1)), through - self.s.models.history_buckets + 1
        )
        if blob is not None:
            try:
                # decoding and copying a million rows takes seconds: not on the event loop
                await asyncio.to_thread(self._load, bank, blob)
            except (SnapshotError, KeyError, ValueError) as exc:
                log.error("partition %d: model snapshot unreadable (%s); rebuilding it", p, exc)
                metrics.SNAPSHOT_REBUILDS.inc()
                bank = self._new_bank()
            if bank.through is not None and bank.through > through:
                # written after a learn whose close never completed: the history alone
                # rebuilds it, without what series that left the partition taught it
                log.warning(
                    "partition %d: model snapshot is ahead of the recorded closes (%d > %d); "
                    "rebuilding it from the history", p, bank.through, through,
                )  # fmt: skip
                metrics.SNAPSHOT_REBUILDS.inc()
                bank = self._new_bank()
            elif bank.through is not None:
                start = bank.through + 1
        if start > through:
            return bank
        span = range(start, through + 1)
        served = await self.store.read_lstm_served(p, span)
        models = await asyncio.to_thread(self.lstm.versions, set(served.values()))
        lstm = {b: (v, models[v]) for b, v in served.items() if v in models}
        # from an activity window (or the LSTM's input) earlier: who was active at the first
        # replayed close, and what its LSTM read
        seq_len = max((m.cfg.seq_len for m in models.values()), default=1)
        before = max(self.s.models.active_buckets, seq_len) - 1
        read = range(start - before, through + 1)
        if read.start <= through - self.s.models.history_buckets:
            log.warning(
                "partition %d: the replay from bucket %d reads %d buckets before it, past the "
                "history of %d buckets: the restored forecasts can differ from an "
                "uninterrupted run's (an LSTM input window or activity window over half the "
                "history is too long for the snapshot schedule)",
                p, start, before, self.s.models.history_buckets,
            )  # fmt: skip
        window = await self.store.read_window(
            p, series, read, max(2 * self.calendar.season - before, 0), all_traded=True,
            signals=any(model.cfg.signals for _, model in lstm.values()),
        )  # fmt: skip
        first = dict(zip(series, firsts.tolist(), strict=True))
        await asyncio.to_thread(self._replay, bank, read, before, window, first, lstm)
        return bank

    @staticmethod
    def _load(bank: Bank, blob: list[bytes]) -> None:
        state, rows = unpack(blob)
        bank.load(state, rows)

    def _replay(
        self,
        bank: Bank,
        read: range,
        before: int,
        window: Window,
        first: dict[str, float],
        lstm: dict[int, tuple[int, GlobalModel]],
    ) -> None:
        """The closes of ``read`` after its first ``before`` buckets again, in memory, with
        the rows each live close had: the series active now from their first bucket, and
        any series while it had orders in the activity window before the close (a series that
        has left since, or an earlier stay of one that came back). A close that served the
        LSTM (``lstm``: its version by bucket) is offered the same forecasts again: every
        model's errors feed the published combination."""
        names = np.array(window.series, dtype=object)
        joined = np.array([first.get(s, math.inf) for s in window.series])
        active = _rolling_any(window.traded, self.s.models.active_buckets)
        for j in range(before, len(read)):
            rows = (joined <= read[j]) | active[:, j]
            bank.align(list(names[rows]))
            demand, revenue = window.demand[rows, j], window.revenue[rows, j]
            close = self._close_of(read[j], window.closed, demand, revenue)
            offer = None
            if read[j] in lstm and rows.any():
                offer = self._lstm_again(lstm[read[j]], bank.series, window, rows, read, close)
            learn_and_forecast(bank, close, offer)

    def _lstm_again(
        self,
        served: tuple[int, GlobalModel],
        series: list[str],
        window: Window,
        rows: np.ndarray,
        read: range,
        close: Close,
    ) -> tuple[str, np.ndarray]:
        """The LSTM forecasts a live close offered its bank, from the replay's ``window``."""
        version, model = served
        span = window_of(model, close.bucket)
        cols = slice(span.start - read.start, span.stop - read.start)
        demand, revenue = window.demand[rows, cols], window.revenue[rows, cols]
        signals = None if window.signals is None else window.signals[rows, cols]
        steps = self.lstm.steps(model, series, demand, revenue, window.closed, span, close, signals)
        return version_name(version), steps

    async def snapshot(self, partitions: Iterable[int]) -> None:
        """Write the models of ``partitions`` to Redis (on revoke, before another worker
        restores them)."""
        for p in set(partitions):
            async with self._closing[p]:  # a close mutates the bank in a worker thread
                bank, generation = self.banks.get(p), self.generation.get(p)
                if bank is not None and generation is not None and self._recorded(p, bank):
                    blob = await asyncio.to_thread(pack, bank.state(), bank.series)
                    try:
                        await self.store.write_partition_snapshot(p, generation, blob)
                    except Fenced as exc:
                        # the partition is leaving anyway; a Redis that lost its owner is
                        # for its next owner to find
                        with contextlib.suppress(RedisBehind):
                            self._fenced(exc)

    def _recorded(self, p: int, bank: Bank) -> bool:
        """Whether Redis has recorded every close ``bank`` learned. A bank that learned a close
        whose record failed (the batch waits to retry it) is ahead of Redis: a snapshot of it
        would make the next owner rebuild the partition from its history alone, which drops
        what series that left the partition taught its shared models. The older snapshot
        and the history after it restore it exactly."""
        return bank.through is None or bank.through <= self.closed.get(p, -1)

    async def _close_bucket(self, p: int, b: int, result: BatchResult) -> None:
        async with self._close_slots, self._closing[p]:
            started = time.perf_counter()
            await self._close(p, b, result)
            # only completed closes, like shelfcast_buckets_closed_total: one retried in an
            # outage counts once, with its last attempt
            metrics.BUCKET_CLOSE_SECONDS.observe(time.perf_counter() - started)

    async def _read(self, p: int, b: int) -> PartitionClose:
        """The active series of partition ``p`` at ``b`` (first bucket no later than it), and
        what the close of ``b`` reads of them."""
        data = await self.store.read_close(
            p,
            self.generation[p],
            b - self.s.models.active_buckets + 1,
            b,
            2 * self.calendar.season,
            self.states,
        )
        return data.rows(data.first <= b)

    async def _close(self, p: int, b: int, result: BatchResult) -> None:
        data = await self._read(p, b)
        closed = dict(data.closed)
        closed[b] = self.calendar.observed_closed(b, data.orders)
        bank = await self._bank(p, b, data.series, data.first)
        close = self._close_of(b, closed, data.demand, data.revenue)
        close_ts = bucket_start(b + 1, self.s.time.bucket_seconds)
        # The close runs once an order past the allowed lateness (or, live, the wall clock) has
        # moved the partition's event time on, and the stock it compares is as of then: stamped
        # with the bucket's end, an alert would count deliveries dated after it.
        stock_ts = max(close_ts, self.max_ts.get(p, close_ts))
        lstm = await self.lstm.forecasts(
            self.store, p, data.series, closed, close, data.lstm_version
        )
        now = time.monotonic()
        snapshot = self._snapshot_due(p, b, now)
        done = await self._compute(p, bank, close, lstm, data, stock_ts, snapshot)
        version = 0 if lstm is None else version_number(lstm[0])
        # forgotten before the call, as in _apply
        delivered = self._delivered.pop(p, 0)
        outbox = await self.store.begin_close(
            p, self.generation[p], b, version, delivered, done.alerts
        )
        if outbox is None:
            # recorded already: a retry whose first reply was lost; what it sent is recorded
            log.info("partition %d: the close of bucket %d is recorded already", p, b)
            return
        await self._send(p, done.outs, outbox, result)
        self._count(done.decision, done.outs, result)
        await self.store.write_close(
            p,
            self.generation[p],
            b,
            done.fields,
            closed=closed[b],
            learned=len(data.series),  # written with the clock: a retried close counts once
            trim_before=b - self.s.models.history_buckets,
            inactive_before=b - self.s.models.active_buckets + 1,
            max_ts=self.max_ts.get(p, close_ts),
            evaluation=dict(done.evaluation.sums),
            snapshot=done.snapshot,
        )
        self._after_close(p, b, closed[b], len(data.series), done, now if snapshot else None)

    def _snapshot_due(self, p: int, b: int, now: float) -> bool:
        """Whether the close of ``b`` writes the partition's model snapshot: on the time
        schedule, or the bucket schedule."""
        return (
            now - self._snapshot_at.get(p, -math.inf) >= self.s.models.snapshot_seconds
            or b - self._snapshot_bucket.get(p, b) >= self._snapshot_every
        )

    async def _compute(
        self,
        p: int,
        bank: Bank,
        close: Close,
        lstm: tuple[str, np.ndarray] | None,
        data: PartitionClose,
        stock_ts: float,
        snapshot: bool,
    ) -> Computed:
        """The close's array steps (``compute``) in a worker thread."""
        kept = self._settled.get(p)

        def learn() -> Computed:
            done = compute(self.s, bank, close, lstm, data, stock_ts, kept, snapshot)
            if done.settled is not None:
                # kept with the learn, in the thread: a retry whose bank learned already
                # scores from it, even when this attempt's caller was cancelled meanwhile
                self._settled[p] = done.settled
            return done

        return await _whole(learn)

    def _after_close(
        self,
        p: int,
        b: int,
        closed: bool,
        series: int,
        done: Computed,
        snapshot_at: float | None,
    ) -> None:
        """The close of ``b`` is recorded: its snapshot schedule, gauges and evaluation."""
        if snapshot_at is not None:
            self._snapshot_at[p], self._snapshot_bucket[p] = snapshot_at, b
        self._snapshot_bucket.setdefault(p, b)
        metrics.BUCKETS_CLOSED.inc()
        if closed:
            metrics.CLOSED_BUCKETS.inc()
        self.active[p] = series
        metrics.ACTIVE_SERIES.set(sum(self.active.values()))
        self.evaluation.merge(done.evaluation.sums)
        metrics.publish_evaluation(self.evaluation.summary())

    def _count(self, decision: Decision, outs: list[Output], result: BatchResult) -> None:
        forecasts = len(outs)  # a close's outputs are its forecasts and rollups; alerts apart
        published = {COMBINED: len(decision.rows), ROLLUP: forecasts - len(decision.rows)}
        for model, n in published.items():
            if n:
                metrics.FORECASTS.labels(model).inc(n)
        result.forecasts += forecasts


async def _together(work: Iterable[Coroutine[object, object, None]]) -> None:
    """Run ``work`` concurrently; the first failure cancels the rest and propagates as itself
    (not as a group), so the step is retried whole with nothing of it still running."""
    try:
        async with asyncio.TaskGroup() as group:
            for job in work:
                group.create_task(job)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _whole(work: Callable[[], T]) -> T:
    """``work`` in a worker thread, waited for to its end even when the caller is cancelled
    (a failure in another partition of the batch cancels this one): a thread cannot be
    stopped, and the bank it changes must be whole before the retry touches it again."""
    thread = asyncio.ensure_future(asyncio.to_thread(work))
    cancelled = False
    while not thread.done():
        try:
            await asyncio.shield(thread)
        except asyncio.CancelledError:
            cancelled = True  # again, if cancelled twice: the thread runs on all the same
    if cancelled:
        raise asyncio.CancelledError
    return thread.result()


def _put_back(table: dict[int, T], key: int, value: T | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _stock_kind(ev: InventoryEvent) -> tuple[EventKind, int]:
    """The apply script's kind of an inventory event, and its quantity."""
    if ev.on_hand is not None:
        return EventKind.SNAPSHOT, ev.on_hand
    if ev.ordered is not None:
        return EventKind.PURCHASE_ORDER, ev.ordered
    return EventKind.DELTA, int(ev.delta or 0)


def _rolling_any(flags: np.ndarray, width: int) -> np.ndarray:
    """Whether each row has a True among the ``width`` columns ending at each column.

    >>> _rolling_any(np.array([[True, False, False, False]]), 2).tolist()
    [[True, True, False, False]]
    """
    counts = np.cumsum(np.pad(flags, ((0, 0), (1, 0))), axis=1)
    return (counts[:, 1:] - counts[:, np.maximum(np.arange(flags.shape[1]) + 1 - width, 0)]) > 0
