import pytest

from streamer.ops.alert_quality import DAY, MISSES, explain_stockouts, miss_breakdown, score_alerts


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


def test_each_missed_stockout_gets_its_cause() -> None:
    d = DAY
    # every series lives from day 0 but Y, which begins on day 9; lead time 2, protection 4
    lives = {s: (0.0, 20 * d) for s in "WCBLO"} | {"Y": (9 * d, 20 * d)}
    alerts = [
        ("W", "raised", 1 * d),  # warned 3 days ahead
        # up two days ahead, cleared by a restock, raised again too late
        ("C", "raised", 1 * d), ("C", "cleared", 8.5 * d), ("C", "raised", 9.5 * d),
        ("L", "raised", 9 * d),  # one day ahead: too late for a 2-day lead time
    ]  # fmt: skip
    stockouts = [(s, 10 * d) for s in "WCBLOY"]
    # two days before the stock-outs (day 8), on hand vs. the most sold in any 4 days
    levels = {
        "W": [(0.0, 10)], "C": [(0.0, 10), (8.5 * d, 60)], "Y": [(9 * d, 5)],
        "B": [(0.0, 100), (7 * d, 40)],  # 40 on hand, never sold more than 30 in 4 days
        "L": [(0.0, 100), (7 * d, 25)],  # 25 on hand, sold 30 in 4 days before
        "O": [(0.0, 100), (7 * d, 25)],  # as L, but its 30 units sold straddle the cut
    }  # fmt: skip
    sales = {
        "B": [(1 * d, 10), (2 * d, 20), (6 * d, 20)],  # most in 4 days: 30 (days 1-2)
        "L": [(1 * d, 10), (2 * d, 20), (6 * d, 20)],
        "O": [(5 * d, 10), (7.5 * d, 20), (8.5 * d, 500)],  # before day 8: 30 (days 5-7.5)
    }
    explained = explain_stockouts(alerts, stockouts, levels, sales, lives, 2, 4)
    outcome = {s.series: s.outcome for s in explained}
    assert outcome == {
        "W": "warned", "C": "cleared_before", "B": "beyond_history", "L": "raised_late",
        "O": "raised_late", "Y": "series_too_young",
    }  # fmt: skip
    by_series = {s.series: s for s in explained}
    assert by_series["W"].warning_days == pytest.approx(9.0)
    assert by_series["L"].warning_days == pytest.approx(1.0)
    assert by_series["B"].warning_days is None
    assert (by_series["B"].on_hand_lead_time_before, by_series["B"].largest_interval_demand) == (
        40,
        30,
    )
    assert by_series["O"].largest_interval_demand == 30  # the 500 after day 8 is not seen
    assert by_series["Y"].on_hand_lead_time_before is None
    m = miss_breakdown(explained)
    assert {k: m[k] for k in MISSES} == {
        "series_too_young": 1, "cleared_before": 1, "beyond_history": 1, "raised_late": 2,
    }  # fmt: skip
    # W, C, L, O are foreseeable; W was warned
    assert m["recall_foreseeable"] == pytest.approx(1 / 4)
    # the breakdown counts what recall counts
    q = score_alerts(alerts, stockouts, [], lead_time_days=2)
    assert q["recall"] == pytest.approx(1 / 6)


def test_changes_at_the_same_time_keep_their_published_order() -> None:
    # an order raises the alert and the bucket close it runs clears it, both at its time
    d = DAY
    alerts = [("a", "raised", 1 * d), ("a", "cleared", 1 * d)]
    q = score_alerts(alerts, [("a", 5 * d)], [], lead_time_days=3, lives={"a": (0.0, 10 * d)})
    assert q["recall"] == 0.0 and q["alert_active_share"] == 0.0
    explained = explain_stockouts(alerts, [("a", 5 * d)], {}, {}, {"a": (0.0, 10 * d)}, 3, 10)
    assert [s.outcome for s in explained] == ["raised_late"]
