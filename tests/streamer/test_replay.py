import json
import math
from pathlib import Path

from streamer.replay import Produced, read_events, read_jsonl
from streamer.simulation import SimulationSettings, simulate
from tests.conftest import SAMPLE

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def test_online_retail_quirks_are_mapped(tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    csv.write_text(
        HEADER
        + "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
        + "536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"  # duplicate
        + "C536379,85123A,HEART,-1,2010-12-01 09:41:00,2.55,14527,United Kingdom\n"  # return
        + "536380,85123A,HEART,-12,2010-12-01 09:45:00,0,,United Kingdom\n"  # adjustment
        + "536381,POST,POSTAGE,1,2010-12-01 09:50:00,18,12583,France\n"  # not a product
    )
    events, stats = read_events(csv)
    assert (stats.orders, stats.returns, stats.adjustments, stats.skipped_non_product) == (
        2,
        1,
        1,
        1,
    )
    values = [json.loads(e.value) for e in events]
    assert [v["event_id"] for v in values] == [
        "536365:85123A:0", "536365:85123A:1", "C536379:85123A:0", "536380:85123A:0",
    ]  # fmt: skip
    assert [e.role for e in events] == ["orders", "orders", "orders", "inventory"]
    assert values[2]["quantity"] == -1
    assert values[3] == {
        "event_id": "536380:85123A:0", "ts": "2010-12-01T09:45:00", "sku": "85123A",
        "location": "United Kingdom", "delta": -12,
    }  # fmt: skip
    assert events[0].key == "85123A"  # keyed by SKU: all its locations in one partition
    assert events[0].ts == 1291191960.0


def test_sample_ids_are_unique_and_times_ordered() -> None:
    events, stats = read_events(SAMPLE)
    ids = [json.loads(e.value)["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == stats.lines - stats.skipped_non_product
    assert min(e.ts for e in events) >= 1291161600  # 2010-12-01


def test_jsonl_lines_are_produced_verbatim_bad_ones_included(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text('{"sku": "A", "location": "UK", "quantity": 1}\n\nnot json\n')
    events, stats = read_jsonl(path)
    assert [e.value for e in events] == [
        b'{"sku": "A", "location": "UK", "quantity": 1}',
        b"not json",
    ]
    assert [e.key for e in events] == ["A", None]  # keyed by SKU
    assert stats.lines == 2


def test_stock_simulation_opens_restocks_after_the_lead_time_and_counts_lost_sales() -> None:
    events, _ = read_events(SAMPLE, limit=3000)
    sim = SimulationSettings(opening_weeks=1, lead_time_days=2)
    merged, stats, trace = simulate(events, sim)
    assert stats.simulated and stats.settings["lead_time_days"] == 2
    inventory = [
        json.loads(e.value) for e in merged if e.role == "inventory" and b"sim:" in e.value
    ]
    snapshots = [v for v in inventory if "on_hand" in v]

    def series(e: Produced) -> str:
        v = json.loads(e.value)
        return f"{v['sku']}@{v['location']}"

    ordered = {series(e) for e in events if e.role == "orders"}
    assert len(snapshots) == stats.snapshots == len(ordered)
    assert stats.restocks == sum("delta" in v for v in inventory) > 0
    assert stats.lost_units > 0 and stats.stockouts > 0  # one week of stock runs out
    assert len(trace.stockouts) == stats.stockouts and len(trace.restocks) == stats.restocks
    # the stock path and the sales that explain a missed stock-out (streamer/alert_quality.py)
    units = sum(max(json.loads(e.value)["quantity"], 0) for e in events if e.role == "orders")
    assert sum(q for sold in trace.sales.values() for _, q in sold) == units
    for path in trace.levels.values():
        assert [ts for ts, _ in path] == sorted(ts for ts, _ in path)
    for s, ts in trace.stockouts:  # the stock path reaches zero at each stock-out
        assert min(v for t, v in trace.levels[s] if t == ts) <= 0
    assert [e.ts for e in merged] == sorted(e.ts for e in merged)
    first = {}
    for e in merged:
        first.setdefault((series(e), e.role), e.ts)
    for s in ordered:
        assert first[(s, "inventory")] < first[(s, "orders")]


def test_simulated_stock_holds_a_large_order_on_top_of_its_days_of_demand() -> None:
    day = 86_400.0

    def order(n: int, qty: int) -> Produced:
        msg = {"event_id": f"e{n}", "ts": "x", "sku": "A", "location": "UK", "quantity": qty}
        return Produced("orders", "A", json.dumps(msg).encode(), 1e9 + n * day)

    # two wholesale orders of 50 on the first days, then ten small ones: the 95th percentile
    # order is 50
    events = [order(0, 50), order(1, 50)] + [order(n, 1) for n in range(2, 12)]
    sim = SimulationSettings(opening_weeks=1, large_orders=1.0)
    merged, stats, trace = simulate(events, sim)
    opening = json.loads(next(e.value for e in merged if e.role == "inventory"))["on_hand"]
    mean = 110 / 11  # units per day over the series' life (11 days)
    assert opening == math.ceil(7 * mean + 50)
    assert stats.stockouts == 0 and trace.stockouts == []
    without = simulate(events, SimulationSettings(opening_weeks=1, large_orders=0.0))[1]
    assert without.stockouts == 1  # two wholesale orders empty a week of stock
