"""End to end: real orders through a real worker process on the embedded broker and Redis."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from models.evaluation import parse_forecast_id
from streamer.config.settings import Settings
from streamer.eventtime.clock import bucket_of
from streamer.ops.alert_quality import MISSES, WARNED
from streamer.ops.replay import read_events
from tests.conftest import SAMPLE, sample_backtest

LIMIT = 6000  # Dec 2010 to Feb 2011 of the shipped sample


@pytest.fixture(scope="module")
def backtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_backtest(tmp_path_factory.mktemp("backtest"), LIMIT)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open()]


def test_summary_accounts_for_every_event(backtest: Path) -> None:
    s = json.loads((backtest / "summary.json").read_text())
    assert s["events_in"] == s["orders_events"] + s["inventory_events"]
    assert s["read"]["lines"] == LIMIT
    assert s["orders_events"] == s["read"]["orders"] + s["read"]["returns"]
    assert s["dlq"] == 0
    assert s["forecasts_published"] == len(rows(backtest / "forecasts.jsonl")) > 0
    assert s["alerts_published"] == len(rows(backtest / "alerts.jsonl")) > 0
    assert s["stock_simulation"]["simulated"] is True
    assert s["events_per_second"] > 0 and s["wall_seconds"] > 0
    published = s["accuracy"]["published"]
    assert published["points"] > 100
    assert all(math.isfinite(published[k]) for k in ("mae", "rmse", "mase", "pinball"))
    # the worker's own prequential scores agree with re-scoring the topic from the input file
    models = s["models"]
    assert set(models) == {
        "seasonal_naive", "moving_average", "tsb", "online_regression",
        "published", "rollup",
    }  # fmt: skip
    # not identical: the worker stops scoring a series once it goes quiet for the active
    # window, and decides closed days per partition, the re-score on the whole file
    assert math.isclose(models["published"]["points"], published["points"], rel_tol=0.01)
    assert math.isclose(models["published"]["mae"], published["mae"], rel_tol=0.02)
    rollup = s["accuracy"]["rollup"]
    assert math.isclose(models["rollup"]["points"], rollup["points"], rel_tol=0.01)
    assert math.isclose(models["rollup"]["mae"], rollup["mae"], rel_tol=0.02)
    assert s["skus_rolled_up"] > 0
    # every location forecast is the published combination, with a weight for each model
    # (non-negative; on mostly intermittent series they sum to well under 1: it shrinks)
    assert models["published"]["forecasts"] == len(
        [f for f in rows(backtest / "forecasts.jsonl") if f["location"] != "*"]
    )
    bank = {"seasonal_naive", "moving_average", "tsb", "online_regression"}
    assert all(models[m].get("weight", 0) >= 0 for m in bank)
    assert sum(models[m].get("weight", 0) for m in bank) > 0
    assert len(models["published"]["horizons"]) == 7
    # the trainer ran at every 28th bucket of event time; this slice is too short to train on
    refreshes = s["lstm_refreshes"]
    assert [r["through"] % 28 for r in refreshes] == [0] * len(refreshes) and refreshes
    assert {r["outcome"] for r in refreshes} == {"skipped"}
    assert s["closed_buckets"] > 0
    q = s["alert_quality"]
    assert q["stockouts"] == s["stock_simulation"]["stockouts"] > 0
    assert q["alerts_raised"] == s["alerts_by_status"]["raised"]
    for key in ("recall", "false_alarm_rate", "flapping_rate"):
        assert 0 <= q[key] <= 1
    # every stock-out is explained, and the warned ones are the ones recall counts
    explained = rows(backtest / "stockouts.jsonl")
    outcomes = Counter(r["outcome"] for r in explained)
    assert len(explained) == q["stockouts"]
    assert outcomes[WARNED] == round(q["recall"] * q["stockouts"])
    assert {k: outcomes[k] for k in MISSES} == {k: q["misses"][k] for k in MISSES}


def test_the_summary_compares_the_reorder_policies_on_the_same_demand(backtest: Path) -> None:
    inventory = json.loads((backtest / "summary.json").read_text())["inventory"]
    names = {"shelfcast", "min_max", "seasonal_naive", "perfect_foresight"}
    fields = {
        "fill_rate", "lost_units", "stockout_days", "mean_on_hand_units", "mean_on_hand_days",
        "orders",
    }  # fmt: skip
    assert set(inventory["policies"]) == names
    assert all(set(p) == fields for p in inventory["policies"].values())
    assert all(0 < p["fill_rate"] <= 1 and p["orders"] > 0 for p in inventory["policies"].values())
    # nothing beats knowing the future: the bound serves the most with the least stock
    bound = inventory["policies"]["perfect_foresight"]
    for name in names - {"perfect_foresight"}:
        other = inventory["policies"][name]
        assert bound["fill_rate"] >= other["fill_rate"], name
        assert bound["mean_on_hand_units"] <= other["mean_on_hand_units"], name
    assert [row["service_level"] for row in inventory["tradeoff"]] == [0.9, 0.95, 0.98]
    stock = [row["shelfcast"]["mean_on_hand_units"] for row in inventory["tradeoff"]]
    assert stock == sorted(stock)  # a higher service level holds more
    per_series = rows(backtest / "policies.jsonl")
    assert len(per_series) == 4 * inventory["settings"]["series"]
    lost = sum(r["lost_units"] for r in per_series if r["policy"] == "min_max")
    assert math.isclose(lost, inventory["policies"]["min_max"]["lost_units"], abs_tol=1.0)


def test_forecast_topic_has_one_forecast_per_series_per_closed_bucket(backtest: Path) -> None:
    forecasts = rows(backtest / "forecasts.jsonl")
    ids = [f["forecast_id"] for f in forecasts]
    assert len(ids) == len(set(ids))
    per_close = Counter((f["sku"], f["location"], f["issued_at"]) for f in forecasts)
    assert set(per_close.values()) == {1}
    buckets: dict[str, set[int]] = defaultdict(set)
    for f in forecasts:
        series, bucket, model = parse_forecast_id(f["forecast_id"])
        assert f["model"] == model and len(f["horizon"]) == 7
        assert all(0 <= h["p10"] <= h["p50"] <= h["p90"] for h in f["horizon"])
        buckets[series].add(bucket)
    order_days: dict[str, set[int]] = defaultdict(set)
    for ev in read_events(SAMPLE, LIMIT)[0]:
        if ev.role == "orders":
            obj = json.loads(ev.value)
            order_days[f"{obj['sku']}@{obj['location']}"].add(bucket_of(ev.ts, 86_400))
    rollups = {s: seen for s, seen in buckets.items() if s.endswith("@*")}
    locations: dict[str, set[int]] = defaultdict(set)
    for series, seen in buckets.items():
        if series not in rollups:
            locations[series.split("@")[0] + "@*"] |= seen
    assert rollups == locations  # a SKU's rollup at every close where one of its locations has
    last_close = max(max(b) for b in buckets.values())
    window = Settings().models.active_buckets
    for series, seen in buckets.items():
        if series in rollups:
            continue
        # every day from its first order, quiet days and the Christmas closure included, until
        # it has been quiet for the whole active window; each partition closes by its own
        # watermark, so a partition's last close may trail the newest by a day
        expected = {b for day in order_days[series] for b in range(day, day + window)}
        assert seen == {b for b in expected if b <= max(seen)}, series
        if last_close in expected:
            assert max(seen) >= last_close - 1, series


def test_each_rollup_mean_is_the_sum_of_its_location_means(backtest: Path) -> None:
    at_close: dict[tuple[str, str], list[dict]] = defaultdict(list)
    rollups = []
    for f in rows(backtest / "forecasts.jsonl"):
        if f["location"] == "*":
            rollups.append(f)
        else:
            at_close[(f["sku"], f["issued_at"])].append(f)
    assert any(r["locations"] > 1 for r in rollups)
    for r in rollups:
        parts = at_close[(r["sku"], r["issued_at"])]
        assert r["locations"] == len(parts) and r["model"] == "rollup"
        for k, step in enumerate(r["horizon"]):
            total = sum(p["horizon"][k]["mean"] for p in parts)
            assert abs(step["mean"] - total) <= 1e-4 * (len(parts) + 1), r["forecast_id"]


def test_alert_topic_carries_state_changes_only(backtest: Path) -> None:
    by_series: dict[str, list[dict]] = defaultdict(list)
    for a in rows(backtest / "alerts.jsonl"):
        by_series[f"{a['sku']}@{a['location']}"].append(a)
    for series, alerts in by_series.items():
        alerts.sort(key=lambda a: int(a["alert_id"].split("|")[-2]))
        statuses = [a["status"] for a in alerts]
        assert statuses[0] == "raised"
        assert all(a != b for a, b in pairwise(statuses)), series
        for a in alerts:
            if a["status"] == "raised":
                assert a["on_hand"] <= a["reorder_point"]
                assert a["severity"] in ("warning", "critical")


def test_metrics_agree_with_what_was_processed(backtest: Path) -> None:
    s = json.loads((backtest / "summary.json").read_text())
    text = (backtest / "metrics.prom").read_text()

    def value(pattern: str) -> float:
        return sum(float(m) for m in re.findall(pattern + r" ([0-9.e+]+)", text))

    applied = value(r'shelfcast_events_total\{outcome="applied",topic="(?:orders|inventory)"\}')
    late = value(r'shelfcast_events_total\{outcome="late",topic="orders"\}')
    stale = value(r'shelfcast_events_total\{outcome="stale",topic="inventory"\}')
    assert applied + late + stale == s["events_in"]
    assert (
        value(r'shelfcast_forecasts_published_total\{model="[a-z_]+"\}') == s["forecasts_published"]
    )
    assert value(r'shelfcast_alerts_published_total\{status="[a-z]+"\}') == s["alerts_published"]
    # every processed record's latency was observed once, and nothing is left to consume
    assert value(r"shelfcast_processing_latency_seconds_count") == s["events_in"]
    assert 0 < value(r"shelfcast_processing_latency_seconds_sum") < s["events_in"] * 600
    lags = re.findall(r'shelfcast_consumer_lag_messages\{partition="\d+",topic="([\w-]+)"\}', text)
    assert {"orders", "inventory"} <= set(lags)
    assert value(r"shelfcast_consumer_lag_messages\{[^}]*\}") == 0
    closes = value(r"shelfcast_bucket_close_seconds_count")
    assert closes == value(r"shelfcast_buckets_closed_total") > 0


def test_scraped_metrics_have_the_documented_names_and_types(backtest: Path) -> None:
    from tests.test_deploy import dashboard_metrics, documented

    text = (backtest / "metrics.prom").read_text()
    typed = re.findall(r"^# TYPE (shelfcast_\w+) (\w+)$", text, re.M)
    served = {name: kind for name, kind in typed if not name.endswith("_created")}
    assert served == documented("worker")
    # what the dashboard queries from workers is served by this real worker's /metrics
    family = re.compile(r"_(?:bucket|sum|count|total)$")
    trainer = {family.sub("", name) for name in documented("trainer")}
    queried = {family.sub("", name) for name in dashboard_metrics()}
    assert queried - trainer <= {family.sub("", name) for name in served}
