"""Reference reorder policies on hand-made demand with known outcomes."""

import numpy as np
import pytest

from models.recent import Peak
from streamer.alerts.reorder import ServiceMeasure
from streamer.ops.policies import (
    SEASONAL_NAIVE_REVIEWS,
    Panel,
    Rule,
    Setup,
    at_stock,
    compare,
    min_max,
    order_up_to_rule,
    order_up_to_rules,
    perfect_foresight,
    published,
    seasonal_naive,
    simulate,
    simulate_all,
)


def panel(*rows: list[float], opening: float = 0.0, start: int = 0) -> Panel:
    demand = np.array(rows, float)
    n = len(rows)
    return Panel([f"s{i}@X" for i in range(n)], demand, np.full(n, start), np.full(n, opening))


def test_the_daily_review_loses_what_finds_no_stock_and_counts_orders_and_stock() -> None:
    """s = 5, S = 12, lead 2, opening 8, worked by hand: orders of 9 (day 1), 8 (day 3) and 9
    (day 5); days 2 and 4 run out (3 units lost); end-of-day stock 8, 3, 0, 4, 0, 3."""
    p = panel([0, 5, 5, 5, 5, 5], opening=8)
    fixed = (np.array([5.0]), np.array([12.0]))
    out = simulate(p, lambda t: fixed, lead=2)
    assert out.pooled() == {
        "fill_rate": round(22 / 25, 4),
        "lost_units": 3.0,
        "stockout_days": 2,
        "mean_on_hand_units": 3.0,
        "mean_on_hand_days": round(18 / 25, 3),
        "orders": 3,
    }


def test_min_max_reorders_at_seven_days_up_to_twenty_one() -> None:
    """4 a day: min 28, max 84. From 100, the position reaches 28 on day 17 (order 56, in on
    day 20) and again on day 31: two orders, nothing lost."""
    p = panel([4.0] * 40, opening=100)
    out = simulate(p, min_max(p), lead=3)
    assert out.orders.tolist() == [2]
    assert out.pooled()["fill_rate"] == 1.0 and out.pooled()["stockout_days"] == 0


def test_perfect_foresight_never_loses_lumpy_demand() -> None:
    rng = np.random.default_rng(7)
    lumpy = np.where(rng.random(120) < 0.15, rng.integers(5, 60, 120), 0).astype(float)
    p = panel(lumpy.tolist(), opening=float(lumpy[:4].sum()))
    out = simulate(p, perfect_foresight(p, lead=3, review=7), lead=3)
    assert out.pooled()["fill_rate"] == 1.0
    # and a shop with no foresight loses some of it at far more stock
    blind = simulate(p, min_max(p), lead=3).pooled()
    assert blind["fill_rate"] < 1.0


@pytest.mark.parametrize("service", [0.9, 0.98])
def test_seasonal_naive_on_a_weekly_pattern_forecasts_exactly_and_never_runs_out(
    service: float,
) -> None:
    """Each weekday sells the same every week: from the second week on the forecast has no
    error, so no safety stock, and the order-up-to rule keeps the shelf stocked."""
    week = [3.0, 0.0, 8.0, 1.0, 0.0, 12.0, 5.0]
    p = panel(week * 10, opening=60)
    levels = order_up_to_rule(p, seasonal_naive(p), lead=3, review=7, service_level=service)
    out = simulate(p, levels, lead=3)
    assert out.pooled()["fill_rate"] == 1.0


def test_rules_on_one_forecast_simulated_together_give_each_one_alone_to_the_bit() -> None:
    rng = np.random.default_rng(11)
    lumpy = np.where(rng.random((40, 90)) < 0.2, rng.integers(1, 30, (40, 90)), 0).astype(float)
    p = Panel([f"s{i}@X" for i in range(40)], lumpy, rng.integers(0, 20, 40), np.full(40, 10.0))
    peak = Peak(span=5, half_life=14.0)
    rules = [Rule(0.9, 7), Rule(0.98, 7, peak), Rule(0.95, 2, peak)]
    together = simulate_all(p, order_up_to_rules(p, seasonal_naive(p), 3, rules), 3, len(rules))
    for rule, outcome in zip(rules, together, strict=True):
        levels = order_up_to_rule(p, seasonal_naive(p), 3, rule.review, rule.service_level,
                                  peak=rule.peak)  # fmt: skip
        alone = simulate(p, levels, lead=3)
        for field in alone.__slots__:
            assert np.array_equal(getattr(outcome, field), getattr(alone, field)), field
    assert together[0].orders.sum() > 0


