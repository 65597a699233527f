"""Where a pipeline's outputs go: a librdkafka producer that returns once the broker holds them.

The worker used to send through Faust's aiokafka producer, one awaited ``send`` per message:
its Python path (accumulator, partitioner, futures) took a sixth of the worker's time over a
full-year replay (py-spy, docs/benchmark.md), more than the bank's learning. librdkafka
batches and acknowledges in C; the worker's thread only hands it the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamer.config.settings import Settings
from streamer.publish.messages import Output

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message, Producer

__all__ = ["DeliveryFailed", "KafkaSink", "producer_config"]

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


class KafkaSink:
    """A pipeline's ``deliver``: sends a batch of outputs and returns once the broker
    acknowledged every one; raises ``DeliveryFailed`` if any was not. Batches of different
    partitions may be in flight at once.

    The producer reports failed deliveries only (``delivery.report.only.error``): a report
    for every message cost a Python callback each, a microsecond of the close's time per
    series with the interpreter lock held (docs/benchmark.md). A batch is acknowledged once
    the producer's queue drained (``flush``) with no failure reported since it began; a
    failure in a batch in flight beside it fails both, which stops the worker either way.
    One thread serves the producer at a time, so a failure's report has run by the time the
    flush that served it returns. A large batch (a close) is handed to the producer from a
    worker thread, so it never holds the event loop; a small one (a few alerts) inline,
    sparing the hop, unless the producer's queue is full.

    The flushes run in the sink's own thread, one at a time, each for every batch waiting
    when it starts (a group commit). A flush per batch in the event loop's thread pool had
    each waiting batch hold one of the pool's threads, which the closes and the Redis steps
    share (a small batch beside a close, alone: p50 1.0 → 0.8 ms, docs/benchmark.md).
    """

    def __init__(self, settings: Settings, timeout_ms: int = DELIVERY_TIMEOUT_MS) -> None:
        from confluent_kafka import Producer

        self._failures: list[KafkaError] = []
        config = producer_config(settings, timeout_ms)
        self._producer: Producer = Producer(
            {**config, "delivery.report.only.error": True, "on_delivery": self._report}
        )
        self._timeout = timeout_ms / 1000
        self._serving = threading.Lock()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._wake = threading.Condition()
        self._server: threading.Thread | None = None
        self._closing = False
        self.delivered = 0

    def _report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(err)

    async def __call__(self, outs: Sequence[Output]) -> None:
        self._check_open()  # before producing: a closed sink flushes nothing more
        seen = len(self._failures)
        handed = 0 if len(outs) > INLINE else self._produce(outs, wait=False)
        if handed < len(outs):  # a close, or a full queue: never wait on the event loop
            await asyncio.to_thread(self._produce, outs[handed:], True)
        try:
            left = await self._flushed()
        except Exception as exc:  # the producer failed to flush: as if nothing was acknowledged
            raise self._failed(len(outs), len(outs), f"the flush failed: {exc}") from exc
        failed = self._failures[seen:]
        if failed:
            raise self._failed(len(failed), len(outs), f"first: {failed[0]}")
        if left:
            raise self._failed(left, len(outs), "no delivery report came")
        self.delivered += len(outs)

    def _failed(self, count: int, n: int, why: str) -> DeliveryFailed:
        return DeliveryFailed(
            f"{min(count, n)} of {n} outputs were not acknowledged within {self._timeout:g}s "
            f"({why}); check that the brokers in KAFKA_BOOTSTRAP_SERVERS are up and the "
            "output topics exist"
        )

    def _flushed(self) -> asyncio.Future[int]:
        """What the next flush to start leaves in the producer's queue: every output handed
        over before it started is acknowledged or failed once it returns 0."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        with self._wake:
            self._check_open()  # again under the lock: a close since would never serve it
            self._waiting.append((loop, done))
            if self._server is None:
                self._server = threading.Thread(target=self._serve, name="sink", daemon=True)
                self._server.start()
            self._wake.notify()
        return done

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("the sink is closed")

    def _serve(self) -> None:
        """Flush for the batches waiting, until ``close``."""
        while True:
            with self._wake:
                while not self._waiting and not self._closing:
                    self._wake.wait()
                if not self._waiting:
                    return
                batches, self._waiting = self._waiting, []
            left: int | Exception
            try:
                left = self._drain(self._timeout + REPORT_GRACE)
            except Exception as exc:  # the batches fail with it: the thread must go on serving
                left = exc
            for loop, done in batches:
                with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                    loop.call_soon_threadsafe(_settle, done, left)

    def _drain(self, timeout: float) -> int:
        """Serve the producer's reports until its queue drained; what is left after
        ``timeout``."""
        with self._serving:
            return int(self._producer.flush(timeout))

    def _produce(self, outs: Sequence[Output], wait: bool) -> int:
        """Hand ``outs`` to the producer; how many it took: all of them, unless its queue is
        full and ``wait`` is False."""
        for i, o in enumerate(outs):
            while True:
                try:
                    self._producer.produce(o.topic, o.value, o.key)
                    break
                except BufferError:  # the local queue is full: it drains as the broker acks
                    if not wait:
                        return i
                    with self._serving:
                        self._producer.poll(0.05)
        return len(outs)

    def close(self) -> None:
        """Wait for anything still queued (nothing is, between batches)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._server is not None:
            self._server.join()
        self._drain(self._timeout)


def _settle(done: asyncio.Future[int], left: int | Exception) -> None:
    if done.done():  # a batch cancelled while it waited (a rebalance) wants nothing
        return
    if isinstance(left, Exception):
        done.set_exception(left)
    else:
        done.set_result(left)
