"""Reorder policies on the same demand, simulated offline: what a planner gets from each.

Every policy reviews each series once a day, after the day's demand: when the inventory
position (on hand + on order) is at or below its reorder level ``s``, it orders up to ``S``,
rounded up to whole units, and the order arrives ``lead`` days later, before that day's
demand. Demand that finds no stock is lost. Each policy starts from the same opening stock
on the day of the series' first order, and decides from what it could know that day:

* ``min_max``: the static rule ERPs ship, min = 7 and max = 21 days of the trailing 28-day
  mean demand;
* ``order_up_to``: shelfcast's rule (streamer/alerts/reorder.py: reorder_points, order_up_to) on a
  forecast: ``seasonal_naive`` (each weekday as last week) or ``shelfcast`` (the forecasts
  the worker published), with the safety stock from that forecast's own recent errors;
* ``perfect_foresight``: the same rule on the true future demand, no safety stock: a bound.

docs/alerts.md, "Closed loop and reference policies", has the rules and the measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from models.forecast_table import FIELDS, ForecastTable
from models.recent import Peak
from streamer.alerts.reorder import ServiceMeasure, order_up_to, reorder_points
from streamer.eventtime.clock import DAY_SECONDS

__all__ = [
    "ERROR_WINDOW",
    "HORIZON",
    "MIN_MAX_SCALES",
    "SAME_STOCK",
    "SEASONAL_NAIVE_REVIEWS",
    "SERVICE_LEVELS",
    "Forecast",
    "Levels",
    "Outcome",
    "Panel",
    "Rule",
    "Setup",
    "at_stock",
    "compare",
    "min_max",
    "order_up_to_rule",
    "order_up_to_rules",
    "panel_of",
    "perfect_foresight",
    "published",
    "published_means",
    "references_at",
    "seasonal_naive",
    "simulate",
    "simulate_all",
]

HORIZON = 7
ERROR_WINDOW = 56  # recent errors per horizon behind the safety stock, as the worker keeps

# a policy's reorder level and order-up-to level of every series on day ``t`` (for
# ``simulate_all``, a row per policy)
Levels = Callable[[int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Panel:
    """Daily demand of ``series`` (``demand [n, days]``), the day each starts (its first
    order) and the stock it opens with."""

    series: list[str]
    demand: np.ndarray
    start: np.ndarray
    opening: np.ndarray


def panel_of(
    demand: Mapping[tuple[str, int], float], opening: Mapping[str, float]
) -> tuple[Panel, int]:
    """The panel of every series in ``demand`` (units per (series, day bucket)), each
    starting on its first day with demand, with its ``opening`` stock; and the first day.

    >>> p, first = panel_of({("a@X", 10): 2.0, ("a@X", 12): 1.0, ("b@X", 11): 4.0}, {"a@X": 5})
    >>> first, p.series, p.demand.tolist(), p.start.tolist(), p.opening.tolist()
    (10, ['a@X', 'b@X'], [[2.0, 0.0, 1.0], [0.0, 4.0, 0.0]], [0, 1], [5.0, 0.0])
    """
    series = sorted({s for s, _ in demand})
    days = [b for _, b in demand]
    first = min(days, default=0)
    out = np.zeros((len(series), max(days, default=0) - first + 1))
    row = {s: i for i, s in enumerate(series)}
    for (s, b), units in demand.items():
        out[row[s], b - first] += max(units, 0.0)
    start = np.argmax(out > 0, axis=1)
    stock = np.array([float(opening.get(s, 0.0)) for s in series])
    return Panel(series, out, start, stock), first


def published_means(forecasts: ForecastTable, panel: Panel, first: int) -> np.ndarray:
    """The mean of every step of the forecasts each series published, ``[n, days, HORIZON]``
    by the bucket they were issued at (NaN: none). Rollups and unknown series are skipped;
    of a redelivered forecast the first copy counts, as in the scores."""
    row = {s: i for i, s in enumerate(panel.series)}
    rows = np.array([row.get(s, -1) for s in forecasts.series], np.int64)[forecasts.sid]
    days = panel.demand.shape[1]
    day = forecasts.issued - first
    keep = (rows >= 0) & (day >= 0) & (day < days) & forecasts.first_copy
    out = np.full((len(panel.series), days, HORIZON), np.nan, np.float32)
    k = min(HORIZON, forecasts.steps.shape[1])
    out[rows[keep], day[keep], :k] = forecasts.steps[keep, :k, FIELDS.index("mean")]
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """Per series: units demanded, served and lost, days with a loss, the sum of end-of-day
    stock on hand over its days, its days, and orders placed."""

    demanded: np.ndarray
    served: np.ndarray
    stockout_days: np.ndarray
    on_hand_days: np.ndarray  # sum of end-of-day on hand, unit-days
    days: np.ndarray
    orders: np.ndarray

    def per_series(self) -> dict[str, np.ndarray]:
        """The measures of ``pooled`` for each series on its own."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "fill_rate": np.where(self.demanded > 0, self.served / self.demanded, 1.0),
                "lost_units": self.demanded - self.served,
                "stockout_days": self.stockout_days,
                "mean_on_hand_units": np.where(self.days > 0, self.on_hand_days / self.days, 0.0),
                "mean_on_hand_days": np.where(
                    self.demanded > 0, self.on_hand_days / self.demanded, 0.0
                ),
                "orders": self.orders,
            }

    def rows(self, keep: np.ndarray) -> Outcome:
        """The outcome of the series ``keep`` selects (a mask or indices)."""
        return Outcome(*(getattr(self, f)[keep] for f in self.__slots__))

    def pooled(self) -> dict[str, float]:
        """The measures over every series: fill rate = served / demanded, mean on hand in
        units (per series and day) and in days of demand (mean on hand / mean daily demand).

        >>> one = np.array([1.0])
        >>> Outcome(one * 10, one * 9, one, one * 40, one * 20, one * 2).pooled()["fill_rate"]
        0.9
        """
        demanded, days = float(self.demanded.sum()), float(self.days.sum())
        stock = float(self.on_hand_days.sum())
        return {
            "fill_rate": round(float(self.served.sum()) / demanded, 4) if demanded else 1.0,
            "lost_units": round(demanded - float(self.served.sum()), 1),
            "stockout_days": int(self.stockout_days.sum()),
            "mean_on_hand_units": round(stock / days, 3) if days else 0.0,
            "mean_on_hand_days": round(stock / demanded, 3) if demanded else 0.0,
            "orders": int(self.orders.sum()),
        }


