"""``shelfcast bench --close-only``: the bucket close alone, at catalogue scale.

No input file: ``series`` realistic intermittent series are resampled from the daily demand of
the sample shipped in the repo (each a real (sku, country) series, shifted in time and
thinned or thickened), spread over the partitions and written to an embedded Redis as the
worker's own apply script would leave them. Then the real close path runs: the pipeline
reads the partition from Redis, learns, forecasts, decides reorder points and alerts,
formats the outputs, produces them to the embedded Kafka and waits for their acknowledgement,
and writes the close back to Redis. As a backtest's workers do (``shelfcast backtest
--workers``), ``workers`` processes close a share of the partitions each, on one Redis and
one broker; a close's time runs from every process starting it to the last one done.
Measured in the same run, as the reference: river's ``HoltWinters.learn_one`` +
``forecast(7)``, one object per series, on the same demand.

Written to ``OUT/bench.json`` under ``close`` (docs/benchmark.md):

* ``us_per_series``: one whole close per series, averaged over the timed closes (wall time,
  every closing process together), and the ``workers`` that closed;
* ``river_hw_us_per_series``, ``ratio_to_river_hw``;
* ``cpu_us_per_series``: the CPU the timed closes spent per series, by part (the closing
  processes, Redis with its rewrites, the embedded broker, their sum ``all``; and Redis's
  main thread), and ``cores``: ``all`` over the cores is a floor under ``us_per_series``;
* ``worker_bytes_per_series``: the banks' arrays, row names and SKU codes, per series;
* ``redis_bytes_per_series``: Redis memory used per series (history, state, snapshots);
* ``restore_seconds``: a fresh worker restoring every partition from its snapshot, and the
  longest the event loop was blocked meanwhile (``restore_max_block_ms``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import multiprocessing
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from threading import BrokenBarrierError
from typing import TypeVar

import numpy as np
import pandas as pd
import redis.asyncio as aioredis
from river import time_series
from tqdm import tqdm

from streamer.config.settings import Settings
from streamer.data import SAMPLE
from streamer.eventtime.clock import DAY_SECONDS, bucket_start
from streamer.features.connect import worker_client
from streamer.features.keys import part_key, part_series_key, series_base
from streamer.features.store import FeatureStore
from streamer.ingest.app import tune_gc
from streamer.ops.backtest import isolated
from streamer.ops.embedded import embedded_services
from streamer.pipeline.batch import BatchResult, Pipeline
from streamer.publish.messages import Output
from streamer.publish.sink import KafkaSink

__all__ = [
    "CHUNK",
    "START",
    "CloseBench",
    "partition_of",
    "river_reference",
    "run_close_bench",
    "sample_demand",
    "synthetic",
    "worker_bytes",
]

START = 15_000  # 2011-01-24, a Monday: the first bucket of history
RowT = TypeVar("RowT", int, np.ndarray)
CHUNK = 5_000  # series per Redis pipeline while loading


@dataclass(frozen=True)
class CloseBench:
    series: int
    partitions: int = 8
    warmup: int = 28  # closes before the timed ones, so every model is ready
    closes: int = 5  # timed closes
    river_series: int = 5_000  # series in the river reference (it is per object)
    seed: int = 0
    workers: int = 1  # processes closing a share of the partitions each


# how long a process may take over one close before the run counts it as failed
CLOSE_TIMEOUT = 1_800.0


@dataclass(frozen=True)
class _Share:
    """What one closing process kept and sent: its pipeline's bytes and its outputs."""

    worker_bytes: int
    delivered: int
    forecasts: int
    alerts: int
    cpu_seconds: float  # the process's CPU over the timed closes, every thread


