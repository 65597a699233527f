"""Redis clients from the settings: one server, or a Redis Cluster (``SHELFCAST_REDIS_CLUSTER``).

Every key of a partition carries its hash tag (docs/redis-layout.md), so the same scripts and
pipelines run on both; a cluster client only routes each call to the node of its slot.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from streamer.config.settings import Settings

__all__ = ["connect", "connect_async", "packed_by_hiredis", "redis_options", "worker_client"]


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
    """An asyncio client of the settings' Redis, its commands packed by hiredis."""
    options = {**redis_options(settings), **options}
    if settings.redis.cluster:
        cluster = AsyncRedisCluster.from_url(settings.redis.url, **options)
        # its nodes connect on first use, with the class their manager hands them
        kwargs = cluster.nodes_manager.connection_kwargs
        kwargs["connection_class"] = packed_by_hiredis(kwargs["connection_class"])
        for node in cluster.nodes_manager.startup_nodes.values():
            node.connection_class = kwargs["connection_class"]
        return cluster  # type: ignore[return-value]
    # A pooled connection that Redis closed while it was away (killed, restarted) fails at its
    # next use, however long Redis has been back, and a ``from_url`` client never retries.
    # One immediate reconnect tells that stale connection from an outage, which fails again.
    # Safe for the worker, whose every effect is idempotent: a script whose reply was lost
    # may run twice. Not on a timeout: a hung Redis would be waited out twice.
    options.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    client = aioredis.Redis.from_url(settings.redis.url, **options)
    pool = client.connection_pool
    pool.connection_class = packed_by_hiredis(pool.connection_class)  # connects on first use
    return client


class _HiredisPacking(AbstractConnection):
    """redis-py's asyncio connections pack each argument in Python, 1.3 us a series and hash
    when a close writes its per-series hashes; hiredis packs a whole command in C (0.2 us).
    The same bytes: UTF-8 text, numbers as ``repr`` writes them."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0].encode() if isinstance(args[0], str) else args[0]
        # 'CONFIG GET' is two arguments to the server
        try:
            return [hiredis.pack_command((*name.split(), *args[1:]))]
        except TypeError:  # a memoryview, or what redis-py rejects with its own error
            return super().pack_command(*args)


@cache
def packed_by_hiredis(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` (plain, TLS or Unix socket connection) with hiredis packing its commands."""
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def worker_client(settings: Settings) -> aioredis.Redis:
    """The worker's asyncio client. A partition of a hundred thousand series closes in scripts
    of seconds (its snapshot included), and with two closes in flight a call also waits behind
    the other's. A Redis that is down refuses or resets at once; only a hung one waits out
    the timeout."""
    return connect_async(settings, socket_timeout=60, socket_connect_timeout=5)
