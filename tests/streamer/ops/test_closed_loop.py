"""The closed loop: a planner acting on the alerts through the embedded broker, and shelves
with lost sales."""

import json
import re
from pathlib import Path

import pytest

from streamer.config.settings import Settings
from streamer.eventtime.clock import iso
from streamer.ops.backtest import run_backtest
from streamer.ops.closed_loop import Shelves
from streamer.ops.policies import references_at
from streamer.ops.replay import Produced
from streamer.ops.simulation import SimulationSettings, inventory_event
from streamer.testing import order
from tests.conftest import SAMPLE

LINES = 3000
DAY = 86_400


def sold(ts: float, qty: int, eid: str) -> Produced:
    value = order(eid, iso(1_294_012_800 + ts), qty)
    return Produced("orders", "A1", value, 1_294_012_800 + ts)


def test_shelves_lose_what_finds_no_stock_and_give_it_back_to_the_worker() -> None:
    shelves = Shelves(DAY)
    opening = inventory_event("A1@UK", 1_294_012_800 + 3600, {"on_hand": 5}, "open")
    corrections = shelves.pass_([opening, sold(7200, 3, "o1"), sold(10800, 4, "o2")])
    # 3 sold, then 2 of 4: the 2 not sold come back a second after the order
    [fix] = corrections
    assert json.loads(fix.value)["delta"] == 2 and fix.ts == 1_294_012_800 + 10801
    assert shelves.on_hand["A1@UK"] == 0
    shelves.end_of_day(14977)
    _, outcome = shelves.outcome({"A1@UK": 1})
    assert outcome.pooled()["fill_rate"] == round(5 / 7, 4)
    assert outcome.pooled()["stockout_days"] == 1 and outcome.pooled()["orders"] == 1


def test_a_same_day_cancellation_undoes_its_order_as_the_truth_does() -> None:
    """A return of an order's size the same day cancels it (backtest.truth_from): its demand
    goes, only what it sold comes back on the shelf, and the worker, which got the lost
    units back already, gives them up again."""
    shelves = Shelves(DAY)
    opening = inventory_event("A1@UK", 1_294_012_800 + 3600, {"on_hand": 3}, "open")
    lost, unsold = shelves.pass_([opening, sold(7200, 5, "o1"), sold(10800, -5, "r1")])
    assert json.loads(lost.value)["delta"] == 2 and json.loads(unsold.value)["delta"] == -2
    assert json.loads(unsold.value)["event_id"] == "unsold:r1"
    assert shelves.on_hand["A1@UK"] == 3
    shelves.end_of_day(14977)
    _, outcome = shelves.outcome({})
    assert (outcome.demanded.tolist(), outcome.served.tolist()) == ([0.0], [0.0])
    assert outcome.stockout_days.tolist() == [0.0]  # the sale it lost was never one
    # a return with no order of its size that day is goods back on the shelf
    assert shelves.pass_([sold(DAY + 3600, -2, "r2")]) == []
    assert shelves.on_hand["A1@UK"] == 5


def test_a_write_off_beyond_the_shelf_empties_it_and_gives_the_worker_the_rest_back() -> None:
    shelves = Shelves(DAY)
    opening = inventory_event("A1@UK", 1_294_012_800 + 3600, {"on_hand": 44}, "open")
    damaged = inventory_event("A1@UK", 1_294_012_800 + 7200, {"delta": -223}, "d1")
    [fix] = shelves.pass_([opening, damaged])
    assert json.loads(fix.value) | {"ts": None} == {
        "event_id": "overdrawn:d1", "ts": None, "sku": "A1", "location": "UK", "delta": 179,
    }  # fmt: skip
    assert fix.ts == 1_294_012_800 + 7201 and shelves.on_hand["A1@UK"] == 0
    # the next delivery is stock on the shelf, not a debt the write-off left
    delivery = inventory_event("A1@UK", 1_294_012_800 + DAY, {"delta": 10}, "grn")
    assert shelves.pass_([delivery, sold(DAY + 3600, 4, "o1")]) == []
    assert shelves.on_hand["A1@UK"] == 6
    # a write-off the worker dead-letters (not a whole number of units) moves no shelf
    broken = inventory_event("A1@UK", 1_294_012_800 + DAY + 3700, {"delta": -2.5}, "d3")
    assert shelves.pass_([broken]) == [] and shelves.on_hand["A1@UK"] == 6
    # a write-off within the stock needs no correction
    assert (
        shelves.pass_([inventory_event("A1@UK", 1_294_012_800 + DAY + 7200, {"delta": -6}, "d2")])
        == []
    )