def simulate(panel: Panel, levels: Levels, lead: int) -> Outcome:
    """Run one policy over every series at once, a day at a time."""

    def one(t: int) -> tuple[np.ndarray, np.ndarray]:
        s, up_to = levels(t)
        return s[None], up_to[None]

    return simulate_all(panel, one, lead, 1)[0]


def simulate_all(panel: Panel, levels: Levels, lead: int, count: int) -> list[Outcome]:
    """Run ``count`` policies over every series at once, a day at a time: ``levels`` gives
    each policy's levels as a row, ``[count, n]``. Each outcome is the one ``simulate`` gives
    its policy alone, to the bit: every step is elementwise."""
    n, days = panel.demand.shape
    lead = max(int(lead), 1)
    arriving = np.zeros((count, n, lead + 1))
    on_hand = np.zeros((count, n))
    on_order = np.zeros((count, n))
    out = {k: np.zeros((count, n)) for k in ("served", "stockout", "stock", "days", "orders")}
    for t in range(days):
        opening = panel.start == t
        on_hand[:, opening] = panel.opening[opening]
        alive = panel.start <= t
        slot = t % (lead + 1)
        on_hand += arriving[..., slot]
        on_order -= arriving[..., slot]
        arriving[..., slot] = 0.0
        demand = panel.demand[:, t]
        served = np.minimum(demand, on_hand)
        on_hand -= served
        out["served"] += served
        out["stockout"] += demand > served + 1e-9
        out["stock"] += np.where(alive, on_hand, 0.0)
        out["days"] += alive
        s, up_to = levels(t)
        position = on_hand + on_order
        order = np.where(alive & (position <= s), np.ceil(np.maximum(up_to - position, 0.0)), 0.0)
        arriving[..., (t + lead) % (lead + 1)] += order
        on_order += order
        out["orders"] += order > 0
    demanded = panel.demand.sum(axis=1)
    fields = ("served", "stockout", "stock", "days", "orders")
    return [Outcome(demanded, *(out[k][i] for k in fields)) for i in range(count)]


def _trailing_sum(cumulative: np.ndarray, t: int, span: int, start: np.ndarray) -> np.ndarray:
    """Each row's demand over its last ``span`` days up to and including day ``t``, from its
    start on; ``cumulative [n, days + 1]`` is the running sum with a leading zero column."""
    first = np.maximum(t + 1 - span, start)
    rows = np.arange(len(start))
    return cumulative[:, t + 1] - cumulative[rows, np.minimum(first, t + 1)]


