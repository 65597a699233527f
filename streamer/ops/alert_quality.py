"""How good were the low-stock alerts? Scored against the stock-outs of a (simulated) stock.

For each series, alerts (raised/cleared, event time, in the order they were published) are
compared with stock-outs (times at which stock fell from above zero to zero or below) and
restocks (delivery times). Changes of one series at the same time keep their published order:
an order can raise an alert and the bucket close it runs clear it, both at the order's time.

* **recall**: share of stock-outs whose alert was raised at least one lead time before, and
  not cleared in between: early enough to reorder;
* **warning time**: stock-out time minus the raise time of the alert still active at the
  stock-out (its median over warned stock-outs);
* **false alarms**: share of raised alerts followed within the lead time by neither a stock-out
  nor a restock;
* **flapping**: share of raised alerts that come within a day of the same series' previous
  alert being cleared (raised -> cleared -> raised again within a day);
* **active share**: share of the series' simulated time during which an alert was raised. It
  is what recall costs: an alert that is always on warns of every stock-out and tells a
  planner nothing.

``explain_stockouts`` says why each stock-out was or was not warned in time. A miss is
``series_too_young`` (the series began less than a lead time before it), ``cleared_before``
(an alert was up a lead time before, and cleared before the stock-out: by a delivery, an
adjustment or a lower reorder point), ``beyond_history`` (a lead time before, the shelf held
more than the series had ever sold in any protection interval: no reorder point at or below
its largest demand so far would have been raised) or ``raised_late`` (the rest: the reorder
point was below the stock, though the series had sold as much before).

>>> day = 86_400.0
>>> alerts = [("a", "raised", 0.0), ("a", "cleared", 5 * day), ("a", "raised", 5.5 * day)]
>>> q = score_alerts(alerts, stockouts=[("a", 4 * day)], restocks=[], lead_time_days=3)
>>> q["recall"], q["median_warning_days"], q["flapping_rate"]
(1.0, 4.0, 0.5)
"""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from streamer.alerts.reorder import CLEARED, RAISED
from streamer.eventtime.clock import DAY_SECONDS as DAY  # by this name in its tests

__all__ = [
    "MISSES",
    "WARNED",
    "Stockout",
    "explain_stockouts",
    "miss_breakdown",
    "score_alerts",
]


def score_alerts(
    alerts: Iterable[tuple[str, str, float]],
    stockouts: Iterable[tuple[str, float]],
    restocks: Iterable[tuple[str, float]],
    lead_time_days: float,
    lives: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, float | int | None]:
    """``lives``: per series, the (start, end) of its stock; without it, no active share."""
    lead = lead_time_days * DAY
    by_series = _changes_by_series(alerts)
    outs, arrivals = _times_by_series(stockouts), _times_by_series(restocks)
    n_stockouts, warnings = _warnings(outs, by_series)
    early = sum(warning >= lead for warning in warnings)
    raised, false_alarms, flaps = _raised(by_series, outs, arrivals, lead)
    active, total = _active_time(by_series, lives or {})
    return {
        "stockouts": n_stockouts,
        "alerts_raised": raised,
        "recall": early / n_stockouts if n_stockouts else None,
        "warned_stockouts": len(warnings),
        "median_warning_days": statistics.median(warnings) / DAY if warnings else None,
        "false_alarm_rate": false_alarms / raised if raised else None,
        "flapping_rate": flaps / raised if raised else None,
        "alert_active_share": active / total if total > 0 else None,
        "lead_time_days": lead_time_days,
    }


def _warnings(
    outs: Mapping[str, list[float]], by_series: Mapping[str, list[tuple[float, str]]]
) -> tuple[int, list[float]]:
    """The number of stock-outs, and for each that came while its alert was up, how long the
    alert had been up."""
    warnings: list[float] = []
    n_stockouts = 0
    for series, times in outs.items():
        changes = by_series.get(series, [])
        stamps = [ts for ts, _ in changes]
        for t in times:
            n_stockouts += 1
            i = bisect_right(stamps, t)  # changes at or before the stock-out
            if i and changes[i - 1][1] == "raised":
                warnings.append(t - changes[i - 1][0])
    return n_stockouts, warnings


def _raised(
    by_series: Mapping[str, list[tuple[float, str]]],
    outs: Mapping[str, list[float]],
    arrivals: Mapping[str, list[float]],
    lead: float,
) -> tuple[int, int, int]:
    """Alerts raised; of them, those followed within ``lead`` by neither a stock-out nor a
    delivery (false alarms), and those raised again within a day of clearing (flaps)."""
    raised = false_alarms = flaps = 0
    for series, changes in by_series.items():
        for k, (ts, status) in enumerate(changes):
            if status != "raised":
                continue
            raised += 1
            followed = _any_in(outs.get(series, []), ts, ts + lead) or _any_in(
                arrivals.get(series, []), ts, ts + lead
            )
            false_alarms += not followed
            if k >= 2 and changes[k - 1][1] == "cleared" and changes[k - 2][1] == "raised":
                flaps += ts - changes[k - 1][0] <= DAY
    return raised, false_alarms, flaps


def _active_time(
    by_series: Mapping[str, list[tuple[float, str]]], lives: Mapping[str, tuple[float, float]]
) -> tuple[float, float]:
    """Seconds an alert was up within its series' life, and the seconds of all lives."""
    active = total = 0.0
    for series, (start, end) in lives.items():
        total += end - start
        raised_at: float | None = None
        for ts, status in [*by_series.get(series, []), (end, CLEARED)]:
            if status == RAISED and raised_at is None:
                raised_at = ts
            elif status == CLEARED and raised_at is not None:
                active += max(min(ts, end) - max(raised_at, start), 0.0)
                raised_at = None
    return active, total


