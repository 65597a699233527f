import pytest

from streamer.alert_quality import DAY, score_alerts


def test_hand_made_scenario_with_known_answers() -> None:
    d = DAY
    alerts = [
        # A: raised 3 days ahead of its stock-out (early enough), cleared by the restock,
        # raised again 0.3 days after clearing (a flap), then restocked within the lead time
        ("A", "raised", 0 * d), ("A", "cleared", 4.2 * d), ("A", "raised", 4.5 * d),
        # C: raised only one day before its stock-out (too late for a 2-day lead time)
        ("C", "raised", 1 * d),
        # D: raised and never followed by a stock-out or a restock (a false alarm)
        ("D", "raised", 10 * d),
        # E: raised, but cleared before the stock-out (the stock-out is not warned)
        ("E", "raised", 0 * d), ("E", "cleared", 1 * d),
    ]  # fmt: skip
    stockouts = [("A", 3 * d), ("B", 2 * d), ("C", 2 * d), ("E", 3 * d)]  # B: never alerted
    restocks = [("A", 4 * d), ("A", 5 * d)]
    lives = {s: (0.0, 10 * d) for s in "ABCDE"}
    q = score_alerts(alerts, stockouts, restocks, lead_time_days=2, lives=lives)
    assert q["stockouts"] == 4
    assert q["alerts_raised"] == 5
    assert q["recall"] == pytest.approx(1 / 4)  # only A was warned a lead time ahead
    assert q["warned_stockouts"] == 2  # A (3 days) and C (1 day)
    assert q["median_warning_days"] == pytest.approx(2.0)
    # false alarms: A's first raise (its stock-out came after the lead time), D, E
    assert q["false_alarm_rate"] == pytest.approx(3 / 5)
    assert q["flapping_rate"] == pytest.approx(1 / 5)
    # raised for A 4.2 + 5.5 days, C 9, D 0 (at the end), E 1: 19.7 of 50 series-days
    assert q["alert_active_share"] == pytest.approx(19.7 / 50)


def test_no_alerts_and_no_stockouts() -> None:
    q = score_alerts([], [], [], lead_time_days=3)
    assert q["stockouts"] == 0 and q["recall"] is None and q["false_alarm_rate"] is None
    assert q["alert_active_share"] is None
