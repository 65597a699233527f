"""The Faust application: settings, the Redis client, and the worker entry point."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import aiokafka
import faust
from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamer.config.settings import Settings
from streamer.features.connect import worker_client
from streamer.features.store import FeatureStore
from streamer.ingest import web
from streamer.ingest.agents import Agents
from streamer.pipeline import offsets
from streamer.pipeline.batch import Pipeline
from streamer.publish.sink import KafkaSink

__all__ = [
    "COMMIT_EVERY_NEVER",
    "broker_urls",
    "compose",
    "create_app",
    "rejoin_on_sync_refusal",
    "run_worker",
    "transport",
    "tune_gc",
]

log = logging.getLogger(__name__)


# more acks than a worker takes in: Faust's inline commit never fires (``create_app``)
COMMIT_EVERY_NEVER = 2**62


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def transport(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """Faust's aiokafka transport with the worker consumer's fetch wait set, and a consumer
    that can pause fetching a partition without losing what it fetched (``fetch_paused``).

    Faust fixes ``fetch_max_wait_ms`` at 1500. That only bounds idle polling on real Kafka, but
    the embedded broker waits it out in full (``streamer.ops.embedded.EMBEDDED_FETCH_MAX_WAIT_MS``).
    """

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(
            self, transport: faust_aiokafka.Transport
        ) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read by start(), not before
            return consumer

    class FetchConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def fetch_paused(self, topic: str, paused: set[TP]) -> None:
            """Pause fetching exactly ``paused`` of the partitions of ``topic`` held now, and
            resume the others, in the Kafka client itself, on its thread (``Agents.align``).

            The whole set, not a change to it: a call that lands on an assignment that changed
            meanwhile leaves no partition paused for good, since the next one that reaches the
            client sets all of them (``Agents.align``). Nothing else pauses these partitions
            in the client: Faust's own pauses stay in Faust.

            Not ``pause_partitions``: Faust filters the records of a fetch already made against
            its live set of active partitions, so a partition paused meanwhile silently loses
            the rest of that fetch, and the consumer moves past it. The client (aiokafka) keeps
            its position instead and fetches those records again on resume."""
            client = self._thread._ensure_consumer()

            async def in_thread() -> None:
                # a rebalance may have changed the assignment meanwhile
                mine = [tp for tp in client.assignment() if tp.topic == topic]
                client.resume(*(tp for tp in mine if tp not in paused))
                client.pause(*(tp for tp in mine if tp in paused))

            await self._thread.call_thread(in_thread)

    class Transport(faust_aiokafka.Transport):
        Consumer = FetchConsumer

    return Transport


def rejoin_on_sync_refusal(rebalance: type = CoordinatorGroupRebalance) -> None:
    """Make a consumer whose SyncGroup is refused with INVALID_REQUEST join the group again.

    aiokafka 0.14 requests a rejoin, then parks the error until the application's next fetch;
    a worker that holds no partition yet never fetches, so it stays out of the group for good.
    librdkafka's mock coordinator (the embedded broker) refuses so a follower whose SyncGroup
    comes after the leader's: it marks the group stable once the leader sent every assignment.
    Returning no assignment takes aiokafka's path for a rebalance in progress: back off and
    rejoin (tests/test_scaleout.py starts two workers at once, which hit it).
    """
    send = rebalance._send_sync_group_request
    if getattr(send, "rejoins", False):
        return

    async def send_or_rejoin(self: CoordinatorGroupRebalance, request: Any) -> bytes | None:
        try:
            return await send(self, request)
        except KafkaError as exc:
            if "InvalidRequestError" not in str(exc):
                raise
            log.warning("the group coordinator refused SyncGroup (%s): joining again", exc)
            return None

    send_or_rejoin.rejoins = True  # type: ignore[attr-defined]
    rebalance._send_sync_group_request = send_or_rejoin


def create_app(settings: Settings) -> faust.App:
    rejoin_on_sync_refusal()
    app = faust.App(
        settings.kafka.app_id,
        broker=broker_urls(settings.kafka.bootstrap_servers),
        store="memory://",
        # Topics are created up front (mock cluster at start, kafka-init in compose): the
        # mock cluster has no CreateTopics, and production topics are an operator's decision.
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_bind,
        datadir=str(settings.home / "faust"),
        broker_session_timeout=10,
        broker_heartbeat_interval=2,
        broker_credentials=settings.kafka.security.faust_credentials(),
        producer_max_request_size=max(1_048_576, 4 * settings.kafka.max_message_bytes),
        # What the worker fetched and not processed yet cannot wait for the other input topic
        # (Agents.align), and Faust takes in a whole fetch however full its buffer: a fetch of
        # a few of the largest messages a partition, and a buffer of two batches a topic.
        consumer_max_fetch_size=4 * settings.kafka.max_message_bytes,
        stream_buffer_maxsize=2 * settings.kafka.batch_size,
        # Commits run on the timer only (broker_commit_interval, 2.8 s), never inside Faust's
        # fetch loop: that loop records a record's offset as read only after delivering it,
        # and a commit awaited in between (every 10,000 acks by default) can outlast a whole
        # rebalance, as on a worker woken past its session. The stale read offset then
        # overwrites the one the new assignment sought to, and the loop drops the records
        # below it as already read, while Redis's offsets move past them: lost.
        broker_commit_every=COMMIT_EVERY_NEVER,
    )

    app.transport = transport(settings.kafka.fetch_max_wait_ms)(app.conf.broker_consumer, app)

    @app.page("/metrics")
    async def metrics_page(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # aiohttp refuses a charset inside content_type=, so the header is set directly.
        return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    A worker holds millions of long-lived model objects and allocates many short-lived ones
    per event; with CPython's default thresholds (700, 10, 10) the collector took 14% of its
    time re-scanning them (py-spy, docs/benchmark.md). Young collections now run 70x less
    often and older ones 2x less; start-up objects (modules, Faust) are frozen out of every
    collection. Models are not frozen: one dropped later must stay collectable.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def compose(app: faust.App, settings: Settings) -> Agents:
    """The worker's parts, built and connected: the feature store, the pipeline that sends
    through its own librdkafka producer and reads committed offsets from Kafka, the HTTP
    endpoints and the agents."""
    store = FeatureStore.of(worker_client(settings), settings)

    async def committed(partition: int) -> dict[str, int]:
        return await asyncio.to_thread(offsets.committed, settings, [partition])

    pipeline = Pipeline(settings, store, KafkaSink(settings), committed)
    web.register(app, settings, store.r)
    agents = Agents(app, settings, pipeline, store)
    agents.connect()
    return agents


def run_worker(settings: Settings) -> None:
    """Run the Faust worker until it is stopped (SIGINT/SIGTERM). Does not return."""
    app = create_app(settings)
    compose(app, settings)
    tune_gc()
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
