"""The customer and promotion signals a worker keeps in Redis equal ``models.signals``' rule
applied offline (what backtests and the trainer's offline panels use), redelivery included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from streamer.config.settings import Settings
from streamer.eventtime.clock import DAY_SECONDS
from streamer.features.keys import bucket_key, series_key
from streamer.ops.backtest import truth_from
from streamer.ops.replay import read_online_retail
from streamer.testing import Harness, order
from tests.conftest import SAMPLE


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    h = Harness(settings.replace(partitions=1, history_buckets=400, lstm_signals=True))
    yield h
    h.close()


def stored(settings: Settings, series: set[str]) -> dict[tuple[str, int], list[float]]:
    client = redis.Redis.from_url(settings.redis.url)
    out = {}
    for s in series:
        for b, v in client.hgetall(series_key(s, 0, "signals")).items():
            out[(s, int(b))] = [float(x) for x in v.decode().strip("[]").split(",")]
    return out


def test_the_workers_signals_are_the_offline_rule_on_real_orders(harness: Harness) -> None:
    events, _ = read_online_retail(SAMPLE, 3000)
    orders = [e for e in events if e.role == "orders"]
    records = [harness.record(e.value) for e in orders]
    harness.feed(records)
    harness.feed(records[:500])  # redelivered: counted once
    truth = truth_from(orders, DAY_SECONDS)
    assert any(v[0] > 1 for v in truth.signals.values()), "several buyers a day in the sample"
    assert any(v[1] < v[0] for v in truth.signals.values()), "returning buyers in the sample"
    series = {s for s, _ in truth.signals}
    assert stored(harness.settings, series) == truth.signals
    client = redis.Redis.from_url(harness.settings.redis.url)
    (s, b), values = next(iter(truth.signals.items()))
    packed = client.hget(bucket_key(0, "signals", b), s)
    assert packed is not None and [float(x) for x in packed.decode()[1:-1].split(",")] == values


def test_signals_are_kept_only_when_the_models_read_them(settings: Settings) -> None:
    h = Harness(settings.replace(partitions=1))  # SHELFCAST_LSTM_SIGNALS off: no extra work
    h.feed([h.record(order("o1", "2011-01-03T10:00:00", 5, customer="c1", promo=True))])
    h.close()
    assert stored(settings, {"A1@UK"}) == {}


def test_buyers_new_buyers_largest_buyer_line_and_promotion(harness: Harness) -> None:
    day, next_day = "2011-01-03T10:00:00", "2011-01-04T10:00:00"
    harness.feed([
        harness.record(order("o1", day, 5, customer="c1")),
        harness.record(order("o2", day, 2, customer="c2", promo="SPRING")),
        harness.record(order("o3", day, 4, customer="c1", promo=False)),
        harness.record(order("o4", day, 12)),  # no customer
        harness.record(order("o5", day, -12)),  # cancels o4's line
        harness.record(order("o6", next_day, 3, customer="c2", promo=True)),
    ])  # fmt: skip
    got = stored(harness.settings, {"A1@UK"})
    first, second = sorted(got)
    assert got[first] == [2.0, 2.0, 9.0, 5.0, 2.0]  # c1 bought 5 + 4, the 12 was cancelled
    assert got[second] == [1.0, 0.0, 3.0, 3.0, 3.0]  # c2 again: not new


def test_a_bucket_leaving_the_history_leaves_the_signals_too(settings: Settings) -> None:
    h = Harness(settings.replace(partitions=1, history_buckets=10, lstm_signals=True))
    days = [f"2011-01-{d:02d}T10:00:00" for d in range(3, 31)]
    h.feed([h.record(order(f"o{i}", day, 2, customer="c1")) for i, day in enumerate(days)])
    h.close()
    kept = sorted(b for _, b in stored(h.settings, {"A1@UK"}))
    client = redis.Redis.from_url(h.settings.redis.url)
    demand = sorted(int(b) for b in client.hkeys(series_key("A1@UK", 0, "demand")))
    assert kept == demand and len(kept) < 12, kept  # the history's window, not all 28 days
