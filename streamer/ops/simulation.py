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


@dataclass(frozen=True)
class SimulationSettings:
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


def simulate(
    events: Sequence[Produced], settings: SimulationSettings
) -> tuple[list[Produced], SimulationStats, StockTrace]:
    """The input events with simulated inventory events merged in, in event-time order.

    A stock-out is the moment an order takes the simulated stock from above zero to zero or
    below. The simulated stock follows the worker's rules, so the two agree.
    """
    stats = SimulationStats(settings=asdict(settings))
    trace = StockTrace()
    orders = sorted((ev for ev in events if ev.role == "orders" and ev.ts), key=lambda e: e.ts)
    if not orders:
        return list(events), stats, trace
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
    mean = {s: total / max((end - first[s]) / DAY_SECONDS, 7.0) for s, total in demand.items()}
    large = {s: settings.large_orders * _p95(q) for s, q in sizes.items()}

    out: list[Produced] = []
    on_hand: dict[str, int] = {}
    on_order: dict[str, int] = defaultdict(int)
    arrivals: list[tuple[float, int, str, int]] = []  # (ts, seq, series, qty)
    seq = 0

    def inventory(series: str, ts: float, payload: dict[str, object], n: int) -> Produced:
        return inventory_event(series, ts, payload, f"sim:{series}:{n}")

    for ev in sorted(events, key=lambda e: e.ts):
        while arrivals and arrivals[0][0] <= ev.ts:
            ts, n, series, qty = heapq.heappop(arrivals)
            on_hand[series] += qty
            on_order[series] -= qty
            trace.levels[series].append((ts, on_hand[series]))
            stats.restocks += 1
            trace.restocks.append((series, ts))
            out.append(inventory(series, ts, {"delta": qty}, n))
        if ev.role != "orders":
            # a stock adjustment from the data; before the opening snapshot it is inside it
            out.append(ev)
            adjusted = json.loads(ev.value)
            if (held := _series(adjusted)) in on_hand and "delta" in adjusted:
                on_hand[held] += int(adjusted["delta"])
                trace.levels[held].append((ev.ts, on_hand[held]))
            continue
        series, qty = _order(ev)
        if series not in on_hand:
            opening = math.ceil(
                settings.opening_weeks * 7 * mean.get(series, 0.0) + large.get(series, 0.0)
            )
            on_hand[series] = opening
            trace.levels[series].append((ev.ts - 60, opening))
            stats.snapshots += 1
            seq += 1
            payload = {"on_hand": opening, "lead_time_days": settings.lead_time_days}
            out.append(inventory(series, ev.ts - 60, payload, seq))
        out.append(ev)
        before = on_hand[series]
        on_hand[series] -= qty
        trace.levels[series].append((ev.ts, on_hand[series]))
        if qty > 0:
            trace.sales[series].append((ev.ts, qty))
        if qty > 0 and before < qty:
            stats.lost_units += qty - max(before, 0)
        if before > 0 >= on_hand[series]:
            stats.stockouts += 1
            trace.stockouts.append((series, ev.ts))
        daily, big = mean.get(series, 0.0), large.get(series, 0.0)
        position = on_hand[series] + on_order[series]
        if settings.restock and daily > 0 and position <= settings.reorder_days * daily + big:
            qty_order = math.ceil(settings.order_up_to_days * daily + big - position)
            if qty_order > 0:
                seq += 1
                on_order[series] += qty_order
                arrival = ev.ts + settings.lead_time_days * DAY_SECONDS
                heapq.heappush(arrivals, (arrival, seq, series, qty_order))
    trace.lives = {s: (start, end) for s, start in first.items()}
    # opening snapshots are dated just before a series' first order, so re-sort (stably)
    out.sort(key=lambda e: e.ts)
    return out, stats, trace


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
