"""The Lua feature store against a real redis-server."""

import asyncio
from dataclasses import replace

import pytest
from redis import Redis

from streamer.features import store as features
from streamer.features.codec import AlertRecord, Status, StockEffect, outbox_entry
from streamer.features.store import ApplyResult, CloseFields, FeatureStore, Fenced
from tests.conftest import async_redis_client, redis_client

# the integration tests of the feature store: on one Redis and on a Redis Cluster
pytestmark = pytest.mark.cluster

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
        lead_time_days=kw.pop("lead", None),  # type: ignore[arg-type]
        po_id=kw.pop("po", None),  # type: ignore[arg-type]
        pack_size=kw.pop("pack", None),  # type: ignore[arg-type]
        customer_id=kw.pop("customer", None),  # type: ignore[arg-type]
    )


def apply_full(
    url: str,
    effects: list[StockEffect],
    advance_ms: int | None = None,
    delivered: int = 0,
    signals: bool = False,
) -> ApplyResult:
    """Apply to partition 0 as its owner."""

    async def go() -> ApplyResult:
        client = async_redis_client(url)
        try:
            store = FeatureStore(client, 3600, signals=signals)
            return await store.apply(0, await store.claim(0), effects, advance_ms, delivered)
        finally:
            await client.aclose()

    return asyncio.run(go())


def apply(url: str, effects: list[StockEffect]) -> list[int]:
    return apply_full(url, effects).statuses


def state(url: str, series: str = "A1@UK") -> dict[str, str]:
    r = redis_client(url, decode_responses=True)
    return r.hgetall(f"shelfcast:{{p0}}:s:{series}:state")


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
    assert statuses == [Status.APPLIED] * 4
    r = redis_client(redis_url, decode_responses=True)
    assert r.hgetall("shelfcast:{p0}:s:A1@UK:demand") == {"1": "8", "2": "4"}
    assert r.hgetall("shelfcast:{p0}:s:A1@UK:returns") == {"1": "2"}
    assert r.hget("shelfcast:{p0}:s:A1@UK:lines", "1") == "2"
    assert float(r.hget("shelfcast:{p0}:s:A1@UK:revenue", "1")) == 16.0
    assert state(redis_url)["on_hand"] == "-10"
    assert r.zscore("shelfcast:{p0}:series", "A1@UK") == 2
    assert r.hget("shelfcast:{p0}:offsets", "orders:0") == "4"


def test_redelivery_and_replay_are_idempotent(redis_url: str) -> None:
    batch = [effect("o1", "o", 5, offset=0), effect("o2", "o", 3, offset=1)]
    assert apply(redis_url, batch) == [Status.APPLIED, Status.APPLIED]
    before = redis_client(redis_url).hgetall("shelfcast:{p0}:s:A1@UK:demand")
    # the same offsets again (Kafka redelivery)
    assert apply(redis_url, batch) == [Status.DUPLICATE, Status.DUPLICATE]
    # the same event ids at new offsets (a file replayed twice)
    replayed = [effect("o1", "o", 5, offset=10), effect("o2", "o", 3, offset=11)]
    assert apply(redis_url, replayed) == [Status.DUPLICATE, Status.DUPLICATE]
    assert redis_client(redis_url).hgetall("shelfcast:{p0}:s:A1@UK:demand") == before
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
        Status.APPLIED
    ]
    assert state(redis_url)["on_hand"] == "58"
    # a movement older than the snapshot is already inside it
    apply(redis_url, [effect("o0", "o", 7, at=2 * hour, offset=4)])
    assert state(redis_url)["on_hand"] == "58"
    # an older snapshot than the one applied is stale and changes nothing
    assert apply(redis_url, [effect("s0", "s", 999, at=2 * hour, offset=5, tp="inventory:0")]) == [
        Status.STALE
    ]
    assert state(redis_url)["on_hand"] == "58"


def test_a_snapshot_read_after_weeks_of_later_orders_still_counts_them(redis_url: str) -> None:
    """A backlog's orders applied ahead of the inventory: the movements after the snapshot
    stamped among them are kept from the inventory read there, not from the newest order."""
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("d0", "d", 1, day=1, offset=0, series="B2@UK", **inv)])
    orders = [effect(f"o{d}", "o", 1, day=d, offset=d) for d in range(1, 61)]
    apply(redis_url, orders)  # 60 days of orders, read before the day-2 snapshot below
    snapshot = effect("s2", "s", 100, day=2, at=-1, offset=1, **inv)
    assert apply(redis_url, [snapshot]) == [Status.APPLIED]
    assert state(redis_url)["on_hand"] == str(100 - 59)


