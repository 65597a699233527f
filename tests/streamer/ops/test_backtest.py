"""The replay's produce order (the rest of the backtest runs end to end in tests/test_e2e.py)."""

from pathlib import Path

import numpy as np
from prometheus_client import generate_latest

from models.demand_class import classify
from streamer import metrics
from streamer.config.settings import Settings
from streamer.ops.backtest import (
    by_demand_class,
    isolated,
    log_tail,
    progress_lines,
    scrape,
    training_segments,
)
from streamer.ops.policies import Outcome, Panel
from streamer.ops.replay import Produced

DAY = 86_400.0


def test_inventory_goes_a_day_ahead_and_segments_cut_on_produce_order() -> None:
    def ev(role: str, day: float) -> Produced:
        return Produced(role, "A1", b"", day * DAY)

    events = [ev("orders", 0.4), ev("orders", 1.4), ev("orders", 2.4), ev("orders", 3.4)]
    events += [ev("inventory", 1.6), ev("inventory", 3.6)]
    segments = training_segments(events, every=2, bucket_seconds=int(DAY))
    got = [([(e.role[0], e.ts / DAY) for e in seg], through) for seg, through in segments]
    # the delivery of day 1.6 goes before the order of day 1.4; the one of day 3.6, put on
    # the topic at day 2.6, is in the segment after which the trainer sees through day 2
    assert got == [
        ([("o", 0.4), ("i", 1.6), ("o", 1.4), ("o", 2.4), ("i", 3.6)], 2),
        ([("o", 3.4)], None),
    ]


def test_policies_are_also_pooled_within_each_demand_class() -> None:
    demand = np.array([[2, 2, 2, 2], [0, 1, 0, 9], [1, 0, 0, 9]], float)
    panel = Panel(["a@X", "b@X", "c@X"], demand, np.array([0, 1, 0]), np.zeros(3))
    one = np.ones(3)
    outcome = Outcome(demand.sum(axis=1), np.array([8.0, 3.0, 5.0]), one, one * 4, one * 4, one)
    # the closed loop saw two series, in its own order
    loop = Outcome(*(np.array([v[2], v[0]]) for v in (demand.sum(axis=1), [8.0, 3, 5], one,
                                                       one * 4, one * 4, one)))  # fmt: skip
    classes = dict(zip(panel.series, map(str, classify(demand, panel.start)), strict=True))
    runs = {"rule": (panel.series, outcome), "loop": (["c@X", "a@X"], loop)}
    by_class = by_demand_class(panel, classes, runs)
    assert set(by_class) == {"smooth", "lumpy"}
    assert by_class["smooth"]["series"] == 1 and by_class["smooth"]["units"] == 8.0
    assert by_class["smooth"]["rule"]["fill_rate"] == 1.0
    assert by_class["lumpy"]["rule"]["fill_rate"] == round(8 / 20, 4)
    assert by_class["lumpy"]["loop"]["fill_rate"] == round(5 / 10, 4)


def test_a_run_into_a_used_folder_starts_from_no_state(tmp_path: Path) -> None:
    # an earlier run's champion, trained on the whole replay: served from the next run's
    # first day it would forecast with what it learned of the future
    old = tmp_path / "state" / "models" / "lstm" / "champion.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    elsewhere = tmp_path / "live-models"
    settings = isolated(Settings.of(model_dir=str(elsewhere)), tmp_path)
    assert not (tmp_path / "state").exists()
    assert settings.home == tmp_path / "state"
    assert settings.models_path() == tmp_path / "state" / "models"  # not a live deployment's
    assert settings.kafka.bootstrap_servers == "" and settings.redis.url == ""


def test_an_error_carries_the_end_of_the_workers_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    tail = log_tail(log)
    assert tail.startswith(f"last lines of {log}:\n")
    assert tail.splitlines()[1:] == [f"line {i}" for i in range(25, 40)]


def test_a_stall_error_carries_how_far_the_worker_got() -> None:
    """From the worker's real metrics page: its applied events, lags and waits, nothing else."""
    metrics.EVENTS.labels("orders", "applied").inc(0)
    metrics.CONSUMER_LAG.labels("orders", "3").set(0)
    metrics.ORDERS_WAITED.inc(0)
    lines = progress_lines(generate_latest())
    assert 'shelfcast_events_total{outcome="applied",topic="orders"}' in " ".join(lines)
    assert 'shelfcast_consumer_lag_messages{partition="3",topic="orders"} 0.0' in lines
    assert any(line.startswith("shelfcast_orders_waited_total ") for line in lines)
    assert not [line for line in lines if "_created" in line or line.startswith("#")]
    # a worker that cannot answer says so instead of showing nothing
    gone = progress_lines(scrape("http://127.0.0.1:9/metrics"))
    assert len(gone) == 1 and gone[0].startswith("# metrics endpoint http://127.0.0.1:9/")
