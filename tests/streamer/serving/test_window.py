"""The LSTM's kept windows read what a whole read of Redis reads, close after close, as
series join and leave, a close is retried, the clock jumps, and a late order is forgotten."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from streamer.config.settings import Settings
from streamer.features.connect import worker_client
from streamer.features.keys import bucket_key, part_key
from streamer.features.store import FeatureStore, Window
from streamer.serving.window import WindowCache

pytestmark = pytest.mark.cluster  # the kept window reads a Redis Cluster the same way

SEQ = 7
NAMES = [f"S{i}@UK" for i in range(30)]


def same(got: Window, want: Window) -> None:
    """Equal as the network reads them: demand and revenue as float32."""
    assert got.series == want.series
    assert got.demand.dtype == got.revenue.dtype == np.float32
    np.testing.assert_array_equal(got.demand, want.demand.astype(np.float32))
    np.testing.assert_array_equal(got.revenue, want.revenue.astype(np.float32))
    np.testing.assert_array_equal(got.traded, want.traded)
    assert got.closed == want.closed


async def closes(settings: Settings) -> None:
    client = worker_client(settings)
    store = FeatureStore.of(client, settings)
    cache = WindowCache()
    rnd = random.Random(7)

    async def trade(b: int) -> None:
        sold = rnd.sample(NAMES[: 10 + b % 20], 6)  # a moving set: series join and leave
        await client.hset(bucket_key(0, "demand", b), mapping={s: rnd.randint(0, 9) for s in sold})
        await client.hset(bucket_key(0, "revenue", b), mapping={s: rnd.random() for s in sold})

    async def check(b: int) -> None:
        span = range(b - SEQ + 1, b + 1)
        series = rnd.sample(NAMES, 12)
        same(await cache.read(store, 0, series, span), await store.read_window(0, series, span))

    for b in range(SEQ):
        await trade(b)
    for b in range(SEQ - 1, 40):
        if b >= SEQ:
            await trade(b)
        await check(b)
        if b == 20:
            await check(b)  # a retried close reads its window again
        await client.hset(part_key(0, "closed"), str(b), "1" if b % 7 == 3 else "0")
    for b in (40, 41, 42, 43):  # the clock jumps: three buckets at once
        await trade(b)
    await check(43)
    await check(30)  # back in time (a replay): read whole
    # a late order in a bucket the kept window holds: read whole once forgotten
    await client.hincrbyfloat(bucket_key(0, "demand", 27), NAMES[0], 5.0)
    cache.forget(0)
    await check(30)
    await client.aclose()


def test_kept_windows_read_what_a_whole_read_reads(settings: Settings) -> None:
    asyncio.run(closes(settings.replace(partitions=1)))


def test_a_kept_window_reads_only_the_new_buckets(settings: Settings) -> None:
    async def run() -> tuple[np.ndarray, np.ndarray]:
        client = worker_client(settings)
        store = FeatureStore.of(client, settings)
        cache = WindowCache()
        for b in range(SEQ + 1):
            await client.hset(bucket_key(0, "demand", b), "S0@UK", b + 1)
        await cache.read(store, 0, ["S0@UK"], range(0, SEQ))
        # changed behind the cache, unforgotten: the kept copy stands
        await client.hset(bucket_key(0, "demand", 3), "S0@UK", 100)
        kept = await cache.read(store, 0, ["S0@UK"], range(1, SEQ + 1))
        whole = await store.read_window(0, ["S0@UK"], range(1, SEQ + 1))
        await client.aclose()
        return kept.demand[0], whole.demand[0]

    kept, whole = asyncio.run(run())
    assert kept.tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert whole.tolist() == [2, 3, 100, 5, 6, 7, 8]
