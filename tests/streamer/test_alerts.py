import pytest

from models.quantiles import Step
from streamer.alerts import CLEARED, RAISED, days_of_cover, next_status, reorder_point, severity


def steps(mean: float, spread: float, n: int = 7) -> list[Step]:
    return [Step(mean, mean - spread, mean, mean + spread) for _ in range(n)]


def test_reorder_point_is_lead_time_demand_plus_safety_stock() -> None:
    rop = reorder_point(steps(10, 0), lead_time_days=3, service_level=0.95, bucket_seconds=86_400)
    assert rop.lead_time_demand == pytest.approx(30)
    assert rop.safety_stock == pytest.approx(0)
    assert rop.value == pytest.approx(30)
    assert rop.daily_mean == pytest.approx(10)


def test_safety_stock_grows_with_spread_service_level_and_sqrt_lead_time() -> None:
    sigma = 2.563 / 2  # p10..p90 of width 2.563 sigma-units at spread 1.2816
    one = reorder_point(steps(10, 1.2816 * sigma), 1, 0.95, 86_400)
    four = reorder_point(steps(10, 1.2816 * sigma), 4, 0.95, 86_400)
    assert one.safety_stock == pytest.approx(1.6449 * sigma, rel=1e-3)
    assert four.safety_stock == pytest.approx(2 * one.safety_stock, rel=1e-6)
    assert reorder_point(steps(10, 3), 4, 0.99, 86_400).safety_stock > four.safety_stock


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
    assert next_status(CLEARED, on_hand=50, rop=50, hysteresis=0.2) == RAISED
    assert next_status(RAISED, on_hand=40, rop=50, hysteresis=0.2) is None
    assert next_status(RAISED, on_hand=55, rop=50, hysteresis=0.2) is None
    assert next_status(RAISED, on_hand=60, rop=50, hysteresis=0.2) is None
    assert next_status(RAISED, on_hand=61, rop=50, hysteresis=0.2) == CLEARED
    assert next_status(CLEARED, on_hand=51, rop=50, hysteresis=0.2) is None


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
