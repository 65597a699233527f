"""The worker's HTTP endpoints beside ``/metrics``: a series' current state, liveness and
readiness (docs/deployment.md, Health checks)."""

from __future__ import annotations

import asyncio

import faust
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException, RedisError

from streamer.config.settings import Settings
from streamer.ingest.status import series_status

__all__ = ["READY_TIMEOUT_SECONDS", "REDIS_UNAVAILABLE", "register"]

READY_TIMEOUT_SECONDS = 2.0
# a cluster client with no node left to ask raises RedisClusterException, which is no RedisError
REDIS_UNAVAILABLE = (RedisError, RedisClusterException, OSError)


def register(app: faust.App, settings: Settings, r: aioredis.Redis) -> None:
    @app.page("/series/{sku}")
    async def series_page(
        self: faust.web.View, request: faust.web.Request, sku: str
    ) -> faust.web.Response:
        """The current state of ``sku``'s series (``?location=L`` for one), as
        ``shelfcast status`` prints it; 404 when none is active."""
        location = request.query.get("location")  # type: ignore[attr-defined]
        try:
            entries = await series_status(r, settings, sku, location)
        except REDIS_UNAVAILABLE as exc:
            return self.error(503, f"Redis unreachable: {exc}")
        if not entries:
            where = f" at location {location!r}" if location is not None else ""
            return self.error(404, f"no active series of SKU {sku!r}{where}")
        return self.json({"sku": sku, "series": entries})

    @app.page("/healthz")
    async def healthz(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Liveness: the event loop answers. Restart the worker when this fails."""
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Readiness: Redis answers, and the consumer has joined its group and is not in a
        rebalance; 503 with the failing check otherwise."""
        checks = {"redis": await _redis_ok(r), "kafka": _kafka_ok(app)}
        ready = all(checks.values())
        return self.json(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status=200 if ready else 503,
        )


async def _redis_ok(r: aioredis.Redis) -> bool:
    try:
        return bool(await asyncio.wait_for(r.ping(), READY_TIMEOUT_SECONDS))
    except (TimeoutError, *REDIS_UNAVAILABLE):
        return False


def _kafka_ok(app: faust.App) -> bool:
    return app.rebalancing_count > 0 and not app.rebalancing