def test_a_day_without_a_forecast_orders_nothing() -> None:
    p = panel([2.0] * 20, opening=5)
    none = np.full((1, 20, 7), np.nan)
    levels = order_up_to_rule(p, lambda t: none[:, t, :], lead=2, review=7, service_level=0.95)
    assert simulate(p, levels, lead=2).orders.tolist() == [0]


@pytest.mark.parametrize("target", [0.9, 0.95, 0.98])
def test_a_fill_rate_target_is_about_what_the_shelves_serve_when_the_forecast_is_right(
    target: float,
) -> None:
    """Lumpy gamma demand (mean 20, CV 1.4) on 300 series, reviewed daily: with the true mean
    as the forecast and its errors behind the safety stock, the rule serves the target's
    share of the units or a little more: the shortage's normal approximation overstates it
    on skewed errors, and the most at the lowest target (96% at 0.9, 97% at 0.95)."""
    rng = np.random.default_rng(3)
    p = panel(*rng.gamma(0.5, 40.0, (300, 400)).round().tolist(), opening=200)
    truth = np.full((300, 400, 7), 20.0)
    levels = order_up_to_rule(p, published(truth), 3, 1, target, ServiceMeasure.FILL_RATE)
    assert target <= simulate(p, levels, lead=3).pooled()["fill_rate"] <= target + 0.06


def test_the_demand_peak_keeps_a_lumpy_series_ready_for_its_next_large_order() -> None:
    """5 a day and a box of 100 every 80 days, forecast at its true mean: by the next box
    the errors' window (56 days) has forgotten the last, and the rule alone keeps ten days of
    the mean; floored by the peak of 10 days' demand (half-life 224 days), it keeps most of a
    box, losing an eighth of the units for 4% more stock."""
    days = 250
    p = panel([100.0 if t % 80 == 12 else 5.0 for t in range(days)], opening=20)
    mean = np.full((1, days, 7), float(p.demand.mean()))
    plain = simulate(p, order_up_to_rule(p, published(mean), 3, 7, 0.95), lead=3).pooled()
    peak = Peak(span=10, half_life=224.0)
    rule = order_up_to_rule(p, published(mean), 3, 7, 0.95, peak=peak)
    floored = simulate(p, rule, lead=3).pooled()
    assert (plain["lost_units"], floored["lost_units"]) == (87.0, 11.0)
    assert floored["mean_on_hand_units"] < 1.05 * plain["mean_on_hand_units"]


def test_the_comparison_reads_each_reference_at_shelfcasts_stock_off_its_curve() -> None:
    """The seasonal-naive rule's curve runs over review periods, the min/max rule's over
    scaled settings; each reference's fill rate at shelfcast's stock is read off its curve."""
    rng = np.random.default_rng(5)
    p = panel(*rng.gamma(0.4, 20.0, (40, 120)).round().tolist(), opening=40)
    forecasts = np.full((40, 120, 7), float(p.demand.mean()))
    summary, outcomes = compare(p, forecasts, Setup(3, 7, 0.95, peak=Peak(10, 224.0)))
    sn = summary["seasonal_naive_curve"]
    assert len(sn) == len(SEASONAL_NAIVE_REVIEWS)
    assert sn[SEASONAL_NAIVE_REVIEWS.index(7)] == outcomes["seasonal_naive"].pooled()
    stock = [c["mean_on_hand_days"] for c in sn]
    assert stock[0] < stock[-1]  # reviewing less often holds more
    for row in summary["tradeoff"]:
        at = row["at_shelfcast_stock"]
        assert at["seasonal_naive_fill_rate"] is not None and at["min_max_fill_rate"] is not None
        assert at["seasonal_naive_fill_rate"] == at_stock(sn, at["mean_on_hand_days"])
        assert at["min_max_fill_rate"] == at_stock(
            summary["min_max_curve"], at["mean_on_hand_days"]
        )
    assert summary["settings"]["seasonal_naive_reviews"] == list(SEASONAL_NAIVE_REVIEWS)
