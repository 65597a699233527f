"""The stream processor (no Faust) against a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import redis

from models.snapshot import unpack
from streamer import metrics
from streamer.config.settings import Settings
from streamer.features import store as store_module
from streamer.pipeline import batch as pipeline_module
from streamer.pipeline.batch import Record
from streamer.pipeline.offsets import RedisBehind
from streamer.publish.messages import Output
from streamer.testing import Harness, alerts, forecasts, order, stock
from tests.conftest import alert_problems, redis_client

# the integration tests of the feature store: on one Redis and on a Redis Cluster
pytestmark = pytest.mark.cluster

START = datetime(2011, 1, 3)  # a Monday


def at(day: int, hour: int = 10, minute: int = 0) -> str:
    return (START + timedelta(days=day, hours=hour, minutes=minute)).isoformat()


def daily_orders(h: Harness, days: int, qty: int = 5, sku: str = "A1") -> list[Record]:
    return [h.record(order(f"{sku}-{d}", at(d), qty, sku=sku)) for d in range(days)]


def stocked_and_selling(h: Harness) -> list[Record]:
    """1,000 in stock and 10 days of 10 a day (the reorder point a few days of that, stock far
    above it); returns a burst of 900 units at day 9 noon, which takes stock to 0."""
    h.feed([h.record(stock("s0", at(0, 0), on_hand=1000), "inventory")])
    h.feed(daily_orders(h, 10, qty=10))
    return [h.record(order(f"burst-{i}", at(9, 12), 100)) for i in range(9)]


def test_a_record_near_kafkas_limit_makes_a_dead_letter_that_can_be_sent(
    settings: Settings,
) -> None:
    h = Harness(settings)
    huge = b'{"event_id": "' + b"x" * 900_000 + b'"}'
    record = Record("orders", 0, 0, b"K" * 5_000, huge)
    [(topic, dead)] = h.feed([record])
    assert topic == "shelfcast-dlq" and dead["reason"] == "oversized"
    assert dead["truncated"] and dead["value_size"] == len(huge)
    assert base64.b64decode(dead["value_b64"]) == huge[: settings.kafka.max_message_bytes]
    assert base64.b64decode(dead["key_b64"]) == b"K" * 1024
    assert len(json.dumps(dead)) < 200_000  # far below the producer's 1 MiB


def test_bad_records_go_to_the_dlq_with_reason_and_bytes(settings: Settings) -> None:
    h = Harness(settings)
    bad = b'{"event_id": "x", "ts": "2011-01-03T10:00:00"'
    out = h.feed([h.record(bad), h.record(order("ok", at(0), 2)), h.record(b"", "inventory")])
    dead = [m for t, m in out if t == "shelfcast-dlq"]
    assert [d["reason"] for d in dead] == ["malformed_json", "malformed_json"]
    assert base64.b64decode(dead[0]["value_b64"]) == bad
    assert dead[0]["source_topic"] == "orders" and dead[0]["offset"] == 0
    assert dead[1]["source_topic"] == "inventory"
    r = redis_client(settings.redis.url, decode_responses=True)
    assert r.hget(
        "shelfcast:{p0}:s:A1@UK:demand",
        str(int(datetime.fromisoformat(at(0)).timestamp() // 86400)),
    )


def test_every_active_series_gets_a_forecast_at_each_close_zero_demand_included(
    settings: Settings,
) -> None:
    h = Harness(settings)
    records = [h.record(order("quiet-0", at(0), 3, sku="QUIET")), *daily_orders(h, 20)]
    everything = forecasts(h.feed(records))
    out = [f for f in everything if f["location"] != "*"]
    quiet = [f for f in out if f["sku"] == "QUIET"]
    busy = [f for f in out if f["sku"] == "A1"]
    # 20 days of orders close days 0..18 (the 20th day is still open)
    assert len({f["issued_at"] for f in busy}) == 19
    assert len({f["issued_at"] for f in quiet}) == 19
    last_quiet = max((f for f in quiet), key=lambda f: f["issued_at"])
    assert last_quiet["horizon"][0]["mean"] < 0.5  # learned its zeros
    # one published forecast per close: the models' combination
    assert {f["model"] for f in busy} == {"combined"}
    for f in busy:
        assert len(f["horizon"]) == 7
        for step in f["horizon"]:
            assert 0 <= step["p10"] <= step["p50"] <= step["p90"]
    # exactly one forecast and one id per (series, bucket), and one rollup per (SKU, bucket)
    per_bucket = Counter((f["sku"], f["location"], f["issued_at"]) for f in everything)
    assert set(per_bucket.values()) == {1}
    assert len({f["forecast_id"] for f in everything}) == len(everything)
    assert len(everything) == 2 * len(out)  # one location each: every forecast has a rollup


def test_a_sku_rollup_sums_the_means_of_its_locations(settings: Settings) -> None:
    h = Harness(settings)
    records = []
    for d in range(21):
        records.append(h.record(order(f"uk-{d}", at(d), 5 + d % 3)))
        records.append(h.record(order(f"fr-{d}", at(d, 11), 2 + d % 7 // 3, location="FR")))
        if d % 4 == 0:
            records.append(h.record(order(f"de-{d}", at(d, 12), 9, location="DE")))
    out = forecasts(h.feed(records))
    by_close: dict[str, dict[str, dict]] = {}
    for f in out:
        by_close.setdefault(f["issued_at"], {})[f["location"]] = f
    assert len(by_close) == 20
    for issued_at, fcs in by_close.items():
        rollup = fcs.pop("*")
        assert rollup["sku"] == "A1" and rollup["model"] == "rollup"
        assert rollup["locations"] == len(fcs) and set(fcs) <= {"UK", "FR", "DE"}
        assert rollup["forecast_id"].startswith("A1@*|")
        assert rollup["forecast_id"].endswith("|rollup@bottom-up-1")
        for k, step in enumerate(rollup["horizon"]):
            parts = [f["horizon"][k] for f in fcs.values()]
            assert abs(step["mean"] - sum(p["mean"] for p in parts)) < 1e-3, issued_at
            assert 0 <= step["p10"] <= step["p50"] <= step["p90"]
    # the worker scores the rollup like a model, against the SKU's summed demand
    scored = h.pipeline.evaluation.summary()["rollup"]
    assert scored["points"] > 0 and "weight" not in scored


def test_outputs_do_not_depend_on_how_the_stream_was_batched(settings: Settings) -> None:
    def run(batch: int) -> list[tuple[str, dict]]:
        redis_client(settings.redis.url).flushall()
        h = Harness(settings)
        records = [h.record(stock("s0", at(0, 0), on_hand=60, lead_time_days=2), "inventory")]
        for d in range(18):
            records += [h.record(order(f"o{d}-{i}", at(d, 9 + i), 4)) for i in range(3)]
        return h.feed(records, batch=batch)

    one_by_one = run(1)
    assert one_by_one == run(7) == run(1000)
    assert alerts(one_by_one)  # the scenario does exercise alerts


def test_outputs_do_not_depend_on_how_many_series_a_close_reads_a_call(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run() -> list[tuple[str, dict]]:
        redis_client(settings.redis.url).flushall()
        h = Harness(settings)
        records = []
        for sku in ("A1", "B2", "C3", "D4", "E5"):
            inventory = stock(f"s-{sku}", at(0, 0), on_hand=40, lead_time_days=2, sku=sku)
            records.append(h.record(inventory, "inventory"))
        for d in range(14):
            for i, sku in enumerate(("A1", "B2", "C3", "D4", "E5")):
                records.append(h.record(order(f"o{d}-{sku}", at(d, 9 + i), 3 + i, sku=sku)))
        return h.feed(records, batch=50)

    whole = run()
    # 5 series over 4 partitions: a partition of two or more reads them a call each
    monkeypatch.setattr(store_module, "STATES_PER_CALL", 1)
    assert run() == whole
    assert alerts(whole) and len({f["sku"] for _, f in whole if "sku" in f}) == 5


def test_a_lost_partition_reads_its_series_states_whole_when_it_comes_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another owner may have taken the touched set meanwhile: what this worker kept is stale
    h = Harness(settings)
    h.feed(daily_orders(h, 4))
    states = h.pipeline.states
    forgotten: list[int] = []
    forget = states.forget
    monkeypatch.setattr(states, "forget", lambda p: (forgotten.append(p), forget(p)))
    assert states.nbytes() > 0  # kept since the first close
    h.feed(daily_orders(h, 6)[4:])
    assert forgotten == []
    h.pipeline.revoke([0])
    h.pipeline.assign([0])
    h.feed([h.record(order("A1-after", at(6), 2))])
    assert forgotten == [0]


def test_alerts_are_raised_and_cleared_once_per_state_change(settings: Settings) -> None:
    h = Harness(settings)
    burst = stocked_and_selling(h)
    assert alerts(h.outputs) == []
    burst += [h.record(order(f"tail-{i}", at(9, 13), 1)) for i in range(20)]
    out = alerts(h.feed(burst))
    assert [a["status"] for a in out] == ["raised"]
    raised = out[0]
    assert raised["on_hand"] <= raised["reorder_point"]
    assert raised["forecast_id"].startswith("A1@UK|")
    for key in ("lead_time_demand", "safety_stock", "days_of_cover", "service_level", "severity"):
        assert key in raised
    # a delivery stamped after the newest order waits until event time reaches it
    assert alerts(h.feed([h.record(stock("r1", at(9, 14), delta=500), "inventory")])) == []
    out = alerts(h.feed([h.record(order("after", at(9, 15), 1))]))
    assert [a["status"] for a in out] == ["cleared"]
    assert out[0]["alert_id"] != raised["alert_id"]
    assert out[0]["ts"] == at(9, 14) + "Z"
    r = redis_client(settings.redis.url, decode_responses=True)
    assert r.hget("shelfcast:{p0}:s:A1@UK:state", "alert") == "cleared"


def test_a_delivery_read_before_earlier_orders_does_not_hide_their_alert(
    settings: Settings,
) -> None:
    # Orders and inventory are separate topics: a replay or a catch-up can read the delivery
    # first. The orders stamped before it must still see the stock without it.
    h = Harness(settings)
    burst = stocked_and_selling(h)
    delivery = h.record(stock("r1", at(9, 14), delta=500), "inventory")
    out = alerts(h.feed([delivery, *burst, h.record(order("after", at(9, 15), 1))]))
    assert [a["status"] for a in out] == ["raised", "cleared"]
    assert out[1]["ts"] == at(9, 14) + "Z"
    r = redis_client(settings.redis.url, decode_responses=True)
    assert r.hget("shelfcast:{p0}:s:A1@UK:state", "on_hand") == str(1000 - 100 - 900 + 500 - 1)


def test_late_events_land_in_their_bucket_or_are_counted_late(settings: Settings) -> None:
    h = Harness(settings.replace(lateness_seconds=6 * 3600))
    day = lambda d: str(int(datetime.fromisoformat(at(d, 0)).timestamp() // 86400))  # noqa: E731
    h.feed(daily_orders(h, 3, qty=5))  # day 2 10:00 -> watermark day 2 04:00: day 1 closed
    h.feed([h.record(order("late-ok", at(1, 23), 7))])  # day 1 closed? no: only day 0 and 1
    r = redis_client(settings.redis.url, decode_responses=True)
    learned_before = r.hget("shelfcast:{p0}:clock", "closed")  # learned with the close
    assert learned_before == day(1)
    # beyond lateness: day 0 is closed, the event still updates features and stock
    stock_before = int(r.hget("shelfcast:{p0}:s:A1@UK:state", "on_hand"))
    late = metrics.EVENTS.labels("orders", "late")
    late_before = late._value.get()
    out = h.feed([h.record(order("too-late", at(0, 12), 4))])
    assert late._value.get() == late_before + 1
    assert r.hget("shelfcast:{p0}:s:A1@UK:demand", day(0)) == "9"
    assert int(r.hget("shelfcast:{p0}:s:A1@UK:state", "on_hand")) == stock_before - 4
    assert forecasts(out) == []  # no published forecast is reopened
    assert r.hget("shelfcast:{p0}:clock", "closed") == learned_before


def test_within_lateness_an_out_of_order_event_counts_before_its_bucket_closes(
    settings: Settings,
) -> None:
    h = Harness(settings.replace(lateness_seconds=6 * 3600))
    h.feed([h.record(order("a", at(0, 10), 5)), h.record(order("b", at(1, 3), 1))])
    h.feed([h.record(order("late-but-ok", at(0, 23), 7))])  # watermark day 0 21:00: open
    assert forecasts(h.feed([h.record(order("c", at(1, 12), 1))]))  # closes day 0
    assert h.pipeline.banks[0].recent.last(1).tolist() == [[12.0]]  # 5 + 7 learned for day 0


def test_a_restarted_pipeline_continues_without_learning_twice(settings: Settings) -> None:
    records_a = []
    h = Harness(settings)
    records_a = daily_orders(h, 25)
    h.feed(records_a[:15])
    h.restart()  # models are rebuilt from the history in Redis
    h.feed(records_a[10:15])  # redelivered after the restart: all duplicates
    h.feed(records_a[15:])
    continued = forecasts(h.outputs)

    redis_client(settings.redis.url).flushall()
    straight = Harness(settings)
    straight.feed(daily_orders(straight, 25))
    expected = forecasts(straight.outputs)
    key = lambda f: f["forecast_id"]  # noqa: E731
    assert sorted(map(key, continued)) == sorted(map(key, expected))
    assert {key(f): f for f in continued} == {key(f): f for f in expected}


def evaluation(settings: Settings) -> dict[str, float]:
    """The prequential error sums the worker keeps in Redis."""
    r = redis_client(settings.redis.url, decode_responses=True)
    return {k: round(float(v), 6) for k, v in r.hgetall("shelfcast:{p0}:evaluation").items()}


def varied_orders(
    h: Harness, days: int, skus: tuple[str, ...] = ("A1", "B2", "C3")
) -> list[Record]:
    """Orders whose sizes change by day and SKU, so every model has something to learn."""
    return [
        h.record(order(f"{sku}-{d}", at(d), 1 + (d * 7 + i * 3) % 11, sku=sku, price=1.0 + d % 3))
        for d in range(days)
        for i, sku in enumerate(skus)
        if (d + i) % 4
    ]


def test_models_older_than_the_history_restart_exactly_from_their_snapshots(
    settings: Settings,
) -> None:
    """After a restart, every forecast equals the uninterrupted run's, for series far older
    than the bounded history (so a replay of history alone could not rebuild them)."""
    # an activity window shorter than the history: else every close would snapshot
    settings = settings.replace(history_buckets=14, active_buckets=5, snapshot_seconds=3600.0)
    straight = Harness(settings)
    straight.feed(varied_orders(straight, 60))
    expected = {f["forecast_id"]: f for f in forecasts(straight.outputs)}
    expected_evaluation = evaluation(settings)

    redis_client(settings.redis.url).flushall()
    h = Harness(settings)
    records = varied_orders(h, 60)
    cut = next(i for i, rec in enumerate(records) if json.loads(rec.value)["ts"] >= at(45, 0))
    h.feed(records[:cut])
    r = redis_client(settings.redis.url)
    assert r.exists("shelfcast:{p0}:model")  # a snapshot, taken on the bucket schedule
    h.restart()
    h.feed(records[cut:])
    got = {f["forecast_id"]: f for f in forecasts(h.outputs)}
    assert got == expected
    assert evaluation(settings) == expected_evaluation


def test_restarted_every_few_days_from_fresh_snapshots_every_close_is_the_uninterrupted_one(
    settings: Settings,
) -> None:
    """Each restart restores from the snapshot the previous process wrote at its first close
    and replays the days after it: the replay must see the closed flags of the weeks before
    (three closed Sundays make the next one expected closed, and the shop then opens on the
    fourth) and the rows in the live order, or its forecasts and scores drift from an
    uninterrupted run's."""

    def days(h: Harness) -> list[list[Record]]:
        return [
            [h.record(order(f"{sku}-{d}", at(d), 2 + (d * (i + 1)) % 7, sku=sku))
             for i, sku in enumerate(("C", "A", "B")) if (d % 7 != 6 or d > 21) and (d + i) % 4]
            for d in range(30)
        ]  # fmt: skip

    straight = Harness(settings)
    for day in days(straight):
        straight.feed(day)
    expected = (forecasts(straight.outputs), evaluation(settings))

    redis_client(settings.redis.url).flushall()
    h = Harness(settings)
    for d, day in enumerate(days(h)):
        h.feed(day)
        if d % 3 == 2:  # a snapshot at each process's first close, then two closes more
            h.restart()
    assert (forecasts(h.outputs), evaluation(settings)) == expected


