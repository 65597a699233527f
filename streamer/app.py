"""The Faust application: settings, the Redis client, and the worker entry point."""

from __future__ import annotations

import faust
import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamer.config import Settings
from streamer.security import redis_options


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def create_app(settings: Settings) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
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
        broker_credentials=settings.kafka_security.faust_credentials(),
        producer_max_request_size=max(1_048_576, 4 * settings.max_message_bytes),
        consumer_max_fetch_size=max(4_194_304, 4 * settings.max_message_bytes),
    )

    @app.page("/metrics")
    async def metrics_page(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # aiohttp refuses a charset inside content_type=, so the header is set directly.
        return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def redis_client(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=10, socket_connect_timeout=5, **redis_options()
    )


def run_worker(settings: Settings) -> None:
    """Run the Faust worker until it is stopped (SIGINT/SIGTERM). Does not return."""
    from streamer.agents import register

    app = create_app(settings)
    register(app, settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