def sample_demand(path: Path = SAMPLE) -> np.ndarray:
    """Daily demand ``[series, days]`` of every (sku, country) of the shipped sample."""
    with gzip.open(path, "rt") as f:
        df = pd.read_csv(f, usecols=["StockCode", "Quantity", "InvoiceDate", "Country"])
    df = df[df["Quantity"] > 0]
    day = pd.to_datetime(df["InvoiceDate"]).dt.normalize()
    table = df.assign(day=day).pivot_table(
        index=["StockCode", "Country"], columns="day", values="Quantity", aggfunc="sum"
    )
    return table.fillna(0.0).to_numpy()


def synthetic(n: int, days: int, seed: int) -> np.ndarray:
    """``n`` series of ``days``: real series, shifted, thinned (a share of their order days
    dropped) or scaled, so no two are equal."""
    rng = np.random.default_rng(seed)
    source = sample_demand()
    width = source.shape[1]
    rows = rng.integers(0, len(source), n)
    shift = rng.integers(0, width, n)
    cols = (shift[:, None] + np.arange(days)) % width
    demand = source[rows[:, None], cols]
    keep = rng.random((n, days)) < rng.uniform(0.5, 1.0, n)[:, None]
    return np.round(demand * keep * rng.uniform(0.5, 2.0, n)[:, None])


