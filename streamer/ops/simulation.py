"""Simulated stock for replays: the real order data has no inventory, so backtests invent it.

Each series opens with ``opening_weeks`` of its mean daily demand (a snapshot just before its
first event). An order-up-to policy then reviews stock after every event: when the stock
position (on hand + on order) falls to ``reorder_days`` of mean demand, it orders up to
``order_up_to_days`` of it, and the delivery arrives ``lead_time_days`` later as an
``inventory`` delta. Every level also holds ``large_orders`` of the series' large orders (the
95th percentile of its order sizes). Orders that find no stock are lost sales (the stream
still carries them: on-hand goes negative, i.e. backorders). The mean daily demand (over the
series' life, from its first order to the end of the replay) and the large orders are a
look-ahead that only the simulation has, never the forecaster.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from models.series import split_series
from streamer.eventtime.clock import DAY_SECONDS
from streamer.ops.replay import Produced
from streamer.topics.events import series_key

__all__ = ["SimulationSettings", "SimulationStats", "StockTrace", "inventory_event", "simulate"]


@dataclass(frozen=True)
class SimulationSettings:
    """The invented stock of a replay: opening stock, lead time and the restock rule, in days
    of each series' demand."""

    opening_weeks: float = 4.0
    lead_time_days: float = 3.0
    reorder_days: float = 7.0
    order_up_to_days: float = 21.0
    # every level also holds this many of the series' large orders (95th percentile of its
    # order sizes) on top of its days of demand: a buffer no shop selling wholesale goes without
    large_orders: float = 1.0
    # reorder by the rule above; off in a closed-loop backtest, where a planner acting on the
    # alerts restocks (streamer/ops/closed_loop.py) and only the opening stock is simulated
    restock: bool = True


@dataclass
class StockTrace:
    """When the simulated stock ran out and when deliveries arrived, per series."""

    stockouts: list[tuple[str, float]] = field(default_factory=list)
    restocks: list[tuple[str, float]] = field(default_factory=list)
    # per series, the span its stock was simulated: from its first order to the replay's end
    lives: dict[str, tuple[float, float]] = field(default_factory=dict)
    # per series, (time, on hand after) at every change, and (time, units) of every order:
    # what explaining a missed stock-out needs (streamer/ops/alert_quality.py)
    levels: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    sales: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class SimulationStats:
    simulated: bool = True
    settings: dict[str, float] = field(default_factory=dict)
    snapshots: int = 0
    restocks: int = 0
    stockouts: int = 0
    lost_units: int = 0


def _series(obj: dict) -> str:
    return series_key(obj["sku"], obj["location"])


def _order(ev: Produced) -> tuple[str, int]:
    obj = json.loads(ev.value)
    return _series(obj), int(obj["quantity"])


@dataclass
class _Rates:
    """Per series: its first order's time, daily demand and large-order buffer."""

    first: dict[str, float]
    daily: dict[str, float]
    large: dict[str, float]


def _rates(orders: Sequence[Produced], settings: SimulationSettings) -> _Rates:
    end = orders[-1].ts
    demand: dict[str, float] = defaultdict(float)
    sizes: dict[str, list[int]] = defaultdict(list)
    first: dict[str, float] = {}
    for ev in orders:
        series, qty = _order(ev)
        first.setdefault(series, ev.ts)
        demand[series] += max(qty, 0)
        if qty > 0:
            sizes[series].append(qty)
    # over the series' own life: one launched in the last month sells at its own pace
    daily = {s: total / max((end - first[s]) / DAY_SECONDS, 7.0) for s, total in demand.items()}
    large = {s: settings.large_orders * _p95(q) for s, q in sizes.items()}
    return _Rates(first, daily, large)


