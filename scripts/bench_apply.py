"""Benchmark of the event path alone: orders through the worker's pipeline into Redis.

    .venv/bin/python scripts/bench_apply.py [FILE] [--orders 10000] [--out DIR]

What a worker does to each order between two bucket closes (parse and check it, build its
stock effect, apply it with ``apply.lua``, read the statuses back), through the worker's own
``Pipeline.process`` on an embedded ``redis-server``, in micro-batches of 500 spread over 8
partitions, with no Faust, no Kafka and no close: ``FILE``'s first 2,000 lines warm the
series up, then ``--orders`` later orders re-timed into one bucket (as ``shelfcast bench``'s
burst) are timed. FILE defaults to the sample shipped in the repo.

The reference, in the same run on the same orders and partitions: one pipelined
``HINCRBY`` an order, a batch's partition a round trip, the least a per-order Redis write
costs. ``applied`` counts the timed orders the apply script applied (all of them: each is
new). Redis's own count of what ran (``INFO commandstats``) gives its time in the apply
script per order and the commands the script called per order, which do not depend on the
machine's speed. ``dedupe_bytes_per_order_line`` is the memory of the series' event-id sets
and order-size hashes (``MEMORY USAGE``) per order line, for the warm-up's lines as the file
dates them and for the timed ones (into the warm-up's last bucket), with the series' buckets
that gained keys: what the close benchmark's bytes a series leave out. It prints and saves
``bench_apply.json`` in ``--out``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from tqdm import tqdm

from streamer.config.settings import Settings
from streamer.data import SAMPLE
from streamer.features.connect import connect, connect_async
from streamer.features.keys import (
    SERIES_BUCKET_KEYS,
    is_series_bucket_key,
    series_bucket_pattern,
)
from streamer.features.store import FeatureStore, summed_stats
from streamer.ingest.status import kafka_partition
from streamer.ops import bench_script
from streamer.ops.bench import probe_orders
from streamer.ops.embedded import EmbeddedRedis
from streamer.ops.replay import Produced, read_events
from streamer.pipeline.batch import Pipeline, Record
from streamer.publish.messages import Output

WARM_LINES = 2_000
BATCH = 500
PARTITIONS = 8


def records(events: Sequence[Produced], offsets: dict[int, int]) -> list[Record]:
    """``events`` as Kafka would deliver them, in the partition its partitioner gives the SKU."""
    out = []
    for e in events:
        p = kafka_partition(e.key, PARTITIONS)
        out.append(Record("orders", p, offsets.get(p, 0), e.key.encode(), e.value))
        offsets[p] = offsets.get(p, 0) + 1
    return out


async def _discard(outputs: list[Output]) -> None:
    """The sink: a burst within one bucket raises a few alerts and closes nothing."""


async def _feed(pipeline: Pipeline, recs: list[Record], progress: bool, label: str) -> float:
    started = time.perf_counter()
    for i in tqdm(range(0, len(recs), BATCH), desc=label, unit="batch", disable=not progress):
        await pipeline.process(recs[i : i + BATCH])
    return time.perf_counter() - started


async def _reference(client: aioredis.Redis, recs: list[Record]) -> float:
    """One pipelined HINCRBY an order, a partition's share of each batch a round trip."""
    started = time.perf_counter()
    for i in range(0, len(recs), BATCH):
        by_partition: dict[int, list[Record]] = {}
        for rec in recs[i : i + BATCH]:
            by_partition.setdefault(rec.partition, []).append(rec)
        pipes = []
        for p, part in by_partition.items():
            pipe = client.pipeline(transaction=False)
            for rec in part:
                pipe.hincrby(f"bench:{{p{p}}}:reference", rec.key, 1)
            pipes.append(pipe.execute())
        await asyncio.gather(*pipes)
    return time.perf_counter() - started


@dataclass
class Measured:
    seconds: float  # the timed orders through the pipeline
    reference: float  # the same orders, one pipelined HINCRBY each
    commands: dict[str, dict[str, float]]  # Redis's INFO commandstats over the timed orders
    applied: int  # timed orders the apply script counted as applied
    warm_lines: int  # order lines the warm-up applied, in their own buckets
    # the series' per-bucket keys by name (SERIES_BUCKET_KEYS), how many and their bytes,
    # after the warm-up and after the timed orders
    dedupe: tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]


async def _measure(
    settings: Settings, warm: list[Record], timed: list[Record], progress: bool
) -> Measured:
    client = connect_async(settings)
    counters = connect(settings)
    try:
        pipeline = Pipeline(settings, FeatureStore.of(client, settings), _discard)
        pipeline.assign(range(PARTITIONS))
        await _feed(pipeline, warm, progress, "warm-up")
        before = summed_stats(counters, PARTITIONS).get("applied", 0)
        warm_dedupe = await _dedupe_bytes(client)
        await client.config_resetstat()
        seconds = await _feed(pipeline, timed, progress, "orders")
        commands = await client.info("commandstats")
        applied = summed_stats(counters, PARTITIONS).get("applied", 0) - before
        dedupe = await _dedupe_bytes(client)
        reference = await _reference(client, timed)
    finally:
        await client.aclose()
        counters.close()
    return Measured(seconds, reference, commands, applied, before, (warm_dedupe, dedupe))


