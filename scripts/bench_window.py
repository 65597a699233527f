"""Benchmark of the LSTM's window read at a close: whole from Redis, or kept between closes.

    .venv/bin/python scripts/bench_window.py [--series 2500] [--traded 300] [--out DIR]

One partition on an embedded redis-server: ``--series`` series over 200 daily buckets,
``--traded`` of them with orders in each bucket (the partition's per-bucket hashes, as the
worker writes them). Each of the last 144 closes reads the 56-bucket window of 80% of the
series, first whole (``FeatureStore.read_window``, as every close did before the window
was kept), then through ``streamer.serving.window.WindowCache``, and checks that both read
the same (as float32, what the network reads). The reference is the whole read, in the same
run. It prints and saves ``bench_window.json`` in ``--out``: milliseconds a close, wall and
CPU, for each.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamer.config.settings import Settings
from streamer.features.connect import worker_client
from streamer.features.keys import bucket_key
from streamer.features.store import FeatureStore
from streamer.ops import bench_script
from streamer.ops.embedded import EmbeddedRedis
from streamer.serving.window import WindowCache

BUCKETS, SEQ = 200, 56


async def bench(url: str, series: int, traded: int, progress: bool) -> dict[str, float]:
    settings = Settings.of(redis_url=url, partitions=1)
    client = worker_client(settings)
    store = FeatureStore.of(client, settings)
    rnd = random.Random(1)
    names = [f"SKU{i}@United Kingdom" for i in range(series)]
    for b in range(BUCKETS):
        sold = rnd.sample(names, traded)
        await client.hset(bucket_key(0, "demand", b), mapping={n: rnd.randint(1, 20) for n in sold})
        await client.hset(bucket_key(0, "revenue", b), mapping={n: rnd.random() * 30 for n in sold})
    asked = rnd.sample(names, int(0.8 * series))
    cache = WindowCache()
    closes = range(SEQ, BUCKETS)
    out: dict[str, float] = {}
    reads = {"whole": lambda span: store.read_window(0, asked, span),
             "kept": lambda span: cache.read(store, 0, asked, span)}  # fmt: skip
    windows = {}
    for name, read in reads.items():
        wall, cpu = time.perf_counter(), time.process_time()
        windows[name] = [await read(range(b - SEQ + 1, b + 1)) for b in tqdm(
            closes, desc=name, unit="close", disable=not progress)]  # fmt: skip
        out[f"{name}_ms"] = (time.perf_counter() - wall) / len(closes) * 1e3
        out[f"{name}_cpu_ms"] = (time.process_time() - cpu) / len(closes) * 1e3
    for whole, kept in zip(windows["whole"], windows["kept"], strict=True):
        arrays = ("demand", "revenue", "traded")
        if (
            whole.series != kept.series
            or whole.closed != kept.closed
            or not all(_same(getattr(whole, a), getattr(kept, a)) for a in arrays)
        ):
            raise AssertionError("the kept window read differently from a whole read")
    await client.aclose()
    return {key: round(value, 2) for key, value in out.items()}


def _same(whole: np.ndarray, kept: np.ndarray) -> bool:
    return np.array_equal(whole.astype(kept.dtype), kept)


def main() -> None:
    parser = bench_script.parser(__doc__)
    parser.add_argument("--series", type=int, default=2500, help="series in the partition")
    parser.add_argument("--traded", type=int, default=300, help="series with orders a bucket")
    args = parser.parse_args()
    if not 0 < args.traded <= args.series:
        parser.error("--traded must be between 1 and --series")
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedRedis(Path(home))
        server.start()
        try:
            result = asyncio.run(bench(server.url, args.series, args.traded, not args.no_progress))
        finally:
            server.stop()
    bench_script.save(args.out, "bench_window", result)


if __name__ == "__main__":
    main()
