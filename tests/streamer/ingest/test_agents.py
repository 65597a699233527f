"""The agent's retry rule over a real redis-server: what Redis refuses for now is waited out,
anything else is a bug that propagates. And the pausing of orders behind their inventory when
several callers align at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import aiokafka
import pytest
import redis.asyncio as aioredis
from faust.types import TP, Message
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError

from streamer import metrics
from streamer.config.settings import Settings
from streamer.ingest.agents import Agents, hold_back
from streamer.ingest.app import transport
from streamer.ingest.retry import retrying, transient
from streamer.ops.embedded import EmbeddedRedis


def test_a_full_redis_is_waited_out_then_the_step_completes(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()

    async def scenario() -> tuple[int, float]:
        r = aioredis.Redis.from_url(server.url)
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory-policy", "noeviction")
        await r.config_set("maxmemory", str(used + 200_000))
        with pytest.raises(OutOfMemoryError):
            for i in range(100):
                await r.set(f"filler:{i}", b"x" * 50_000)
        # Redis 6.2 lets a running script write past maxmemory: well over it now
        await r.eval("return redis.call('SET', KEYS[1], string.rep('x', 300000))", 1, "big")
        errors = metrics.REDIS_ERRORS._value.get()

        async def make_room() -> None:
            await asyncio.sleep(0.5)  # an operator raises maxmemory
            await r.config_set("maxmemory", "0")

        relief = asyncio.create_task(make_room())
        # a plain write, as the accounting makes (Redis 6.2 lets a script already running
        # write past maxmemory, and refuses the commands around it)
        written = await retrying("batch", lambda: r.hincrby("shelfcast:stats", "applied", 1))
        await relief
        await r.aclose()
        return written, metrics.REDIS_ERRORS._value.get() - errors

    try:
        written, refused = asyncio.run(scenario())
    finally:
        server.stop()
    assert written == 1 and refused >= 1


def test_only_unreachable_or_refusing_redis_is_retried() -> None:
    assert transient(ConnectionError("reset"))
    assert transient(ResponseError("MISCONF Errors writing to the AOF file"))
    assert transient(ResponseError("BUSY Redis is busy running a script"))
    assert transient(ResponseError("ERR Error running script: -OOM command not allowed when"))
    assert not transient(ResponseError("ERR wrong number of arguments for 'hset' command"))
    assert not transient(ValueError("a bug"))
    assert not transient(AttributeError("'NoneType' object has no attribute 'x'"))  # ours
    # writing to a connection the peer closed: redis-py 8.1 raised AttributeError there
    # (redis/redis-py#4287), 8.2 a ConnectionError; either is waited out
    connection = aioredis.Connection()

    async def lost() -> None:  # the peer closed it between the check and the write
        pass

    connection.connect_check_health = lambda **_: lost()  # type: ignore[method-assign]
    with pytest.raises((AttributeError, RedisConnectionError)) as closed:
        asyncio.run(connection.send_packed_command([b"PING"], check_health=False))
    assert transient(closed.value)

    async def bug() -> None:
        raise ResponseError("ERR Error running script: attempt to index a nil value")

    with pytest.raises(ResponseError, match="nil value"):
        asyncio.run(retrying("batch", bug))


def test_records_of_a_dropped_partition_stay_unacknowledged() -> None:
    """A fenced worker's batch must not commit past records it never applied."""
    messages = [Message("orders", p, 7, 0.0, 0, None, b"k", b"v", None) for p in (0, 1)]
    for m in messages:
        m.incref()  # the stream's own reference, released by take_events' ack
    hold_back(messages, lambda p: p != 1)
    final = [m.ack(None) for m in messages]  # type: ignore[arg-type]
    # the held one never reaches the consumer's ack (whose offsets get committed), yet counts
    # as done: a rebalance's wait for unacknowledged messages does not wait on it
    assert final == [True, False]
    assert all(m.acked for m in messages)


class SlowClient:
    """The Kafka client as ``Agents`` sees it, whose pauses land on another thread: each
    ``fetch_paused`` waits until the test lets it through (``let_through``)."""

    def __init__(self, held: set[TP]) -> None:
        self.held, self.paused = held, set[TP]()
        self.highwaters: dict[TP, int] = {}
        self.gates: list[asyncio.Event] = []

    def assignment(self) -> set[TP]:
        return self.held

    async def position(self, tp: TP) -> int:
        return 0

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp, 0)

    async def fetch_paused(self, topic: str, paused: set[TP]) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        mine = {tp for tp in self.held if tp.topic == topic}
        self.paused = (self.paused - mine) | (paused & mine)

    async def let_through(self, *tasks: asyncio.Task[None]) -> None:
        """Run ``tasks`` to their end, letting the newest waiting call through first."""
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.01)
            if waiting := [g for g in self.gates if not g.is_set()]:
                waiting[-1].set()
        await asyncio.gather(*tasks)  # their failures, if any