@pytest.fixture(scope="module")
def loops(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same closed loop replayed by one worker, then by two in one consumer group."""
    outs = []
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"closed{workers}")
        run_backtest(
            SAMPLE, out, Settings.of(partitions=4), SimulationSettings(lead_time_days=3),
            limit=LINES, progress=False, timeout=300, closed_loop=True, workers=workers,
        )  # fmt: skip
        outs.append(out)
    return outs


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_planner_orders_what_each_raised_alert_recommends_and_gets_it_delivered(
    loops: list[Path],
) -> None:
    out = loops[0]
    summary = json.loads((out / "summary.json").read_text())
    raised = [a for a in lines(out / "alerts.jsonl") if a["status"] == "raised"]
    ordering = {a["alert_id"]: a["order_quantity"] for a in raised if a["order_quantity"] > 0}
    assert ordering, "no alert recommended an order"
    closed = summary["inventory"]["closed_loop"]
    # one order per raised alert the planner read as its series' latest (a superseded one,
    # raised and cleared within the same read, asks for nothing)
    assert 0.9 * len(ordering) <= closed["orders"] <= len(ordering)
    assert 0 < closed["fill_rate"] <= 1
    # the worker saw the purchase orders: alerts after them carry what is on order, and the
    # recommended order cleared its alert
    assert any(a["on_order"] > 0 for a in lines(out / "alerts.jsonl"))
    cleared_by_order = [
        a for a in lines(out / "alerts.jsonl")
        if a["status"] == "cleared" and a["on_order"] > 0
    ]  # fmt: skip
    assert cleared_by_order
    assert summary["stock_simulation"]["settings"]["restock"] is False
    # the references read at the loop's stock, off their curves
    at = summary["inventory"]["at_closed_loop_stock"]
    assert at == references_at(summary["inventory"], closed["mean_on_hand_days"])


def closes(metrics: Path) -> float:
    """The partition closes a worker's scraped metrics count."""
    found = re.search(r"^shelfcast_buckets_closed_total ([0-9.e+]+)$", metrics.read_text(), re.M)
    assert found, metrics
    return float(found[1])


def test_one_worker_and_two_publish_the_same_closed_loop_outputs(loops: list[Path]) -> None:
    one, two = loops
    for name in ("forecasts.jsonl", "alerts.jsonl"):
        first, second = (sorted((p / name).read_text().splitlines()) for p in loops)
        assert first == second, name
    inventory = [json.loads((p / "summary.json").read_text())["inventory"] for p in loops]
    assert inventory[0]["closed_loop"] == inventory[1]["closed_loop"]
    # each of the two closed its share of the partitions, and together what one closed
    shares = [closes(two / "metrics.prom"), closes(two / "metrics-1.prom")]
    assert min(shares) > 0 and sum(shares) == closes(one / "metrics.prom")


@pytest.mark.slow
def test_a_refresh_trains_beside_the_replay_and_serves_from_its_stated_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained through bucket T, a refresh is first served at the close of T + the delay,
    whether its training ended before then or not; a rejected one is never served."""
    tiny = {"lstm_epochs": 1, "lstm_warm_epochs": 1, "lstm_hidden": 4}
    settings = Settings.of(
        partitions=4, train_every_buckets=28, train_delay_buckets=7,
        lstm_windows_per_epoch=2048, **tiny,
    )  # fmt: skip
    run_backtest(
        SAMPLE, tmp_path, settings, SimulationSettings(lead_time_days=3),
        limit=10_000, progress=False, timeout=300, closed_loop=True,
    )  # fmt: skip
    refreshes = json.loads((tmp_path / "summary.json").read_text())["lstm_refreshes"]
    trained = [r for r in refreshes if r["outcome"] in ("promoted", "rejected")]
    assert trained and trained[0]["outcome"] == "promoted"
    assert all(r["serves_from_bucket"] == r["through"] + 7 for r in refreshes)
    served: dict[str, int] = {}  # LSTM version -> the first close whose forecasts cite it
    for f in lines(tmp_path / "forecasts.jsonl"):
        version = f["model_version"].rsplit("+", 1)[-1]
        close = int(f["forecast_id"].split("|")[1])
        served[version] = min(served.get(version, close), close)
    last = max(served.values())
    assert any(r["serves_from_bucket"] <= last for r in trained if r["outcome"] == "promoted")
    for r in trained:
        if r["outcome"] == "promoted" and r["serves_from_bucket"] <= last:
            assert served[f"v{r['version']}"] == r["serves_from_bucket"]
        else:  # rejected, or promoted too late to serve a close of the replay
            assert f"v{r['version']}" not in served
