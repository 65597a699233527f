"""A real ``shelfcast worker`` process against test-owned services, and ground truth for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import pandas as pd
import redis
import redis.asyncio as aioredis
from confluent_kafka import Consumer, TopicPartition

from models.evaluation import parse_forecast_id
from streamer.config.settings import Settings
from streamer.eventtime.clock import bucket_of
from streamer.features.keys import part_key, series_key
from streamer.features.store import FeatureStore
from streamer.ingest.status import kafka_partition
from streamer.ops.embedded import EmbeddedRedis, die_with_parent, free_port, stop_process
from streamer.ops.replay import Produced
from streamer.pipeline.batch import Pipeline, Record
from streamer.publish.messages import Output
from streamer.topics.events import Invalid, parse_order
from tests.conftest import CLUSTER, ROOT, alert_problems, redis_client

# The first 52,000 lines of the UCI file (Dec 2010 to 10 Jan 2011), committed so the tests need
# nothing beside the repository; tests/data/README.md says how it was made.
HEAD_DATA = ROOT / "tests" / "data" / "online_retail_head52k.csv.gz"
DAY = 86_400
T = TypeVar("T")
# a worker keeps a lag gauge for each input partition its consumer holds
ASSIGNED = re.compile(r'shelfcast_consumer_lag_messages\{[^}]*partition="(\d+)"')


class Worker:
    """``python -m streamer.cli worker`` with the given services; restartable."""

    def __init__(self, bootstrap: str, redis_url: str, home: Path, **env: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "REDIS_"))}
        self.env.update(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            REDIS_URL=redis_url,
            SHELFCAST_HOME=str(home),
            SHELFCAST_IDLE_ADVANCE_SECONDS="0",
            SHELFCAST_LOG_LEVEL="warning",
        )
        if CLUSTER:
            self.env["SHELFCAST_REDIS_CLUSTER"] = "1"
        self.env.update(env)
        self.home = home
        self.log = home / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.env["SHELFCAST_WEB_PORT"] = str(free_port())
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer.cli", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 30)

    def pause(self) -> None:
        """SIGSTOP: a long GC or a frozen VM, as the consumer group sees it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def metrics(self) -> str:
        """The worker's ``/metrics`` page ('' while it cannot answer)."""
        url = f"http://127.0.0.1:{self.env['SHELFCAST_WEB_PORT']}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as page:
                return page.read().decode()
        except OSError:
            return ""

    def metric(self, name: str) -> float:
        """One unlabelled sample of ``/metrics``."""
        found = re.search(rf"^{re.escape(name)} (\S+)$", self.metrics(), re.MULTILINE)
        assert found, f"{name} is not on the worker's /metrics"
        return float(found[1])

    def owned(self) -> set[int]:
        """The input partitions the worker's consumer holds, from its lag gauges on ``/metrics``
        (empty while it cannot answer)."""
        return {int(p) for p in ASSIGNED.findall(self.metrics())}

    def wait_exit(self, timeout: float) -> int:
        """The worker's exit code, once it stops by itself."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{tail}")


class IdCollector(threading.Thread):
    """Collects the ids (and a few fields) of everything on an output topic, as it arrives.

    The embedded broker drops old data past a few MiB per partition, so reading after the run
    would miss messages.
    """

    def __init__(self, bootstrap: str, topic: str, fields: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.fields = fields
        self.rows: list[tuple[object, ...]] = []
        self.done = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"collector-{topic}-{id(self)}",
                "enable.auto.commit": False,
            }
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])

    def run(self) -> None:
        while not self.done.is_set():
            for msg in self.consumer.consume(2000, timeout=0.2):
                if msg.error() is None:
                    value = json.loads(msg.value())
                    self.rows.append(tuple(value.get(f) for f in self.fields))
        self.consumer.close()

    def stop(self) -> list[tuple[object, ...]]:
        time.sleep(1.0)  # let the last deliveries arrive
        self.done.set()
        self.join(10)
        return self.rows


class Published:
    """What a run publishes, collected as it arrives: forecast ids with their model and horizon,
    and alert ids with the fields that make an alert's content (``exact_outputs`` checks both)."""

    def __init__(self, bootstrap: str) -> None:
        self.forecasts = IdCollector(bootstrap, "forecasts", ("forecast_id", "model", "horizon"))
        self.alerts = IdCollector(
            bootstrap, "low-stock-alerts", ("alert_id", "on_hand", "reorder_point", "ts")
        )

    def start(self) -> None:
        self.forecasts.start()
        self.alerts.start()

    def stop(self) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        """The forecast rows and the alert rows."""
        return self.forecasts.stop(), self.alerts.stop()


