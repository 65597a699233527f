"""The Lua feature store against a real redis-server."""

import asyncio
from dataclasses import replace

import pytest
import redis
import redis.asyncio as aioredis

from streamer import features
from streamer.features import (
    APPLIED,
    DUPLICATE,
    STALE,
    ApplyResult,
    CloseFields,
    FeatureStore,
    Fold,
    StockEffect,
)

DAY_MS = 86_400_000


def effect(
    eid: str, kind: str, qty: int, day: int = 1, offset: int = 0, **kw: object
) -> StockEffect:
    return StockEffect(
        kind=kind,
        series=kw.pop("series", "A1@UK"),  # type: ignore[arg-type]
        event_id=eid,
        bucket=day,
        ts_ms=day * DAY_MS + int(kw.pop("at", 0)),  # type: ignore[call-overload]
        quantity=qty,
        unit_price=kw.pop("price", 2.0),  # type: ignore[arg-type]
        offsets_field=str(kw.pop("tp", "orders:0")),
        offset=offset,
        partition=0,
        lead_time_days=kw.pop("lead", None),  # type: ignore[arg-type]
    )


def apply_full(
    url: str,
    effects: list[StockEffect],
    advances: dict[int, int] | None = None,
    walk: bool = True,
) -> ApplyResult:
    """Apply, then (``walk``) record the deliveries that took effect as walked for alerts,
    as the pipeline does once it has written their alert states."""

    async def go() -> ApplyResult:
        client = aioredis.Redis.from_url(url)
        try:
            store = FeatureStore(client, 3600)
            res = await store.apply(effects, advances)
            if walk:
                await store.write_alert_states({}, res.folds)
            return res
        finally:
            await client.aclose()

    return asyncio.run(go())


def apply(url: str, effects: list[StockEffect]) -> list[int]:
    return apply_full(url, effects).statuses


def state(url: str, series: str = "A1@UK") -> dict[str, str]:
    r = redis.Redis.from_url(url, decode_responses=True)
    return r.hgetall(f"shelfcast:{{{series}}}:state")


def test_orders_update_buckets_and_stock_in_one_call(redis_url: str) -> None:
    statuses = apply(
        redis_url,
        [
            effect("o1", "o", 5, offset=0),
            effect("o2", "o", 3, offset=1),
            effect("r1", "o", -2, offset=2),  # a return
            effect("o3", "o", 4, day=2, offset=3),
        ],
    )
    assert statuses == [APPLIED] * 4
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hgetall("shelfcast:{A1@UK}:demand") == {"1": "8", "2": "4"}
    assert r.hgetall("shelfcast:{A1@UK}:returns") == {"1": "2"}
    assert r.hget("shelfcast:{A1@UK}:lines", "1") == "2"
    assert float(r.hget("shelfcast:{A1@UK}:revenue", "1")) == 16.0
    assert state(redis_url)["on_hand"] == "-10"
    assert r.zscore("shelfcast:part:0:series", "A1@UK") == 2
    assert r.hget("shelfcast:offsets", "orders:0") == "4"


def test_redelivery_and_replay_are_idempotent(redis_url: str) -> None:
    batch = [effect("o1", "o", 5, offset=0), effect("o2", "o", 3, offset=1)]
    assert apply(redis_url, batch) == [APPLIED, APPLIED]
    before = redis.Redis.from_url(redis_url).hgetall("shelfcast:{A1@UK}:demand")
    # the same offsets again (Kafka redelivery)
    assert apply(redis_url, batch) == [DUPLICATE, DUPLICATE]
    # the same event ids at new offsets (a file replayed twice)
    replayed = [effect("o1", "o", 5, offset=10), effect("o2", "o", 3, offset=11)]
    assert apply(redis_url, replayed) == [DUPLICATE, DUPLICATE]
    assert redis.Redis.from_url(redis_url).hgetall("shelfcast:{A1@UK}:demand") == before
    assert state(redis_url)["on_hand"] == "-8"


def test_snapshot_counts_later_movements_and_supersedes_earlier_ones(redis_url: str) -> None:
    hour = 3_600_000
    apply(
        redis_url,
        [
            effect("o1", "o", 5, at=1 * hour, offset=0),  # before the snapshot
            effect("o2", "o", 2, at=5 * hour, offset=1),  # after it
            effect("d1", "d", 10, at=4 * hour, offset=2, tp="inventory:0"),
        ],
    )
    # the snapshot taken at 03:00 arrives late: on hand = 50 - 2 + 10
    assert apply(redis_url, [effect("s1", "s", 50, at=3 * hour, offset=3, tp="inventory:0")]) == [
        APPLIED
    ]
    assert state(redis_url)["on_hand"] == "58"
    # a movement older than the snapshot is already inside it
    apply(redis_url, [effect("o0", "o", 7, at=2 * hour, offset=4)])
    assert state(redis_url)["on_hand"] == "58"
    # an older snapshot than the one applied is stale and changes nothing
    assert apply(redis_url, [effect("s0", "s", 999, at=2 * hour, offset=5, tp="inventory:0")]) == [
        STALE
    ]
    assert state(redis_url)["on_hand"] == "58"