def test_a_snapshot_older_than_the_movements_kept_is_stale(redis_url: str) -> None:
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("d1", "d", 1, day=20, offset=0, series="B2@UK", **inv)])
    # kept from 14 days before the inventory read on day 20: day 6 on
    apply(redis_url, [effect(f"o{d}", "o", 1, day=d, offset=d) for d in range(1, 41)])
    assert apply(redis_url, [effect("s1", "s", 100, day=5, offset=1, **inv)]) == [Status.STALE]
    assert state(redis_url)["on_hand"] == "-40"
    assert apply(redis_url, [effect("s2", "s", 100, day=6, offset=2, **inv)]) == [Status.APPLIED]
    assert state(redis_url)["on_hand"] == str(100 - 34)


def test_movements_cut_before_their_cut_was_stored_still_make_older_snapshots_stale(
    redis_url: str,
) -> None:
    """State from before ``moves_from`` (an upgrade in the middle of a backlog): its movements
    were cut 14 days before the newest, whatever the inventory read since."""
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect(f"o{d}", "o", 1, day=d, offset=d) for d in range(1, 61)])
    r = redis_client(redis_url)
    r.hdel("shelfcast:{p0}:s:A1@UK:state", "moves_from")
    r.zremrangebyscore("shelfcast:{p0}:s:A1@UK:moves", "-inf", f"({46 * DAY_MS}")
    r.hdel("shelfcast:{p0}:clock", "inventory")
    apply(redis_url, [effect("o61", "o", 1, day=61, offset=61)])
    assert apply(redis_url, [effect("s2", "s", 100, day=2, offset=0, **inv)]) == [Status.STALE]
    assert state(redis_url)["on_hand"] == "-61"


def test_orders_ahead_of_any_inventory_keep_their_movements_for_the_lead_and_window(
    redis_url: str,
) -> None:
    inv = {"tp": "inventory:0"}
    kept = (features.MOVES_LEAD_MS + features.MOVES_WINDOW_MS) // DAY_MS
    apply(redis_url, [effect(f"o{d}", "o", 1, day=d, offset=d) for d in range(1, kept + 17)])
    assert apply(redis_url, [effect("s1", "s", 100, day=1, offset=0, **inv)]) == [Status.STALE]
    assert apply(redis_url, [effect("s2", "s", 100, day=16, offset=1, **inv)]) == [Status.APPLIED]
    assert state(redis_url)["on_hand"] == str(100 - kept)


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
    assert res.statuses == [Status.APPLIED] and res.on_hand == [-5]
    assert apply(redis_url, [effect("d1", "d", 10, at=6 * hour, offset=0, **inv)]) == [
        Status.DUPLICATE
    ]
    res = apply_full(redis_url, [effect("o2", "o", 2, at=5 * hour, offset=1)])
    assert res.on_hand == [-7]
    res = apply_full(redis_url, [effect("o3", "o", 1, at=7 * hour, offset=2)])
    # it took effect before the 07:00 order, once: redelivered, it was not queued again
    assert res.on_hand == [2]
    assert state(redis_url)["stock_known"] == "1"
    # an idle partition: its clock moves without orders, and the delivery is due after them
    apply(redis_url, [effect("d2", "d", 4, at=9 * hour, offset=1, **inv)])
    assert state(redis_url)["on_hand"] == "2"
    apply_full(redis_url, [], 1 * DAY_MS + 10 * hour)
    assert state(redis_url)["on_hand"] == "6"


def test_a_pending_delivery_inside_a_later_snapshot_is_not_counted_again(redis_url: str) -> None:
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("o1", "o", 5, at=1 * hour, offset=0)])
    apply(redis_url, [effect("d1", "d", 10, at=3 * hour, offset=0, **inv)])
    # counted at 04:00, delivery included
    apply(redis_url, [effect("s1", "s", 40, at=4 * hour, offset=1, **inv)])
    apply_full(redis_url, [effect("o2", "o", 2, at=5 * hour, offset=1)])
    assert state(redis_url)["on_hand"] == "38"