def slow_agents(settings: Settings) -> tuple[Agents, SlowClient, SimpleNamespace]:
    """Agents over a ``SlowClient`` holding both input topics' partitions, with every
    partition's orders far ahead of its inventory."""
    topics = (settings.kafka.topics["orders"], settings.kafka.topics["inventory"])
    client = SlowClient({TP(t, p) for t in topics for p in range(settings.kafka.partitions)})
    app = SimpleNamespace(rebalancing=False, rebalancing_count=1, consumer=client)
    ahead = SimpleNamespace(orders_lead=lambda p: 10 * settings.time.topic_lead_seconds)
    return Agents(app, settings, ahead, store=None), client, app  # type: ignore[arg-type]


def paused_gauges() -> list[float]:
    return [metrics.ORDERS_PAUSED.labels(str(p))._value.get() for p in (0, 1)]


def test_orders_paused_by_callers_side_by_side_are_all_resumed() -> None:
    """Two alignments in flight at once, each pausing another partition's orders, used to
    leave one paused for good: the worker stopped short of its input (2 sample backtests in
    262 on a 16-core machine)."""
    settings = Settings.of(partitions=2)
    orders, inventory = settings.kafka.topics["orders"], settings.kafka.topics["inventory"]
    agents, client, _ = slow_agents(settings)

    async def scenario() -> None:
        client.highwaters = {TP(inventory, 0): 5}  # partition 0's inventory has more to read
        first = asyncio.create_task(agents.keep_aligned())
        await asyncio.sleep(0.05)  # its pause is on its way
        client.highwaters = {TP(inventory, 1): 5}  # 0 caught up; 1 has more
        second = asyncio.create_task(agents.keep_aligned())
        await client.let_through(first, second)
        assert client.paused == agents.waiting == {TP(orders, 1)}
        assert paused_gauges() == [0, 1]
        client.highwaters = {}  # every inventory read
        await client.let_through(asyncio.create_task(agents.keep_aligned()))
        assert client.paused == agents.waiting == set()
        assert paused_gauges() == [0, 0]

    asyncio.run(asyncio.wait_for(scenario(), 30))  # a lock that deadlocks fails, not hangs


def test_a_pause_that_met_a_rebalance_is_set_again_by_the_next_batch() -> None:
    """A call in flight across a rebalance may land on the old assignment or the new one:
    what the client holds paused is unknown, and the next call sets it whole."""
    settings = Settings.of(partitions=2)
    orders, inventory = settings.kafka.topics["orders"], settings.kafka.topics["inventory"]
    agents, client, app = slow_agents(settings)

    async def scenario() -> None:
        client.highwaters = {TP(inventory, 0): 5}
        flight = asyncio.create_task(agents.keep_aligned())
        await asyncio.sleep(0.05)
        app.rebalancing_count += 1  # a rebalance starts and ends before the pause lands
        await client.let_through(flight)
        assert client.paused == {TP(orders, 0)} and agents.waiting is None
        client.highwaters = {}  # the inventory caught up
        await client.let_through(asyncio.create_task(agents.keep_aligned()))
        assert client.paused == agents.waiting == set()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_consumer_pauses_exactly_the_partitions_asked() -> None:
    """``fetch_paused`` on a real aiokafka client: the partitions of the topic not asked for
    are resumed, the other topic is left alone."""
    tps = [aiokafka.TopicPartition(t, p) for t in ("orders", "inventory") for p in range(3)]
    fetch_paused = transport(1).Consumer.fetch_paused  # type: ignore[attr-defined]

    async def scenario() -> set[aiokafka.TopicPartition]:
        client = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started
        client.assign(tps)
        client.pause(tps[0], tps[3])  # orders 0, inventory 0
        thread = SimpleNamespace(_ensure_consumer=lambda: client, call_thread=_call)
        await fetch_paused(
            SimpleNamespace(_thread=thread), "orders", {TP("orders", 1), TP("orders", 2)}
        )
        paused = client.paused()
        await client.stop()
        return paused

    assert asyncio.run(scenario()) == {tps[1], tps[2], tps[3]}


async def _call(work: Callable[[], Awaitable[None]]) -> None:
    await work()  # the consumer thread's call, on this loop