def test_lead_time_from_inventory_is_stored(redis_url: str) -> None:
    apply(redis_url, [effect("s1", "s", 20, lead=5.5, tp="inventory:0")])
    assert float(state(redis_url)["lead_time"]) == 5.5


def test_a_delivery_read_ahead_of_the_orders_takes_effect_at_its_event_time(
    redis_url: str,
) -> None:
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("o1", "o", 5, at=1 * hour, offset=0)])
    # read before the 05:00 order: it waits for the orders to reach 06:00
    res = apply_full(redis_url, [effect("d1", "d", 10, at=6 * hour, offset=0, **inv)])
    assert res.statuses == [APPLIED] and res.on_hand == [-5] and res.folds == []
    assert apply(redis_url, [effect("d1", "d", 10, at=6 * hour, offset=0, **inv)]) == [DUPLICATE]
    res = apply_full(redis_url, [effect("o2", "o", 2, at=5 * hour, offset=1)])
    assert res.on_hand == [-7] and res.folds == []
    res = apply_full(redis_url, [effect("o3", "o", 1, at=7 * hour, offset=2)])
    # it took effect before the 07:00 order, once: redelivered, it was not queued again
    assert res.folds == [Fold(0, 0, "A1@UK", 1 * DAY_MS + 6 * hour, 3)]
    assert res.on_hand == [2]
    assert state(redis_url)["stock_known"] == "1"
    # an idle partition: its clock moves without orders, and the delivery is due after them
    apply(redis_url, [effect("d2", "d", 4, at=9 * hour, offset=1, **inv)])
    assert state(redis_url)["on_hand"] == "2"
    res = apply_full(redis_url, [], {0: 1 * DAY_MS + 10 * hour})
    assert res.folds == [Fold(0, 0, "A1@UK", 1 * DAY_MS + 9 * hour, 6)]
    assert state(redis_url)["on_hand"] == "6"


def test_a_pending_delivery_inside_a_later_snapshot_is_not_counted_again(redis_url: str) -> None:
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("o1", "o", 5, at=1 * hour, offset=0)])
    apply(redis_url, [effect("d1", "d", 10, at=3 * hour, offset=0, **inv)])
    # counted at 04:00, delivery included
    apply(redis_url, [effect("s1", "s", 40, at=4 * hour, offset=1, **inv)])
    res = apply_full(redis_url, [effect("o2", "o", 2, at=5 * hour, offset=1)])
    assert res.folds[0].on_hand == 40
    assert state(redis_url)["on_hand"] == "38"


def test_a_delivery_whose_alert_walk_was_not_recorded_is_reported_again(redis_url: str) -> None:
    hour = 3_600_000
    apply(redis_url, [effect("o1", "o", 5, at=1 * hour, offset=0)])
    apply(redis_url, [effect("d1", "d", 10, at=2 * hour, offset=0, tp="inventory:0")])
    # the worker dies after the fold, before it records the alert state it walked
    folded = apply_full(redis_url, [effect("o2", "o", 1, at=3 * hour, offset=1)], walk=False)
    assert folded.folds == [Fold(0, 0, "A1@UK", 1 * DAY_MS + 2 * hour, 5)]
    # redelivered, the order is a duplicate and folds nothing: the delivery is walked again,
    # at its own time, at the current stock
    again = apply_full(redis_url, [effect("o2", "o", 1, at=3 * hour, offset=1)])
    assert again.statuses == [DUPLICATE]
    assert again.folds == [Fold(0, 0, "A1@UK", 1 * DAY_MS + 2 * hour, 4)]
    assert apply_full(redis_url, [effect("o3", "o", 1, at=4 * hour, offset=2)]).folds == []


def test_a_skewed_order_does_not_move_the_stock_clock(redis_url: str) -> None:
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("o1", "o", 5, at=1 * hour, offset=0)])
    skewed = replace(effect("typo", "o", 1, day=60, offset=1), moves_clock=False)
    apply(redis_url, [skewed])
    apply(redis_url, [effect("d1", "d", 10, at=6 * hour, offset=0, **inv)])
    assert state(redis_url)["on_hand"] == "-6"  # still waiting for the orders to reach it