def test_an_alert_is_decided_once_and_kept_until_its_delivery_is_known(redis_url: str) -> None:
    hour = 3_600_000
    r = redis_client(redis_url, decode_responses=True)
    r.hset("shelfcast:{p0}:rop", "A1@UK", "4.0|3.0|1.0|1.0|3.0|A1@UK|9|tsb@2")
    apply(redis_url, [effect("s1", "s", 10, at=1 * hour, offset=0, tp="inventory:0")])
    # the order takes stock to 3, below the reorder point of 4
    first = apply_full(redis_url, [effect("o1", "o", 7, at=2 * hour, offset=0)])
    assert [(a.series, a.status, a.seq, a.on_hand) for a in first.outbox] == [
        ("A1@UK", "raised", 1, 3)
    ]
    assert first.outbox[0].rop["forecast_id"] == "A1@UK|9|tsb@2"
    # the worker dies before it knows the alert went out; redelivered, the order is a
    # duplicate and decides nothing, and the same alert comes back to be sent
    again = apply_full(redis_url, [effect("o1", "o", 7, at=2 * hour, offset=0)])
    assert again.statuses == [Status.DUPLICATE] and again.outbox == first.outbox
    # delivered: it leaves; the next stock-out is the next number
    r.hset("shelfcast:{p0}:rop", "A1@UK", "1.0|1.0|0.0|1.0|3.0|A1@UK|10|tsb@2")
    cleared = apply_full(
        redis_url, [effect("d1", "d", 5, at=hour + 1, offset=1, tp="inventory:0")], delivered=1
    )
    assert [(a.status, a.seq, a.on_hand) for a in cleared.outbox] == [("cleared", 2, 8)]
    assert state(redis_url)["alert_seq"] == "2"


def test_stock_on_order_follows_purchase_orders_deliveries_and_cancellations(
    redis_url: str,
) -> None:
    """What is on order: a purchase order adds; a delivery naming it takes off at most what
    it still has (the rest is stock); a cancellation likewise; redelivered, nothing counts
    twice; a purchase order read ahead of the orders waits for its time like a delivery."""
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    r = redis_client(redis_url, decode_responses=True)
    apply(redis_url, [effect("s1", "s", 30, at=1 * hour, offset=0, pack=6, **inv)])
    apply(redis_url, [effect("o1", "o", 5, at=2 * hour, offset=0)])
    apply(
        redis_url,
        [
            effect("p1", "p", 40, at=2 * hour, offset=1, po="PO-1", **inv),
            effect("p2", "p", 12, at=2 * hour, offset=2, po="PO-2", **inv),
        ],
    )
    assert state(redis_url)["on_order"] == "52" and state(redis_url)["pack_size"] == "6"
    # the same events again: duplicates
    again = [effect("p1", "p", 40, at=2 * hour, offset=1, po="PO-1", **inv)]
    assert apply(redis_url, again) == [Status.DUPLICATE]
    # 25 of PO-1 arrive, then 20 more (5 over what it had left), and PO-2 is cancelled twice
    apply(
        redis_url,
        [
            effect("g1", "d", 25, at=2 * hour, offset=3, po="PO-1", **inv),
            effect("g2", "d", 20, at=2 * hour, offset=4, po="PO-1", **inv),
            effect("c1", "p", -8, at=2 * hour, offset=5, po="PO-2", **inv),
            effect("c2", "p", -8, at=2 * hour, offset=6, po="PO-2", **inv),
        ],
    )
    assert state(redis_url)["on_hand"] == str(30 - 5 + 25 + 20)
    assert state(redis_url)["on_order"] == "0"
    assert r.hgetall("shelfcast:{p0}:s:A1@UK:po") == {}
    # read ahead of the orders (stamped 06:00 with the orders at 02:00): it waits
    apply(redis_url, [effect("p3", "p", 9, at=6 * hour, offset=7, po="PO-3", **inv)])
    assert state(redis_url)["on_order"] == "0"
    apply(redis_url, [effect("o2", "o", 1, at=7 * hour, offset=1)])
    assert state(redis_url)["on_order"] == "9"
    assert r.hgetall("shelfcast:{p0}:s:A1@UK:po") == {"PO-3": "9"}


