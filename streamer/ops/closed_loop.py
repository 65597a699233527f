"""The closed loop of a backtest: a planner acts on the alerts, and the shelves follow.

``Planner`` is a downstream service like any other: it reads ``low-stock-alerts`` from Kafka
and, for each raised alert, puts its ``order_quantity`` on order (a purchase order on
``inventory`` at the alert's time, ``po_id`` the alert id) and delivers it ``lead_time_days``
later in event time (a delta naming the ``po_id``). ``Shelves`` keeps the simulated stock by
the same events, with lost sales: the units of an order that find no stock are not sold, so
a correction gives them back a second after the order (the order stays demand). The replay
(streamer/ops/backtest.py) goes a bucket at a time, its stock events before its orders, and
lets the worker and the planner settle before the next, so a delivery takes effect at its own
time and two replays are the same.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from streamer.config.sections import KafkaSettings
from streamer.eventtime.clock import DAY_SECONDS, bucket_of, bucket_start, epoch
from streamer.ops.policies import Outcome
from streamer.ops.replay import (
    INVENTORY_LEAD_SECONDS,
    Produced,
    order_line,
    produce,
    replay_producer,
)
from streamer.ops.retention import Reader, Retention
from streamer.ops.simulation import inventory_event
from streamer.topics.events import MAX_ID_LEN, Invalid, parse_inventory, series_key

__all__ = ["CORRECTION_DELAY", "Loop", "Planner", "Shelves", "derived_id"]

if TYPE_CHECKING:
    from confluent_kafka import Producer

# a lost-sale correction comes this long after its order, so that it waits for the order in
# the worker whichever topic is read first
CORRECTION_DELAY = 1.0


def derived_id(prefix: str, of: str) -> str:
    """An id for an event the loop derives from another's id: ``prefix`` + that id, or + its
    digest where that would pass the longest id the topics take.

    >>> derived_id("lost:", "o-1"), len(derived_id("lost:", "o" * MAX_ID_LEN))
    ('lost:o-1', 45)
    """
    if len(prefix) + len(of) <= MAX_ID_LEN:
        return prefix + of
    return prefix + hashlib.sha1(of.encode()).hexdigest()


class Planner:
    """Acts on raised alerts: puts what they recommend on order, on the ``inventory`` topic,
    and has it delivered a lead time later (the deliveries, the supplier's part of the
    simulation, are handed to the replay)."""

    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, str],
        lead_time_days: float,
        retention: Retention | None = None,
    ) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self.lead = lead_time_days * DAY_SECONDS
        self._bootstrap, self._topics = bootstrap, topics
        self._producer: Producer | None = replay_producer(bootstrap, {})
        self._read = 0
        alerts_topic = topics["alerts"]
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "shelfcast-planner",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # a replay waits on each bucket's alerts: no idle fetch may sit out 500 ms
                "fetch.wait.max.ms": 10,
            }
        )
        meta = self._consumer.list_topics(alerts_topic, timeout=10).topics[alerts_topic]
        self._parts = [TopicPartition(alerts_topic, p, 0) for p in meta.partitions]
        self._consumer.assign(self._parts)
        self._reader = (
            None if retention is None else Reader(retention, "planner", self._consumer, self._parts)
        )
        self._seen: set[str] = set()
        self._due: list[tuple[float, int, Produced]] = []
        self.orders: dict[str, int] = defaultdict(int)
        self.placed: list[Produced] = []  # every purchase order it produced

    def react(self, published: int, timeout: float = 300.0) -> int:
        """Read the alerts up to the ``published``-th and order what each series' latest one
        recommends when it is a new raised alert (one raised and cleared again since the last
        read asks for nothing, and an earlier one is superseded): the purchase orders
        produced."""
        out: list[Produced] = []
        alerts = self._read_up_to(published, timeout)
        latest = {series_key(a["sku"], a["location"]): a for a in alerts}
        # in series order, not the order the alerts' partitions were read in: the deliveries
        # due at one time are produced in it
        for series, alert in sorted(latest.items()):
            if alert["status"] != "raised" or alert["alert_id"] in self._seen:
                continue
            self._seen.add(alert["alert_id"])
            qty = int(alert["order_quantity"])
            if qty <= 0:
                continue
            ts, po_id = epoch(alert["ts"]), derived_id("", alert["alert_id"])
            po = {"ordered": qty, "po_id": po_id, "expected_at": round((ts + self.lead) * 1000)}
            out.append(inventory_event(series, ts, po, derived_id("po:", po_id)))
            delivery = {"delta": qty, "po_id": po_id}
            grn = inventory_event(series, ts + self.lead, delivery, derived_id("grn:", po_id))
            heapq.heappush(self._due, (grn.ts, len(self._seen), grn))
            self.orders[series] += 1
        if out:
            produce(self._bootstrap, {}, self._topics, out, progress=False, producer=self._producer)
            self.placed += out
        return len(out)

    def deliveries_before(self, ts: float) -> list[Produced]:
        """The deliveries due before ``ts``, in time order."""
        out = []
        while self._due and self._due[0][0] < ts:
            out.append(heapq.heappop(self._due)[2])
        return out

    def close(self) -> None:
        """Stop reading, and drop the producer before the broker goes."""
        self._consumer.close()
        self._producer = None

    def _read_up_to(self, published: int, timeout: float) -> list[dict]:
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while self._read < published:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the planner read {self._read} of {published} alerts in {timeout:.0f}s: "
                    "the embedded broker may have dropped some (use more partitions)"
                )
            for msg in self._consumer.consume(1000, timeout=0.01):
                if msg.error() is None:
                    got.append(json.loads(msg.value()))
                    self._read += 1
        if self._reader is not None:
            self._reader.read()
        return got


@dataclass
class Shelves:
    """The simulated stock of every series in the closed loop, with lost sales, and what it
    served, lost and held each day (the measures of streamer/ops/policies.py)."""

    bucket_seconds: int
    # the worker's limit: a stock event it dead-letters moves no shelf
    max_message_bytes: int = KafkaSettings.max_message_bytes
    on_hand: dict[str, float] = field(default_factory=dict)
    first_day: dict[str, int] = field(default_factory=dict)
    demanded: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    served: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # orders short of stock per (series, day): a day with any is a stock-out day
    short: Counter[tuple[str, int]] = field(default_factory=Counter)
    held: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    days: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # per (series, day): what each order of a size sold, for a same-day cancellation
    _sold: dict[tuple[str, int], dict[int, list[float]]] = field(
        default_factory=lambda: defaultdict(dict)
    )

    def pass_(self, events: list[Produced]) -> list[Produced]:
        """Take a bucket's events in time order; the stock corrections they call for."""
        corrections = []
        for ev in sorted(events, key=lambda e: e.ts):
            if ev.role == "inventory":
                if fix := self._restock(ev):
                    corrections.append(fix)
                continue
            if (line := order_line(ev)) is None:
                continue  # the worker dead-letters it
            day, qty = bucket_of(ev.ts, self.bucket_seconds), line.quantity
            fix = self._order(line.series, day, qty) if qty > 0 else (
                self._return(line.series, day, -qty)
            )  # fmt: skip
            if fix:  # the worker's stock follows the shelf's
                eid = derived_id("lost:" if fix > 0 else "unsold:", line.event_id)
                corrections.append(
                    inventory_event(line.series, ev.ts + CORRECTION_DELAY, {"delta": fix}, eid)
                )
        return corrections

    def _restock(self, ev: Produced) -> Produced | None:
        """A stock count or a movement (a delivery, a correction, an adjustment) on the shelf;
        the correction to send the worker when the movement takes more than the shelf holds.

        The data's write-offs ("damaged", 223 units of a shelf holding 44) can exceed the
        simulated stock, which no shelf can hold below zero: it would eat every delivery after
        and lose every sale for weeks, which the reference policies, simulated on demand alone,
        never see. The shelf loses what it has, and the worker gets the rest back a second
        later (``overdrawn:<event id>``), as it does a lost sale's units.
        """
        stock_event = parse_inventory(ev.value, self.max_message_bytes)
        if isinstance(stock_event, Invalid):
            return None  # the worker dead-letters it
        series = series_key(stock_event.sku, stock_event.location)
        if stock_event.on_hand is not None:
            self.on_hand[series] = float(stock_event.on_hand)
            return None
        delta, stock = stock_event.delta or 0, self.on_hand.get(series, 0.0)
        if delta >= 0:
            self.on_hand[series] = stock + delta
            return None
        taken = min(-delta, stock)  # a shelf never holds less than nothing
        self.on_hand[series] = stock - taken
        if (excess := -delta - taken) <= 0:
            return None
        eid = derived_id("overdrawn:", stock_event.event_id)
        return inventory_event(series, ev.ts + CORRECTION_DELAY, {"delta": round(excess)}, eid)

    def _order(self, series: str, day: int, qty: int) -> int:
        """Sell what the shelf has; the units it lacked, which the worker must get back."""
        self.first_day.setdefault(series, day)
        stock = self.on_hand.get(series, 0.0)
        sold = min(qty, stock)  # the shelf never holds less than nothing (_restock)
        self.on_hand[series] = stock - sold
        self.demanded[series] += qty
        self.served[series] += sold
        self._sold[(series, day)].setdefault(qty, []).append(sold)
        if sold < qty:
            self.short[(series, day)] += 1
        return int(qty - sold)

    def _return(self, series: str, day: int, qty: int) -> int:
        """Goods back on the shelf. A return that cancels an order of its size the same day
        (streamer/ops/backtest.py: truth_from) also undoes that order's demand, and brings back
        only what it sold: the worker, which took the lost units back already, gives them up
        again (the units to take off its stock, negative)."""
        self.first_day.setdefault(series, day)
        sold = self._sold[(series, day)].get(qty)
        if not sold:
            self.on_hand[series] = self.on_hand.get(series, 0.0) + qty
            return 0
        units = sold.pop()
        self.short[(series, day)] -= units < qty  # a cancelled order lost no sale
        self.demanded[series] -= qty
        self.served[series] -= units
        self.on_hand[series] = self.on_hand.get(series, 0.0) + units
        return -int(qty - units)

    def end_of_day(self, day: int) -> None:
        """Count the stock each series holds at the end of ``day``."""
        self._sold.clear()  # only a same-day return cancels an order
        for series, first in self.first_day.items():
            if first <= day:
                self.held[series] += self.on_hand.get(series, 0.0)
                self.days[series] += 1

    def outcome(self, orders: dict[str, int]) -> tuple[list[str], Outcome]:
        series = sorted(self.first_day)

        def column(values: dict) -> np.ndarray:
            return np.array([float(values.get(s, 0)) for s in series])

        short = defaultdict(int)
        for s, _ in +self.short:  # the days with a short order left
            short[s] += 1
        return series, Outcome(
            column(self.demanded), column(self.served), column(short), column(self.held),
            column(self.days), column(orders),
        )  # fmt: skip


@dataclass
class Loop:
    """The planner and the shelves of one closed-loop replay, stepped a bucket at a time."""

    planner: Planner
    shelves: Shelves
    _ahead: list[Produced] = field(default_factory=list)  # produced, not reached yet

    def step(self, bucket: int, batch: list[Produced]) -> list[Produced]:
        """What to produce for ``bucket``: its ``batch`` (the events whose produce time falls
        in it), then the deliveries produced with it (an inventory event goes a day ahead, as
        every replayed one), then the lost-sale corrections of the bucket's orders."""
        size = self.shelves.bucket_seconds
        end = bucket_start(bucket + 1, size)
        due = self.planner.deliveries_before(end + INVENTORY_LEAD_SECONDS)
        self._ahead += batch + due
        ready = [e for e in self._ahead if e.ts < end]
        self._ahead = [e for e in self._ahead if e.ts >= end]
        return batch + due + self.shelves.pass_(ready)

    def outcome(self) -> tuple[list[str], Outcome]:
        """The series and what the loop served, lost and held of each."""
        return self.shelves.outcome(self.planner.orders)
