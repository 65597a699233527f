"""Reorder points from forecasts and their recent errors, and the low-stock alert state machine.

Reorder point = expected demand over the protection interval (lead time + review period, the
time until the next chance to reorder) + safety stock. The safety stock is the service-level
quantile of the forecast error over that interval, from the published forecast's recent errors
at each of its horizons: their variances and third moments add up (errors
of different days taken as independent), and a Cornish-Fisher expansion turns them into the
quantile, z * sigma_L corrected for skew. The service level is a cycle service level, or
with ``ServiceMeasure.FILL_RATE`` a fill-rate target: z is then the one whose expected
shortage in an order cycle is that share of the cycle's demand, so a slow series with large
errors gets a higher z than a fast one. Errors, not the p10-p90 band: on lumpy demand the
band is often [0, 0] while a large order now and then empties the shelf, and only the errors
see those orders; and that skew is why a plain z * sigma * sqrt(L) falls short. Until a model
has errors, the band's normal approximation (sigma = (p90 - p10) / 2.563) stands in.
docs/alerts.md has the rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import orjson

from models.quantiles import MEAN, P10, P90, Z90
from models.recent import Peak
from streamer.config.sections import AlertSettings, ServiceMeasure
from streamer.eventtime.clock import DAY_SECONDS
from streamer.features.codec import CLEARED, RAISED, ROP_FIELDS

__all__ = [
    "MAX_SKEW",
    "P10_P90_WIDTH_IN_SIGMA",
    "ReorderPoint",
    "ReorderPoints",
    "ServiceMeasure",
    "days_of_cover",
    "inventory_position",
    "next_status",
    "order_quantity",
    "order_up_to",
    "packed_rops",
    "peak_rule",
    "reorder_point",
    "reorder_points",
    "safety_factor",
    "severity",
    "transitions",
]

P10_P90_WIDTH_IN_SIGMA = 2 * Z90


# Cornish-Fisher is a series in the skewness; beyond this it overshoots rather than corrects
MAX_SKEW = 4.0

# the standard normal loss function E[(Z - z)+] on a grid, decreasing in z, for the fill-rate
# z. It starts at 0: a fill rate that needs no safety stock needs none, and below 0 the skew's
# correction, made for the upper tail, would turn a negative z into a large safety stock
_Z_GRID = np.linspace(0.0, 4.0, 401)
_LOSS = np.array([NormalDist().pdf(z) - z * (1 - NormalDist().cdf(z)) for z in _Z_GRID])


@dataclass(frozen=True, slots=True)
class ReorderPoint:
    """One series' reorder point: the demand over the protection interval (lead time plus
    review period) and the safety stock on top, with the settings they were computed with."""

    lead_time_days: float
    lead_time_demand: float
    safety_stock: float
    daily_mean: float
    service_level: float
    review_days: float = 0.0
    service_measure: ServiceMeasure = ServiceMeasure.CYCLE

    @property
    def value(self) -> float:
        return self.lead_time_demand + self.safety_stock


@dataclass(frozen=True, slots=True)
class ReorderPoints:
    """The reorder points of many series: one value per row."""

    lead_time_days: np.ndarray
    lead_time_demand: np.ndarray
    safety_stock: np.ndarray
    daily_mean: np.ndarray
    service_level: float
    review_days: float
    service_measure: ServiceMeasure = ServiceMeasure.CYCLE

    @property
    def value(self) -> np.ndarray:
        return self.lead_time_demand + self.safety_stock

    def row(self, i: int) -> ReorderPoint:
        return ReorderPoint(
            float(self.lead_time_days[i]),
            float(self.lead_time_demand[i]),
            float(self.safety_stock[i]),
            float(self.daily_mean[i]),
            self.service_level,
            self.review_days,
            self.service_measure,
        )


def packed_rops(rops: ReorderPoints, forecast_ids: Sequence[str]) -> list[str]:
    """The ``shelfcast:{pP}:rop`` values of ``rops``, from the forecasts ``forecast_ids``:
    orjson writes the numbers of all of them in one call.

    >>> one = [np.array([v]) for v in (3.0, 4.0, 1.5, 0.5)]
    >>> packed_rops(ReorderPoints(*one, 0.95, 7.0), ["A1@UK|9|tsb@2"])
    ['[5.5,4.0,1.5,0.5,3.0,0.95,7.0,"cycle","A1@UK|9|tsb@2"]']
    """
    if not len(forecast_ids):
        return []
    n = len(forecast_ids)
    columns = {
        "rop": rops.value, "lt_demand": rops.lead_time_demand, "safety": rops.safety_stock,
        "daily_mean": rops.daily_mean, "rop_lead": rops.lead_time_days,
        "service_level": np.full(n, rops.service_level),
        "review_days": np.full(n, rops.review_days),
    }  # fmt: skip
    numeric = ROP_FIELDS[: ROP_FIELDS.index("service_measure")]
    numbers = np.column_stack([columns[name] for name in numeric]).astype(np.float64)
    rows = orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY).decode()[2:-2].split("],[")
    # every id escaped in one call: an escaped id holds no '","' (its quotes are '\\"')
    ids = orjson.dumps(list(forecast_ids)).decode()[2:-2].split('","')
    measure = rops.service_measure.value  # cycle or fill_rate: nothing to escape
    return [f'[{row},"{measure}","{fid}"]' for row, fid in zip(rows, ids, strict=True)]


def reorder_points(
    steps: np.ndarray,
    lead_time_days: np.ndarray,
    service_level: float,
    bucket_seconds: int,
    moments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    review_days: float = 0.0,
    measure: ServiceMeasure = ServiceMeasure.CYCLE,
    floor: np.ndarray | None = None,
) -> ReorderPoints:
    """Demand and safety stock over the protection interval: the lead time plus the review
    period (the time until the next chance to order), in forecast buckets, for every row of
    ``steps [n, horizon, 4]``. ``moments`` are the errors' mean square and cube ``[n,
    horizon]`` and where they are known; elsewhere the band stands in. ``service_level`` is
    of ``measure`` (``safety_factor``). The safety stock is raised, where need be, so that the
    reorder point reaches ``floor [n]`` (the series' demand peak, ``models.recent.Peak``).

    Beyond the forecast horizon the last step is repeated; a fractional last bucket counts in
    proportion. A bucket forecast closed (all zero) adds neither demand nor spread.
    """
    per_day = DAY_SECONDS / bucket_seconds
    n, horizon = steps.shape[:2]
    lead_buckets = (np.asarray(lead_time_days, np.float64) + review_days) * per_day
    closed = (steps == 0).all(axis=-1)
    band = ((steps[..., P90] - steps[..., P10]) / P10_P90_WIDTH_IN_SIGMA) ** 2
    if moments is None:
        m2, m3, known = np.zeros((n, horizon)), np.zeros((n, horizon)), np.zeros((n, horizon), bool)
    else:
        m2, m3, known = moments
    demand, variance, third = np.zeros(n), np.zeros(n), np.zeros(n)
    for k in range(int(np.ceil(lead_buckets.max(initial=0.0) - 1e-9))):
        i = min(k, horizon - 1)
        share = np.clip(lead_buckets - k, 0.0, 1.0)
        share = np.where(share > 1e-9, share, 0.0)
        demand += share * steps[:, i, MEAN]
        trading = share * ~closed[:, i]
        variance += trading * np.where(known[:, i], m2[:, i], band[:, i])
        third += trading * np.where(known[:, i], m3[:, i], 0.0)
    sigma = np.sqrt(variance)
    daily_mean = steps[..., MEAN].mean(axis=1) * per_day
    z = safety_factor(service_level, measure, order_up_to(0.0, daily_mean, review_days), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = np.where(sigma > 0, np.clip(third / sigma**3, -MAX_SKEW, MAX_SKEW), 0.0)
    safety = np.maximum(sigma * (z + (z * z - 1) * skew / 6), 0.0)
    if floor is not None:
        safety = np.maximum(safety, floor - demand)
    lead = np.broadcast_to(np.asarray(lead_time_days, np.float64), (n,))
    return ReorderPoints(lead, demand, safety, daily_mean, service_level, review_days, measure)


def peak_rule(alerts: AlertSettings, bucket_seconds: int) -> Peak:
    """The demand peak the bank keeps for the reorder points' floor: over the default
    protection interval (lead time + review period), fading by the configured half-life."""
    per_day = DAY_SECONDS / bucket_seconds
    span = round((alerts.lead_time_days + alerts.review_days) * per_day)
    return Peak(span, alerts.peak_half_life_days * per_day)


def safety_factor(
    service_level: float, measure: ServiceMeasure, cycle_demand: np.ndarray, sigma: np.ndarray
) -> np.ndarray:
    """The z of each row's safety stock ``z * sigma`` (before the skew's correction).

    For a cycle service level, the normal quantile: the chance that one protection interval
    passes without a stock-out. For a fill rate (units served / units demanded), the z
    whose expected shortage over the interval, ``sigma * G(z)`` with ``G`` the normal loss
    function, is ``1 - service_level`` of an order cycle's demand ``cycle_demand`` (what an
    order adds above the reorder point, ``order_up_to``), and 0 where a cycle's demand is so
    large against sigma that no safety stock is needed: the textbook rule for a fill-rate
    target (Silver, Pyke and Peterson, "Inventory Management and Production Planning and
    Scheduling", 3rd ed., section 7.9). A series whose errors are large against what it sells
    in a cycle, slow and lumpy, needs a higher z for the same fill rate than a steady one,
    which a cycle level cannot see.

    >>> cycle, sigma = np.array([700.0, 70.0, 7.0, 1.0]), np.array([10.0, 10.0, 10.0, 10.0])
    >>> safety_factor(0.95, ServiceMeasure.CYCLE, cycle, sigma).round(3).tolist()
    [1.645, 1.645, 1.645, 1.645]
    >>> safety_factor(0.95, ServiceMeasure.FILL_RATE, cycle, sigma).round(2).tolist()
    [0.0, 0.1, 1.42, 2.19]
    """
    sigma = np.asarray(sigma, np.float64)
    if measure == ServiceMeasure.CYCLE:
        return np.full(sigma.shape, NormalDist().inv_cdf(service_level))
    with np.errstate(divide="ignore"):
        shortage = (1 - service_level) * np.asarray(cycle_demand, np.float64) / sigma
    return np.interp(shortage, _LOSS[::-1], _Z_GRID[::-1])


def reorder_point(
    steps: np.ndarray,
    lead_time_days: float,
    service_level: float,
    bucket_seconds: int,
    moments: tuple[np.ndarray, np.ndarray] | None = None,
    review_days: float = 0.0,
    measure: ServiceMeasure = ServiceMeasure.CYCLE,
) -> ReorderPoint:
    """``reorder_points`` of one series: ``steps [horizon, 4]``, ``moments`` the mean square
    and cube of its errors per horizon.

    A series forecast at 4 a day (p10 2, p90 6) on every day ahead, with a lead time of 3 days:
    the demand over the lead time is 12, and the safety stock at a 95% cycle service level
    covers the band's spread over those days (sigma = (6 - 2) / 2.563 a day, times sqrt(3)
    days, times z = 1.645). A 95% fill rate, with a review every 3 days, needs less: an order
    cycle sells 12, four times the spread of the 3 days it protects:

    >>> steps = np.array([[4.0, 2.0, 4.0, 6.0]] * 7)  # mean, p10, p50, p90 for each day ahead
    >>> rop = reorder_point(steps, lead_time_days=3, service_level=0.95, bucket_seconds=86_400)
    >>> rop.lead_time_demand, round(rop.safety_stock, 2), round(rop.value, 2)
    (12.0, 4.45, 16.45)
    >>> fill_rate = reorder_point(steps, 0, 0.95, 86_400, None, 3, ServiceMeasure.FILL_RATE)
    >>> round(fill_rate.safety_stock, 2)
    1.15
    """
    known = None
    if moments is not None:
        m2, m3 = (np.asarray(m, np.float64)[None, :] for m in moments)
        known = (m2, m3, np.ones_like(m2, bool))
    rops = reorder_points(
        np.asarray(steps, np.float64)[None], np.array([lead_time_days]), service_level,
        bucket_seconds, known, review_days, measure,
    )  # fmt: skip
    return rops.row(0)


def days_of_cover(on_hand: float, daily_mean: float) -> float | None:
    """None when there is no expected demand (cover is unbounded)."""
    if daily_mean <= 1e-9:
        return None
    return max(on_hand, 0.0) / daily_mean


def order_up_to(
    rop: np.ndarray | float, daily_mean: np.ndarray | float, review_days: float
) -> np.ndarray:
    """The level a raised alert's order brings the inventory position up to: the reorder
    point plus the expected demand of one review period, and at least one unit above it.

    The reorder point already protects the lead time and a review period; ordering only up
    to it would reorder after every sale, one alert each. A review period's demand on top is
    the order cycle: about one order per review period.

    >>> float(order_up_to(12.0, 2.0, 7.0)), float(order_up_to(12.0, 0.01, 7.0))
    (26.0, 13.0)
    """
    return np.asarray(rop) + np.maximum(np.asarray(daily_mean) * review_days, 1.0)


def inventory_position(on_hand: Any, on_order: Any) -> Any:
    """What alerts compare with the reorder point: on hand + on order, with stock below zero
    counted as none. Negative stock is sales the records did not have (a count that was
    wrong, a correction still to come); shelves lose such sales rather than backorder them,
    so an order that made up for them would overstock (scalars and arrays alike).

    >>> int(inventory_position(4, 3)), int(inventory_position(-5, 3))
    (7, 3)
    >>> inventory_position(np.array([-2, 2]), np.array([1, 1])).tolist()
    [1, 3]
    """
    return np.maximum(on_hand, 0) + on_order


def order_quantity(up_to: float, position: int, pack_size: int | None) -> int:
    """Units to order: up to ``up_to`` from the inventory ``position``, rounded up to whole
    units and then to whole packs.

    >>> order_quantity(26.0, 9, None), order_quantity(26.2, 9, 12), order_quantity(5.0, 9, 6)
    (17, 24, 0)
    """
    units = max(math.ceil(up_to - position - 1e-9), 0)
    if pack_size and pack_size > 1:
        return -(-units // pack_size) * pack_size
    return units


def transitions(
    raised: np.ndarray,
    position: np.ndarray,
    rop: np.ndarray,
    hysteresis: float,
    previous: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows raise and which clear, from the inventory ``position`` (on hand + on order).

    Raise at position <= rop; clear only above rop * (1 + hysteresis) (and at least one unit
    above rop), so stock hovering around the reorder point does not flap. (A purchase order
    also clears a raised alert, which it acknowledges: the Lua walk of
    streamer/features/lua/apply.lua, where orders arrive.) At a close, the reorder point
    itself moves: a raised alert then clears only above the ``previous`` one too (NaN: none),
    or a reorder point that dips for one close would clear an alert the next close raises
    again.
    """
    raise_ = ~raised & (position <= rop)
    bar = rop if previous is None else np.fmax(rop, previous)
    clear = raised & (position > np.maximum(bar * (1 + hysteresis), bar + 1))
    return raise_, clear


def next_status(current: str, position: float, rop: float, hysteresis: float) -> str | None:
    """The new alert status of one series, or None when the state does not change."""
    up, down = transitions(np.array([current == RAISED]), position, rop, hysteresis)
    return RAISED if up[0] else CLEARED if down[0] else None


def severity(on_hand: float, daily_mean: float, lead_time_days: float) -> str:
    """critical when the projected stock-out comes before a reorder placed now could arrive."""
    cover = days_of_cover(on_hand, daily_mean)
    if cover is not None and cover < lead_time_days:
        return "critical"
    return "warning"