def test_alerts_follow_the_inventory_position_and_carry_what_is_on_order(
    redis_url: str,
) -> None:
    """Raised when on hand + on order falls to the reorder point; the planner's purchase
    order of the recommended quantity clears it before anything arrives, and the delivery
    changes no status: it moves units from on order to on hand."""
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    r = redis_client(redis_url, decode_responses=True)
    # reorder point 10, daily mean 1: order-up-to 10 + 7 (a review period of demand)
    r.hset("shelfcast:{p0}:rop", "A1@UK", "10.0|8.0|2.0|1.0|3.0|A1@UK|9|tsb@2")
    apply(redis_url, [effect("s1", "s", 14, at=1 * hour, offset=0, **inv)])
    raised = apply_full(redis_url, [effect("o1", "o", 5, at=2 * hour, offset=0)])
    [alert] = raised.outbox
    assert (alert.status, alert.on_hand, alert.on_order) == ("raised", 9, 0)
    # the planner orders 17 - 9 = 8 an hour later: when the partition's event time reaches
    # it, the position reaches the order-up-to level and the alert clears
    po = [effect("p1", "p", 8, at=3 * hour, offset=1, po="PO-1", **inv)]
    ordered = apply_full(redis_url, po, DAY_MS + 3 * hour, delivered=1)
    [alert] = ordered.outbox
    assert (alert.status, alert.seq, alert.on_hand, alert.on_order) == ("cleared", 2, 9, 8)
    grn = [effect("g1", "d", 8, at=4 * hour, offset=2, po="PO-1", **inv)]
    delivered = apply_full(redis_url, grn, DAY_MS + 4 * hour, delivered=1)
    assert delivered.outbox == [] and state(redis_url)["on_order"] == "0"
    assert state(redis_url)["on_hand"] == "17"


def test_a_purchase_order_that_leaves_the_position_short_is_followed_by_a_new_alert(
    redis_url: str,
) -> None:
    """Sales between an alert and its purchase order can leave the position at the reorder
    point even so: the order clears the alert (it acknowledges it), and the next sale raises
    a new one, so the planner hears what is still missing instead of nothing."""
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    r = redis_client(redis_url, decode_responses=True)
    r.hset("shelfcast:{p0}:rop", "A1@UK", "10.0|8.0|2.0|1.0|3.0|A1@UK|9|tsb@2")
    apply(redis_url, [effect("s1", "s", 14, at=1 * hour, offset=0, **inv)])
    apply_full(redis_url, [effect("o1", "o", 5, at=2 * hour, offset=0)])  # raised at 9
    apply_full(redis_url, [effect("o2", "o", 6, at=3 * hour, offset=1)], delivered=1)
    po = [effect("p1", "p", 8, at=3 * hour, offset=1, po="PO-1", **inv)]
    [cleared] = apply_full(redis_url, po, delivered=0).outbox
    assert (cleared.status, cleared.on_hand, cleared.on_order) == ("cleared", 3, 8)
    again = apply_full(redis_url, [effect("o3", "o", 1, at=4 * hour, offset=2)], delivered=1)
    [raised] = again.outbox
    assert (raised.status, raised.seq, raised.on_hand, raised.on_order) == ("raised", 3, 2, 8)


def test_stock_below_zero_counts_as_none_in_the_inventory_position(redis_url: str) -> None:
    """Sales the records did not have leave on hand below zero; shelves lose such sales, so
    the position counts no stock rather than a backorder that stock on order must cover."""
    hour = 3_600_000
    inv = {"tp": "inventory:0"}
    r = redis_client(redis_url, decode_responses=True)
    r.hset("shelfcast:{p0}:rop", "A1@UK", "10.0|8.0|2.0|1.0|3.0|A1@UK|9|tsb@2")
    apply(redis_url, [effect("s1", "s", 14, at=1 * hour, offset=0, **inv)])
    apply(redis_url, [effect("p1", "p", 12, at=1 * hour, offset=1, po="PO-1", **inv)])
    # on hand 14 - 20 = -6: the position is 0 + 12 (above 10), not -6 + 12
    oversold = apply_full(redis_url, [effect("o1", "o", 20, at=2 * hour, offset=0)])
    assert oversold.outbox == [] and state(redis_url)["on_hand"] == "-6"