def test_a_process_restarted_before_a_partitions_first_close_still_closes_its_first_day(
    settings: Settings,
) -> None:
    h = Harness(settings)
    h.feed(daily_orders(h, 1))  # day 0, still open
    h.restart()
    h.feed([h.record(order(f"A1-{d}", at(d), 5)) for d in (1, 2)])
    assert {f["issued_at"] for f in forecasts(h.outputs)} == {at(1, 0) + "Z", at(2, 0) + "Z"}
    assert learned_buckets(settings) == 2


def test_a_revoked_partition_leaves_a_snapshot_for_its_next_owner(settings: Settings) -> None:
    h = Harness(settings.replace(snapshot_seconds=1e9, history_buckets=56))
    h.feed(varied_orders(h, 20))
    r = redis_client(settings.redis.url)
    r.delete("shelfcast:{p0}:model")
    h.loop.run_until_complete(h.pipeline.snapshot([0]))
    state, series = unpack(b"".join(r.lrange("shelfcast:{p0}:model", 0, -1)))
    assert sorted(series) == ["A1@UK", "B2@UK", "C3@UK"] and int(state["through"]) >= 0


def test_an_order_cancelled_in_its_bucket_is_neither_demand_nor_a_return(
    settings: Settings,
) -> None:
    h = Harness(settings)
    h.feed(
        [
            h.record(order("big", at(0, 9), 80_995)),
            h.record(order("small", at(0, 9), 4)),
            h.record(order("cancel-big", at(0, 10), -80_995)),
            h.record(order("return", at(1, 10), -4)),  # a return on a later day stays a return
            h.record(order("next", at(2, 10), 1)),
        ]
    )
    r = redis_client(settings.redis.url, decode_responses=True)
    day0 = int(datetime.fromisoformat(at(0)).timestamp() // 86_400)
    assert r.hget("shelfcast:{p0}:s:A1@UK:demand", str(day0)) == "4"
    assert r.hget("shelfcast:{p0}:s:A1@UK:cancelled", str(day0)) == "80995"
    assert r.hget("shelfcast:{p0}:s:A1@UK:returns", str(day0)) is None
    assert r.hget("shelfcast:{p0}:s:A1@UK:returns", str(day0 + 1)) == "4"
    assert r.hget("shelfcast:{p0}:s:A1@UK:demand", str(day0 + 1)) is None


def test_a_day_without_any_order_is_closed_and_forecast_as_closed(settings: Settings) -> None:
    h = Harness(settings)
    # no trading on Saturdays (START is a Monday: days 5, 12, 19, 26)
    records = [
        h.record(order(f"{sku}-{d}", at(d), 3, sku=sku))
        for d in range(29)
        if d % 7 != 5
        for sku in ("A1", "B2")
    ]
    out = forecasts(h.feed(records))
    r = redis_client(settings.redis.url, decode_responses=True)
    day0 = int(datetime.fromisoformat(at(0)).timestamp() // 86_400)
    closed = r.hgetall("shelfcast:{p0}:closed")
    assert closed[str(day0 + 19)] == "1" and closed[str(day0 + 18)] == "0"
    last = max((f for f in out if f["sku"] == "A1"), key=lambda f: f["issued_at"])
    for step in last["horizon"]:
        saturday = datetime.fromisoformat(step["start"].replace("Z", "")).weekday() == 5
        # two closed Saturdays in a row: the next one is expected closed
        assert (step["p90"] == 0) == saturday, step
    # nothing was learned or scored on a Saturday: every scored truth was 3
    ev = evaluation(settings)
    assert ev["moving_average|1|abs_mean"] == 0


class Crash(Exception):
    pass


def crash_scenario(h: Harness) -> list[Record]:
    records = [h.record(stock("s0", at(0, 0), on_hand=60, lead_time_days=2), "inventory")]
    for d in range(16):
        records += [h.record(order(f"o{d}-{i}", at(d, 9 + i), 5)) for i in range(3)]
        if d % 5 == 4:
            records.append(h.record(stock(f"r{d}", at(d, 15), delta=80), "inventory"))
    return records


def test_a_crash_around_any_output_loses_nothing_and_changes_no_id(settings: Settings) -> None:
    straight = Harness(settings)
    records = crash_scenario(straight)
    calls = 0

    async def counting(batch: list[Output]) -> None:
        nonlocal calls
        calls += 1
        await Harness.sink(straight, batch)

    straight.pipeline.sink = counting
    straight.feed(records, batch=5)
    expected_ids = {m.get("forecast_id") or m.get("alert_id") for _, m in straight.outputs}
    expected_alerts = {a["alert_id"]: a for a in alerts(straight.outputs)}
    assert alerts(straight.outputs) and calls > 10
    expected_evaluation = evaluation(settings)
    assert expected_evaluation["published|1|n"] > 0

    for crash_at in range(1, calls + 1):
        for delivered in (False, True):
            redis_client(settings.redis.url).flushall()
            h = Harness(settings)
            n = 0

            async def flaky(
                batch: list[Output],
                h: Harness = h,
                crash_at: int = crash_at,
                delivered: bool = delivered,
            ) -> None:
                nonlocal n
                n += 1
                if n == crash_at:
                    if delivered:  # delivered, then the worker died before recording it
                        await Harness.sink(h, batch)
                    raise Crash
                await Harness.sink(h, batch)

            h.pipeline.sink = flaky
            with contextlib.suppress(Crash):
                h.feed(records, batch=5)
            h.restart()  # Kafka redelivers everything after the last commit: here, all of it
            h.feed(records, batch=5)
            got = {m.get("forecast_id") or m.get("alert_id") for _, m in h.outputs}
            assert got == expected_ids, (crash_at, delivered)
            # a re-derived alert is the same message: time and stock included
            for a in alerts(h.outputs):
                assert a == expected_alerts[a["alert_id"]], (crash_at, delivered)
            assert learned_buckets(settings) == 15
            assert evaluation(settings) == expected_evaluation, (crash_at, delivered)


@pytest.mark.parametrize("ran", [True, False], ids=["reply-lost", "refused"])
def test_a_failed_redis_write_retried_loses_no_output_and_changes_no_id(
    settings: Settings, ran: bool
) -> None:
    straight = Harness(settings)
    records = crash_scenario(straight)
    straight.feed(records, batch=5)
    expected = {a["alert_id"]: a for a in alerts(straight.outputs)}
    expected_forecasts = {f["forecast_id"] for f in forecasts(straight.outputs)}
    writes = ("apply", "begin_close", "write_close")
    lose_at, n = 0, 0
    while lose_at <= n:  # every write in turn, the first run counting them
        lose_at += 1
        redis_client(settings.redis.url).flushall()
        h = Harness(settings)
        n = 0
        for name in writes:
            real = getattr(h.pipeline.store, name)

            async def lossy(
                *args: object, real=real, lose_at: int = lose_at, **kwargs: object
            ) -> object:
                nonlocal n
                n += 1
                if n == lose_at and not ran:  # refused: nothing written
                    raise redis.ConnectionError("connection refused")
                done = await real(*args, **kwargs)
                if n == lose_at:  # it ran; its reply did not come back
                    raise redis.ConnectionError("reply lost")
                return done

            setattr(h.pipeline.store, name, lossy)
        for i in range(0, len(records), 5):  # the worker retries the batch, as agents.retrying
            batch = records[i : i + 5]
            try:
                h.loop.run_until_complete(h.pipeline.process(batch))
            except redis.ConnectionError:
                h.loop.run_until_complete(h.pipeline.process(batch))
        got = {a["alert_id"]: a for a in alerts(h.outputs)}
        assert got == expected, lose_at  # none lost, none reused, each the same message
        assert {f["forecast_id"] for f in forecasts(h.outputs)} == expected_forecasts, lose_at
        assert learned_buckets(settings) == 15


def test_how_far_the_inventory_topic_was_read_ahead_changes_no_forecast(
    settings: Settings,
) -> None:
    """Only orders make a series forecast, from its first order's bucket: a stock snapshot
    read before B's earlier orders does not move B's start, and C, known only from stock,
    gets no forecast either way."""

    def run(inventory_first: bool) -> tuple[list[dict], dict[str, float]]:
        redis_client(settings.redis.url).flushall()
        h = Harness(settings)
        records = [h.record(order(f"a{d}", at(d), 4, sku="A")) for d in range(14)]
        records += [h.record(order(f"b{d}", at(d), 2 + d % 3, sku="B")) for d in range(5, 14)]
        records.sort(key=lambda r: json.loads(r.value)["ts"])
        stocked = [
            h.record(stock("sb", at(8, 0), sku="B", on_hand=30), "inventory"),
            h.record(stock("sc", at(3, 0), sku="C", on_hand=12), "inventory"),
        ]
        if inventory_first:
            records = stocked + records
        else:  # each where its time puts it
            records = sorted(records + stocked, key=lambda r: json.loads(r.value)["ts"])
        return forecasts(h.feed(records, batch=3)), evaluation(settings)

    in_time, read_ahead = run(False), run(True)
    assert in_time == read_ahead
    assert {f["sku"] for f in in_time[0]} == {"A", "B"}  # none for C
    assert min(f["issued_at"] for f in in_time[0] if f["sku"] == "B") == at(6, 0) + "Z"


def test_a_close_retried_live_after_a_delivery_sends_the_alerts_it_decided_first(
    settings: Settings,
) -> None:
    """Live, a close's write fails after its alerts left; before the retry the wall clock moves
    a quiet partition on and a delivery takes effect. The retry sends the alerts the first
    attempt decided, with the same content, and later alerts continue their sequence."""
    live = settings.replace(idle_advance_seconds=30)

    def scenario(h: Harness) -> list[list[Record]]:
        days = [[h.record(stock("s0", at(0, 0), on_hand=60, lead_time_days=2), "inventory")]]
        for d in range(16):
            # each day's delivery is read before the order that closes the day before
            day = [h.record(stock(f"r{d}", at(d, 9, 30), delta=40), "inventory")] if d % 3 else []
            days.append(day + [h.record(order(f"o{d}-{i}", at(d, 9 + i), 6)) for i in range(3)])
        return days

    failures = 0
    for closes_to_fail in range(1, 16):  # days 0..14 close
        redis_client(live.redis.url).flushall()
        h = Harness(live)
        real, n = h.pipeline.store.write_close, 0

        async def failing(
            *args: object, real=real, fail: int = closes_to_fail, **kwargs: object
        ) -> None:
            nonlocal n
            n += 1
            if n == fail:
                raise redis.ConnectionError("connection refused")
            await real(*args, **kwargs)

        h.pipeline.store.write_close = failing  # type: ignore[method-assign]
        for batch in scenario(h):
            try:
                h.loop.run_until_complete(h.pipeline.process(batch))
            except redis.ConnectionError:
                failures += 1  # quiet for most of a day before the retry
                later = time.time() + 23 * 3_600
                h.loop.run_until_complete(h.pipeline.advance_idle(later))
                h.loop.run_until_complete(h.pipeline.process(batch))
        rows = [
            (a["alert_id"], a["on_hand"], a["reorder_point"], a["ts"]) for a in alerts(h.outputs)
        ]
        assert rows and alert_problems(rows) == [], (closes_to_fail, alert_problems(rows))
    assert failures == 15


def test_a_close_cancelled_by_another_partitions_failure_is_learned_whole_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partition 1's Redis write fails while partition 0's close is learning in its worker
    thread: the batch's task group cancels partition 0, the thread runs on, and the retried
    batch must still score that close exactly as an uninterrupted run does."""

    def days(h: Harness) -> list[list[Record]]:
        return [
            [h.record(order(f"p{p}-{d}", at(d), 3 + (d * (p + 2)) % 5, sku=f"P{p}"), partition=p)
             for p in (0, 1)]
            for d in range(12)
        ]  # fmt: skip

    straight = Harness(settings)
    for batch in days(straight):
        straight.feed(batch)
    expected = evaluation(settings)

    redis_client(settings.redis.url).flushall()
    h = Harness(settings)
    learning = threading.Event()
    real_compute, real_apply = pipeline_module.compute, h.pipeline.store.apply

    def slow_compute(*args: object) -> object:
        done = real_compute(*args)
        if armed and args[1].series == ["P0@UK"]:  # type: ignore[attr-defined]
            learning.set()
            time.sleep(0.5)  # learned; the caller is cancelled before it hears back
        return done

    async def failing_apply(p: int, *args: object, **kwargs: object) -> object:
        if armed and p == 1:
            await asyncio.to_thread(learning.wait, 5)
            raise redis.ConnectionError("connection reset")
        return await real_apply(p, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "compute", slow_compute)
    h.pipeline.store.apply = failing_apply  # type: ignore[method-assign]
    armed = False
    for d, batch in enumerate(days(h)):
        armed = d == 6
        try:
            h.loop.run_until_complete(h.pipeline.process(batch))
        except redis.ConnectionError:
            armed = False
            h.loop.run_until_complete(h.pipeline.process(batch))  # as agents.retrying does
    assert learning.is_set()
    assert evaluation(settings) == expected


def test_inventory_in_the_stream_does_not_make_outputs_depend_on_batching(
    settings: Settings,
) -> None:
    def run(batch: int) -> list[tuple[str, dict]]:
        redis_client(settings.redis.url).flushall()
        h = Harness(settings)
        records = crash_scenario(h)
        # deliver each inventory record in the batch where it arrived, between the orders
        records.sort(key=lambda r: json.loads(r.value)["ts"])
        return h.feed(records, batch=batch)

    assert run(1) == run(4) == run(1000)


def test_one_wildly_skewed_timestamp_does_not_close_weeks_of_buckets(settings: Settings) -> None:
    h = Harness(settings)
    h.feed(daily_orders(h, 5))
    skewed = h.record(order("typo", (START + timedelta(days=730)).isoformat(), 1))
    assert forecasts(h.feed([skewed])) == []  # applied, but the watermark did not jump
    r = redis_client(settings.redis.url, decode_responses=True)
    assert r.hget("shelfcast:{p0}:clock", "closed") is not None
    out = h.feed([h.record(order("next", at(5), 5))])
    assert len({f["issued_at"] for f in forecasts(out)}) == 1  # day 4 closes normally


def test_future_times_wrong_keys_and_the_rollup_location_are_dead_letters(
    settings: Settings,
) -> None:
    h = Harness(settings)
    future = order("f", datetime.fromtimestamp(time.time() + 3 * 86_400).isoformat(), 1)
    out = h.feed(
        [
            h.record(future),
            Record("orders", 0, 99, b"B2", order("k", at(0), 1)),
            Record("orders", 0, 100, None, order("n", at(0), 1)),
            # keyed by series, as before input was keyed by SKU: it could land elsewhere
            Record("orders", 0, 101, b"A1@UK", order("s", at(0), 1)),
            h.record(order("r", at(0), 1, location="*")),
        ]
    )
    dead = [m for t, m in out if t == "shelfcast-dlq"]
    assert [m["reason"] for m in dead] == [
        "time_in_future", "key_mismatch", "key_mismatch", "key_mismatch", "bad_field",
    ]  # fmt: skip
    assert "is not the SKU 'A1'" in dead[3]["detail"] and "reserved" in dead[4]["detail"]


def test_no_alert_while_stock_is_unknown(settings: Settings) -> None:
    h = Harness(settings)
    h.feed(daily_orders(h, 12, qty=10))  # orders, but no inventory feed for the series
    assert alerts(h.outputs) == []
    out = h.feed([h.record(stock("s", at(11, 12), on_hand=5), "inventory")])
    assert [a["status"] for a in alerts(out)] == ["raised"]  # known now, and low


def test_offsets_going_backwards_are_reported_not_silently_dropped(settings: Settings) -> None:
    h = Harness(settings)
    h.feed(daily_orders(h, 3))
    regression = metrics.EVENTS.labels("orders", "offset_regression")
    before = regression._value.get()
    h.offsets.clear()  # a recreated topic starts again at offset 0, with new events
    h.feed([h.record(order("new-after-recreate", at(3), 2))])
    assert regression._value.get() == before + 1
    r = redis_client(settings.redis.url)
    assert int(r.hget("shelfcast:{p0}:stats", "offset_regression")) == 1


def learned_buckets(settings: Settings) -> int:
    return int(redis_client(settings.redis.url).hget("shelfcast:{p0}:stats", "learned_buckets"))


def taken_over(settings: Settings) -> tuple[Harness, Harness, list[Record]]:
    """Worker A closes days 0..9 of 21 days of orders; then the group gives the partition to
    B, which gets the input again from A's last commit (all duplicates) and closes days 10..14."""
    a = Harness(settings)
    records = daily_orders(a, 21)
    a.feed(records[:11])
    b = Harness(settings)
    b.feed(records[:16])
    return a, b, records


def test_a_partition_that_comes_back_after_a_rebalance_is_not_learned_twice(
    settings: Settings,
) -> None:
    a, _, records = taken_over(settings)
    a.pipeline.assign([0])  # the rebalance hands the partition back to A
    a.outputs.clear()
    a.feed(records[16:])
    issued = {f["issued_at"] for f in forecasts(a.outputs)}
    assert len(issued) == 5  # days 15..19 only: A did not re-close what B closed
    assert learned_buckets(settings) == 20


def test_a_rebalance_while_idle_partitions_are_taken_over_is_no_crash(
    settings: Settings,
) -> None:
    # the agent hands advance_idle its live set of assigned partitions, which a rebalance
    # changes while a takeover awaits Redis (once: "Set changed size during iteration")
    h = Harness(settings.replace(partitions=3))
    owned = {0, 1, 2}
    own = h.pipeline._own
    taken: list[int] = []

    async def own_then_lose_the_next(p: int) -> object:
        taken.append(p)
        owned.discard(p + 1)
        return await own(p)

    h.pipeline._own = own_then_lose_the_next  # type: ignore[method-assign]
    h.loop.run_until_complete(h.pipeline.advance_idle(time.time(), owned))
    assert taken == [0, 2]  # partition 1 was revoked before its turn


def test_a_worker_paused_past_its_session_writes_nothing_once_another_took_over(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, records = taken_over(settings)  # A was paused meanwhile
    r = redis_client(settings.redis.url)
    before = {k: r.dump(k) for k in r.scan_iter("shelfcast:{p0}:*") if k != b"shelfcast:{p0}:owner"}
    fenced = metrics.FENCED._value.get()
    a.outputs.clear()
    with caplog.at_level(logging.ERROR):
        a.feed(records[11:21])  # A resumes with what it had fetched, and more
        a.loop.run_until_complete(a.pipeline.advance_idle(time.time() + 10**9, {0}))
    assert a.outputs == []  # no forecast, no alert
    assert {k: r.dump(k) for k in before} == before  # and not one write landed
    assert set(r.scan_iter("shelfcast:{p0}:*")) == {*before, b"shelfcast:{p0}:owner"}
    assert metrics.FENCED._value.get() == fenced + 1
    assert sum("no longer owns it" in m for m in caplog.messages) == 1
    b.feed(records[16:])  # B goes on as if A never woke
    assert learned_buckets(settings) == 20


def test_an_owner_generation_that_went_back_stops_the_worker_instead_of_skipping(
    settings: Settings,
) -> None:
    h = Harness(settings)
    records = daily_orders(h, 6)
    h.feed(records[:3])
    # Redis lost its writes (restarted without AOF): the owner key is gone, Kafka still
    # assigns the partition here; dropping it would let Faust commit input never applied
    redis_client(settings.redis.url).delete("shelfcast:{p0}:owner")
    with pytest.raises(RedisBehind, match="owner generation went from 1 to None"):
        h.feed(records[3:])


def test_a_partition_running_ahead_does_not_disturb_another(settings: Settings) -> None:
    # a short history makes any rebuild of a model visible in its forecasts
    s = settings.replace(history_buckets=3, active_buckets=5)

    def run(other_runs_ahead: bool) -> list[dict]:
        redis_client(s.redis.url).flushall()
        h = Harness(s)
        slow = [
            h.record(order(f"s{d}", at(d), d % 4 + 1, sku="SLOW"), partition=1) for d in range(12)
        ]
        fast = [h.record(order(f"f{d}", at(d), 1, sku="FAST"), partition=0) for d in range(30)]
        h.feed(slow[:6])
        if other_runs_ahead:
            h.feed(fast)  # partition 0 reaches day 29 while partition 1 is at day 4
        h.feed(slow[6:])
        return [f for f in forecasts(h.outputs) if f["sku"] == "SLOW"]

    assert run(other_runs_ahead=True) == run(other_runs_ahead=False)


def test_a_crash_before_a_deliverys_alert_is_recorded_derives_the_same_alert(
    settings: Settings,
) -> None:
    h = Harness(settings)
    h.feed(stocked_and_selling(h))
    h.feed([h.record(stock("r1", at(9, 14), delta=500), "inventory")])
    after = h.record(order("after", at(9, 15), 1))

    async def crash(batch: list[Output]) -> None:
        raise Crash

    h.pipeline.sink = crash  # the delivery takes effect, then the worker dies
    with contextlib.suppress(Crash):
        h.feed([after])
    h.restart()
    out = alerts(h.feed([after]))  # redelivered: a duplicate that moves no stock
    assert [(a["status"], a["ts"]) for a in out] == [("cleared", at(9, 14) + "Z")]


def test_on_a_quiet_partition_a_delivery_takes_effect_with_the_wall_clock(
    settings: Settings,
) -> None:
    h = Harness(settings.replace(idle_advance_seconds=30))
    assert [a["status"] for a in alerts(h.feed(stocked_and_selling(h)))] == ["raised"]
    quiet_since = time.time()
    # live: the delivery comes an hour after the last order, and no order follows
    assert alerts(h.feed([h.record(stock("r1", at(9, 13), delta=500), "inventory")])) == []
    h.loop.run_until_complete(h.pipeline.advance_idle(quiet_since + 10))
    assert alerts(h.outputs)[-1]["status"] == "raised"  # not quiet long enough to move time
    h.loop.run_until_complete(h.pipeline.advance_idle(quiet_since + 2 * 3_600))
    cleared = alerts(h.outputs)[-1]
    assert cleared["status"] == "cleared" and cleared["ts"] == at(9, 13) + "Z"


def test_a_quiet_partition_closes_its_buckets_on_the_wall_clock(settings: Settings) -> None:
    h = Harness(settings.replace(idle_advance_seconds=30))
    h.feed(daily_orders(h, 3))  # days 0..2: day 2 still open
    assert len({f["issued_at"] for f in forecasts(h.outputs)}) == 2
    quiet_since = time.time()
    soon = h.loop.run_until_complete(h.pipeline.advance_idle(quiet_since + 10))
    assert soon.forecasts == 0  # not quiet long enough
    later = h.loop.run_until_complete(h.pipeline.advance_idle(quiet_since + 2 * 86_400))
    assert later.forecasts > 0
    issued = sorted({f["issued_at"] for f in forecasts(h.outputs)})
    assert issued[-1] > at(3)  # day 2 and the quiet days after it closed, with zero demand
    h.pipeline.assign([0])
    assert (
        h.loop.run_until_complete(h.pipeline.advance_idle(quiet_since + 9 * 86_400)).forecasts == 0
    )


def test_the_wall_clock_closes_only_the_partitions_this_worker_owns(settings: Settings) -> None:
    h = Harness(settings.replace(idle_advance_seconds=30))
    for p in (0, 1):
        h.feed([h.record(order(f"p{p}-{d}", at(d), 5, sku=f"S{p}"), partition=p) for d in range(3)])
    quiet_since = time.time()
    before = {p: h.pipeline.closed[p] for p in (0, 1)}
    h.loop.run_until_complete(h.pipeline.advance_idle(quiet_since + 2 * 86_400, owned={0}))
    assert h.pipeline.closed[0] > before[0] and h.pipeline.closed[1] == before[1]
    late = {f["sku"] for f in forecasts(h.outputs) if f["issued_at"] > at(3)}
    assert late == {"S0"}


def test_live_one_till_ahead_of_the_clock_does_not_make_other_orders_late(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    noon = datetime.fromisoformat(at(2, 12) + "+00:00").timestamp()
    monkeypatch.setattr(time, "time", lambda: noon)  # the wall clock at noon of day 2
    h = Harness(settings.replace(idle_advance_seconds=30))
    before = metrics.EVENTS.labels("orders", "ahead_of_clock")._value.get()
    h.feed([h.record(order("a1", at(2, 10), 5))])
    # a till 14 hours east sending naive local time: 02:00 on day 3, which would close day 2
    h.feed([h.record(order("east", at(3, 2), 1, sku="B1"))])
    assert metrics.EVENTS.labels("orders", "ahead_of_clock")._value.get() == before + 1
    late = metrics.EVENTS.labels("orders", "late")._value.get()
    h.feed([h.record(order("a2", at(2, 11), 5))])  # an ordinary order of the same morning
    assert metrics.EVENTS.labels("orders", "late")._value.get() == late
    assert h.pipeline.closed[0] < int(noon // 86_400)


def test_an_alert_at_a_close_is_stamped_with_the_stock_it_compared(settings: Settings) -> None:
    h = Harness(settings)
    h.feed([h.record(stock("s0", at(0, 0), on_hand=1000), "inventory")])
    h.feed(daily_orders(h, 9, qty=10))
    # a wholesale order leaves 210, still above the reorder point of 10 a day
    assert alerts(h.feed([h.record(order("big", at(9, 12), 700))])) == []
    # day 9 closes when an order past the hour of lateness comes; by then a delivery dated
    # after midnight has taken effect
    half_past_midnight = (START + timedelta(days=10, minutes=30)).isoformat()
    h.feed([h.record(stock("r1", half_past_midnight, delta=50), "inventory")])
    out = alerts(h.feed([h.record(order("next", at(10, 2), 1))]))
    # the close's forecast has seen the 700: its reorder point is above the stock
    assert [(a["status"], a["on_hand"]) for a in out] == [("raised", 1000 - 90 - 700 + 50 - 1)]
    assert out[0]["ts"] == at(10, 2) + "Z"  # not the close's midnight, before the delivery


def test_a_corrupt_snapshot_is_rebuilt_from_the_history_not_a_crash(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(settings.replace(snapshot_seconds=3600.0))
    records = varied_orders(h, 30)
    h.feed(records[:40])
    r = redis_client(settings.redis.url)
    assert r.exists("shelfcast:{p0}:model")
    r.delete("shelfcast:{p0}:model")
    r.rpush("shelfcast:{p0}:model", b"not a snapshot")
    h.restart()
    rebuilds = metrics.SNAPSHOT_REBUILDS._value.get()
    with caplog.at_level(logging.ERROR, logger="streamer.pipeline.batch"):
        out = h.feed(records[40:])
    assert forecasts(out)
    assert sum("snapshot unreadable" in m for m in caplog.messages) == 1
    assert metrics.SNAPSHOT_REBUILDS._value.get() == rebuilds + 1


def test_a_partition_whose_first_close_publishes_nothing_carries_on(settings: Settings) -> None:
    h = Harness(settings)
    # a return is the partition's first order: its bucket counts as closed and no model of
    # the series is ready, so that close publishes nothing
    h.feed([h.record(order("r0", at(0), -2))])
    out = h.feed([h.record(order(f"o{d}", at(d), 3)) for d in (1, 2, 3)])
    assert forecasts(out)  # the later closes publish
    day2 = int(datetime.fromisoformat(at(2, 0)).timestamp() // 86_400)
    assert int(redis_client(settings.redis.url).hget("shelfcast:{p0}:clock", "closed")) == day2


def test_a_series_back_after_a_whole_activity_window_restarts_like_the_live_run(
    settings: Settings,
) -> None:
    settings = settings.replace(active_buckets=5, history_buckets=112, snapshot_seconds=1e9)

    def records(h: Harness) -> list[Record]:
        days = [(d, "UK") for d in range(45)] + [(d, "FR") for d in (*range(6), *range(20, 45))]
        return [
            h.record(order(f"{loc}-{d}", at(d, 10), 2 + d % 5, location=loc))
            for d, loc in sorted(days)
        ]

    straight = Harness(settings)
    straight.feed(records(straight))
    expected = {f["forecast_id"]: f for f in forecasts(straight.outputs)}
    redis_client(settings.redis.url).flushall()
    h = Harness(settings)
    todo = records(h)
    cut = next(i for i, rec in enumerate(todo) if json.loads(rec.value)["ts"] >= at(32, 0))
    h.feed(todo[:cut])
    h.restart()  # the snapshot is from the first close: the replay spans the gap
    h.feed(todo[cut:])
    assert {f["forecast_id"]: f for f in forecasts(h.outputs)} == expected


def test_a_raised_alert_recommends_an_order_whose_purchase_order_clears_it(
    settings: Settings,
) -> None:
    """The closed loop on one series: the alert says how much to order (up to its level,
    rounded up to whole packs); the planner's purchase order of that quantity lifts the
    inventory position and clears it; the delivery moves the units from on order to on hand
    and raises nothing."""
    h = Harness(settings)
    h.feed([h.record(stock("s0", at(0, 8), on_hand=200, pack_size=12), "inventory")])
    # day by day until the first alert, which the planner acts on at once
    for record in daily_orders(h, 60):
        if got := [a for a in alerts(h.feed([record])) if a["status"] == "raised"]:
            break
    [raised] = got
    position, up_to, qty = (
        raised[k] for k in ("inventory_position", "order_up_to", "order_quantity")
    )
    assert raised["on_order"] == 0 and position == raised["on_hand"]
    assert up_to >= raised["reorder_point"] + 1
    assert qty % 12 == 0 and qty - 12 < up_to - position <= qty
    assert raised["pack_size"] == 12

    when = datetime.fromisoformat(raised["ts"].removesuffix("Z")) + timedelta(minutes=1)
    po = stock("po1", when.isoformat(), ordered=qty, po_id="PO-1")
    day = (when - START).days
    cleared = alerts(h.feed([h.record(po, "inventory"), h.record(order("next", at(day + 1), 1))]))
    assert [(a["status"], a["on_order"]) for a in cleared] == [("cleared", qty)]
    assert cleared[0]["inventory_position"] == cleared[0]["on_hand"] + qty
    assert cleared[0]["order_quantity"] == 0

    grn = stock("grn1", at(day + 3, 7), delta=qty, po_id="PO-1")
    after = h.feed([h.record(grn, "inventory"), h.record(order("later", at(day + 3, 9), 1))])
    assert alerts(after) == []
    state = redis_client(settings.redis.url, decode_responses=True).hgetall(
        "shelfcast:{p0}:s:A1@UK:state"
    )
    assert state["on_order"] == "0"
