"""A worker catching up on a backlog reads a partition's orders no further ahead of its
inventory, in event time, than ``SHELFCAST_TOPIC_LEAD_SECONDS``, but for what it fetched before
it paused them; and a snapshot read after those orders is applied where it stands in time, not
judged stale because the orders after it were read first."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamer.config.settings import Settings, all_topics
from streamer.ops.embedded import EmbeddedRedis, MockKafkaCluster
from streamer.ops.replay import Produced, produce
from tests.worker_harness import DAY, Worker, counter, redis_truth, stopping, wait_all_committed

START = datetime(2011, 3, 1, 9, tzinfo=UTC).timestamp()
SNAPSHOT_AT = START + 2 * DAY
ON_HAND = 100_000


def event(role: str, ts: float, **fields: object) -> Produced:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    value = {"ts": stamp, "location": "United Kingdom", **fields}
    return Produced(role, str(fields["sku"]), json.dumps(value).encode(), ts)


def backlog() -> tuple[list[Produced], int]:
    """Orders of one series over 60 days, and an inventory topic that takes many more records
    to reach that series' snapshot on day 2 (deliveries of another series, on day 0 to 1): read
    at equal rates in records, the orders would be weeks past the snapshot when it is read. The
    orders are sparse, 50 a day, so one fetch of them, or the worker's buffer of two batches,
    spans weeks: more than the 14 days of movements kept before the newest. They are kept from
    the newest inventory read instead (apply.lua: ``kept_from``); without that, the snapshot is
    stale and the stock off by it. Returns the events and the series' true stock."""
    orders = [
        event("orders", START + i * DAY / 50, event_id=f"o{i}", sku="22423", quantity=1,
              unit_price=1.0, order_id=f"o{i}")
        for i in range(60 * 50)
    ]  # fmt: skip
    n = 24_000
    deliveries = [
        event("inventory", START + i * DAY / n, event_id=f"d{i}", sku="85123A", delta=1)
        for i in range(n)
    ]
    snapshot = event("inventory", SNAPSHOT_AT, event_id="s", sku="22423", on_hand=ON_HAND)
    later = sum(1 for o in orders if o.ts > SNAPSHOT_AT)
    return [*orders, *deliveries, snapshot], ON_HAND - later


@pytest.mark.slow
@pytest.mark.solo
def test_orders_wait_for_the_inventory_read_behind_them(tmp_path: Path) -> None:
    events, truth = backlog()
    kafka = MockKafkaCluster(all_topics(Settings()), partitions=1)
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    worker = Worker(kafka.bootstrap, server.url, tmp_path / "home", SHELFCAST_PARTITIONS="1")
    with stopping(kafka, server, worker):
        produce(kafka.bootstrap, {}, Settings().kafka.topics, events, progress=False)
        worker.start()
        wait_all_committed(kafka.bootstrap, worker)
        _, stock = redis_truth(server.url)
        stale = counter(server.url, "stale_snapshot")
        waited = worker.metric("shelfcast_orders_waited_total")
        paused = re.findall(
            r'^shelfcast_orders_paused\{partition="0"\} (\S+)$', worker.metrics(), re.M
        )
    assert waited >= 1
    assert paused == ["0.0"]  # resumed once the inventory caught up: nothing left unread
    assert stale == 0
    assert stock["22423@United Kingdom"] == truth