def min_max(panel: Panel, min_days: float = 7, max_days: float = 21, window: int = 28) -> Levels:
    """min = ``min_days`` and max = ``max_days`` of the trailing ``window``-day mean demand."""
    cumulative = _cumulative(panel.demand)

    def levels(t: int) -> tuple[np.ndarray, np.ndarray]:
        seen = np.clip(t + 1 - panel.start, 1, window)
        mean = _trailing_sum(cumulative, t, window, panel.start) / seen
        return min_days * mean, max_days * mean

    return levels


def perfect_foresight(panel: Panel, lead: int, review: int) -> Levels:
    """The order-up-to rule on the true demand of the days ahead, with no safety stock."""
    cumulative = _cumulative(panel.demand)
    days = panel.demand.shape[1]

    def ahead(t: int, first: int, last: int) -> np.ndarray:
        return cumulative[:, min(t + last + 1, days)] - cumulative[:, min(t + first, days)]

    def levels(t: int) -> tuple[np.ndarray, np.ndarray]:
        s = ahead(t, 1, lead + review)
        return s, s + np.maximum(ahead(t, lead + review + 1, lead + 2 * review), 1.0)

    return levels


Forecast = Callable[[int], np.ndarray]  # the mean of the next HORIZON days issued on day t


def seasonal_naive(panel: Panel) -> Forecast:
    """Each of the next seven days as the same weekday last week."""

    def forecast(t: int) -> np.ndarray:
        cols = [t + 1 + k - HORIZON for k in range(HORIZON)]
        zero = np.zeros(len(panel.series))
        out = np.stack([panel.demand[:, c] if c >= 0 else zero for c in cols], axis=1)
        return np.where(panel.start[:, None] <= np.array(cols)[None, :], out, 0.0)

    return forecast


def published(forecasts: np.ndarray) -> Forecast:
    """The forecasts a worker published, ``[n, days, HORIZON]`` means (NaN: none that day)."""
    return lambda t: forecasts[:, t, :]


def order_up_to_rule(
    panel: Panel,
    forecast: Forecast,
    lead: float,
    review: float,
    service_level: float,
    measure: ServiceMeasure = ServiceMeasure.CYCLE,
    peak: Peak | None = None,
) -> Levels:
    """shelfcast's reorder point and order-up-to level on ``forecast``, the safety stock from
    its last ``ERROR_WINDOW`` errors at each horizon (Cornish-Fisher, as the worker), and the
    reorder point floored by the demand ``peak`` (the worker's counts open buckets, this one
    calendar days; None: no floor). A day without a forecast has no reorder point: nothing is
    ordered."""
    rules = order_up_to_rules(panel, forecast, lead, [Rule(service_level, review, peak)], measure)

    def levels(t: int) -> tuple[np.ndarray, np.ndarray]:
        s, up_to = rules(t)
        return s[0], up_to[0]

    return levels


@dataclass(frozen=True, slots=True)
class Rule:
    """The settings of one order-up-to rule on a forecast (``order_up_to_rule``)."""

    service_level: float
    review: float
    peak: Peak | None = None