def test_deltas_apply_at_once_before_a_partition_has_any_order(redis_url: str) -> None:
    apply(redis_url, [effect("d1", "d", 10, day=3, tp="inventory:0")])
    assert state(redis_url)["on_hand"] == "10"


def test_one_event_id_in_two_buckets_is_two_deliveries(redis_url: str) -> None:
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("o1", "o", 5, day=1, offset=0)])
    apply(redis_url, [effect("d", "d", 10, day=2, offset=0, **inv)])
    apply(redis_url, [effect("d", "d", 10, day=3, offset=1, **inv)])
    apply(redis_url, [effect("o2", "o", 1, day=4, offset=1)])
    assert state(redis_url)["on_hand"] == str(-5 + 10 + 10 - 1)


def test_a_deferred_delta_makes_its_series_active_when_it_takes_effect(redis_url: str) -> None:
    # An inactive series is forecast again from a delivery's event time, not from when the
    # inventory topic happened to be read: replays must not depend on that.
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    active = "shelfcast:part:0:series"
    apply(redis_url, [effect("o1", "o", 5, day=1, offset=0, series="B1@UK")])
    apply(redis_url, [effect("d1", "d", 10, day=3, offset=0, tp="inventory:0")])
    assert r.zscore(active, "A1@UK") is None
    apply(redis_url, [effect("o2", "o", 1, day=4, offset=1, series="B1@UK")])
    assert r.zscore(active, "A1@UK") == 3


def test_a_snapshot_larger_than_a_chunk_goes_in_pieces_and_comes_back_whole(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "SNAPSHOT_CHUNK", 7)
    blob = bytes(range(50))

    async def run() -> tuple[list[bytes] | None, list[bytes] | None, int]:
        client = aioredis.Redis.from_url(redis_url)
        store = FeatureStore(client, 3600)
        await store.write_partition_snapshot(3, blob)
        revoked = await store.read_partition_snapshot(3)
        await store.write_close(
            3, 10, CloseFields(["A1@UK"], ["1.5|1.0|0.5|0.25|3.0|A1@UK|9|tsb@2"], ["9|tsb|2|1"],
            ["A1@UK"], ["1.0|2.0|nan"]), [], closed=False,
            learned=1, trim_before=-100,
            inactive_before=0, clock={"3:closed": 10}, evaluation={}, snapshot=blob[::-1],
        )  # fmt: skip
        closed = await store.read_partition_snapshot(3)
        pieces = await client.llen("shelfcast:part:3:model")
        await client.aclose()
        return revoked, closed, pieces

    revoked, closed, pieces = asyncio.run(run())
    assert revoked is not None and closed is not None and pieces == 8
    assert b"".join(revoked) == blob and b"".join(closed) == blob[::-1]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hget("shelfcast:part:3:rop", "A1@UK") == "1.5|1.0|0.5|0.25|3.0|A1@UK|9|tsb@2"
    assert r.hget("shelfcast:part:3:forecast", "A1@UK") == "9|tsb|2|1"
    assert r.hget("shelfcast:part:3:rolling", "A1@UK") == "1.0|2.0|nan"


def test_a_close_recorded_twice_or_out_of_order_writes_nothing(redis_url: str) -> None:
    def fields(value: str) -> CloseFields:
        return CloseFields(["A1@UK"], [value], ["9|tsb|2|1"], ["A1@UK"], ["1.0|2.0|3.0"])

    async def close(store: FeatureStore, bucket: int, rop: str) -> None:
        await store.write_close(
            3, bucket, fields(rop), [], closed=False, learned=5, trim_before=bucket - 100,
            inactive_before=0, clock={"3:closed": bucket}, evaluation={"m|1|n": 5.0},
            snapshot=None,
        )  # fmt: skip

    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url)
        store = FeatureStore(client, 3600)
        await close(store, 10, "1.0|1|1|1|3|a")
        await close(store, 10, "2.0|1|1|1|3|b")  # a retry whose first reply was lost
        await close(store, 9, "3.0|1|1|1|3|c")  # a stale owner's older close
        await client.aclose()

    asyncio.run(run())
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hget("shelfcast:clock", "3:closed") == "10"
    assert r.hget("shelfcast:stats", "learned_buckets") == "5"
    assert r.hget("shelfcast:evaluation", "m|1|n") == "5"
    assert r.hget("shelfcast:part:3:rop", "A1@UK") == "1.0|1|1|1|3|a"
