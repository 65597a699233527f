"""The worker's Redis clients: commands packed by hiredis, byte for byte as redis-py packs them."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from streamer.config.settings import Settings
from streamer.features.connect import connect_async, packed_by_hiredis

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
