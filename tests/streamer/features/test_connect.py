"""The worker's Redis clients: commands packed by hiredis, byte for byte as redis-py packs them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError

from streamer.config.settings import Settings
from streamer.features.connect import connect_async, packed_by_hiredis
from streamer.ops.embedded import EmbeddedRedis

COMMANDS = [
    ("SET", "k", "v"),
    ("CONFIG GET", "maxmemory"),  # a command name of two words: two arguments
    (b"CLIENT SETNAME", b"n"),
    ("HSET", "h", "é", 0.1, 3, 1e20, 1296090000.0, b"\x00\xff"),
    ("EVALSHA", "abc", 1, "k", -2.5),
    ("SET", "k", memoryview(b"abc")),  # hiredis takes no memoryview: redis-py packs it
]


@pytest.mark.parametrize("base", [Connection, SSLConnection, UnixDomainSocketConnection])
def test_hiredis_packs_every_command_as_redis_py_does(base: type[Connection]) -> None:
    plain, packed = base(), packed_by_hiredis(base)()
    assert isinstance(packed, base)
    for args in COMMANDS:
        assert b"".join(packed.pack_command(*args)) == b"".join(plain.pack_command(*args))
    assert b"".join(packed.pack_commands(COMMANDS)) == b"".join(plain.pack_commands(COMMANDS))
    with pytest.raises(DataError):  # what redis-py refuses, refused alike
        packed.pack_command("SET", "k", True)


@pytest.mark.cluster
def test_the_worker_client_talks_to_the_test_redis_through_hiredis_packing(
    settings: Settings,
) -> None:
    async def run() -> tuple[bytes | None, dict[bytes, bytes], str]:
        client = connect_async(settings)
        await client.hset("{p0}h", mapping={"a": 1.5, "b": "é"})
        await client.set("{p0}k", b"\x00\xff")
        pipe = client.pipeline(transaction=False)
        pipe.get("{p0}k")
        pipe.hgetall("{p0}h")
        got, mapping = await pipe.execute()
        kind = type(await _a_connection(client)).__name__
        await client.aclose()
        return got, mapping, kind

    got, mapping, kind = asyncio.run(run())
    assert got == b"\x00\xff" and mapping == {b"a": b"1.5", b"b": "é".encode()}
    assert kind.startswith("Hiredis")


async def _a_connection(client: object) -> Connection:
    """A connection the client made (a cluster node's, or the pool's)."""
    nodes = getattr(client, "nodes_manager", None)
    if nodes is not None:
        node = next(iter(nodes.nodes_cache.values()))
        return node.acquire_connection()
    pool = client.connection_pool  # type: ignore[attr-defined]
    connection = await pool.get_connection()
    await pool.release(connection)
    return connection


def test_a_connection_redis_closed_while_away_reconnects_once_redis_is_back(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()

    async def run() -> list[bytes | None]:
        client = connect_async(Settings.of(redis_url=server.url))
        # two connections in the pool: one is used after the restart, one stays stale
        first, second = client.pipeline(transaction=False), client.pipeline(transaction=False)
        await asyncio.gather(first.set("k", b"v").execute(), second.get("k").execute())
        server.kill()
        with pytest.raises(RedisConnectionError):  # away: the error still reaches the caller
            await client.get("k")
        server.start()  # same port, on its AOF
        got = await asyncio.gather(*(client.get("k") for _ in range(3)))  # every connection
        await client.aclose()
        return got

    try:
        assert asyncio.run(run()) == [b"v"] * 3
    finally:
        server.stop()