WARNED = "warned"
MISSES = ("series_too_young", "cleared_before", "beyond_history", "raised_late")


@dataclass(frozen=True, slots=True)
class Stockout:
    series: str
    ts: float
    # WARNED or one of MISSES
    outcome: str
    warning_days: float | None
    # stock a lead time before the stock-out, and the most the series had sold in any
    # protection interval before then
    on_hand_lead_time_before: int | None
    largest_interval_demand: int


def explain_stockouts(
    alerts: Iterable[tuple[str, str, float]],
    stockouts: Iterable[tuple[str, float]],
    levels: Mapping[str, Sequence[tuple[float, int]]],
    sales: Mapping[str, Sequence[tuple[float, int]]],
    lives: Mapping[str, tuple[float, float]],
    lead_time_days: float,
    protection_days: float,
) -> list[Stockout]:
    """Every stock-out with its outcome, in time order. ``levels``: per series, (time, on hand)
    after each change; ``sales``: per series, (time, units) of each order; both time-sorted."""
    lead, window = lead_time_days * DAY, protection_days * DAY
    by_series = _changes_by_series(alerts)
    out: list[Stockout] = []
    for series, times in _times_by_series(stockouts).items():
        history = _IntervalDemand(sales.get(series, []), window)
        born = lives.get(series, (-math.inf, math.inf))[0]
        changes, stock = by_series.get(series, []), levels.get(series, [])
        out.extend(_explain_series(series, times, changes, stock, history, born, lead))
    out.sort(key=lambda s: (s.ts, s.series))
    return out


def _explain_series(
    series: str,
    times: Sequence[float],
    changes: Sequence[tuple[float, str]],
    stock: Sequence[tuple[float, int]],
    history: _IntervalDemand,
    born: float,
    lead: float,
) -> Iterator[Stockout]:
    """The stock-outs of one series at ``times``, each with its outcome."""
    stamps = [ts for ts, _ in changes]
    stock_times = [ts for ts, _ in stock]
    for t in times:
        i = bisect_right(stamps, t)
        warning = t - changes[i - 1][0] if i and changes[i - 1][1] == RAISED else None
        before = t - lead
        j = bisect_right(stock_times, before)
        on_hand = stock[j - 1][1] if j else None
        largest = history.largest_before(before)
        j = bisect_right(stamps, before)
        raised_before = bool(j) and changes[j - 1][1] == RAISED
        outcome = _outcome(warning, lead, born > before, raised_before, on_hand, largest)
        yield Stockout(
            series, t, outcome, None if warning is None else warning / DAY, on_hand, largest
        )


def _outcome(
    warning: float | None,
    lead: float,
    too_young: bool,
    raised_before: bool,
    on_hand: int | None,
    largest: int,
) -> str:
    """WARNED if the alert was up a lead time ahead, else the first cause of ``MISSES`` that
    applies: the series had no history yet, its alert was up a lead time ahead but cleared
    since, it had more stock than it had ever sold in an interval, or it was raised too late."""
    if warning is not None and warning >= lead:
        return WARNED
    if too_young:
        return "series_too_young"
    if raised_before:
        return "cleared_before"
    if on_hand is not None and on_hand > largest:
        return "beyond_history"
    return "raised_late"


def miss_breakdown(explained: Sequence[Stockout]) -> dict[str, float | int | None]:
    """Misses by cause, and recall over the stock-outs a series' own history could foresee."""
    counts = {cause: sum(s.outcome == cause for s in explained) for cause in MISSES}
    warned = sum(s.outcome == WARNED for s in explained)
    foreseeable = len(explained) - counts["series_too_young"] - counts["beyond_history"]
    return {
        **counts,
        "recall_foreseeable": warned / foreseeable if foreseeable else None,
    }


class _IntervalDemand:
    """The most a series sold in any window of a given length, using only sales before a time."""

    def __init__(self, sold: Sequence[tuple[float, int]], window: float) -> None:
        self.times = [ts for ts, _ in sold]
        self.cum = [0, *accumulate(q for _, q in sold)]
        # window i starts at sale i and takes the sales before times[i] + window
        self.ends = [bisect_left(self.times, ts + window) for ts in self.times]
        sums = (self.cum[end] - self.cum[i] for i, end in enumerate(self.ends))
        self.best = list(accumulate(sums, max))

    def largest_before(self, cut: float) -> int:
        n = bisect_left(self.times, cut)  # sales strictly before the cut
        k = bisect_right(self.ends, n)  # windows whose sales all come before the cut
        whole = self.best[k - 1] if k else 0
        # windows reaching past the cut count their sales before it; the earliest holds most
        cut_short = self.cum[n] - self.cum[k] if k < n else 0
        return max(whole, cut_short)


def _changes_by_series(
    alerts: Iterable[tuple[str, str, float]],
) -> dict[str, list[tuple[float, str]]]:
    """Per series, its (time, status) changes in time order; a stable sort, so changes at the
    same time keep their published order."""
    by_series: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for series, status, ts in alerts:
        by_series[series].append((ts, status))
    for changes in by_series.values():
        changes.sort(key=lambda change: change[0])
    return by_series


def _times_by_series(pairs: Iterable[tuple[str, float]]) -> dict[str, list[float]]:
    by_series: dict[str, list[float]] = defaultdict(list)
    for series, ts in pairs:
        by_series[series].append(ts)
    for times in by_series.values():
        times.sort()
    return by_series


def _any_in(sorted_times: list[float], start: float, end: float) -> bool:
    """Is there a time in (start, end]?"""
    i = bisect_right(sorted_times, start)
    return i < len(sorted_times) and sorted_times[i] <= end
