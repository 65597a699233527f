"""Retrying a pipeline step while Redis is away, and stopping the worker when it must stop.

Every effect of a step is idempotent, so a step retried after a partial failure applies the
rest and skips what was done; an error that is not a passing Redis failure is a bug and
stops the process, which restarts from its last committed input.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamer import metrics
from streamer.pipeline.offsets import KafkaUnavailable

__all__ = ["EXIT_HALTED", "REDIS_DOWN", "fatal", "halt", "retrying", "transient"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# a cluster client with no reachable node raises RedisClusterException
REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    RedisClusterException,
)
# replies of a Redis that is up but refuses for now: out of memory at maxmemory, a replica
# or a failing-over primary, a failed RDB save, a busy script, still loading its data, a
# cluster with a slot not served (a node down) or being moved
REFUSALS = ("OOM", "READONLY", "MISCONF", "BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN")
MAX_BACKOFF = 5.0
EXIT_HALTED = 78  # EX_CONFIG: the state needs an operator (RedisBehind), not a restart


def transient(exc: BaseException) -> bool:
    """Whether a Redis failure passes by itself: unreachable, or up but refusing for now
    (also inside a script, whose error wraps the refusal: ``... -OOM command not allowed``)."""
    if isinstance(
        exc, (*REDIS_DOWN, OutOfMemoryError, ReadOnlyError, TryAgainError, ClusterDownError)
    ):
        return True
    if isinstance(exc, (AttributeError, TypeError)) and _in_redis_transport(exc):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError) and any(
        text.startswith(code) or f"-{code} " in text for code in REFUSALS
    )


def _in_redis_transport(exc: BaseException) -> bool:
    """Whether ``exc`` was raised writing to a Redis connection the peer had closed: redis-py
    8.1 lets asyncio's ``'NoneType' object has no attribute 'writelines'`` (or ``... is not
    callable``) through instead of a ConnectionError (redis/redis-py#4287). The connection
    reconnects on its next use, so this is a lost connection like any other."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("redis/asyncio/connection.py"):
            return True
        tb = tb.tb_next
    return False


class _Outage:
    """This process's view of Redis being away, shared by every step: one log line when it
    goes and one when it is back, however many steps and connections notice."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, step: str, exc: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.error("%s: retrying %s with backoff (%s)", _why(exc), step, exc)

    def succeeded(self, step: str) -> None:
        if self.since is not None:
            elapsed = time.monotonic() - self.since
            log.warning("Redis is back after %.1fs; %s resumed", elapsed, step)
            self.since = None


_outage = _Outage()


async def retrying(step: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a pipeline step, retrying with backoff while Redis is unreachable or refuses.

    Every effect is idempotent, so a step retried after a partial failure applies the rest
    and skips what was done. Any other error is a bug and propagates.
    """
    delay = 0.2
    while True:
        try:
            result = await work()
        except Exception as exc:
            if not transient(exc):
                raise
            metrics.REDIS_ERRORS.inc()
            _outage.failed(step, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        else:
            _outage.succeeded(step)
            return result


def _why(exc: BaseException) -> str:
    if isinstance(exc, KafkaUnavailable):
        return "Kafka unreachable"
    if isinstance(exc, REDIS_DOWN):
        return "Redis unreachable"
    if isinstance(exc, OutOfMemoryError) or "OOM" in str(exc):
        return "Redis is full (maxmemory): raise it or free memory, with noeviction kept"
    return "Redis refuses writes for now"


def halt(why: str) -> NoReturn:
    """Stop the worker on a condition an operator must resolve, saying how (no traceback: it is
    no bug). Its input stays uncommitted."""
    log.critical("%s", why)
    logging.shutdown()
    os._exit(EXIT_HALTED)


def fatal(what: str) -> NoReturn:
    """Exit the process on a bug instead of letting Faust restart the agent.

    A restarted Faust agent does not get the batch it crashed on back, so it would stall or
    skip input. Exiting leaves the input uncommitted; the restarted worker reprocesses it, and
    every effect is idempotent.
    """
    log.exception("%s; exiting so the worker restarts from its last committed input", what)
    logging.shutdown()
    os._exit(70)