def test_a_delivery_read_before_its_purchase_order_leaves_nothing_on_order(
    redis_url: str,
) -> None:
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("g1", "d", 8, day=1, offset=0, po="PO-1", **inv)])
    assert state(redis_url)["on_hand"] == "8" and state(redis_url).get("on_order", "0") == "0"
    apply(redis_url, [effect("p1", "p", 12, day=1, offset=1, po="PO-1", **inv)])
    # 12 ordered, 8 of them in already: 4 still to come
    assert state(redis_url)["on_order"] == "4"
    apply(redis_url, [effect("g2", "d", 4, day=1, offset=2, po="PO-1", **inv)])
    assert state(redis_url)["on_order"] == "0" and state(redis_url)["on_hand"] == "12"
    # a cancellation of what has all arrived takes nothing off
    apply(redis_url, [effect("c1", "p", -5, day=1, offset=3, po="PO-1", **inv)])
    assert state(redis_url)["on_order"] == "0"


def test_a_stale_owner_writes_nothing(redis_url: str) -> None:
    async def run() -> None:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        stale = await store.claim(0)
        await store.claim(0)  # another worker takes the partition over
        with pytest.raises(Fenced, match="partition 0"):
            await store.apply(0, stale, [effect("o1", "o", 5)])
        with pytest.raises(Fenced):
            await store.write_partition_snapshot(0, stale, b"models")
        raised = outbox_entry("A1@UK", "raised", 1, 0, "9.0|8|1|2|3|A1@UK|10|tsb@1", 864_000.0)
        with pytest.raises(Fenced, match="owned by generation 2"):
            await store.begin_close(0, stale, 10, 0, 0, [raised])
        fields = CloseFields(["A1@UK"], ["1.0|1|1|1|3|a"], ["9|tsb|2|1"], ["A1@UK"], ["1|2|3"])
        with pytest.raises(Fenced, match="owned by generation 2"):
            await store.write_close(
                0, stale, 10, fields, closed=False, learned=1, trim_before=0,
                inactive_before=0, max_ts=1.0, evaluation={}, snapshot=b"models",
            )  # fmt: skip
        await client.aclose()

    asyncio.run(run())
    r = redis_client(redis_url)
    assert list(r.scan_iter("shelfcast:{p0}:*")) == [b"shelfcast:{p0}:owner"]


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


def test_one_call_of_thousands_of_series_touches_activates_and_expires_each(redis_url: str) -> None:
    # one call of 2,500 series (a replay's segment holds thousands), one of them ordered again
    # in a later and then an earlier bucket: every series touched, active at its latest
    # bucket, counted in its bucket's orders and given its time to live
    n = 2_500
    effects = [
        effect(f"o{i}", "o", 1, day=1 + i % 2, offset=i, series=f"S{i}@UK") for i in range(n)
    ]
    effects += [
        effect("x1", "o", 2, day=3, offset=n, series="S0@UK"),
        effect("x2", "o", 3, day=2, offset=n + 1, series="S0@UK", at=DAY_MS - 1),
    ]
    res = apply_full(redis_url, effects)
    assert res.statuses == [Status.APPLIED] * (n + 2)
    assert res.on_hand[0] == -1 and res.on_hand[-2:] == [-3, -6]  # each after its own order
    r = redis_client(redis_url, decode_responses=True)
    assert r.smembers("shelfcast:{p0}:touched") == {f"S{i}@UK" for i in range(n)}
    active = dict(r.zrange("shelfcast:{p0}:series", 0, -1, withscores=True))
    assert len(active) == n and active["S0@UK"] == 3 and active["S1@UK"] == 2
    assert active["S2@UK"] == 1
    assert r.hgetall("shelfcast:{p0}:orders") == {"1": "1250", "2": "1251", "3": "1"}
    assert state(redis_url, "S0@UK")["first_bucket"] == "1"
    for key in ("state", "demand", "moves", "ids:2", "sizes:3"):
        assert r.ttl(f"shelfcast:{{p0}}:s:S0@UK:{key}") > 0, key
    assert r.ttl("shelfcast:{p0}:s:S2499@UK:demand") > 0


