import gzip
import json
import math
import re
from pathlib import Path

import pytest

from streamer.ops.replay import (
    InputError,
    InputFormat,
    Produced,
    guess_format,
    parse_columns,
    read_events,
    read_jsonl,
)
from streamer.ops.simulation import SimulationSettings, simulate
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
    # the stock path and the sales that explain a missed stock-out (streamer/ops/alert_quality.py)
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


# --- your own data: format guess, column mapping, dates ------------------------------------


def test_a_csv_with_role_named_columns_is_read_as_csv_not_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "sku,location,quantity,ts\n"
        "A1,Store 1,3,2011-01-04T10:00:00\n"
        "A1,Store 1,-1,2011-01-04T11:00:00+01:00\n"
        "B2,,1,2011-01-04T10:00:00\n"
        "B2,Store 2,2.5,2011-01-04T10:00:00\n"
        "B2,Store 2,0,2011-01-04T10:00:00\n"
    )
    assert guess_format(path) == "csv"
    events, stats = read_events(path)
    values = [json.loads(e.value) for e in events]
    assert values == [
        {"event_id": "mine.csv:2", "ts": "2011-01-04T10:00:00", "sku": "A1",
         "location": "Store 1", "quantity": 3},
        {"event_id": "mine.csv:3", "ts": "2011-01-04T10:00:00", "sku": "A1",
         "location": "Store 1", "quantity": -1},  # the offset folded into UTC
    ]  # fmt: skip
    assert [e.key for e in events] == ["A1", "A1"]  # keyed by SKU
    assert events[0].ts == 1294135200.0
    assert (stats.lines, stats.orders, stats.returns, stats.format) == (5, 1, 1, "csv")
    assert stats.skipped == {
        "empty location": 1, "quantity not a whole number": 1, "zero quantity": 1,
    }  # fmt: skip


def test_columns_map_a_custom_header_and_a_date_format(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("Order Date;Item;Store;Qty;Price;Customer\n")
        f.write("12/1/2010 8:26;X1;S1;4;1.5;C9\n13/1/2010 9:00;X1;S1;2;1.25;\n")
    how = InputFormat(
        "csv",
        parse_columns(
            "ts=Order Date,sku=Item,location=Store,quantity=Qty,unit_price=Price,"
            "customer_id=Customer"
        ),
        "%d/%m/%Y %H:%M",
    )
    events, stats = read_events(path, how=how)
    values = [json.loads(e.value) for e in events]
    assert values[0] == {
        "event_id": "sales.csv.gz:2", "ts": "2010-01-12T08:26:00", "sku": "X1",
        "location": "S1", "quantity": 4, "unit_price": 1.5, "customer_id": "C9",
    }  # fmt: skip
    assert "customer_id" not in values[1] and values[1]["unit_price"] == 1.25
    assert stats.columns["ts"] == "Order Date" and stats.date_format == "%d/%m/%Y %H:%M"


def test_epoch_times_in_seconds_or_milliseconds(tmp_path: Path) -> None:
    for stamp in ("1294135200", "1294135200000"):
        path = tmp_path / f"e{len(stamp)}.csv"
        path.write_text(f"ts,sku,location,quantity\n{stamp},A,L,1\n")
        events, _ = read_events(path)
        assert json.loads(events[0].value)["ts"] == "2011-01-04T10:00:00"


def test_an_unknown_header_names_the_missing_roles_and_the_option(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("Date,Item,Store,Qty\n2011-01-04,X1,S1,4\n")
    with pytest.raises(InputError) as err:
        read_events(path)
    message = str(err.value)
    assert "\n" not in message
    assert "no column for ts, sku, location, quantity" in message and "--columns" in message
    with pytest.raises(InputError, match="no column quantity=Amount"):
        read_events(
            path,
            how=InputFormat(
                "csv", parse_columns("ts=Date,sku=Item,location=Store,quantity=Amount")
            ),
        )


def test_unparseable_dates_stop_with_the_line_and_the_option(tmp_path: Path) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("ts,sku,location,quantity\n2011-01-04,A,L,1\n12/1/2010 8:26,A,L,1\n")
    with pytest.raises(InputError) as err:
        read_events(path)
    assert "line 3" in str(err.value) and "'12/1/2010 8:26'" in str(err.value)
    assert "--date-format" in str(err.value)


def test_bad_column_specs_are_refused() -> None:
    with pytest.raises(InputError, match="unknown role 'price'"):
        parse_columns("price=P")
    with pytest.raises(InputError, match="not ROLE=COLUMN"):
        parse_columns("ts")


def test_online_retail_dates_as_uci_exports_write_them(tmp_path: Path) -> None:
    path = tmp_path / "uci.csv"
    path.write_text(HEADER + "536365,85123A,HEART,6,12/1/2010 8:26,2.55,17850,United Kingdom\n")
    events, stats = read_events(path)
    assert stats.format == "online-retail"
    assert json.loads(events[0].value)["ts"] == "2010-12-01T08:26:00"
    path.write_text(HEADER + "536365,85123A,HEART,6,01.12.2010 08:26,2.55,17850,UK\n")
    with pytest.raises(InputError, match=r"InvoiceDate '01\.12\.2010 08:26'.*--date-format"):
        read_events(path)
    how = InputFormat(date_format="%d.%m.%Y %H:%M")
    assert json.loads(read_events(path, how=how)[0][0].value)["ts"] == "2010-12-01T08:26:00"


def test_format_is_guessed_and_can_be_forced(tmp_path: Path) -> None:
    jsonl = tmp_path / "o.txt"
    jsonl.write_text('{"sku": "A"}\n')
    assert guess_format(jsonl) == "jsonl"
    assert guess_format(SAMPLE) == "online-retail"
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\n")
    with pytest.raises(InputError, match=re.escape("--format online-retail|jsonl|csv")):
        read_events(odd)
    events, stats = read_events(odd, how=InputFormat("jsonl"))
    assert stats.format == "jsonl" and events[0].value == b"hello"
    with pytest.raises(InputError, match="--columns applies to --format csv"):
        read_events(jsonl, how=InputFormat("jsonl", {"sku": "x"}))
