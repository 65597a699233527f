import numpy as np
import pytest

from streamer.alerts.reorder import (
    CLEARED,
    RAISED,
    ServiceMeasure,
    days_of_cover,
    next_status,
    order_quantity,
    order_up_to,
    reorder_point,
    reorder_points,
    safety_factor,
    severity,
    transitions,
)

CLOSED = [0.0, 0.0, 0.0, 0.0]
CYCLE = ServiceMeasure.CYCLE


def steps(mean: float, spread: float, n: int = 7) -> np.ndarray:
    return np.array([[mean, mean - spread, mean, mean + spread]] * n)


def moments_of(pairs: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([m2 for m2, _ in pairs]), np.array([m3 for _, m3 in pairs])


def test_reorder_point_is_lead_time_demand_plus_safety_stock() -> None:
    rop = reorder_point(steps(10, 0), lead_time_days=3, service_level=0.95, bucket_seconds=86_400)
    assert rop.lead_time_demand == pytest.approx(30)
    assert rop.safety_stock == pytest.approx(0)
    assert rop.value == pytest.approx(30)
    assert rop.daily_mean == pytest.approx(10)


def test_safety_stock_grows_with_spread_service_level_and_sqrt_lead_time() -> None:
    sigma = 2.563 / 2  # p10..p90 of width 2.563 sigma-units at spread 1.2816
    one = reorder_point(steps(10, 1.2816 * sigma), 1, 0.95, 86_400, measure=CYCLE)
    four = reorder_point(steps(10, 1.2816 * sigma), 4, 0.95, 86_400, measure=CYCLE)
    assert one.safety_stock == pytest.approx(1.6449 * sigma, rel=1e-3)
    assert four.safety_stock == pytest.approx(2 * one.safety_stock, rel=1e-6)
    higher = reorder_point(steps(10, 3), 4, 0.99, 86_400, measure=CYCLE)
    assert higher.safety_stock > four.safety_stock


def test_safety_stock_from_recent_errors_is_z_sigma_sqrt_l_when_they_are_symmetric() -> None:
    moments = [(4.0, 0.0)] * 7  # errors of +-2: sigma 2 per day, no skew
    rop = reorder_point(steps(10, 0), 4, 0.95, 86_400, moments_of(moments), measure=CYCLE)
    assert rop.safety_stock == pytest.approx(1.6449 * 2 * 2, rel=1e-3)  # z * sigma * sqrt(4)


def test_lumpy_demand_gets_the_safety_stock_its_big_orders_need() -> None:
    # a box of 60 one day in 20, nothing otherwise: mean 3/day, and the forecast band is flat
    # [0, 0] most days. The 95% quantile of 3 days of demand is one box (P = 14% > 5%).
    p, box = 1 / 20, 60.0
    errors = [(box - 3.0) if i < 1 else -3.0 for i in range(20)]
    moments = [(sum(e * e for e in errors) / 20, sum(e**3 for e in errors) / 20)] * 7
    flat = np.array([[3.0, 0.0, 0.0, 0.0]] * 7)
    rop = reorder_point(flat, 3, 0.95, 86_400, moments_of(moments), measure=CYCLE)
    band = reorder_point(flat, 3, 0.95, 86_400, measure=CYCLE)
    assert band.value == pytest.approx(9.0)  # the band alone: no safety stock at all
    normal = 1.6449 * (p * (1 - p)) ** 0.5 * box * 3**0.5
    assert rop.safety_stock > normal  # the skew correction adds to z * sigma * sqrt(L)
    assert box * 0.9 <= rop.value <= box * 1.3


def test_closed_days_in_the_lead_time_add_no_demand_and_no_spread() -> None:
    closed = np.array([[10, 8, 10, 12], CLOSED, CLOSED, [10, 8, 10, 12]], float)
    rop = reorder_point(closed, 3, 0.95, 86_400, moments_of([(4.0, 0.0)] * 4), measure=CYCLE)
    assert rop.lead_time_demand == pytest.approx(10)
    assert rop.safety_stock == pytest.approx(1.6449 * 2, rel=1e-3)


def test_a_fill_rate_target_leaves_that_share_of_an_order_cycle_short() -> None:
    # normal errors of sigma 10 over the protection interval: the expected shortage of the
    # safety stock, E[(X - ss)+], is 5% of what an order cycle sells
    sigma, x = 10.0, np.linspace(-80.0, 80.0, 160_001)
    density = np.exp(-0.5 * (x / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    for cycle in (1.0, 7.0, 70.0):
        z = safety_factor(0.95, ServiceMeasure.FILL_RATE, np.array([cycle]), np.array([sigma]))
        shortage = np.sum(np.maximum(x - z[0] * sigma, 0.0) * density) * (x[1] - x[0])
        assert shortage == pytest.approx(0.05 * cycle, rel=1e-3)


def test_a_fill_rate_protects_slow_series_more_and_steady_ones_less_than_a_cycle_level() -> None:
    moments = moments_of([(4.0, 0.0)] * 7)  # sigma 2 a day
    slow, fast = steps(0.2, 0), steps(40, 0)

    def safety(s: np.ndarray, measure: ServiceMeasure) -> float:
        return reorder_point(s, 3, 0.95, 86_400, moments, 7, measure).safety_stock

    assert safety(slow, ServiceMeasure.FILL_RATE) > safety(slow, CYCLE)
    assert safety(fast, ServiceMeasure.FILL_RATE) < safety(fast, CYCLE)


def test_a_fill_rate_that_needs_no_safety_stock_gets_none_whatever_the_errors_skew() -> None:
    # a fast steady series: a weekly cycle sells 700, far more than the errors' spread; the
    # skew's correction, made for the upper tail, must not turn that into a safety stock
    for sigma in (15.8, 9.49, 6.32):
        m2 = sigma**2 / 10  # a day's, so that the 10 days protected add up to sigma**2
        moments = moments_of([(m2, 13.0 * m2**1.5)] * 7)  # a skew of 4 over the 10 days
        rop = reorder_point(steps(100, 0), 3, 0.95, 86_400, moments, 7, ServiceMeasure.FILL_RATE)
        assert rop.safety_stock == 0.0


def test_lead_time_beyond_the_horizon_repeats_the_last_step_and_counts_fractions() -> None:
    rop = reorder_point(
        steps(2, 0, n=7), lead_time_days=9.5, service_level=0.9, bucket_seconds=86_400
    )
    assert rop.lead_time_demand == pytest.approx(19)


def test_hourly_buckets_scale_lead_time() -> None:
    rop = reorder_point(steps(1, 0), lead_time_days=0.25, service_level=0.9, bucket_seconds=3_600)
    assert rop.lead_time_demand == pytest.approx(6)
    assert rop.daily_mean == pytest.approx(24)


def test_hysteresis_raises_at_the_reorder_point_and_clears_only_above_the_margin() -> None:
    assert next_status(CLEARED, position=50, rop=50, hysteresis=0.2) == RAISED
    assert next_status(RAISED, position=40, rop=50, hysteresis=0.2) is None
    assert next_status(RAISED, position=55, rop=50, hysteresis=0.2) is None
    assert next_status(RAISED, position=60, rop=50, hysteresis=0.2) is None
    assert next_status(RAISED, position=61, rop=50, hysteresis=0.2) == CLEARED
    assert next_status(CLEARED, position=51, rop=50, hysteresis=0.2) is None


def test_a_run_of_orders_below_the_reorder_point_changes_state_once() -> None:
    status, changes = CLEARED, 0
    for on_hand in range(100, 0, -1):
        new = next_status(status, on_hand, rop=50, hysteresis=0.2)
        if new:
            status, changes = new, changes + 1
    assert (status, changes) == (RAISED, 1)


def test_severity_and_cover() -> None:
    assert days_of_cover(20, 10) == 2
    assert days_of_cover(-5, 10) == 0
    assert days_of_cover(5, 0) is None
    assert severity(20, 10, lead_time_days=3) == "critical"
    assert severity(40, 10, lead_time_days=3) == "warning"
    assert severity(40, 0, lead_time_days=3) == "warning"


def test_at_a_close_a_raised_alert_clears_only_above_the_previous_reorder_point_too() -> None:
    raised = np.array([True, True, True])
    on_hand = np.array([70, 70, 70])
    rop = np.array([50.0, 50.0, 50.0])  # the new reorder point, 70 > 60 would clear
    previous = np.array([np.nan, 50.0, 80.0])
    _, clear = transitions(raised, on_hand, rop, 0.2, previous)
    assert clear.tolist() == [True, True, False]  # the one that dipped from 80 stays raised


def test_the_recommended_order_brings_the_position_to_a_review_period_above_the_point() -> None:
    rop, daily, review = 50.0, 1.0, 7.0
    up_to = float(order_up_to(rop, daily, review))
    assert up_to == 57.0
    assert next_status(CLEARED, position=50, rop=rop, hysteresis=0.5) == RAISED
    assert order_quantity(up_to, position=50, pack_size=None) == 7
    # a position that only the order lifts is still below the hysteresis margin: the alert
    # is cleared by the purchase order itself (tests/streamer/features/test_store.py)
    assert next_status(RAISED, position=57, rop=rop, hysteresis=0.5) is None


def test_order_quantities_round_up_to_units_then_packs_and_never_go_negative() -> None:
    assert order_quantity(57.2, position=40, pack_size=None) == 18
    assert order_quantity(57.2, position=40, pack_size=6) == 18
    assert order_quantity(57.2, position=40, pack_size=12) == 24
    assert order_quantity(57.0, position=57, pack_size=12) == 0
    assert order_quantity(57.0, position=-10, pack_size=1) == 67  # a backlog is made up too
    assert order_quantity(30.0, position=80, pack_size=None) == 0


def test_the_demand_peak_floors_the_reorder_point_and_never_lowers_it() -> None:
    """A slow series that took one wholesale order of 60 recently: its forecast and errors
    ask for 9 units, its peak for 60; a steady one above its peak keeps its own point."""
    flat = np.stack([np.array([[3.0, 0.0, 0.0, 0.0]] * 7), steps(40, 0)])
    lead = np.array([3.0, 3.0])
    plain = reorder_points(flat, lead, 0.95, 86_400)
    floored = reorder_points(flat, lead, 0.95, 86_400, floor=np.array([60.0, 60.0]))
    assert plain.value.tolist() == pytest.approx([9.0, 120.0])
    assert floored.value.tolist() == pytest.approx([60.0, 120.0])
    assert floored.safety_stock.tolist() == pytest.approx([51.0, 0.0])  # the lift is safety stock
    assert floored.lead_time_demand.tolist() == plain.lead_time_demand.tolist()