def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    ends = {}
    for topic in topics:
        for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
            ends[(topic, p)] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    c.close()
    return ends


def committed(bootstrap: str, group: str, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    got = c.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
    c.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got}


class Stoppable(Protocol):
    def stop(self) -> None: ...


@contextlib.contextmanager
def stopping(*services: Stoppable) -> Iterator[None]:
    """Stop ``services`` when the block ends, however it ends: the last given first (workers
    before the Redis and Kafka they use)."""
    try:
        yield
    finally:
        for service in reversed(services):
            service.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, alive: Worker) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        alive.check_alive()
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_all_committed(bootstrap: str, worker: Worker, timeout: float = 600) -> None:
    """Until the worker's consumer group has committed every input message.

    The worker commits a batch only after its outputs are delivered and its Redis state is
    written, so this is "everything processed".
    """
    ends = end_offsets(bootstrap, ["orders", "inventory"])
    wait_until(
        # an empty partition has nothing committed (-1001)
        lambda: (
            {tp: max(n, 0) for tp, n in committed(bootstrap, "shelfcast", list(ends)).items()}
            == ends
        ),
        timeout,
        "the worker to commit all input",
        worker,
    )


def counter(redis_url: str, name: str) -> int:
    """A counter summed over the process-wide hash and every partition's (all scanned)."""
    r = redis_client(redis_url)
    keys = ["shelfcast:stats", *r.scan_iter("shelfcast:{p*}:stats", count=1000)]
    return sum(int(r.hget(key, name) or 0) for key in keys)


def applied_count(redis_url: str) -> int:
    return counter(redis_url, "applied")


def exact_outputs(
    forecast_rows: list[tuple[object, ...]], alert_rows: list[tuple[object, ...]], learned: int
) -> str:
    """Checks what a run published (rows of ``IdCollector``) against the Redis counter of
    learned (series, bucket) pairs: each closed pair learned once, one forecast id per pair and
    per SKU rollup with equal copies, and the alert contract (``alert_problems``). Returns a
    line that sums them up."""
    ids = [row[0] for row in forecast_rows]
    parsed = [parse_forecast_id(i) for i in ids]  # type: ignore[arg-type]
    pairs = {(s, b) for s, b, _ in parsed if not s.endswith("@*")}
    rollups = {(s, b) for s, b, _ in parsed if s.endswith("@*")}
    assert learned == len(pairs)  # every closed (series, bucket) learned exactly once
    assert len(set(ids)) == len(pairs) + len(rollups)
    contents = {(row[0], json.dumps(row[1:])) for row in forecast_rows}
    assert len(contents) == len(set(ids)), "a redelivered forecast differs from its first copy"
    assert alert_problems(alert_rows) == []
    statuses = Counter(str(r[0]).rsplit("|", 1)[1] for r in alert_rows)
    return (
        f"{len(pairs)} closed (series, bucket), {len(ids) - len(set(ids))} redelivered "
        f"forecast copies, {len(alert_rows)} alert messages "
        f"({len(alert_rows) - len(set(alert_rows))} copies), {dict(statuses)}"
    )


def generations(redis_url: str, partitions: int) -> list[int]:
    """Each partition's owner generation: it grows when a worker takes the partition over."""
    r = redis_client(redis_url)
    return [int(r.get(f"shelfcast:{{p{p}}}:owner") or 0) for p in range(partitions)]


def evaluation(r: redis.Redis, partitions: int) -> dict[int, dict[str, float]]:
    """Each partition's prequential error sums (6 decimals), read with the client ``r``
    (``decode_responses``): compared per partition, a difference names the partitions whose
    history to look at."""
    return {
        p: {k: round(float(v), 6) for k, v in r.hgetall(f"shelfcast:{{p{p}}}:evaluation").items()}
        for p in range(partitions)
    }