class _Shop:
    """The simulated stock of every series as the events pass, and the inventory events it
    writes into ``out``: opening counts, and deliveries of its own reorders."""

    def __init__(self, settings: SimulationSettings, rates: _Rates) -> None:
        self.settings = settings
        self.rates = rates
        self.stats = SimulationStats(settings=asdict(settings))
        self.trace = StockTrace()
        self.out: list[Produced] = []
        self.on_hand: dict[str, int] = {}
        self.on_order: dict[str, int] = defaultdict(int)
        self.arrivals: list[tuple[float, int, str, int]] = []  # (ts, seq, series, qty)
        self.seq = 0

    def _inventory(self, series: str, ts: float, payload: dict[str, object], n: int) -> None:
        self.out.append(inventory_event(series, ts, payload, f"sim:{series}:{n}"))

    def deliver_until(self, now: float) -> None:
        """Every reorder due by ``now`` arrives."""
        while self.arrivals and self.arrivals[0][0] <= now:
            ts, n, series, qty = heapq.heappop(self.arrivals)
            self.on_hand[series] += qty
            self.on_order[series] -= qty
            self.trace.levels[series].append((ts, self.on_hand[series]))
            self.stats.restocks += 1
            self.trace.restocks.append((series, ts))
            self._inventory(series, ts, {"delta": qty}, n)

    def adjust(self, ev: Produced) -> None:
        """A stock adjustment from the data; before the opening snapshot it is inside it."""
        self.out.append(ev)
        adjusted = json.loads(ev.value)
        if (held := _series(adjusted)) in self.on_hand and "delta" in adjusted:
            self.on_hand[held] += int(adjusted["delta"])
            self.trace.levels[held].append((ev.ts, self.on_hand[held]))

    def open(self, series: str, ts: float) -> None:
        """A series' opening stock count, just before its first order at ``ts``."""
        rates, settings = self.rates, self.settings
        opening = math.ceil(
            settings.opening_weeks * 7 * rates.daily.get(series, 0.0) + rates.large.get(series, 0.0)
        )
        self.on_hand[series] = opening
        self.trace.levels[series].append((ts - 60, opening))
        self.stats.snapshots += 1
        self.seq += 1
        payload = {"on_hand": opening, "lead_time_days": settings.lead_time_days}
        self._inventory(series, ts - 60, payload, self.seq)

    def sell(self, ev: Produced) -> None:
        """An order (a return when negative) takes stock; a stock-out or reorder may follow."""
        series, qty = _order(ev)
        if series not in self.on_hand:
            self.open(series, ev.ts)
        self.out.append(ev)
        before = self.on_hand[series]
        self.on_hand[series] -= qty
        self.trace.levels[series].append((ev.ts, self.on_hand[series]))
        if qty > 0:
            self.trace.sales[series].append((ev.ts, qty))
        if qty > 0 and before < qty:
            self.stats.lost_units += qty - max(before, 0)
        if before > 0 >= self.on_hand[series]:
            self.stats.stockouts += 1
            self.trace.stockouts.append((series, ev.ts))
        if self.settings.restock:
            self.reorder(series, ev.ts)

    def reorder(self, series: str, ts: float) -> None:
        """Order up to ``order_up_to_days`` once the stock position falls to the reorder level."""
        settings = self.settings
        daily, big = self.rates.daily.get(series, 0.0), self.rates.large.get(series, 0.0)
        position = self.on_hand[series] + self.on_order[series]
        if daily <= 0 or position > settings.reorder_days * daily + big:
            return
        qty = math.ceil(settings.order_up_to_days * daily + big - position)
        if qty > 0:
            self.seq += 1
            self.on_order[series] += qty
            arrival = ts + settings.lead_time_days * DAY_SECONDS
            heapq.heappush(self.arrivals, (arrival, self.seq, series, qty))


def simulate(
    events: Sequence[Produced], settings: SimulationSettings
) -> tuple[list[Produced], SimulationStats, StockTrace]:
    """The input events with simulated inventory events merged in, in event-time order.

    A stock-out is the moment an order takes the simulated stock from above zero to zero or
    below. The simulated stock follows the worker's rules, so the two agree.
    """
    orders = sorted((ev for ev in events if ev.role == "orders" and ev.ts), key=lambda e: e.ts)
    if not orders:
        return list(events), SimulationStats(settings=asdict(settings)), StockTrace()
    rates = _rates(orders, settings)
    shop = _Shop(settings, rates)
    for ev in sorted(events, key=lambda e: e.ts):
        shop.deliver_until(ev.ts)
        if ev.role == "orders":
            shop.sell(ev)
        else:
            shop.adjust(ev)
    end = orders[-1].ts
    shop.trace.lives = {s: (start, end) for s, start in rates.first.items()}
    # opening snapshots are dated just before a series' first order, so re-sort (stably)
    shop.out.sort(key=lambda e: e.ts)
    return shop.out, shop.stats, shop.trace


def inventory_event(series: str, ts: float, payload: dict[str, object], event_id: str) -> Produced:
    """An ``inventory`` message of ``series`` at ``ts`` with ``payload`` (on_hand, delta or
    ordered and their companions)."""
    sku, location = split_series(series)
    msg = {"event_id": event_id, "ts": _iso(ts), "sku": sku, "location": location, **payload}
    return Produced("inventory", sku, json.dumps(msg, separators=(",", ":")).encode(), ts)


def _p95(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)])


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")
