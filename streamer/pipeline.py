"""The stream processor, without Faust: raw records in, output messages out.

For each micro-batch: validate every record (bad ones become dead letters); per partition,
apply the valid events to Redis in segments cut where the watermark crosses a bucket end; after
each segment, close the buckets the watermark passed (learn, forecast, reorder point, alerts);
walk stock changes event by event for alert transitions. Cutting at watermark crossings, rather
than at batch ends, makes every output independent of how the stream happened to be batched, so
a replay after a crash produces the same ids and values.

Outputs go to ``sink``, which returns once they are delivered, *before* the Redis write that
records them as done (alert state, learned markers, partition clock). A crash in between
re-derives the same outputs with the same ids on replay: duplicates, never losses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from models.bank import LSTM, ModelBank, Outcome, SeriesForecast
from models.base import Context
from models.evaluation import Prequential
from models.quantiles import Step
from models.registry import Registry
from models.rollup import ROLLUP, combine, settle
from models.rollup import VERSION as ROLLUP_VERSION
from streamer import metrics
from streamer.alerts import CLEARED, ReorderPoint, next_status, reorder_point
from streamer.clock import bucket_of, bucket_start, iso, last_closable
from streamer.config import Settings
from streamer.events import (
    ALL_LOCATIONS,
    Invalid,
    InventoryEvent,
    OrderEvent,
    check_context,
    parse_inventory,
    parse_order,
    series_key,
)
from streamer.features import (
    APPLIED,
    DUPLICATE,
    OFFSET_REGRESSION,
    FeatureStore,
    Fold,
    StockEffect,
)
from streamer.lstm_serving import LSTMServing
from streamer.publish import (
    Output,
    alert_message,
    dlq_message,
    forecast_id,
    forecast_message,
    output,
    split_series,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Sink = Callable[[list[Output]], Awaitable[None]]


@dataclass
class BatchResult:
    records: int = 0
    dlq: int = 0
    forecasts: int = 0
    alerts: int = 0


Event = OrderEvent | InventoryEvent
Segment = tuple[int, list[tuple[Record, Event]]]  # a partition's events, in arrival order


class Pipeline:
    def __init__(self, settings: Settings, store: FeatureStore, sink: Sink) -> None:
        self.s = settings
        self.store = store
        self.sink = sink
        self.banks: dict[str, ModelBank] = {}
        self.max_ts: dict[int, float] = {}
        self.closed: dict[int, int] = {}
        self.last_event_wall: dict[int, tuple[float, float]] = {}  # p -> (max_ts, wall)
        self.calendar = settings.calendar()
        self.lstm = LSTMServing(Registry(settings.models_path()), self.calendar)
        self.evaluation = Prequential()  # this process's share, for the gauges
        self.outcomes: dict[str, list[Outcome]] = {}  # settled by each series' latest learn
        self._snapshot_at: dict[int, float] = {}
        self._snapshot_bucket: dict[int, int] = {}
        self.owner: dict[str, int] = {}  # series -> partition, to forget a lost partition
        self.active: dict[int, int] = {}  # partition -> series closed at its latest close
        self._stale: set[int] = set()
        self._warned_regression: set[str] = set()
        self._clock_loaded = False

    async def _load_clock(self) -> None:
        for k, v in (await self.store.load_clock()).items():
            p, _, what = k.partition(":")
            if what == "closed":
                self.closed[int(p)] = int(v)
            elif what == "max_ts":
                self.max_ts[int(p)] = float(v)
                # quiet from now on unless an order comes: the idle advance then moves event
                # time on, and with it the deliveries waiting for it
                self.last_event_wall[int(p)] = (float(v), time.time())
        self._clock_loaded = True

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what this process knows of partitions it lost or (re)gained in a rebalance.

        Another worker may have advanced them meanwhile: their clocks are reloaded from Redis
        and their models rebuilt from it. Called from Faust's rebalance signals, so it only
        marks; ``process`` acts on it before its next batch.
        """
        self._stale.update(partitions)

    def _drop_stale(self) -> None:
        for p in self._stale:
            for table in (self.closed, self.max_ts, self.last_event_wall, self.active):
                table.pop(p, None)
            for s in [s for s, owner in self.owner.items() if owner == p]:
                self.banks.pop(s, None)
                self.outcomes.pop(s, None)
                del self.owner[s]
            self._snapshot_bucket.pop(p, None)
        self._stale.clear()
        self._clock_loaded = False

    def _parse(self, rec: Record, now: float) -> Event | Invalid:
        raw = rec.value or b""
        if rec.topic == self.s.topics["orders"]:
            parsed: Event | Invalid = parse_order(raw, self.s.max_message_bytes)
        else:
            parsed = parse_inventory(raw, self.s.max_message_bytes)
        if isinstance(parsed, Invalid):
            return parsed
        return check_context(parsed, rec.key, now, self.s.max_future_seconds)

    async def process(self, records: Sequence[Record]) -> BatchResult:
        if self._stale:
            self._drop_stale()
        if not self._clock_loaded:
            await self._load_clock()
        result = BatchResult(records=len(records))
        dead: list[Output] = []
        # orders and inventory of a partition hold the same series: one sequence, in arrival order
        by_partition: dict[int, list[tuple[Record, Event]]] = defaultdict(list)
        now = time.time()
        for rec in records:
            parsed = self._parse(rec, now)
            if isinstance(parsed, Invalid):
                dead.append(self._dead_letter(rec, parsed))
            else:
                by_partition[rec.partition].append((rec, parsed))
        if dead:
            await self.sink(dead)
            result.dlq += len(dead)
        newest = -math.inf
        uncut: list[Segment] = []
        for p, items in by_partition.items():
            segment: list[tuple[Record, Event]] = []
            for rec, ev in items:
                segment.append((rec, ev))
                if not isinstance(ev, OrderEvent):
                    continue
                newest = max(newest, ev.ts)
                target = self._advance(p, ev.ts, now)
                if target is not None:
                    await self._apply([(p, segment)], result)
                    segment = []
                    await self._close_through(p, target, result)
            uncut.append((p, segment))
        # Partitions hold disjoint series, so what no close cuts goes to Redis in one call: one
        # round trip per batch, not one per partition (the latency of a trickle of orders).
        await self._apply(uncut, result)
        if newest > -math.inf:
            metrics.EVENT_TIME_LAG.set(max(now - newest, 0.0))
        return result

    def _advance(self, p: int, ts: float, now: float) -> int | None:
        """Move partition ``p``'s event time; the bucket to close through, if any.

        An order far ahead of the partition's newest event time (a typo, a wrong clock) is
        applied but does not move the watermark: one bad timestamp must not close weeks of
        buckets for every series and turn all later input into late input.
        """
        newest = self.max_ts.get(p)
        if newest is not None and ts > newest + self.s.max_skew_seconds:
            metrics.EVENTS.labels("orders", "skewed").inc()
            log.warning(
                "partition %d: order at %s is %.0f days ahead of the partition's event time; "
                "not advancing the watermark",
                p, iso(ts), (ts - newest) / 86_400,
            )  # fmt: skip
            return None
        self.max_ts[p] = max(newest if newest is not None else ts, ts)
        self.last_event_wall[p] = (self.max_ts[p], now)
        self.closed.setdefault(p, bucket_of(ts, self.s.bucket_seconds) - 1)
        target = last_closable(self.max_ts[p], self.s.lateness_seconds, self.s.bucket_seconds)
        return target if target > self.closed[p] else None

    async def advance_idle(self, now: float) -> BatchResult:
        """Live mode: a quiet partition's event time advances with the wall clock."""
        result = BatchResult()
        if self.s.idle_advance_seconds <= 0:
            return result
        if self._stale:
            self._drop_stale()  # never advance a partition this worker just lost
        quiet = [
            p for p, (_, wall) in self.last_event_wall.items()
            if now - wall >= self.s.idle_advance_seconds
        ]  # fmt: skip
        for p in quiet:
            ts, wall = self.last_event_wall[p]
            self.max_ts[p] = max(self.max_ts[p], ts + (now - wall))
        # deliveries stamped up to the new event times take effect, in one call
        await self._apply([], result, {p: int(self.max_ts[p] * 1000) for p in quiet})
        for p in quiet:
            target = last_closable(self.max_ts[p], self.s.lateness_seconds, self.s.bucket_seconds)
            if target > self.closed.get(p, target):
                await self._close_through(p, target, result)
        return result

    def _dead_letter(self, rec: Record, bad: Invalid) -> Output:
        topic = "orders" if rec.topic == self.s.topics["orders"] else "inventory"
        metrics.EVENTS.labels(topic, "invalid").inc()
        metrics.DLQ.labels(topic, bad.reason).inc()
        log.debug("dead letter %s:%d@%d: %s", rec.topic, rec.partition, rec.offset, bad.detail)
        msg = dlq_message(
            rec.value or b"", rec.key, bad.reason, bad.detail, rec.topic, rec.partition, rec.offset
        )
        return output(self.s.topics["dlq"], rec.key, msg)

    def _effect(self, p: int, rec: Record, ev: Event) -> StockEffect:
        if isinstance(ev, OrderEvent):
            kind, qty, price, lead = "o", ev.quantity, ev.unit_price, None
        else:
            kind = "s" if ev.on_hand is not None else "d"
            qty = ev.on_hand if ev.on_hand is not None else int(ev.delta or 0)
            price, lead = None, ev.lead_time_days
        # max_ts only grows, so an order _advance held to be skewed still is
        newest = self.max_ts.get(p, ev.ts)
        return StockEffect(
            kind,
            ev.series,
            ev.event_id,
            bucket_of(ev.ts, self.s.bucket_seconds),
            int(ev.ts * 1000),
            qty,
            price,
            f"{rec.topic}:{rec.partition}",
            rec.offset,
            p,
            lead,
            moves_clock=ev.ts <= newest + self.s.max_skew_seconds,
        )

    async def _apply(
        self,
        segments: Sequence[Segment],
        result: BatchResult,
        advances: dict[int, int] | None = None,
    ) -> None:
        """Apply the segments' events, then advance the stock clocks in ``advances``, and walk
        every stock change, deliveries that came due included, for alert transitions."""
        items = [(p, ev) for p, segment in segments for _, ev in segment]
        if not items and not advances:
            return
        effects = [self._effect(p, rec, ev) for p, segment in segments for rec, ev in segment]
        res = await self.store.apply(effects, advances)
        updates: dict[str, dict[str, object]] = {}
        alerts: list[Output] = []
        due: dict[int, list[Fold]] = defaultdict(list)  # by the event they come before
        for fold in res.folds:
            due[fold.before].append(fold)

        def walk(series: str, on_hand: int, ts: float) -> None:
            state = res.states.get(series)
            if not state or not state["rop"] or not state["stock_known"]:
                return
            change = self._alert(
                series, state, on_hand, _stored_rop(state, self.s), state["forecast_id"], ts,
                alerts,
            )  # fmt: skip
            if change:
                updates[series] = change

        for j, ((p, ev), effect, status, on_hand) in enumerate(
            zip(items, effects, res.statuses, res.on_hand, strict=True)
        ):
            for fold in due.pop(j, ()):
                walk(fold.series, fold.on_hand, fold.ts_ms / 1000)
            topic = "orders" if isinstance(ev, OrderEvent) else "inventory"
            if status == APPLIED:
                closed = self.closed.get(p)
                late = isinstance(ev, OrderEvent) and closed is not None and effect.bucket <= closed
                metrics.EVENTS.labels(topic, "late" if late else "applied").inc()
            elif status == OFFSET_REGRESSION:
                self._offset_regression(effect.offsets_field)
                continue
            else:
                metrics.EVENTS.labels(topic, "duplicate" if status == DUPLICATE else "stale").inc()
            # Duplicates are walked too, at the current stock: if a crash came between applying
            # them and recording the alert state, the same alert (same id) is derived again.
            if on_hand is not None:
                walk(ev.series, on_hand, ev.ts)
        for fold in due.pop(len(items), ()):
            walk(fold.series, fold.on_hand, fold.ts_ms / 1000)
        if alerts:
            await self.sink(alerts)
            result.alerts += len(alerts)
        await self.store.write_alert_states(updates, res.folds)

    def _offset_regression(self, topic_partition: str) -> None:
        metrics.EVENTS.labels(topic_partition.split(":")[0], "offset_regression").inc()
        if topic_partition not in self._warned_regression:
            self._warned_regression.add(topic_partition)
            log.error(
                "%s: new events at offsets below those already applied; was the topic "
                "recreated? They are skipped until shelfcast:offsets is reset for it "
                "(docs/delivery.md)",
                topic_partition,
            )

    def _alert(
        self,
        series: str,
        state: dict[str, str],
        on_hand: int,
        rop: ReorderPoint,
        fid: str,
        ts: float,
        out: list[Output],
    ) -> dict[str, object] | None:
        """Add an alert to ``out`` if the status changes; update ``state`` in place and return
        the fields to persist."""
        current = state.get("alert") or CLEARED
        status = next_status(current, on_hand, rop.value, self.s.alert_hysteresis)
        if status is None:
            return None
        seq = int(state.get("alert_seq") or 0) + 1
        state["alert"], state["alert_seq"] = status, str(seq)
        msg = alert_message(series, status, seq, on_hand, rop, fid, ts)
        out.append(output(self.s.topics["alerts"], series, msg))
        metrics.ALERTS.labels(status).inc()
        return {"alert": status, "alert_seq": seq, "alert_ts": ts}

    async def _close_through(self, p: int, target: int, result: BatchResult) -> None:
        while self.closed[p] < target:
            await self._close_bucket(p, self.closed[p] + 1, result)
            self.closed[p] += 1

    def _contexts(self, b: int, closed: dict[int, bool]) -> list[Context]:
        """The buckets a forecast issued at the close of ``b`` covers, as known then."""
        cal = self.calendar
        return [
            Context(cal.weekday(b + k), cal.expected_closed(b + k, closed))
            for k in range(1, self.s.horizon + 1)
        ]

    async def _restore(self, p: int, series: dict[str, tuple[int, int]]) -> None:
        """Bring models that are not in memory up to their learned marker in Redis.

        ``series`` maps a series to (learned marker, first bucket). Each starts from its model
        snapshot when there is one no newer than the marker, else from scratch at the start of
        the bounded history, and replays the buckets after it from the history exactly as the
        live closes did: the restored model equals the one that was lost.
        """
        snapshots = await self.store.read_snapshots(list(series))
        spans = {}
        for s, (learned, first) in series.items():
            bank = None
            if s in snapshots:
                bank = ModelBank.from_state(
                    json.loads(zlib.decompress(snapshots[s])), self.s.horizon, self.calendar.season
                )
                if (bank.learned_through or -1) > learned:
                    bank = None  # written after a learn whose close never completed
            if bank is None:
                bank = ModelBank(self.s.horizon, self.calendar.season)
                start = max(first, learned - self.s.history_buckets + 1)
            else:
                start = (bank.learned_through or first - 1) + 1
            self.banks[s] = bank
            spans[s] = range(start, learned + 1)
        histories, closed = await self.store.read_histories(p, spans)
        for s, history in histories.items():
            bank = self.banks[s]
            for b, y, revenue in zip(spans[s], history.demand, history.revenue, strict=True):
                bank.learn(b, None if closed.get(b) else y, self._context(b, closed, y, revenue))
                bank.forecast(self._contexts(b, closed))

    def _context(self, b: int, closed: dict[int, bool], demand: float, revenue: float) -> Context:
        price = revenue / demand if demand > 0 and revenue > 0 else None
        return Context(self.calendar.weekday(b), bool(closed.get(b)), price)

    async def snapshot(self, partitions: Iterable[int]) -> None:
        """Write the models of ``partitions`` to Redis (on revoke, before another worker
        restores them)."""
        lost = set(partitions)
        blobs = {s: _pack(self.banks[s]) for s, p in self.owner.items() if p in lost}
        if blobs:
            await self.store.write_snapshots(blobs)

    async def _close_bucket(self, p: int, b: int, result: BatchResult) -> None:
        started = time.perf_counter()
        await self._close(p, b, result)
        # only completed closes, like shelfcast_buckets_closed_total: one retried in an outage
        # counts once, with its last attempt
        metrics.BUCKET_CLOSE_SECONDS.observe(time.perf_counter() - started)

    async def _close(self, p: int, b: int, result: BatchResult) -> None:
        size = self.s.bucket_seconds
        season = self.calendar.season
        active = [
            (s, f)
            for s, f in await self.store.active_series(p, b - self.s.active_buckets + 1)
            if f <= b
        ]
        names = [s for s, _ in active]
        closes, orders, closed = await self.store.read_close(p, names, b, 2 * season)
        closed[b] = self.calendar.observed_closed(b, orders)
        # restore models that are missing or behind the learned marker in Redis (another
        # worker owned the partition meanwhile)
        missing = {
            s: (int(c.state["learned"]) if c.state.get("learned") else first - 1, first)
            for (s, first), c in zip(active, closes, strict=True)
            if s not in self.banks
            or (self.banks[s].learned_through or -1) < int(c.state.get("learned") or -1)
        }
        if missing:
            await self._restore(p, missing)
        now = time.monotonic()
        snapshot = (
            now - self._snapshot_at.get(p, -math.inf) >= self.s.snapshot_seconds
            or b - self._snapshot_bucket.get(p, b) >= self.s.history_buckets // 2
        )
        updates: dict[str, dict[str, object]] = {}
        snapshots: dict[str, bytes] = {}
        evaluation = Prequential()
        outs: list[Output] = []
        # per SKU: its locations' published steps, what their learn settled, and its demand
        rollups: dict[str, list[list[Step]]] = defaultdict(list)
        settled: dict[str, list[list[Outcome]]] = defaultdict(list)
        sku_demand: dict[str, float] = defaultdict(float)
        learned = 0
        close_ts = bucket_start(b + 1, size)
        # The close runs once an order past the allowed lateness (or, live, the wall clock) has
        # moved the partition's event time on, and the stock it compares is as of then: stamped
        # with the bucket's end, an alert would count deliveries dated after it.
        stock_ts = max(close_ts, self.max_ts.get(p, close_ts))
        ahead = self._contexts(b, closed)
        lstm = await self.lstm.forecasts(self.store, p, names, b, closed, ahead)
        for i, (s, c) in enumerate(zip(names, closes, strict=True)):
            if i % 500 == 499:
                await asyncio.sleep(0)  # a close of many series must not starve the event loop
            self.owner[s] = p
            bank = self.banks[s]
            state = c.state
            if int(state.get("learned") or -1) < b:
                learned += 1  # counted by the Redis marker, so a retried close counts once
            if bank.learned_through is None or bank.learned_through < b:
                y = None if closed[b] else c.demand
                self.outcomes[s] = bank.learn(b, y, self._context(b, closed, c.demand, c.revenue))
            sku, _ = split_series(s)
            sku_demand[sku] += c.demand
            if bank.learned_through == b:
                evaluation.add(self.outcomes.get(s, ()))
                settled[sku].append(self.outcomes.get(s, []))
            if lstm is not None:
                bank.offer(LSTM, lstm[0], lstm[1][s])
            forecasts, chosen = bank.forecast(ahead)
            fields: dict[str, object] = {"learned": b, **bank.rolling_features()}
            picked = next((fc for fc in forecasts if fc.model == chosen), None)
            if picked is not None:
                evaluation.add_win(picked.model)
                msg = forecast_message(s, b, size, picked)
                outs.append(output(self.s.topics["forecasts"], s, msg))
                metrics.FORECASTS.labels(picked.model).inc()
                result.forecasts += 1
                rollups[sku].append(picked.steps)
                lead = float(state.get("lead_time") or self.s.lead_time_days)
                rop = reorder_point(
                    picked.steps, lead, self.s.service_level, size, picked.error_moments,
                    self.s.review_days,
                )  # fmt: skip
                fid = forecast_id(s, b, picked.model, picked.version)
                fields.update(
                    rop=rop.value, lt_demand=rop.lead_time_demand, safety=rop.safety_stock,
                    daily_mean=rop.daily_mean, rop_lead=lead, forecast_id=fid,
                )  # fmt: skip
                if state.get("stock_known"):
                    on_hand = int(state.get("on_hand") or 0)
                    change = self._alert(s, state, on_hand, rop, fid, stock_ts, outs)
                    fields.update(change or {})
            updates[s] = fields
            if snapshot:
                snapshots[s] = _pack(bank)
        for sku, parts in rollups.items():
            rollup = SeriesForecast(ROLLUP, ROLLUP_VERSION, combine(parts))
            msg = forecast_message(series_key(sku, ALL_LOCATIONS), b, size, rollup, len(parts))
            outs.append(output(self.s.topics["forecasts"], series_key(sku, ALL_LOCATIONS), msg))
            metrics.FORECASTS.labels(ROLLUP).inc()
            result.forecasts += 1
        for sku, outcomes in settled.items():
            evaluation.add(settle(outcomes, sku_demand[sku]))
        # This partition's series inactive for the whole window free their models. Only this
        # partition's: others run on their own event time, and dropping a model they still use
        # would make them rebuild it from bounded history, changing its forecasts.
        for s in [
            s
            for s, bank in self.banks.items()
            if self.owner.get(s) == p and (bank.learned_through or b) < b - self.s.active_buckets
        ]:
            del self.banks[s]
            del self.owner[s]
            self.outcomes.pop(s, None)
        if outs:
            await self.sink(outs)
            result.alerts += sum(o.topic == self.s.topics["alerts"] for o in outs)
        await self.store.write_close(
            p,
            b,
            updates,
            closed=closed[b],
            learned=learned,
            trim_before=b - self.s.history_buckets,
            inactive_before=b - self.s.active_buckets + 1,
            clock={f"{p}:closed": b, f"{p}:max_ts": self.max_ts.get(p, close_ts)},
            evaluation=dict(evaluation.sums),
            snapshots=snapshots,
        )
        if snapshot:
            self._snapshot_at[p], self._snapshot_bucket[p] = now, b
        self._snapshot_bucket.setdefault(p, b)
        metrics.BUCKETS_CLOSED.inc()
        if closed[b]:
            metrics.CLOSED_BUCKETS.inc()
        self.active[p] = len(active)
        metrics.ACTIVE_SERIES.set(sum(self.active.values()))
        self.evaluation.merge(evaluation.sums)
        metrics.publish_evaluation(self.evaluation.summary())


def _stored_rop(state: dict[str, str], settings: Settings) -> ReorderPoint:
    """The reorder point the series' latest close stored with its state."""
    return ReorderPoint(
        float(state["rop_lead"]),
        float(state["lt_demand"]),
        float(state["safety"]),
        float(state["daily_mean"]),
        settings.service_level,
        settings.review_days,
    )


def _pack(bank: ModelBank) -> bytes:
    """A model snapshot: JSON (exact floats, nothing executable), compressed."""
    return zlib.compress(json.dumps(bank.state(), separators=(",", ":")).encode(), 1)
