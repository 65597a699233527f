"""Reorder points from forecasts and their recent errors, and the low-stock alert state machine.

Reorder point = expected demand over the protection interval (lead time + review period, the
time until the next chance to reorder) + safety stock. The safety stock is the service-level
quantile of the forecast error over that interval, from the selected model's recent errors
at each of its horizons: their variances and third moments add up (errors
of different days taken as independent), and a Cornish-Fisher expansion turns them into the
quantile, z * sigma_L corrected for skew. Errors, not the p10-p90 band: on lumpy demand the
band is often [0, 0] while a large order now and then empties the shelf, and only the errors
see those orders; and that skew is why a plain z * sigma * sqrt(L) falls short. Until a model
has errors, the band's normal approximation (sigma = (p90 - p10) / 2.563) stands in.
docs/alerts.md has the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from models.quantiles import CLOSED, Step

P10_P90_WIDTH_IN_SIGMA = 2 * 1.2815515655446004
RAISED, CLEARED = "raised", "cleared"
# Cornish-Fisher is a series in the skewness; beyond this it overshoots rather than corrects
MAX_SKEW = 4.0


@dataclass(frozen=True, slots=True)
class ReorderPoint:
    lead_time_days: float
    lead_time_demand: float
    safety_stock: float
    daily_mean: float
    service_level: float
    review_days: float = 0.0

    @property
    def value(self) -> float:
        return self.lead_time_demand + self.safety_stock


def reorder_point(
    steps: list[Step],
    lead_time_days: float,
    service_level: float,
    bucket_seconds: int,
    error_moments: list[tuple[float, float]] | None = None,
    review_days: float = 0.0,
) -> ReorderPoint:
    """Demand and safety stock over the protection interval: the lead time plus the review
    period (the time until the next chance to order), in forecast buckets.

    Beyond the forecast horizon the last step is repeated; a fractional last bucket counts in
    proportion. A bucket forecast closed adds neither demand nor spread.
    """
    per_day = 86_400 / bucket_seconds
    lead_buckets = (lead_time_days + review_days) * per_day
    demand = variance = third = 0.0
    k = 0
    while lead_buckets - k > 1e-9:
        i = min(k, len(steps) - 1)
        step = steps[i]
        share = min(1.0, lead_buckets - k)
        demand += share * step.mean
        if step == CLOSED:
            pass  # no trading, no demand and no error
        elif error_moments is not None:
            variance += share * error_moments[i][0]
            third += share * error_moments[i][1]
        else:
            variance += share * ((step.p90 - step.p10) / P10_P90_WIDTH_IN_SIGMA) ** 2
        k += 1
    z = NormalDist().inv_cdf(service_level)
    sigma = math.sqrt(variance)
    skew = min(max(third / sigma**3, -MAX_SKEW), MAX_SKEW) if sigma > 0 else 0.0
    safety = max(sigma * (z + (z * z - 1) * skew / 6), 0.0)
    daily_mean = sum(s.mean for s in steps) / len(steps) * per_day
    return ReorderPoint(lead_time_days, demand, safety, daily_mean, service_level, review_days)


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