async def _dedupe_bytes(client: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """The series' per-bucket keys (event ids and order sizes) by name: how many, and their
    bytes, each key counted whole by ``MEMORY USAGE``. The bytes a series of the close
    benchmark leave them out."""
    found: dict[str, tuple[int, int]] = {}
    for name in SERIES_BUCKET_KEYS:
        keys = [
            k
            async for k in client.scan_iter(match=series_bucket_pattern(name), count=1000)
            if is_series_bucket_key(k.decode(), name)
        ]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        found[name] = (len(keys), sum(await pipe.execute()))
    return found


def run(path: Path, orders: int, progress: bool = True) -> dict[str, object]:
    events, _ = read_events(path, WARM_LINES + 3 * orders)
    head, later = events[:WARM_LINES], events[WARM_LINES:]
    if sum(e.role == "orders" for e in later) < orders:
        raise SystemExit(
            f"{path} has fewer than {orders:,} orders after its first {WARM_LINES:,} lines: "
            "pass a lower --orders, or the full file (`shelfcast data path`)"
        )
    burst = probe_orders(later, max(e.ts for e in head), orders)
    offsets: dict[int, int] = {}
    warm = records([e for e in head if e.role == "orders"], offsets)
    timed = records(burst, offsets)
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedRedis(Path(home) / "redis")  # persisted as the worker's own
        server.start()
        try:
            settings = Settings.of(home=Path(home), redis_url=server.url)
            m = asyncio.run(_measure(settings, warm, timed, progress))
        finally:
            server.stop()
    script = m.commands.get("cmdstat_evalsha", {"usec": 0, "calls": 0})
    # every command but the scripts themselves: their calls, and under 0.1 an order of the
    # pipeline's own (an owner check a batch, the connections' handshakes)
    inside = {
        name.removeprefix("cmdstat_"): round(v["calls"] / len(timed), 2)
        for name, v in sorted(m.commands.items(), key=lambda kv: -kv[1]["calls"])
        if name not in ("cmdstat_evalsha", "cmdstat_config")
    }
    us = m.seconds / len(timed) * 1e6
    reference_us = m.reference / len(timed) * 1e6
    return {
        "orders": len(timed),
        "applied": m.applied,
        "us_per_order": round(us, 2),
        "reference_us_per_order": round(reference_us, 2),
        "ratio_to_reference": round(us / reference_us, 2),
        "redis_script_us_per_order": round(script["usec"] / len(timed), 2),
        "script_calls": script["calls"],
        "redis_calls_per_order": round(sum(inside.values()), 2),
        "redis_calls_per_order_by_command": inside,
        # each kept SHELFCAST_DEDUPE_TTL_SECONDS, refreshed as docs/redis-layout.md says
        "dedupe_bytes_per_order_line": _dedupe_figures(m),
    }


def _dedupe_figures(m: Measured) -> dict[str, dict[str, float]]:
    """Bytes of the dedupe keys per order line, and the series' buckets that gained keys (an
    id set each): the warm-up's lines as the file dates them, then the timed orders, re-timed
    into the warm-up's last bucket, so some go to keys it made and the rest to new ones."""
    warm, after = m.dedupe
    timed = {k: (after[k][0] - warm[k][0], after[k][1] - warm[k][1]) for k in after}
    phases = {"warm_up": (warm, m.warm_lines), "timed": (timed, m.applied)}
    return {
        phase: {
            "lines": lines,
            "new_series_buckets": found["ids"][0],
            **{name: round(size / lines, 1) for name, (_, size) in found.items()},
            "all": round(sum(size for _, size in found.values()) / lines, 1),
        }
        for phase, (found, lines) in phases.items()
    }


def main() -> None:
    parser = bench_script.parser(__doc__)
    parser.add_argument(
        "file", nargs="?", type=Path, default=SAMPLE,
        help="Online Retail CSV (default: the sample shipped in the repo; the full year is at "
        "the path `shelfcast data path` prints)",
    )  # fmt: skip
    parser.add_argument("--orders", type=int, default=10_000, help="timed orders")
    args = parser.parse_args()
    if args.orders < BATCH:
        parser.error(f"--orders must be at least {BATCH}")
    result = run(args.file, args.orders, progress=not args.no_progress)
    bench_script.save(args.out, "bench_apply", result)


if __name__ == "__main__":
    main()
