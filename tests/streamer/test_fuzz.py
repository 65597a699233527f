"""Malformed input interleaved with valid orders: nothing crashes, every bad payload reaches the
DLQ with its reason, every valid one is counted exactly once."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.config.settings import Settings
from streamer.features.store import FeatureStore
from streamer.pipeline.batch import Pipeline, Record
from streamer.publish.messages import Output
from tests.conftest import async_redis_client, redis_client

LIMIT = 4096
BASE_TS = 1_294_000_000  # 2011-01-02
REQUIRED = ("event_id", "ts", "sku", "location", "quantity")


def valid_order(i: int, sku: str, location: str, quantity: int, offset_s: int) -> dict[str, object]:
    return {
        "event_id": f"ok-{i}",
        "ts": (BASE_TS + offset_s) * 1000,
        "sku": sku,
        "location": location,
        "quantity": quantity,
        "unit_price": 1.25,
    }


def good_fields() -> st.SearchStrategy[dict[str, object]]:
    return st.builds(
        valid_order,
        st.just(0),
        st.sampled_from(["85123A", "Ü-ß", "22423"]),
        st.sampled_from(["United Kingdom", "EIRE", "日本"]),
        st.one_of(st.integers(1, 500), st.integers(-50, -1)),
        st.integers(0, 20 * 86_400),
    )


def key_of(payload: bytes) -> bytes:
    obj = json.loads(payload)
    return obj["sku"].encode()


def dumps(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def _replace(field: str, values: st.SearchStrategy[object]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda d, v: dumps({**d, field: v}), good_fields(), values)


huge_int = st.integers(min_value=10**7, max_value=10**30)
malformed: st.SearchStrategy[bytes] = st.one_of(
    # random bytes, truncated JSON, JSON that is not an object
    st.binary(max_size=300),
    st.builds(
        lambda d, cut: dumps(d)[: max(1, int(len(dumps(d)) * cut))],
        good_fields(),
        st.floats(0.0, 0.98),
    ),
    st.one_of(st.lists(st.integers()), st.integers(), st.text(), st.none(), st.booleans()).map(
        dumps
    ),
    # missing and wrong keys
    st.builds(
        lambda d, k: dumps({x: v for x, v in d.items() if x != k}),
        good_fields(),
        st.sampled_from(REQUIRED),
    ),
    st.builds(
        lambda d, k: dumps({(x + "_" if x == k else x): v for x, v in d.items()}),
        good_fields(),
        st.sampled_from(REQUIRED),
    ),
    # wrong types
    _replace(
        "quantity",
        st.one_of(
            st.text(max_size=5),
            st.booleans(),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        ),
    ),
    _replace(
        "sku", st.one_of(st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=2))
    ),
    _replace(
        "ts",
        st.one_of(
            st.booleans(),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        ),
    ),
    # NaN, Infinity and huge numbers; zero, fractional and huge quantities
    _replace("quantity", st.sampled_from([float("nan"), float("inf"), float("-inf")])),
    _replace("unit_price", st.sampled_from([float("nan"), float("inf"), -1.0, 1e12])),
    _replace("quantity", st.one_of(st.just(0), huge_int, huge_int.map(lambda v: -v))),
    _replace("quantity", st.floats(-1000, 1000).filter(lambda v: v != int(v))),
    _replace("ts", huge_int.map(lambda v: v * 10**6)),
    # far-past and far-future times, unparseable times
    _replace(
        "ts",
        st.sampled_from(
            [
                "1900-01-01T00:00:00",
                "3000-01-01T00:00:00",
                "1999-12-31T23:59:59Z",
                "2011-13-45T99:00:00",
                "yesterday",
                "",
            ]
        ),
    ),
    _replace("ts", st.integers(-(10**15), 946_684_799_999)),
    # empty and huge strings, odd unicode
    _replace(
        "sku",
        st.sampled_from(
            ["", "   ", "x" * 101, "a@b", "{tag}", "\x00", "line\nbreak", "\ud800", "\u2028"]
        ),
    ),
    _replace(
        # control characters only: two surrogates could pair into a valid astral character
        "location",
        st.text(alphabet=st.characters(categories=["Cc"]), min_size=1, max_size=4),
    ),
    _replace("event_id", st.sampled_from(["", "e" * 201, "id\twith\ttabs"])),
    # oversized messages
    st.builds(
        lambda d, n: dumps({**d, "note": "x" * n}), good_fields(), st.integers(LIMIT, 3 * LIMIT)
    ),
)


@settings(
    max_examples=36,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(
    bad=st.lists(malformed, min_size=100, max_size=100),  # 36 examples x 100 = 3,600
    good=st.lists(good_fields(), min_size=50, max_size=150),
    order=st.randoms(use_true_random=False),
)
def test_malformed_payloads_never_crash_and_all_reach_the_dlq(
    redis_url: str, bad: list[bytes], good: list[dict[str, object]], order
) -> None:  # type: ignore[no-untyped-def]
    redis_client(redis_url).flushall()
    good = [{**g, "event_id": f"ok-{i}"} for i, g in enumerate(good)]
    payloads = [(b, False) for b in bad] + [(dumps(g), True) for g in good]
    order.shuffle(payloads)
    s = Settings.of(redis_url=redis_url, max_message_bytes=LIMIT)
    out: list[Output] = []

    async def collect(batch: list[Output]) -> None:
        out.extend(batch)

    async def run() -> None:
        client = async_redis_client(redis_url)
        pipeline = Pipeline(s, FeatureStore.of(client, s), collect)
        records = [
            Record("orders", 0, i, key_of(p) if ok else None, p)
            for i, (p, ok) in enumerate(payloads)
        ]
        for i in range(0, len(records), 97):
            await pipeline.process(records[i : i + 97])
        await client.aclose()

    asyncio.run(run())
    dead = [json.loads(o.value) for o in out if o.topic == "shelfcast-dlq"]
    # an oversized one arrives cut to the size limit, with its size and a flag
    got = Counter((d["value_size"], d["truncated"], base64.b64decode(d["value_b64"])) for d in dead)
    assert got == Counter((len(b), len(b) > LIMIT, b[:LIMIT]) for b in bad)
    assert all(d["reason"] and d["detail"] for d in dead)
    r = redis_client(redis_url, decode_responses=True)
    assert int(r.hget("shelfcast:{p0}:stats", "applied")) == len(good)
    total = sum(int(v) for k in r.scan_iter("shelfcast:*:s:*:demand") for v in r.hvals(k))
    assert total == demand([json.loads(p) for p, ok in payloads if ok])


def demand(orders: list[dict]) -> int:
    """Units demanded by ``orders`` in arrival order, under the documented rule: a return
    cancels an earlier order of its size in the same series and day (docs/forecasting.md)."""
    total, sizes = 0, Counter[tuple[object, ...]]()
    for o in orders:
        day = (o["sku"], o["location"], int(o["ts"]) // 86_400_000)
        qty = int(o["quantity"])
        if qty > 0:
            total += qty
            sizes[(*day, qty)] += 1
        elif sizes[(*day, -qty)] > 0:
            sizes[(*day, -qty)] -= 1
            total += qty
    return total