def test_one_event_id_in_two_buckets_is_two_deliveries(redis_url: str) -> None:
    inv = {"tp": "inventory:0"}
    apply(redis_url, [effect("o1", "o", 5, day=1, offset=0)])
    apply(redis_url, [effect("d", "d", 10, day=2, offset=0, **inv)])
    apply(redis_url, [effect("d", "d", 10, day=3, offset=1, **inv)])
    apply(redis_url, [effect("o2", "o", 1, day=4, offset=1)])
    assert state(redis_url)["on_hand"] == str(-5 + 10 + 10 - 1)


def test_stock_events_never_make_a_series_active_only_its_first_order_does(
    redis_url: str,
) -> None:
    # How far the inventory topic was read ahead of orders must not decide what a close
    # forecasts: a delivery moves stock when it takes effect, a snapshot at once, and neither
    # makes a series forecast or sets its first bucket.
    r = redis_client(redis_url, decode_responses=True)
    active = "shelfcast:{p0}:series"
    apply(redis_url, [effect("o1", "o", 5, day=1, offset=0, series="B1@UK")])
    apply(redis_url, [effect("d1", "d", 10, day=3, offset=0, tp="inventory:0")])
    apply(redis_url, [effect("o2", "o", 1, day=4, offset=1, series="B1@UK")])
    apply(redis_url, [effect("s1", "s", 7, day=5, offset=1, tp="inventory:0", series="C1@UK")])
    assert r.hget("shelfcast:{p0}:s:A1@UK:state", "on_hand") == "10"  # the delivery counted
    assert r.zscore(active, "A1@UK") is None and r.zscore(active, "C1@UK") is None
    assert r.hget("shelfcast:{p0}:s:A1@UK:state", "first_bucket") is None
    apply(redis_url, [effect("o3", "o", 2, day=6, offset=2)])
    assert r.zscore(active, "A1@UK") == 6
    assert r.hget("shelfcast:{p0}:s:A1@UK:state", "first_bucket") == "6"


def test_a_snapshot_larger_than_a_chunk_goes_in_pieces_and_comes_back_whole(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "SNAPSHOT_CHUNK", 7)
    blob = bytes(range(50))

    async def run() -> tuple[list[bytes] | None, list[bytes] | None, int]:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        owner = await store.claim(3)
        await store.write_partition_snapshot(3, owner, blob)
        revoked = await store.read_partition_snapshot(3)
        await store.write_close(
            3, owner, 10, CloseFields(["A1@UK"], ["1.5|1.0|0.5|0.25|3.0|A1@UK|9|tsb@2"],
            ["9|tsb|2|1"], ["A1@UK"], ["1.0|2.0|nan"]), closed=False,
            learned=1, trim_before=-100,
            inactive_before=0, max_ts=1.0, evaluation={}, snapshot=blob[::-1],
        )  # fmt: skip
        closed = await store.read_partition_snapshot(3)
        pieces = await client.llen("shelfcast:{p3}:model")
        await client.aclose()
        return revoked, closed, pieces

    revoked, closed, pieces = asyncio.run(run())
    assert revoked is not None and closed is not None and pieces == 8
    assert b"".join(revoked) == blob and b"".join(closed) == blob[::-1]
    r = redis_client(redis_url, decode_responses=True)
    assert r.hget("shelfcast:{p3}:rop", "A1@UK") == "1.5|1.0|0.5|0.25|3.0|A1@UK|9|tsb@2"
    assert r.hget("shelfcast:{p3}:forecast", "A1@UK") == "9|tsb|2|1"
    assert r.hget("shelfcast:{p3}:rolling", "A1@UK") == "1.0|2.0|nan"