def order_up_to_rules(
    panel: Panel,
    forecast: Forecast,
    lead: float,
    rules: Sequence[Rule],
    measure: ServiceMeasure = ServiceMeasure.CYCLE,
) -> Levels:
    """The levels of ``order_up_to_rule`` for each of ``rules`` on the same ``forecast``,
    ``[rules, n]``: the forecast's errors and their moments are the same for every rule, so
    they are kept once."""
    n = len(panel.series)
    issued: dict[int, np.ndarray] = {}
    errors = np.zeros((n, HORIZON, ERROR_WINDOW))
    seen = np.zeros((n, HORIZON), np.int64)
    # running sums of the window's squares and cubes: a day adds one error per horizon and
    # drops the one it overwrites, instead of summing the whole window again
    sum2, sum3 = np.zeros((n, HORIZON)), np.zeros((n, HORIZON))
    lead_days = np.full(n, float(lead))
    rows, steps = np.arange(n)[:, None], np.arange(HORIZON)[None, :]
    missing = np.full(n, np.nan)
    cumulative = _cumulative(panel.demand)
    peaks = [np.zeros(n) for _ in rules]

    def learn(t: int) -> None:
        """Day t's demand scores what was issued k days before, for every k at once."""
        past = np.stack(
            [issued[t - k][:, k - 1] if t - k in issued else missing for k in steps[0] + 1],
            axis=1,
        )
        e = panel.demand[:, t, None] - past
        ok = ~np.isnan(e)
        slot = seen % ERROR_WINDOW
        old = errors[rows, steps, slot]
        new = np.where(ok, e, old)
        sum2[...] += new * new - old * old
        sum3[...] += new * new * new - old * old * old
        errors[rows, steps, slot] = new
        seen[...] += ok

    def levels(t: int) -> tuple[np.ndarray, np.ndarray]:
        learn(t)
        issued.pop(t - HORIZON, None)
        means = forecast(t)
        issued[t] = means
        count = np.minimum(seen, ERROR_WINDOW)
        known = count >= 5
        divisor = np.maximum(count, 1)
        # a running sum can drift a hair below zero where the window holds only zeros
        m2, m3 = np.maximum(sum2 / divisor, 0.0), sum3 / divisor
        steps4 = np.repeat(np.nan_to_num(means)[:, :, None], 4, axis=2)
        none = np.isnan(means).any(axis=1)
        out = np.empty((2, len(rules), n))
        for i, rule in enumerate(rules):
            if rule.peak is not None:
                recent = _trailing_sum(cumulative, t, rule.peak.span, panel.start)
                peaks[i] = rule.peak.update(peaks[i], recent)
            rops = reorder_points(
                steps4, lead_days, rule.service_level, DAY_SECONDS, (m2, m3, known),
                rule.review, measure, peaks[i],
            )  # fmt: skip
            out[0, i] = np.where(none, -math.inf, rops.value)
            out[1, i] = order_up_to(out[0, i], rops.daily_mean, rule.review)
        return out[0], out[1]

    return levels


def _cumulative(demand: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((demand.shape[0], 1)), np.cumsum(demand, axis=1)], axis=1)