def single_worker_evaluation(events: list[Produced], folder: Path, settings: Settings) -> dict:
    """``evaluation`` of one in-process pipeline that takes ``events`` in order, partitioned as
    Kafka's default partitioner puts them, on a Redis of its own: the reference a group of
    workers must equal. Outputs are dropped; the evaluation sums are what is compared."""
    server = EmbeddedRedis(folder)
    server.start()
    s = settings.replace(redis_url=server.url, redis_cluster=False, home=folder / "home")

    async def drop(batch: list[Output]) -> None:
        pass

    async def run() -> None:
        client = aioredis.Redis.from_url(server.url)
        pipeline = Pipeline(s, FeatureStore.of(client, s), drop)
        offsets: Counter[tuple[str, int]] = Counter()
        records = []
        for ev in events:
            topic = s.kafka.topics[ev.role]
            p = kafka_partition(ev.key, s.kafka.partitions) if ev.key else 0
            key = ev.key.encode() if ev.key else None
            records.append(Record(topic, p, offsets[(topic, p)], key, ev.value))
            offsets[(topic, p)] += 1
        for i in range(0, len(records), s.kafka.batch_size):
            await pipeline.process(records[i : i + s.kafka.batch_size])
        await client.aclose()

    try:
        asyncio.run(run())
        return evaluation(
            redis.Redis.from_url(server.url, decode_responses=True), s.kafka.partitions
        )
    finally:
        server.stop()


def in_background(work: Callable[[], T]) -> Future[T]:
    """``work`` in a thread of its own: a reference computed while the workers under test
    wait out session timeouts and restarts."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


# ---- ground truth, computed from the CSV with pandas, independently of streamer.ops.replay -----

PRODUCT = re.compile(r"^\d{5}")


def csv_truth(
    path: Path, limit: int | None = None
) -> tuple[dict[tuple[str, int], int], pd.DataFrame]:
    """Daily demand per (series, day) and the stock movements, straight from the CSV."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=limit)
    df = df[df["StockCode"].str.strip().str.match(PRODUCT)].copy()
    df["series"] = df["StockCode"].str.strip() + "@" + df["Country"]
    df["qty"] = df["Quantity"].astype(int)
    stamp = pd.to_datetime(df["InvoiceDate"], format="%Y-%m-%d %H:%M:%S")
    df["ts_ms"] = (stamp - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1)
    df["day"] = df["ts_ms"] // (DAY * 1000)
    adjustment = (
        (df["qty"] < 0)
        & ~df["InvoiceNo"].str.startswith("C")
        & (df["UnitPrice"].astype(float) == 0)
    )
    # orders count; a return cancels an earlier order of the same size on the same day
    demand: dict[tuple[str, int], int] = defaultdict(int)
    sizes: Counter[tuple[str, int, int]] = Counter()
    lines = df[~adjustment].sort_values("ts_ms", kind="stable")
    for series, day, qty in lines[["series", "day", "qty"]].itertuples(index=False):
        key = (series, int(day))
        if qty > 0:
            demand[key] += qty
            sizes[(*key, qty)] += 1
        elif sizes[(*key, -qty)] > 0:
            sizes[(*key, -qty)] -= 1
            demand[key] += qty
    # every line moves stock: orders take it down, returns and adjustments by their sign
    moves = pd.DataFrame({"series": df["series"], "ts_ms": df["ts_ms"], "delta": -df["qty"]})
    moves.loc[adjustment, "delta"] = df.loc[adjustment, "qty"]
    return dict(demand), moves


def stock_truth(moves: pd.DataFrame, simulated: list[Produced]) -> dict[str, int]:
    """On hand per series under the documented rule: a snapshot at T counts movements after T."""
    snapshots: dict[str, tuple[int, int]] = {}
    extra: list[tuple[str, int, int]] = []
    for ev in simulated:
        v = json.loads(ev.value)
        series = f"{v['sku']}@{v['location']}"
        ts_ms = int(ev.ts * 1000)
        if "on_hand" in v:
            snapshots[series] = (ts_ms, int(v["on_hand"]))
        else:
            extra.append((series, ts_ms, int(v["delta"])))
    all_moves = pd.concat([moves, pd.DataFrame(extra, columns=["series", "ts_ms", "delta"])])
    stock: dict[str, int] = defaultdict(int)
    for series, ts_ms, delta in all_moves.itertuples(index=False):
        snap = snapshots.get(series)
        if snap is None or ts_ms > snap[0]:
            stock[series] += int(delta)
    for series, (_, value) in snapshots.items():
        stock[series] += value
    return dict(stock)


def redis_truth(redis_url: str) -> tuple[dict[tuple[str, int], int], dict[str, int]]:
    r = redis_client(redis_url, decode_responses=True)
    demand: dict[tuple[str, int], int] = {}
    stock: dict[str, int] = {}
    for key in r.scan_iter("shelfcast:{p*}:s:*:demand", count=1000):
        series = key.split(":s:", 1)[1][: -len(":demand")]
        for day, qty in r.hgetall(key).items():
            demand[(series, int(day))] = int(qty)
    for key in r.scan_iter("shelfcast:{p*}:s:*:state", count=1000):
        on_hand = r.hget(key, "on_hand")
        if on_hand is not None:
            stock[key.split(":s:", 1)[1][: -len(":state")]] = int(on_hand)
    return demand, stock


