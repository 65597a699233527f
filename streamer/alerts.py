"""Reorder points from forecast quantiles, and the low-stock alert state machine.

Reorder point = expected demand over the lead time + safety stock, where the safety stock is
z(service level) * sigma_L and sigma_L combines the per-bucket spread implied by the forecast's
p10..p90 (a normal approximation: sigma = (p90 - p10) / 2.563). docs/alerts.md has the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from models.quantiles import Step

P10_P90_WIDTH_IN_SIGMA = 2 * 1.2815515655446004
RAISED, CLEARED = "raised", "cleared"


@dataclass(frozen=True, slots=True)
class ReorderPoint:
    lead_time_days: float
    lead_time_demand: float
    safety_stock: float
    daily_mean: float
    service_level: float

    @property
    def value(self) -> float:
        return self.lead_time_demand + self.safety_stock


def reorder_point(
    steps: list[Step], lead_time_days: float, service_level: float, bucket_seconds: int
) -> ReorderPoint:
    """Lead-time demand and safety stock over ``lead_time_days`` of forecast buckets.

    Beyond the forecast horizon the last step is repeated; a fractional last bucket counts in
    proportion.
    """
    per_day = 86_400 / bucket_seconds
    lead_buckets = lead_time_days * per_day
    demand = variance = 0.0
    k = 0
    while lead_buckets - k > 1e-9:
        step = steps[min(k, len(steps) - 1)]
        share = min(1.0, lead_buckets - k)
        sigma = (step.p90 - step.p10) / P10_P90_WIDTH_IN_SIGMA
        demand += share * step.mean
        variance += share * sigma * sigma
        k += 1
    z = NormalDist().inv_cdf(service_level)
    daily_mean = sum(s.mean for s in steps) / len(steps) * per_day
    return ReorderPoint(lead_time_days, demand, z * math.sqrt(variance), daily_mean, service_level)


def days_of_cover(on_hand: float, daily_mean: float) -> float | None:
    """None when there is no expected demand (cover is unbounded)."""
    if daily_mean <= 1e-9:
        return None
    return max(on_hand, 0.0) / daily_mean


def next_status(current: str, on_hand: float, rop: float, hysteresis: float) -> str | None:
    """The new alert status, or None when the state does not change.

    Raise at on_hand <= rop; clear only above rop * (1 + hysteresis) (and at least one unit
    above rop), so stock hovering around the reorder point does not flap.
    """
    if current != RAISED and on_hand <= rop:
        return RAISED
    if current == RAISED and on_hand > max(rop * (1 + hysteresis), rop + 1):
        return CLEARED
    return None


def severity(on_hand: float, daily_mean: float, lead_time_days: float) -> str:
    """critical when the projected stock-out comes before a reorder placed now could arrive."""
    cover = days_of_cover(on_hand, daily_mean)
    if cover is not None and cover < lead_time_days:
        return "critical"
    return "warning"