def partition_of(row: RowT, partitions: int) -> RowT:
    """The partition of series ``row`` (or of each of an array of rows): a SKU's four
    locations share one."""
    return (row // 4) % partitions


async def _load(r: aioredis.Redis, names: list[str], demand: np.ndarray, parts: int) -> None:
    """What the apply script would have left: per-series demand, revenue, first bucket and
    stock; per-partition active sets and order counts (every day traded)."""
    days = demand.shape[1]
    buckets = [str(START + d) for d in range(days)]
    for lo in range(0, len(names), CHUNK):
        pipe = r.pipeline(transaction=False)
        for i in range(lo, min(lo + CHUNK, len(names))):
            base = series_base(names[i], partition_of(i, parts))
            sold = {b: int(y) for b, y in zip(buckets, demand[i], strict=True) if y > 0}
            if sold:
                pipe.hset(base + "demand", mapping=sold)
                pipe.hset(base + "revenue", mapping={b: 2.5 * y for b, y in sold.items()})
            on_hand = int(demand[i].sum() // 4)
            pipe.hset(
                base + "state",
                mapping={"first_bucket": START, "stock_known": 1, "on_hand": on_hand},
            )
            pipe.zadd(part_series_key(partition_of(i, parts)), {names[i]: START + days})
        await pipe.execute()
    pipe = r.pipeline(transaction=False)
    for p in range(parts):
        pipe.hset(part_key(p, "orders"), mapping=dict.fromkeys(buckets, 1))
    await pipe.execute()


async def _touch(r: aioredis.Redis, names: list[str], sold: np.ndarray, parts: int) -> None:
    """List the series that sold in a bucket as touched, as the apply script would have: the
    close reads their states again (streamer/features/states.py)."""
    pipe = r.pipeline(transaction=False)
    rows = np.flatnonzero(sold > 0)
    owners = partition_of(rows, parts)
    for p in range(parts):
        mine = [names[i] for i in rows[owners == p]]
        for lo in range(0, len(mine), CHUNK):
            pipe.sadd(part_key(p, "touched"), *mine[lo : lo + CHUNK])
    await pipe.execute()


def river_reference(demand: np.ndarray, warmup: int, closes: int) -> float:
    """Microseconds per series and close of river's HoltWinters: learn_one + forecast(7).

    Demand is shifted by one: river 0.26 seeds even an additive season as ratios to the
    level and divides by zero on a first week without sales. The cost is the same."""
    demand = demand + 1.0
    models = [
        time_series.HoltWinters(alpha=0.2, beta=0.01, gamma=0.2, seasonality=7) for _ in demand
    ]
    for d in range(warmup):
        for m, y in zip(models, demand[:, d], strict=True):
            m.learn_one(float(y))
    started = time.perf_counter()
    for d in range(warmup, warmup + closes):
        for m, y in zip(models, demand[:, d], strict=True):
            m.learn_one(float(y))
            m.forecast(horizon=7)
    return (time.perf_counter() - started) / (len(demand) * closes) * 1e6


def worker_bytes(pipeline: Pipeline) -> int:
    """What the worker keeps of its series between closes: every bank array, the rows' names
    and SKU codes, and the series states it keeps (their columns and another list of the
    same names)."""
    total = 0
    for bank in pipeline.banks.values():
        total += sum(a.nbytes for a in bank.state().values())
        total += sum(a.nbytes for a in bank.groups())  # kept between closes, like the state
        total += sum(sys.getsizeof(s) + 8 for s in bank.series)  # the names and their list
    return total + pipeline.states.nbytes()


async def _restore_all(
    settings: Settings, parts: list[tuple[int, list[str], np.ndarray]], through: int
) -> tuple[float, float]:
    """Seconds for a fresh pipeline to restore every partition from its snapshot, and the
    longest the event loop was blocked meanwhile (ms)."""
    client = worker_client(settings)
    fresh = Pipeline(settings, FeatureStore.of(client, settings), _discard)
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.005)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    for p, names, firsts in parts:
        await fresh._bank(p, through + 1, names, firsts)
    seconds = time.perf_counter() - started
    done = True
    await tick
    await client.aclose()
    return seconds, worst * 1000


async def _discard(outs: list[Output]) -> None:
    """A restore publishes nothing."""


async def _memory_parts(client: aioredis.Redis) -> dict[str, int]:
    """Where Redis's memory is, in bytes: the data, the overhead, of which the key space's
    hash tables (two of them while one rehashes after a doubling) and the clients' buffers,
    and the AOF buffer, which is not data (a rewrite under way fills it with every write
    since it began). Readings of one tree differ by a tenth now and then; these say where."""
    info = await client.info("memory")
    tables = (await client.memory_stats()).get("db.0", {})
    return {
        "used": int(info["used_memory"]),
        "dataset": int(info["used_memory_dataset"]),
        "overhead": int(info["used_memory_overhead"]),
        "keyspace_tables": int(tables.get("overhead.hashtable.main", 0))
        + int(tables.get("overhead.hashtable.expires", 0)),
        "clients": int(info.get("mem_clients_normal", 0)),
        "aof_buffer": int(info.get("mem_aof_buffer", 0)),
    }


def _data_bytes(memory: dict[str, int]) -> int:
    return memory["used"] - memory["aof_buffer"]


def _close_share(
    settings: Settings,
    bench: CloseBench,
    mine: list[int],
    start: Barrier,
    done: Barrier,
    out: Queue[_Share],
) -> None:
    """A closing process: it closes its partitions a bucket at a time, in step with the other
    processes and the parent through ``start`` and ``done``, then reports its share."""
    out.put(asyncio.run(_closes(settings, bench, mine, start, done)))


async def _closes(
    settings: Settings, bench: CloseBench, mine: list[int], start: Barrier, done: Barrier
) -> _Share:
    tune_gc()  # the worker's collector settings: the close as a worker runs it
    client = worker_client(settings)
    sink = KafkaSink(settings)
    pipeline = Pipeline(settings, FeatureStore.of(client, settings), sink)
    result = BatchResult()
    cpu = 0.0
    for p in mine:
        pipeline.closed[p] = START - 1
    for d in range(bench.warmup + bench.closes):
        b = START + d
        start.wait(CLOSE_TIMEOUT)
        began = time.process_time()
        for p in mine:
            pipeline.max_ts[p] = bucket_start(b + 1, DAY_SECONDS) + 3_600
        await pipeline.close_through(dict.fromkeys(mine, b), result)
        if d >= bench.warmup:
            cpu += time.process_time() - began
        done.wait(CLOSE_TIMEOUT)
    start.wait(CLOSE_TIMEOUT)  # the parent has read Redis's CPU for the last close
    sink.close()  # before the embedded broker stops: its producer would log failed reconnects
    await pipeline.snapshot(mine)
    await client.aclose()
    return _Share(worker_bytes(pipeline), sink.delivered, result.forecasts, result.alerts, cpu)


class _Closers:
    """The closing processes, partition ``p`` in process ``p mod workers``, and the two
    barriers that keep them in step with the parent. A process that fails or is killed
    breaks both barriers at once (``_watch``): nobody waits out the timeout for it."""

    def __init__(self, settings: Settings, bench: CloseBench) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.start, self.done = ctx.Barrier(bench.workers + 1), ctx.Barrier(bench.workers + 1)
        self._out: Queue[_Share] = ctx.Queue()
        shares = [list(range(w, bench.partitions, bench.workers)) for w in range(bench.workers)]
        self._procs = [
            ctx.Process(
                target=_close_share,
                args=(settings, bench, mine, self.start, self.done, self._out),
                daemon=True,
            )
            for mine in shares
        ]
        for proc in self._procs:
            proc.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        left = {proc.sentinel: proc for proc in self._procs}
        while left:
            for ended in connection.wait(list(left)):
                if left.pop(ended).exitcode != 0:  # type: ignore[call-overload]
                    self.abort()
                    return

    def abort(self) -> None:
        self.start.abort()
        self.done.abort()

    def meet(self, barrier: Barrier) -> None:
        """Wait at ``barrier`` with every closing process."""
        try:
            barrier.wait(CLOSE_TIMEOUT)
        except BrokenBarrierError:
            raise self._failed() from None

    def _failed(self) -> RuntimeError:
        codes = [proc.exitcode for proc in self._procs]
        return RuntimeError(
            f"a closing process failed or timed out (exit codes {codes}); its traceback is above"
        )

    def shares(self) -> list[_Share]:
        """What every process reports once its closes are done."""
        shares: list[_Share] = []
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while len(shares) < len(self._procs):
            try:
                shares.append(self._out.get(timeout=1.0))
            except queue.Empty:
                failed = any(proc.exitcode not in (None, 0) for proc in self._procs)
                if failed or time.monotonic() > deadline:
                    raise self._failed() from None
        return shares

    def stop(self) -> None:
        """Nothing left waiting and no process left behind, however the run ended."""
        self.abort()
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join()


@dataclass
class _Timed:
    """The timed closes: their wall seconds, and the CPU seconds each part of the close
    spent meanwhile, the closing processes' apart (each reports its own)."""

    seconds: float = 0.0
    redis_cpu: float = 0.0
    redis_main_cpu: float = 0.0  # its main thread, where every command runs
    broker_cpu: float = 0.0  # this process: the embedded broker's threads, and its waits


async def _redis_cpu(client: aioredis.Redis) -> tuple[float, float]:
    """Redis's CPU seconds so far: the whole process with its finished children (append-only
    file rewrites), and its main thread."""
    info = await client.info("cpu")

    def used(*kinds: str) -> float:
        return sum(float(info[f"used_cpu_{k}"]) for k in kinds)

    return (
        used("user", "sys", "user_children", "sys_children"),
        used("user_main_thread", "sys_main_thread"),
    )


async def _timed_closes(
    settings: Settings,
    bench: CloseBench,
    client: aioredis.Redis,
    names: list[str],
    demand: np.ndarray,
    progress: bool,
) -> tuple[_Timed, list[_Share]]:
    """The timed closes, each from every process starting it to the last one done (wall
    time, whatever the number of processes); and what each process reports."""
    closers = _Closers(settings, bench)
    timed = _Timed()
    try:
        days = bench.warmup + bench.closes
        for d in tqdm(range(days), desc="closes", unit="bucket", disable=not progress):
            await _touch(client, names, demand[:, d], bench.partitions)
            redis_began = await _redis_cpu(client)
            closers.meet(closers.start)
            started, cpu_began = time.perf_counter(), time.process_time()
            closers.meet(closers.done)
            if d >= bench.warmup:
                timed.seconds += time.perf_counter() - started
                timed.broker_cpu += time.process_time() - cpu_began
                ended = await _redis_cpu(client)
                timed.redis_cpu += ended[0] - redis_began[0]
                timed.redis_main_cpu += ended[1] - redis_began[1]
        closers.meet(closers.start)  # they snapshot only now, outside the last window
        return timed, closers.shares()
    finally:
        closers.stop()


def _cpu_figures(timed: _Timed, shares: list[_Share], per: int) -> dict[str, float]:
    """CPU µs a series and close, by part: what the close's wall time cannot go below once
    divided by the cores; and Redis's main thread, part of ``redis``, which no core beside
    it can share."""
    parts = {
        "closers": sum(s.cpu_seconds for s in shares),
        "redis": timed.redis_cpu,
        "broker": timed.broker_cpu,
    }
    parts["all"] = sum(parts.values())
    parts["redis_main_thread"] = timed.redis_main_cpu
    return {k: round(v / per * 1e6, 3) for k, v in parts.items()}


async def _run(settings: Settings, bench: CloseBench, progress: bool) -> dict[str, object]:
    days = bench.warmup + bench.closes
    demand = synthetic(bench.series, days, bench.seed)
    # four locations a SKU, as the real data has about five; input topics are keyed by SKU,
    # so a SKU's locations share a partition
    names = [f"S{i // 4}@L{i % 4}" for i in range(bench.series)]
    tune_gc()  # the worker's collector settings: the restore as a worker runs it
    client = worker_client(settings)
    try:
        empty = _data_bytes(await _memory_parts(client))
        await _load(client, names, demand, bench.partitions)
        timed, shares = await _timed_closes(settings, bench, client, names, demand, progress)
        memory = await _memory_parts(client)
    finally:
        await client.aclose()
    used = _data_bytes(memory) - empty
    through = START + days - 1
    owners = partition_of(np.arange(bench.series), bench.partitions)
    parts = []
    for p in range(bench.partitions):
        mine = [names[i] for i in np.flatnonzero(owners == p)]
        parts.append((p, mine, np.full(len(mine), START)))
    restore, blocked = await _restore_all(settings, parts, through)
    river = river_reference(demand[: bench.river_series], bench.warmup, bench.closes)
    us = timed.seconds / (bench.series * bench.closes) * 1e6
    return {
        "series": bench.series,
        "partitions": bench.partitions,
        "workers": bench.workers,
        "timed_closes": bench.closes,
        "us_per_series": round(us, 3),
        "river_hw_us_per_series": round(river, 3),
        "river_hw_series": min(bench.river_series, bench.series),
        "ratio_to_river_hw": round(us / river, 3),
        "cpu_us_per_series": _cpu_figures(timed, shares, bench.series * bench.closes),
        "cores": len(os.sched_getaffinity(0)),  # this process's, not the host's
        "worker_bytes_per_series": round(sum(s.worker_bytes for s in shares) / bench.series, 1),
        "redis_bytes_per_series": round(used / bench.series, 1),
        "redis_memory": memory,
        "restore_seconds": round(restore, 3),
        "restore_max_block_ms": round(blocked, 1),
        "outputs_acknowledged": sum(s.delivered for s in shares),
        "forecasts": sum(s.forecasts for s in shares),
        "alerts": sum(s.alerts for s in shares),
    }


def run_close_bench(
    out: Path, settings: Settings, bench: CloseBench, progress: bool = True
) -> dict[str, object]:
    """Run the close benchmark on fresh embedded services and write ``close`` into
    ``OUT/bench.json``, beside what a full ``shelfcast bench`` wrote there."""
    if not 1 <= bench.workers <= bench.partitions:
        raise ValueError(
            f"--workers {bench.workers}: between 1 and the partitions ({bench.partitions})"
        )
    out.mkdir(parents=True, exist_ok=True)
    settings = isolated(settings, out).replace(partitions=bench.partitions)
    with embedded_services(settings) as live:
        close = asyncio.run(_run(live, bench, progress))
    path = out / "bench.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result["close"] = close
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result
