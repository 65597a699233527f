"""A public testing harness: records fed by hand through the worker's own ``Pipeline``, every
message it would send collected in a list.

As Bytewax's ``testing`` module does for its dataflows: no Faust and no Kafka, but the same
pipeline a worker runs, against a real Redis (``settings.redis.url``), so a test or a script
checks what a worker would publish for a handful of events::

    h = Harness(settings)
    h.feed([h.record(order("o1", "2011-01-03T10:00:00", 5))])
    h.feed([h.record(order("o2", "2011-01-05T10:00:00", 5))])  # closes the 3rd and 4th
    assert forecasts(h.outputs)

``order`` and ``stock`` build the input events of the ``orders`` and ``inventory`` topics.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from streamer.config.settings import Settings
from streamer.features.connect import connect_async
from streamer.features.store import FeatureStore
from streamer.pipeline.batch import Pipeline, Record
from streamer.publish.messages import Output

__all__ = ["Harness", "alerts", "forecasts", "order", "stock"]

Outputs = list[tuple[str, dict]]  # (topic, decoded message), in the order they were sent


class Harness:
    """Feeds records through one Pipeline; ``restart`` drops all in-memory state, as a worker
    that crashed and came back would."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()  # one loop for the client's connections
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.outputs: Outputs = []
        self.restart()

    def restart(self) -> None:
        if hasattr(self, "client"):  # a crashed worker's connections go with it
            self.loop.run_until_complete(self.client.aclose())
        self.client = connect_async(self.settings)
        self.pipeline = Pipeline(
            self.settings, FeatureStore.of(self.client, self.settings), self.sink
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()

    async def sink(self, batch: list[Output]) -> None:
        self.outputs += [(o.topic, json.loads(o.value)) for o in batch]

    def record(self, value: bytes, topic: str = "orders", partition: int = 0) -> Record:
        """The record as Kafka would deliver it, keyed by its SKU when it has one."""
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        try:
            obj = json.loads(value)
            key: bytes | None = obj["sku"].encode()
        except (ValueError, KeyError, TypeError):
            key = None
        return Record(topic, partition, offset, key, value)

    def feed(self, records: list[Record], batch: int = 1000) -> Outputs:
        """Outputs that these records produced."""
        before = len(self.outputs)
        for i in range(0, len(records), batch):
            self.loop.run_until_complete(self.pipeline.process(records[i : i + batch]))
        return self.outputs[before:]


def forecasts(outputs: Outputs) -> list[dict]:
    return [m for t, m in outputs if t == "forecasts"]


def alerts(outputs: Outputs) -> list[dict]:
    return [m for t, m in outputs if t == "low-stock-alerts"]


def order(
    event_id: str,
    ts: str,
    quantity: int,
    sku: str = "A1",
    location: str = "UK",
    price: float | None = 1.5,
    customer: str | None = None,
    promo: object = None,
) -> bytes:
    """An ``orders`` event (docs/topics.md).

    >>> order("o1", "2011-01-03T10:00:00", 5, price=None)
    b'{"event_id": "o1", "ts": "2011-01-03T10:00:00", "sku": "A1", "location": "UK", "quantity": 5}'
    """
    msg: dict[str, object] = {
        "event_id": event_id,
        "ts": ts,
        "sku": sku,
        "location": location,
        "quantity": quantity,
    }
    if price is not None:
        msg["unit_price"] = price
    if customer is not None:
        msg["customer_id"] = customer
    if promo is not None:
        msg["promo"] = promo
    return json.dumps(msg).encode()


def stock(event_id: str, ts: str, sku: str = "A1", location: str = "UK", **fields: object) -> bytes:
    """An ``inventory`` event: ``on_hand=``, ``delta=``, a purchase order's fields..."""
    return json.dumps(
        {"event_id": event_id, "ts": ts, "sku": sku, "location": location, **fields}
    ).encode()