SERVICE_LEVELS = (0.90, 0.95, 0.98)
# the min/max rule's curve of stock against fill rate: its settings scaled
MIN_MAX_SCALES = (0.15, 0.2, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
# the seasonal-naive rule's curve: its review period in days, at the setup's service level. No
# service level brings its stock near shelfcast's (it repeats last week's one-off orders, so
# it keeps a lumpy series stocked for its next one); a shorter review does, as it would for a
# planner who reorders more often
SEASONAL_NAIVE_REVIEWS = (1, 2, 4, 5, 7)


@dataclass(frozen=True, slots=True)
class Setup:
    lead_days: int
    review_days: int
    service_level: float
    measure: ServiceMeasure = ServiceMeasure.CYCLE
    # the reorder points' floor, as the worker's; on the seasonal-naive rule's curve over
    # review periods its span follows the review, as a worker's would
    peak: Peak | None = None


def compare(panel: Panel, forecasts: np.ndarray, setup: Setup) -> tuple[dict, dict[str, Outcome]]:
    """Every policy on ``panel``: the pooled measures at ``setup``'s service level (the
    outcomes per series beside them), and the trade-off of fill rate against stock at each of
    SERVICE_LEVELS, with each reference's fill rate at shelfcast's stock."""
    lead, review = setup.lead_days, setup.review_days

    def rule(level: float, review: int = review) -> Rule:
        peak = setup.peak and replace(setup.peak, span=setup.peak.span + review - setup.review_days)
        return Rule(level, review, peak)

    forecasts_of = {"shelfcast": published(forecasts), "seasonal_naive": seasonal_naive(panel)}
    levels = sorted({*SERVICE_LEVELS, setup.service_level})
    # each forecast's rules, by key
    rules: dict[str, dict[tuple[str, float, int], Rule]] = {
        name: {(name, level, review): rule(level) for level in levels} for name in forecasts_of
    }
    chosen = setup.service_level
    for days in SEASONAL_NAIVE_REVIEWS:
        rules["seasonal_naive"].setdefault(("seasonal_naive", chosen, days), rule(chosen, days))
    # every simulation is independent of the others: keys name them; a forecast's rules run
    # together, sharing its errors
    jobs: list[tuple[list[object], Callable[[], list[Outcome]]]] = []
    for name, mine in rules.items():
        run = partial(_order_up_to, panel, forecasts_of[name], lead, [*mine.values()], setup)
        jobs.append((list(mine), run))
    foresight = perfect_foresight(panel, lead, review)
    jobs.append((["perfect_foresight"], lambda: [simulate(panel, foresight, lead)]))
    jobs.append((["min_max"], partial(_min_max, panel, lead, 1.0)))
    jobs += [([("min_max", f)], partial(_min_max, panel, lead, f)) for f in MIN_MAX_SCALES]
    done = _run_all(jobs)
    at = {(name, level): done[(name, level, review)] for name in forecasts_of for level in levels}
    outcomes = {name: at[(name, setup.service_level)] for name in forecasts_of}
    outcomes["min_max"] = done["min_max"]
    outcomes["perfect_foresight"] = done["perfect_foresight"]
    curve = [done[("min_max", f)].pooled() for f in MIN_MAX_SCALES]
    sn_curve = [done[("seasonal_naive", chosen, days)].pooled() for days in SEASONAL_NAIVE_REVIEWS]
    tradeoff = []
    for level in SERVICE_LEVELS:
        row = {name: at[(name, level)].pooled() for name in forecasts_of}
        row["min_max"] = outcomes["min_max"].pooled()
        row["perfect_foresight"] = outcomes["perfect_foresight"].pooled()
        tradeoff.append({"service_level": level, **row})
    summary = {
        "settings": {
            "lead_time_days": lead, "review_days": review,
            "service_level": setup.service_level, "service_measure": str(setup.measure),
            "peak_span_days": setup.peak.span if setup.peak else None,
            "peak_half_life_days": setup.peak.half_life if setup.peak else None,
            "series": len(panel.series),
            "days": int(panel.demand.shape[1]), "min_max_scales": list(MIN_MAX_SCALES),
            "seasonal_naive_reviews": list(SEASONAL_NAIVE_REVIEWS),
        },
        "policies": {name: out.pooled() for name, out in outcomes.items()},
        "tradeoff": tradeoff,
        "min_max_curve": curve,
        "seasonal_naive_curve": sn_curve,
    }  # fmt: skip
    for row in tradeoff:
        row["at_shelfcast_stock"] = references_at(summary, row["shelfcast"]["mean_on_hand_days"])
    return summary, outcomes


def _min_max(panel: Panel, lead: int, scale: float) -> list[Outcome]:
    return [simulate(panel, min_max(panel, 7 * scale, 21 * scale), lead)]


def _order_up_to(
    panel: Panel, forecast: Forecast, lead: int, rules: list[Rule], setup: Setup
) -> list[Outcome]:
    levels = order_up_to_rules(panel, forecast, lead, rules, setup.measure)
    return simulate_all(panel, levels, lead, len(rules))


# simulations at once: numpy lets go of the interpreter lock inside each day's array
# operations, so two share the 2 cores the replay has left (docs/benchmark.md)
THREADS = 2


def _run_all(jobs: list[tuple[list[object], Callable[[], list[Outcome]]]]) -> dict[object, Outcome]:
    """Each outcome by its key, from jobs that each give the outcomes of their ``keys``, run
    ``THREADS`` at a time."""
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = pool.map(lambda job: job[1](), jobs)
        return {
            key: outcome
            for (keys, _), done in zip(jobs, outcomes, strict=True)
            for key, outcome in zip(keys, done, strict=True)
        }


# "at the same stock": a curve's end counts for a stock this close to it (relative)
SAME_STOCK = 0.05


def at_stock(curve: list[dict[str, float]], stock: float) -> float | None:
    """A policy's fill rate at ``stock`` days of demand on hand, interpolated along its curve;
    beyond the curve's end but within ``SAME_STOCK`` of it, the end's (None farther out: no
    setting of it held about that much or that little).

    >>> curve = [{"mean_on_hand_days": 2, "fill_rate": 0.8},
    ...          {"mean_on_hand_days": 4, "fill_rate": 0.9}]
    >>> at_stock(curve, 3.0), at_stock(curve, 4.1), at_stock(curve, 5.0)
    (0.85, 0.9, None)
    """
    points = sorted((c["mean_on_hand_days"], c["fill_rate"]) for c in curve)
    xs = [x for x, _ in points]
    if not points or stock < xs[0] * (1 - SAME_STOCK) or stock > xs[-1] * (1 + SAME_STOCK):
        return None
    return round(float(np.interp(stock, xs, [y for _, y in points])), 4)


def references_at(summary: Mapping[str, Any], stock: float) -> dict[str, float | None]:
    """The min/max and seasonal-naive rules' fill rates at ``stock`` days, off their curves
    in ``compare``'s ``summary``."""
    return {
        "mean_on_hand_days": stock,
        "min_max_fill_rate": at_stock(summary["min_max_curve"], stock),
        "seasonal_naive_fill_rate": at_stock(summary["seasonal_naive_curve"], stock),
    }
