"""Where a pipeline's outputs go: a librdkafka producer that returns once the broker holds them.

The worker used to send through Faust's aiokafka producer, one awaited ``send`` per message:
its Python path (accumulator, partitioner, futures) took a sixth of the worker's time over a
full-year replay (py-spy, docs/benchmark.md), more than the bank's learning. librdkafka
batches and acknowledges in C; the worker's thread only hands it the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamer.config.settings import Settings
from streamer.publish.messages import Output

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer

__all__ = ["DeliveryFailed", "KafkaSink", "producer_config"]

log = logging.getLogger(__name__)

# how long librdkafka keeps retrying one message before it reports the message failed
DELIVERY_TIMEOUT_MS = 120_000
# past the delivery timeout, how long a batch waits for reports that librdkafka owes it
REPORT_GRACE = 30.0
# outputs handed to the producer on the event loop itself: about a millisecond of its time
INLINE = 1_000


class DeliveryFailed(RuntimeError):
    """Outputs the broker never acknowledged. The worker stops on it and starts again from its
    last committed input, which sends the same outputs (same ids) again."""


def producer_config(settings: Settings, timeout_ms: int = DELIVERY_TIMEOUT_MS) -> dict[str, object]:
    """The producer's settings: keys land on the partitions Java clients and Faust pick
    (murmur2), and a retried batch is never written twice (idempotence, acks from all
    in-sync replicas)."""
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        # each batch waits for its acknowledgements: a short linger, for order -> alert latency
        "linger.ms": 1,
        "batch.num.messages": 10_000,
        # a close of a large partition hands over all its messages at once
        "queue.buffering.max.messages": 2_000_000,
        "message.max.bytes": max(1_048_576, 4 * settings.kafka.max_message_bytes),
        "message.timeout.ms": timeout_ms,
        **settings.kafka.security.confluent(),
    }


class _Acks:
    """The delivery reports of one batch, served on the sink's poller thread; the last one
    resolves ``done`` on the event loop."""

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.left = n
        self.errors: list[KafkaError] = []
        self.done: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._lock = threading.Lock()
        if n == 0:
            self.done.set_result(None)

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is not None:
                self.errors.append(err)
            self.left -= 1
            if self.left == 0 and not self._loop.is_closed():  # closed: nobody waits
                self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.done.done():  # a cancelled batch (its partition's task) waits no more
            self.done.set_result(None)


class KafkaSink:
    """A pipeline's ``deliver``: sends a batch of outputs and returns once the broker
    acknowledged every one; raises ``DeliveryFailed`` if any was not. Batches of different
    partitions may be in flight at once; each waits for its own acknowledgements only.

    One thread polls the producer for every batch's reports. A large batch (a close) is
    handed to the producer from a worker thread, so it never holds the event loop; a small
    one (a few alerts) inline, sparing the hop, unless the producer's queue is full.
    """

    def __init__(self, settings: Settings, timeout_ms: int = DELIVERY_TIMEOUT_MS) -> None:
        from confluent_kafka import Producer

        self._producer: Producer = Producer(producer_config(settings, timeout_ms))
        self._timeout = timeout_ms / 1000
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-sink-poll", daemon=True)
        self._poller.start()
        self.delivered = 0

    def _poll(self) -> None:
        while not self._closed.is_set():
            try:
                self._producer.poll(0.1)  # returns as soon as it has served a report
            except Exception:  # a report's callback failed: the others must still be served
                log.exception("serving the producer's delivery reports")

    async def __call__(self, outs: Sequence[Output]) -> None:
        acks = _Acks(len(outs), asyncio.get_running_loop())
        handed = 0 if len(outs) > INLINE else self._produce(outs, acks, wait=False)
        if handed < len(outs):  # a close, or a full queue: never wait on the event loop
            await asyncio.to_thread(self._produce, outs[handed:], acks, True)
        try:
            await asyncio.wait_for(acks.done, self._timeout + REPORT_GRACE)
        except TimeoutError:
            raise self._failed(acks.left, len(outs), "no delivery report came") from None
        if acks.errors:
            raise self._failed(len(acks.errors), len(outs), f"first: {acks.errors[0]}")
        self.delivered += len(outs)

    def _failed(self, count: int, n: int, why: str) -> DeliveryFailed:
        return DeliveryFailed(
            f"{count} of {n} outputs were not acknowledged within {self._timeout:g}s ({why}); "
            "check that the brokers in KAFKA_BOOTSTRAP_SERVERS are up and the output topics "
            "exist"
        )

    def _produce(self, outs: Sequence[Output], acks: _Acks, wait: bool) -> int:
        """Hand ``outs`` to the producer; how many it took: all of them, unless its queue is
        full and ``wait`` is False."""
        for i, o in enumerate(outs):
            while True:
                try:
                    self._producer.produce(o.topic, o.value, o.key, on_delivery=acks.report)
                    break
                except BufferError:  # the local queue is full: the poller drains it
                    if not wait:
                        return i
                    time.sleep(0.05)
        return len(outs)

    def close(self) -> None:
        """Wait for anything still queued (nothing is, between batches), then stop polling."""
        self._producer.flush(self._timeout)
        self._closed.set()
        self._poller.join()