def test_a_close_recorded_twice_or_out_of_order_writes_nothing(redis_url: str) -> None:
    def fields(value: str) -> CloseFields:
        return CloseFields(["A1@UK"], [value], ["9|tsb|2|1"], ["A1@UK"], ["1.0|2.0|3.0"])

    async def close(store: FeatureStore, owner: int, bucket: int, rop: str) -> None:
        await store.write_close(
            3, owner, bucket, fields(rop), closed=False, learned=5,
            trim_before=bucket - 100, inactive_before=0, max_ts=bucket * 86_400.0,
            evaluation={"m|1|n": 5.0}, snapshot=None,
        )  # fmt: skip

    async def run() -> None:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        owner = await store.claim(3)
        await close(store, owner, 10, "1.0|1|1|1|3|a")
        await close(store, owner, 10, "2.0|1|1|1|3|b")  # a retry whose first reply was lost
        await close(store, owner, 9, "3.0|1|1|1|3|c")  # an older close, from a view behind
        await client.aclose()

    asyncio.run(run())
    r = redis_client(redis_url, decode_responses=True)
    clock = {"closed": "10", "max_ts": "864000", "trimmed": "-90"}  # the close of 10's trim
    assert r.hgetall("shelfcast:{p3}:clock") == clock
    assert r.hget("shelfcast:{p3}:stats", "learned_buckets") == "5"
    assert r.hget("shelfcast:{p3}:evaluation", "m|1|n") == "5"
    assert r.hget("shelfcast:{p3}:rop", "A1@UK") == "1.0|1|1|1|3|a"


def test_a_close_records_its_alerts_once_with_their_reorder_points(redis_url: str) -> None:
    raised = outbox_entry("A1@UK", "raised", 3, 4, "9.0|8|1|2|3|A1@UK|10|tsb@1", 864_000.0)
    later = outbox_entry("A1@UK", "raised", 3, 40, "9.0|8|1|2|3|A1@UK|10|tsb@1", 870_000.0)

    async def run() -> list[list[AlertRecord] | None]:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        owner = await store.claim(3)
        first = await store.begin_close(3, owner, 10, 0, 0, [raised])
        # retried after a failed record, with other stock by then: decides nothing again
        retry = await store.begin_close(3, owner, 10, 0, 0, [later])
        delivered = await store.begin_close(3, owner, 10, 0, 1, [])  # the first one went out
        await client.aclose()
        return [first, retry, delivered]

    first, retry, delivered = asyncio.run(run())
    assert first == retry == [AlertRecord.parse(raised)] and delivered == []
    r = redis_client(redis_url, decode_responses=True)
    state = r.hgetall("shelfcast:{p3}:s:A1@UK:state")
    assert (state["alert"], state["alert_seq"]) == ("raised", "3")
    # a stock change's alert walk before the close is recorded compares with this point
    assert r.hget("shelfcast:{p3}:rop", "A1@UK") == "9.0|8|1|2|3|A1@UK|10|tsb@1"


def test_the_alert_walk_reads_a_reorder_point_stored_with_its_settings(redis_url: str) -> None:
    hour = 3_600_000
    stored = '[4.0,3.0,1.0,1.0,3.0,0.9,14.0,"A1@UK|9|tsb@2"]'
    redis_client(redis_url).hset("shelfcast:{p0}:rop", "A1@UK", stored)
    apply(redis_url, [effect("s1", "s", 10, at=1 * hour, offset=0, tp="inventory:0")])
    [alert] = apply_full(redis_url, [effect("o1", "o", 7, at=2 * hour, offset=0)]).outbox
    assert (alert.status, alert.on_hand) == ("raised", 3)
    assert (alert.rop["service_level"], alert.rop["review_days"]) == (0.9, 14.0)


SERIES_PREFIX = "shelfcast:{p0}:s:A1@UK:"  # + a key's name


def marked(url: str) -> Redis:
    """A client, after a priced order of day 1 gave the series' keys their time to live."""
    apply(url, [effect("o1", "o", 5, offset=0)])
    return redis_client(url)


def test_times_to_live_refresh_once_a_bucket_for_a_run_of_priced_orders(redis_url: str) -> None:
    r, key = marked(redis_url), SERIES_PREFIX
    for name in ("state", "demand", "lines", "revenue", "moves", "ids:1", "sizes:1"):
        r.expire(key + name, 1000)
    # another priced order that day writes only keys the first one gave their time to live
    apply(redis_url, [effect("o2", "o", 3, offset=1, at=60_000)])
    assert all(0 < r.ttl(key + name) <= 1000 for name in ("state", "demand", "moves", "ids:1"))
    # an unpriced order refreshes every key of the series again
    apply(redis_url, [effect("o3", "o", 1, offset=2, at=120_000, price=None)])
    assert r.ttl(key + "demand") > 1000 and r.ttl(key + "ids:1") > 1000


