"""A close's series states kept between closes read the same as a whole read."""

import asyncio
from dataclasses import fields

import numpy as np
import pytest

from streamer.features import store as features
from streamer.features.codec import StockEffect, outbox_entry
from streamer.features.states import KeptStates, StateColumns
from streamer.features.store import FeatureStore, Fenced, PartitionClose
from tests.conftest import async_redis_client, redis_client
from tests.streamer.features.test_store import DAY_MS, effect

pytestmark = pytest.mark.cluster

SERIES = ["A1@UK", "A1@FR", "B2@UK", "C3@DE", "D4@UK"]
# read_close.lua's state columns
COLUMNS = ("first", "lead", "on_hand", "known", "alert", "seq", "on_order", "pack")


def assert_same(kept: PartitionClose, whole: PartitionClose) -> None:
    for f in fields(PartitionClose):
        a, b = getattr(kept, f.name), getattr(whole, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f.name)
        else:
            assert a == b, f.name


def test_kept_states_read_the_same_as_a_whole_read_close_after_close(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(features, "STATES_PER_CALL", 2)  # and in chunks of two series
    offsets = iter(range(10_000))

    def order(s: str, day: int, qty: int = 3, **kw: object) -> StockEffect:
        return effect(f"o{next(offsets)}", "o", qty, day, next(offsets), series=s, **kw)

    def stock(s: str, day: int, kind: str, qty: int, **kw: object) -> StockEffect:
        n = next(offsets)
        return effect(f"i{n}", kind, qty, day, n, series=s, tp="inventory:0", **kw)

    # what happens between closes: orders of some series, stock events of others, a delta
    # stamped ahead of the orders (deferred, then let in by a later order), a close's alert
    days: dict[int, list[StockEffect]] = {
        1: [order(s, 1) for s in SERIES[:3]] + [stock("A1@UK", 1, "s", 40, lead=2)],
        2: [order("C3@DE", 2), stock("B2@UK", 2, "s", 9, pack=6)],
        3: [stock("A1@FR", 3, "s", 7), stock("A1@FR", 3, "d", 5, at=DAY_MS)],
        4: [order("D4@UK", 4, at=DAY_MS + 1)],  # lets in A1@FR's delta of the day before
        5: [stock("C3@DE", 5, "p", 12, po="PO1"), order("B2@UK", 5, qty=-3)],
        6: [],
    }
    raise_on = {3: "B2@UK"}

    async def run() -> None:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        owner = await store.claim(0)
        kept = KeptStates()
        for day, effects in days.items():
            if effects:
                await store.apply(0, owner, effects)
            if day in raise_on:
                rop = f"9.0|8|1|2|3|{raise_on[day]}|{day}|tsb@1"
                alert = outbox_entry(raise_on[day], "raised", 1, 4, rop, day * 86_400.0)
                await store.begin_close(0, owner, day, 0, 0, [alert])
            # first the kept read, which empties the touched set; the whole read after it
            # must not find anything the kept read missed
            with_kept = await store.read_close(0, owner, 0, day, 14, kept)
            whole = await store.read_close(0, owner, 0, day, 14)
            assert_same(with_kept, whole)
        assert whole.raised.tolist() == [s == "B2@UK" for s in whole.series]
        assert whole.on_order[whole.series.index("C3@DE")] == 12
        assert whole.pack_size[whole.series.index("B2@UK")] == 6
        await client.aclose()

    asyncio.run(run())


def test_only_the_series_touched_since_are_read_again(redis_url: str) -> None:
    async def run() -> tuple[list[str], list[str]]:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        owner = await store.claim(0)
        await store.apply(0, owner, [effect(f"o{i}", "o", 2, 1, i, series=s)
                                     for i, s in enumerate(SERIES)])  # fmt: skip
        kept = KeptStates()
        await store.read_close(0, owner, 0, 1, 7, kept)
        await store.apply(0, owner, [effect("o9", "o", 2, 2, 9, series="C3@DE")])
        read: list[list[str]] = []
        original = features.StateColumns.parse

        def spy(names: list[str], cols: dict) -> StateColumns:
            read.append(list(names))
            return original(names, cols)

        features.StateColumns.parse = spy  # type: ignore[method-assign]
        try:
            await store.read_close(0, owner, 0, 2, 7, kept)
            again = read.pop()
            kept.forget(0)
            await store.read_close(0, owner, 0, 2, 7, kept)
        finally:
            features.StateColumns.parse = original  # type: ignore[method-assign]
        await client.aclose()
        return again, read.pop()

    again, forgotten = asyncio.run(run())
    assert again == ["C3@DE"]
    assert sorted(forgotten) == sorted(SERIES)


def test_a_fenced_reader_leaves_the_touched_set_to_the_owner(redis_url: str) -> None:
    async def run() -> None:
        client = async_redis_client(redis_url)
        store = FeatureStore(client, 3600)
        old = await store.claim(0)
        await store.apply(0, old, [effect("o1", "o", 2, 1, 0)])
        await store.claim(0)  # another worker took the partition over
        with pytest.raises(Fenced):
            await store.read_close(0, old, 0, 1, 7, KeptStates())
        await client.aclose()

    asyncio.run(run())
    assert redis_client(redis_url).smembers("shelfcast:{p0}:touched") == {b"A1@UK"}


def test_kept_states_are_read_whole_again_after_their_time() -> None:
    now = [0.0]
    kept = KeptStates(whole_every=60.0, clock=lambda: now[0])
    columns = StateColumns.parse(["a"], {key: ["1"] for key in COLUMNS})
    assert kept.take(0) == (None, 0.0)
    kept.keep(0, columns, 0.0)
    now[0] = 59.0
    assert kept.take(0) == (columns, 0.0)
    assert kept.take(0) == (None, 59.0)  # taken: a read that fails leaves nothing kept
    kept.keep(0, columns, 0.0)
    now[0] = 60.0
    assert kept.take(0) == (None, 60.0)


def test_fresh_states_overlay_the_kept_ones_in_the_order_asked() -> None:
    def cols(values: list[str]) -> dict[str, list]:
        return dict.fromkeys(COLUMNS, values)

    kept = StateColumns.parse(["a", "b", "c"], cols(["1", "2", "3"]))
    fresh = StateColumns.parse(["c", "d"], cols(["30", "40"]))
    merged = fresh.over(kept, ["d", "a", "c"])
    assert list(merged.names) == ["d", "a", "c"]
    assert merged.on_hand.tolist() == [40, 1, 30]
    with pytest.raises(KeyError):
        fresh.over(kept, ["e"])