def demand_problems(
    bootstrap: str,
    redis_url: str,
    truth: dict[tuple[str, int], int],
    found: dict[tuple[str, int], int],
    limit: int = 20,
) -> str:
    """Why Redis's demand differs from the truth: for each (series, bucket) off (the first
    ``limit``), its order lines as the orders topic holds them (partition@offset, event id,
    quantity) and whether the series' dedupe set has each id; then the stats, offsets and owner
    generation of each partition involved. Tells a line marked applied but not counted (in
    the set) from one never applied, or whose set expired (not in it)."""
    off = sorted(k for k in truth.keys() | found.keys() if truth.get(k) != found.get(k))
    if not off:
        return ""
    wanted = set(off[:limit])
    lines: dict[tuple[str, int], list[tuple[int, int, str, int]]] = defaultdict(list)
    out = [f"{len(off)} (series, bucket) pairs differ; the first {len(wanted)}:"]
    try:
        for partition, offset, value in _topic_records(bootstrap, "orders"):
            order = parse_order(value, len(value))  # as the worker reads it
            if isinstance(order, Invalid):
                continue
            key = (order.series, bucket_of(order.ts, DAY))
            if key in wanted:
                lines[key].append((partition, offset, order.event_id, order.quantity))
    except AssertionError as exc:  # the differences still show, without their lines
        out.append(f"  (the orders topic could not be read back: {exc})")
    r = redis_client(redis_url, decode_responses=True)
    partitions: set[int] = set()
    for key in sorted(wanted):
        out.append(f"  {key}: redis {found.get(key)} truth {truth.get(key)}")
        seen = []
        for partition, offset, eid, qty in lines[key]:
            partitions.add(partition)
            held = r.sismember(series_key(key[0], partition, "ids", key[1]), eid)
            seen.append((held, f"orders/{partition}@{offset} {eid} qty {qty}"))
        seen.sort(key=lambda x: x[0])  # the lines missing from the id set first
        out += [f"    {line}: {'in' if held else 'NOT in'} the id set" for held, line in seen[:8]]
        if rest := seen[8:]:
            out.append(f"    ... {len(rest)} more lines, {sum(h for h, _ in rest)} in the set")
    for p in sorted(partitions):
        out.append(
            f"  partition {p}: owner {r.get(part_key(p, 'owner'))}, "
            f"stats {r.hgetall(part_key(p, 'stats'))}, "
            f"offsets {r.hgetall(part_key(p, 'offsets'))}"
        )
    return "\n".join(out)


# a worker's log lines (at info) that tell which partitions it held when, and what it refused
STORY = re.compile(
    r"generation|assigned partitions|Revoking|no longer owns|Seek|Heartbeat|Worker ready|regression"
    r"|^\| (orders|inventory) +\| \{"  # the rows of an assignment's table
)


def rebalance_story(workers: list[Worker], limit: int = 80) -> str:
    """Each worker's rebalances, takeovers and fences from its log, oldest first (the last
    ``limit`` of each): where numbers differ, which worker held the partition at the time."""
    out = []
    for i, w in enumerate(workers):
        lines = [
            line[:240] for line in w.log.read_text(errors="replace").splitlines()
            if not line.startswith("%") and STORY.search(line)
        ]  # fmt: skip
        out.append(f"worker {i} ({len(lines)} lines, the last {min(limit, len(lines))}):")
        out += [f"  {line}" for line in lines[-limit:]]
    return "\n".join(out)


def _topic_records(bootstrap: str, topic: str) -> Iterator[tuple[int, int, bytes]]:
    """Every record of ``topic``, as (partition, offset, value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        ends = {p: n for (_, p), n in end_offsets(bootstrap, [topic]).items() if n > 0}
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        left = dict(ends)
        while left:
            msg = c.poll(5)
            assert msg is not None, f"{topic}: no record within 5 s, {left} left to read"
            if msg.error():
                continue
            yield msg.partition(), msg.offset(), msg.value()
            if msg.offset() + 1 >= left.get(msg.partition(), 0):
                left.pop(msg.partition(), None)
    finally:
        c.close()