def test_a_mark_holds_for_its_own_bucket_alone(redis_url: str) -> None:
    r = redis_client(redis_url)
    # day 1 had returns only (no order sizes); day 2's priced order marks day 2
    apply(redis_url, [effect("r1", "o", -1, offset=0), effect("r2", "o", -1, offset=1)])
    apply(redis_url, [effect("o2", "o", 3, day=2, offset=2)])
    # a late priced order of day 1 is its first: its order sizes get their time to live
    apply(redis_url, [effect("o1", "o", 5, offset=3, at=60_000)])
    assert r.ttl(SERIES_PREFIX + "sizes:1") > 0


def test_a_mark_holds_for_orders_naming_a_customer_or_not_alone(redis_url: str) -> None:
    r = redis_client(redis_url)
    apply_full(redis_url, [effect("o1", "o", 5, offset=0)], signals=True)
    apply_full(redis_url, [effect("o2", "o", 3, offset=1, customer="C1")], signals=True)
    assert r.ttl(SERIES_PREFIX + "buyers") > 0


def test_an_order_recreating_the_movements_a_snapshot_deleted_gives_them_a_time_to_live(
    redis_url: str,
) -> None:
    hour = 3_600_000
    r = redis_client(redis_url, decode_responses=True)
    moves = SERIES_PREFIX + "moves"
    apply(redis_url, [effect("o1", "o", 5, at=1 * hour, offset=0)])
    # a later snapshot counts the order and deletes the movements
    apply(redis_url, [effect("s1", "s", 50, at=2 * hour, offset=0, tp="inventory:0")])
    assert not r.exists(moves)
    # a priced order of the same day, older than the snapshot: no movement, nothing created
    apply(redis_url, [effect("o0", "o", 1, at=hour // 2, offset=1)])
    assert not r.exists(moves)
    apply(redis_url, [effect("o2", "o", 2, at=3 * hour, offset=2)])
    assert r.ttl(moves) > 0 and state(redis_url)["on_hand"] == "48"


def test_a_marked_order_gives_the_bucket_sets_that_expired_their_time_to_live(
    redis_url: str,
) -> None:
    r, key = marked(redis_url), SERIES_PREFIX
    # the dedupe time to live is shorter than the series': the bucket's sets expire first
    r.delete(key + "ids:1", key + "sizes:1")
    apply(redis_url, [effect("o2", "o", 3, offset=1, at=60_000)])
    assert r.ttl(key + "ids:1") > 0 and r.ttl(key + "sizes:1") > 0


def close_day_2(url: str, trim_before: int, inactive_before: int) -> None:
    """The close of day 2 on partition 0, by a new owner."""

    async def go() -> None:
        client = async_redis_client(url)
        store = FeatureStore(client, 3600)
        fields = CloseFields(["A1@UK"], ["1.0|1|1|1|3|a"], ["9|tsb|2|1"], ["A1@UK"], ["1|2|3"])
        await store.write_close(
            0, await store.claim(0), 2, fields, closed=False, learned=1,
            trim_before=trim_before, inactive_before=inactive_before, max_ts=2 * 86_400.0,
            evaluation={}, snapshot=None,
        )  # fmt: skip
        await client.aclose()

    asyncio.run(go())


def test_a_late_order_after_a_close_trimmed_its_bucket_gives_the_history_a_time_to_live(
    redis_url: str,
) -> None:
    r, key = marked(redis_url), SERIES_PREFIX
    close_day_2(redis_url, trim_before=1, inactive_before=0)
    assert not r.exists(key + "demand")  # its only bucket left the history
    apply(redis_url, [effect("o2", "o", 3, offset=1, at=60_000)])
    assert all(r.ttl(key + name) > 0 for name in ("demand", "lines", "revenue"))


def test_a_series_back_after_a_close_dropped_it_records_its_first_bucket_again(
    redis_url: str,
) -> None:
    marked(redis_url)
    close_day_2(redis_url, trim_before=-100, inactive_before=2)  # day 1 fell out of activity
    assert "first_bucket" not in state(redis_url)
    apply(redis_url, [effect("o2", "o", 3, offset=1, at=60_000)])  # a late order of day 1
    assert state(redis_url)["first_bucket"] == "1"
