"""Redis clients from the settings: one server, or a Redis Cluster (``SHELFCAST_REDIS_CLUSTER``).

Every key of a partition carries its hash tag (docs/redis-layout.md), so the same scripts and
pipelines run on both; a cluster client only routes each call to the node of its slot.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from streamer.config.settings import Settings

__all__ = ["connect", "connect_async", "redis_options", "worker_client"]


def redis_options(settings: Settings) -> dict[str, object]:
    """Arguments for ``Redis.from_url`` beside the URL: the password and TLS CA file.

    >>> redis_options(Settings.of(redis_password="s3cret"))
    {'password': 's3cret'}
    """
    options: dict[str, object] = {}
    if settings.redis.password:
        options["password"] = settings.redis.password
    if settings.redis.ssl_ca_file:
        options["ssl_ca_certs"] = settings.redis.ssl_ca_file
    return options


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking client of the settings' Redis (``options`` as ``Redis.from_url`` takes)."""
    options = {**redis_options(settings), **options}
    if settings.redis.cluster:
        try:
            # it answers the same commands; typed as a plain client for its callers
            return RedisCluster.from_url(settings.redis.url, **options)  # type: ignore[return-value]
        except RedisClusterException as exc:
            # a plain client fails at its first command, a cluster client here: callers
            # handle both as the connection error it is
            raise redis.ConnectionError(str(exc)) from exc
    return redis.Redis.from_url(settings.redis.url, **options)


def connect_async(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio client of the settings' Redis."""
    options = {**redis_options(settings), **options}
    if settings.redis.cluster:
        return AsyncRedisCluster.from_url(settings.redis.url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(settings.redis.url, **options)


def worker_client(settings: Settings) -> aioredis.Redis:
    """The worker's asyncio client. A partition of a hundred thousand series closes in scripts
    of seconds (its snapshot included), and with two closes in flight a call also waits behind
    the other's. A Redis that is down refuses or resets at once; only a hung one waits out
    the timeout."""
    return connect_async(settings, socket_timeout=60, socket_connect_timeout=5)
