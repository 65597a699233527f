"""``shelfcast bench``: one worker's throughput and latency on real orders, measured against a
bare aiokafka consumer of the same messages from the same broker in the same run.

Three phases on fresh embedded services (docs/benchmark.md), each timed for the worker and
for a bare aiokafka consumer of the same messages (the reference):

1. **Replay.** The first ``lines`` order lines of the file, with simulated stock, produced up
   front: the whole pipeline on real history, every bucket close (learn, forecast, alerts)
   included.
2. **Burst.** The next ``burst`` real orders, re-timed into the current bucket and produced at
   once: what a live worker does between two closes. ``rounds`` bursts, each read again by
   the bare consumer and followed by the Faust reference below.
3. **Latency.** The next orders at a steady ``rate``, each stamped with its produce time. The
   worker's histogram gives produce -> effect; a consumer of the alerts topic, reading as a
   downstream service would, gives order -> alert received.

After each burst, a Faust agent that does nothing reads as many messages from the input's
beginning as the replay and one burst hold (``streamer/ops/faust_reference.py``): the
framework's own ceiling, the burst's second reference. The burst's ratios are the medians of
the rounds' ratios, each burst against the references run right after it: on a shared machine
either rate drifts by a fifth between phases a minute apart, and each round's phases share
their minute.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from streamer.config.settings import Settings, leader_topic
from streamer.eventtime.clock import DAY_SECONDS, bucket_of, bucket_start
from streamer.features.keys import STATS
from streamer.ops.backtest import Workers, child_env, isolated, scrape, wait_processed
from streamer.ops.embedded import embedded_services, free_port, mock_cluster
from streamer.ops.faust_reference import APP_ID as FAUST_REFERENCE
from streamer.ops.replay import Produced, produce, read_events
from streamer.ops.retention import GroupReader, Retention
from streamer.ops.simulation import SimulationSettings, simulate
from streamer.pipeline.offsets import input_topics

__all__ = [
    "BATCH",
    "CLOSE",
    "LATENCY",
    "BenchSettings",
    "Offsets",
    "Receiver",
    "alert_latencies",
    "burst_figures",
    "delta",
    "end_offsets",
    "faust_reference",
    "histogram",
    "percentile",
    "probe_orders",
    "produce_paced",
    "quantile",
    "raw_consume",
    "reference_id",
    "run_bench",
    "worker_rate",
]

LATENCY = "shelfcast_processing_latency_seconds"
CLOSE = "shelfcast_bucket_close_seconds"
BATCH = "shelfcast_batch_duration_seconds"
Offsets = dict[tuple[str, int], int]


@dataclass(frozen=True)
class BenchSettings:
    """What to run; the defaults live in one place, ``shelfcast bench --help``."""

    lines: int  # order lines in the backlog
    rate: float  # orders/s in the latency phase
    seconds: float  # length of the latency phase
    burst: int  # orders produced at once, within one bucket, in each round
    rounds: int = 3  # bursts, each timed against both references run right after it
    timeout: float = 1_800.0


def probe_orders(later: Iterable[Produced], after: float, n: int) -> list[Produced]:
    """The first ``n`` orders of ``later``, re-timed 1 ms apart from event time ``after``.

    They stay in the bucket of ``after`` (shifted back if they would cross its end), so the
    worker closes nothing while latency is measured; event times 1 ms apart also name the
    order each alert came from (an alert's ``ts`` is its order's event time).

    >>> ev = [Produced("orders", "a", json.dumps({"ts": 1000 * t}).encode(), t) for t in range(5)]
    >>> probe = probe_orders(ev, 2.0, 2)
    >>> [e.ts for e in probe], json.loads(probe[1].value)["ts"]
    ([2.001, 2.002], 2002)
    """
    orders = [e for e in later if e.role == "orders"][:n]
    if len(orders) < n:
        raise ValueError(
            f"the file has {len(orders)} orders after the backlog; the bursts and the latency "
            f"phase need {n}: use fewer --lines, --burst or --rounds, or a lower --rate or "
            "--seconds"
        )
    end = bucket_start(bucket_of(after, DAY_SECONDS) + 1, DAY_SECONDS)
    start_ms = round(min(after, end - n / 1000 - 1) * 1000)
    retimed = []
    for i, ev in enumerate(orders, 1):
        obj = json.loads(ev.value)
        obj["ts"] = start_ms + i
        retimed.append(Produced(ev.role, ev.key, json.dumps(obj).encode(), (start_ms + i) / 1000))
    return retimed


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    """Cumulative (upper bound, count) buckets, sum and count of an unlabelled histogram."""
    buckets, total, count = [], 0.0, 0.0
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == f"{name}_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == f"{name}_sum":
                total = s.value
            elif s.name == f"{name}_count":
                count = s.value
    return sorted(buckets), total, count


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th observation.

    >>> quantile([(0.01, 50.0), (0.1, 100.0), (math.inf, 100.0)], 0.75)
    0.055
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            return round(lower + (bound - lower) * (rank - below) / (cumulative - below), 6)
        lower, below = bound, cumulative
    return lower


def delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    old = dict(before)
    return [(bound, n - old.get(bound, 0.0)) for bound, n in after]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile.

    >>> percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5), percentile([], 0.5)
    (3.0, None)
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def raw_consume(
    bootstrap: str, topics: Iterable[str], partitions: int, n: int, start: Offsets | None = None
) -> float:
    """Messages/s of a bare aiokafka consumer reading ``n`` messages from ``start`` (default:
    the beginning), timed from its first fetch, connected and positioned."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            if start and (tp.topic, tp.partition) in start:
                consumer.seek(tp, start[tp.topic, tp.partition])
        seen, started = 0, time.perf_counter()
        while seen < n:
            seen += sum(len(v) for v in (await consumer.getmany(timeout_ms=1000)).values())
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topics: Iterable[str], partitions: int) -> Offsets:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        return {(tp.topic, tp.partition): o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def worker_rate(
    client: redis.Redis,
    worker: Workers,
    n: int,
    timeout: float,
    base: int = 0,
    progress: bool = False,
    desc: str = "worker",
    option: str = "--lines",
    check: Callable[[], object] = lambda: None,
) -> float:
    """Events/s the worker takes a backlog up to ``n`` events done in all, ``base`` of them
    before it, from its first processed batch, which then does not count: as the references
    are timed. ``option`` is the bench's option that gives the phase more events; ``check``
    raises, at every poll, what stops the backlog from arriving (its producer's failure)."""
    deadline = time.monotonic() + timeout
    first, started = base, None
    with tqdm(total=n - base, desc=desc, unit="ev", disable=not progress) as bar:
        while True:
            done = int(client.hget(STATS, "events_done") or 0)
            bar.update(min(done, n) - base - bar.n)
            if started is None and done > base:
                if done >= n:
                    raise ValueError(
                        f"the worker took all {n - base} events in its first batches: too few "
                        f"to time, use more {option}"
                    )
                started, first = time.perf_counter(), done
            if done >= n and started is not None:
                return (done - first) / (time.perf_counter() - started)
            worker.check()
            check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker processed {done} of {n} events in {timeout:.0f}s")
            time.sleep(0.05)


def produce_paced(
    bootstrap: str, topic: str, events: list[Produced], rate: float, progress: bool
) -> tuple[dict[int, float], float]:
    """Produce at ``rate``/s, each message stamped with its produce time. Returns produce times
    by event time in ms, and the rate achieved."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 1,  # a latency-minded producer
        }
    )
    # Connected and with metadata before the clock starts: the first second of orders
    # otherwise waits in the producer's queue, which is set-up, not the worker's latency.
    producer.list_topics(topic, timeout=10)
    sent: dict[int, float] = {}
    started = time.perf_counter()
    for i, ev in enumerate(tqdm(events, desc="latency", unit="order", disable=not progress)):
        wait = started + i / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        key = None if ev.key is None else ev.key.encode()
        producer.produce(topic, ev.value, key, timestamp=round(now * 1000))
        producer.poll(0)
        sent[round(ev.ts * 1000)] = now
    achieved = len(events) / (time.perf_counter() - started)
    if producer.flush(60):
        raise RuntimeError(f"latency phase: messages undelivered to {bootstrap}")
    return sent, achieved


class Receiver(threading.Thread):
    """Receives a topic from given offsets as a downstream service would, and notes when each
    message arrives: the end of an alert's journey, its broker round trip included."""

    def __init__(self, bootstrap: str, topic: str, offsets: Offsets) -> None:
        from confluent_kafka import Consumer, TopicPartition

        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"shelfcast-bench-{os.getpid()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,  # the embedded broker waits it out
            }
        )
        self.consumer.assign(
            [TopicPartition(t, p, o) for (t, p), o in offsets.items() if t == topic]
        )
        self.received: list[tuple[float, bytes]] = []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                msg = self.consumer.poll(0.05)
                if msg is not None and not msg.error():
                    self.received.append((time.time(), msg.value()))
        finally:
            self.consumer.close()

    def finish(self, settle: float = 1.0) -> list[tuple[float, bytes]]:
        time.sleep(settle)  # what the worker sent last is still on its way
        self.done.set()
        self.join()
        return self.received


def alert_latencies(alerts: list[tuple[float, bytes]], sent: dict[int, float]) -> list[float]:
    """Seconds from each probe order's produce to the receipt of the alert it raised or
    cleared; alerts from other orders (bucket closes, the backlog) are not in ``sent``."""
    from streamer.topics.events import parse_ts

    out = []
    for ts, value in alerts:
        produced = sent.get(round(parse_ts(json.loads(value)["ts"]) * 1000))
        if produced is not None:
            out.append(ts - produced)
    return out


def reference_id(round_: int) -> str:
    """The Faust reference's app id, and so its consumer group, in round ``round_``: a fresh
    group each time reads the input from its beginning again."""
    return f"{FAUST_REFERENCE}-{round_}"


def faust_reference(
    settings: Settings, n: int, timeout: float, out: Path, round_: int = 0
) -> float:
    """Messages/s of a Faust agent that does nothing, over the first ``n`` input messages
    (``streamer/ops/faust_reference.py``), in a child process like the worker. Its app id's
    leader topic must exist (``reference_id``)."""
    app_id = reference_id(round_)
    env = child_env(settings.replace(web_port=free_port())) | {"SHELFCAST_APP_ID": app_id}
    result, log = out / f"{app_id}.json", out / f"{app_id}.log"
    result.unlink(missing_ok=True)
    with log.open("wb") as sink:
        code = subprocess.run(
            [sys.executable, "-m", "streamer.ops.faust_reference", str(n), str(result)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        ).returncode
    if code or not result.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"the Faust reference agent failed (exit {code}); {log}:\n{tail}")
    return float(json.loads(result.read_text())["messages_per_second"])


@dataclass(frozen=True)
class _BenchInput:
    replay: list[Produced]  # the backlog, with simulated stock so that orders can raise alerts
    bursts: list[list[Produced]]  # a round's orders within one bucket, produced at once
    probes: list[Produced]  # orders produced at the latency phase's rate


@dataclass(frozen=True)
class Round:
    """One burst, and the references run right after it."""

    worker: float  # orders/s from the worker's first processed batch of the burst
    absorbed: float  # seconds from the first order produced to the last one's effects
    raw: float  # a bare aiokafka consumer's messages/s over the same burst
    noop: float  # the Faust reference's messages/s


@dataclass
class _Measured:
    """The raw figures of one bench run, filled in phase by phase."""

    partitions: int
    raw_replay: float = 0.0
    replay_rate: float = 0.0
    closes: str = ""  # the metrics after the replay: its bucket closes
    rounds: list[Round] = field(default_factory=list)
    before: str = ""  # the metrics before and after the latency phase
    after: str = ""
    sent: dict[int, float] = field(default_factory=dict)
    achieved: float = 0.0
    alerts: list[tuple[float, bytes]] = field(default_factory=list)


def _bench_input(path: Path, bench: BenchSettings) -> _BenchInput:
    paced = round(bench.rate * bench.seconds)
    head, _ = read_events(path, bench.lines)
    if not head:
        raise ValueError(f"{path} has no orders in its first {bench.lines} lines")
    replay, _, _ = simulate(head, SimulationSettings())  # stock, so orders can raise alerts
    bursts = bench.burst * bench.rounds
    more, _ = read_events(path, bench.lines + 3 * (bursts + paced))
    later = probe_orders(more[len(head) :], max(e.ts for e in replay), bursts + paced)
    cut = range(0, bursts, bench.burst)
    return _BenchInput(replay, [later[i : i + bench.burst] for i in cut], later[bursts:])


def _measure(
    settings: Settings,
    out: Path,
    bench: BenchSettings,
    data: _BenchInput,
    progress: bool,
    step: Callable[[str], None],
) -> _Measured:
    """Every phase against fresh embedded services, each reference next to the worker's phase
    it compares with. The references read the input from its start, so they run before the
    latency phase, which deletes what the worker committed (``GroupReader``)."""
    inputs = input_topics(settings)
    leaders = [leader_topic(reference_id(k)) for k in range(bench.rounds)]
    with embedded_services(settings, leaders) as live:
        bootstrap, n = live.kafka.bootstrap_servers, live.kafka.partitions
        m = _Measured(n)
        produce(
            bootstrap, {}, live.kafka.topics, data.replay, progress=progress, total=len(data.replay)
        )
        m.raw_replay = asyncio.run(raw_consume(bootstrap, inputs, n, len(data.replay)))
        step(f"replay: bare aiokafka consumer {m.raw_replay:,.0f} messages/s")
        worker = Workers(live, out)
        retention = Retention(mock_cluster(bootstrap))
        try:
            _replay_phase(m, live, worker, bench, data, progress, step)
            for _ in range(bench.rounds):
                _burst_round(m, live, worker, bench, data, out, progress, step)
            _latency_phase(m, live, worker, retention, bench, data, progress)
        finally:
            retention.close()  # before the broker stops
            worker.stop()
    return m


def _replay_phase(
    m: _Measured,
    live: Settings,
    worker: Workers,
    bench: BenchSettings,
    data: _BenchInput,
    progress: bool,
    step: Callable[[str], None],
) -> None:
    """The worker's replayed backlog."""
    client = redis.Redis.from_url(live.redis.url)
    m.replay_rate = worker_rate(
        client, worker, len(data.replay), bench.timeout, progress=progress, desc="replay"
    )
    step(f"replay: worker {m.replay_rate:,.0f} events/s")
    m.closes = scrape(worker.metrics_urls()[0]).decode()


def _burst_round(
    m: _Measured,
    live: Settings,
    worker: Workers,
    bench: BenchSettings,
    data: _BenchInput,
    out: Path,
    progress: bool,
    step: Callable[[str], None],
) -> None:
    """The next burst through the worker, then through a bare consumer, then the Faust
    reference over the same number of messages each round: as many as the replay and one
    burst hold, from the input's beginning."""
    k = len(m.rounds)
    burst, before = data.bursts[k], len(data.replay) + k * bench.burst
    bootstrap, n, inputs = live.kafka.bootstrap_servers, live.kafka.partitions, input_topics(live)
    offsets = asyncio.run(end_offsets(bootstrap, inputs, n))
    rate, absorbed = _worker_burst(live, worker, bench, burst, before, progress)
    raw = asyncio.run(raw_consume(bootstrap, inputs, n, len(burst), offsets))
    taken = len(data.replay) + len(data.bursts[0])
    m.rounds.append(Round(rate, absorbed, raw, faust_reference(live, taken, bench.timeout, out, k)))
    step(
        f"burst {k + 1}/{bench.rounds}: worker {rate:,.0f} orders/s (absorbed in "
        f"{absorbed:.1f} s), bare consumer {raw:,.0f} messages/s, a Faust agent doing "
        f"nothing {m.rounds[-1].noop:,.0f} messages/s"
    )


def _worker_burst(
    live: Settings,
    worker: Workers,
    bench: BenchSettings,
    burst: list[Produced],
    before: int,
    progress: bool,
) -> tuple[float, float]:
    """The worker's orders/s over ``burst`` from its first processed batch of it, and the
    seconds from the first order produced to the last one's effects; ``before`` events were
    done before it."""
    client = redis.Redis.from_url(live.redis.url)
    started = time.perf_counter()
    # produced in a thread while the worker is watched: it starts on the orders as they
    # arrive, and is timed as the references are, from the first batch it processed
    with ThreadPoolExecutor(1) as pool:
        bootstrap, topics = live.kafka.bootstrap_servers, live.kafka.topics
        producing = pool.submit(lambda: produce(bootstrap, {}, topics, burst, progress=False))
        rate = worker_rate(
            client, worker, before + len(burst), bench.timeout, before, progress, "burst",
            "--burst", check=lambda: producing.done() and producing.result(),
        )  # fmt: skip
        absorbed = time.perf_counter() - started
        producing.result()
    return rate, absorbed


def _latency_phase(
    m: _Measured,
    live: Settings,
    worker: Workers,
    retention: Retention,
    bench: BenchSettings,
    data: _BenchInput,
    progress: bool,
) -> None:
    """The paced probe orders. Each goes out in a batch of its own, and the embedded broker
    walks a partition's batches from its oldest on every fetch (streamer/ops/retention.py):
    without deleting what the worker committed, its fetches took the mock's thread from a
    fifth to two thirds of a core over the phase's 15 seconds, and the worker fell behind."""
    bootstrap, n = live.kafka.bootstrap_servers, live.kafka.partitions
    client = redis.Redis.from_url(live.redis.url)
    m.before = scrape(worker.metrics_urls()[0]).decode()
    alerts_at = asyncio.run(end_offsets(bootstrap, [live.kafka.topics["alerts"]], n))
    receiver = Receiver(bootstrap, live.kafka.topics["alerts"], alerts_at)
    receiver.start()
    trimming = GroupReader(retention, live)
    trimming.start()
    try:
        m.sent, m.achieved = produce_paced(
            bootstrap, live.kafka.topics["orders"], data.probes, bench.rate, progress
        )
        done = len(data.replay) + sum(map(len, data.bursts)) + len(data.probes)
        wait_processed(client, worker, done, bench.timeout, False)
    finally:
        trimming.stop()
    m.after = scrape(worker.metrics_urls()[0]).decode()
    m.alerts = receiver.finish()


def run_bench(
    path: Path, out: Path, settings: Settings, bench: BenchSettings, progress: bool = True
) -> dict[str, object]:
    if bench.rounds < 1:
        raise ValueError(f"--rounds {bench.rounds}: at least one burst is needed")
    if bench.burst <= settings.kafka.batch_size:
        # timed from the worker's first batch of it, which then does not count
        raise ValueError(
            f"--burst {bench.burst}: more than one batch is needed to time it "
            f"(SHELFCAST_BATCH_SIZE={settings.kafka.batch_size}); pass a larger --burst"
        )
    out.mkdir(parents=True, exist_ok=True)
    data = _bench_input(path, bench)
    settings = isolated(settings, out)
    step: Callable[[str], None] = tqdm.write if progress else lambda _: None
    m = _measure(settings, out, bench, data, progress, step)
    (out / "metrics.prom").write_text(m.after)
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "partitions": m.partitions},
        "settings": asdict(bench),
        # the whole pipeline on real history: every bucket close included
        "replay": _replay_figures(m, data),
        # orders within one bucket, as a live worker takes them between two closes
        "burst": burst_figures(m.rounds, len(data.bursts[0])),
        "latency": _latency_figures(m, data, bench),
        "bucket_close": _close_figures(m),
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _replay_figures(m: _Measured, data: _BenchInput) -> dict[str, object]:
    orders = sum(e.role == "orders" for e in data.replay)
    return {
        "events": len(data.replay),
        "orders": orders,
        "worker_events_per_second": round(m.replay_rate),
        "worker_orders_per_second": round(m.replay_rate * orders / len(data.replay)),
        "raw_consume_messages_per_second": round(m.raw_replay),
        "ratio": round(m.replay_rate / m.raw_replay, 4),
    }


# the digits a burst figure is reported with: rates in whole messages, ratios to 4 digits
_DIGITS = {
    "worker_orders_per_second": 0,
    "absorbed_seconds": 3,
    "raw_consume_messages_per_second": 0,
    "ratio": 4,
    # the framework's own ceiling: the same micro-batches, no work done with them
    "faust_noop_messages_per_second": 0,
    "ratio_to_faust_noop": 4,
}


def burst_figures(rounds: list[Round], orders: int) -> dict[str, object]:
    """Each round's figures under ``rounds``, and above them their medians: a ratio is the
    median of the rounds' ratios, each burst against the references of its own round.

    >>> fig = burst_figures([Round(6000, 7, 5e5, 1e4), Round(7000, 6, 4e5, 14000),
    ...                      Round(9000, 5, 6e5, 12000)], 40_000)
    >>> fig["worker_orders_per_second"], fig["faust_noop_messages_per_second"]
    (7000, 12000)
    >>> fig["ratio_to_faust_noop"], [r["ratio_to_faust_noop"] for r in fig["rounds"]]
    (0.6, [0.6, 0.5, 0.75])
    >>> two = [Round(6000, 7, 5e5, 1e4), Round(7001, 6, 4e5, 14000)]
    >>> burst_figures(two, 40_000)["worker_orders_per_second"]  # between two: a whole rate
    6500
    """
    each = [_round_figures(r) for r in rounds]
    medians = {name: statistics.median(e[name] for e in each) for name in _DIGITS}
    return {"orders": orders} | _rounded(medians) | {"rounds": [_rounded(e) for e in each]}


def _round_figures(r: Round) -> dict[str, float]:
    return {
        "worker_orders_per_second": r.worker,
        "absorbed_seconds": r.absorbed,
        "raw_consume_messages_per_second": r.raw,
        "ratio": r.worker / r.raw,
        "faust_noop_messages_per_second": r.noop,
        "ratio_to_faust_noop": r.worker / r.noop,
    }


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, _DIGITS[k]) if _DIGITS[k] else round(v) for k, v in figures.items()}


def _latency_figures(m: _Measured, data: _BenchInput, bench: BenchSettings) -> dict[str, object]:
    latency = delta(histogram(m.after, LATENCY)[0], histogram(m.before, LATENCY)[0])
    batches = delta(histogram(m.after, BATCH)[0], histogram(m.before, BATCH)[0])
    to_alert = alert_latencies(m.alerts, m.sent)
    return {
        "orders": len(data.probes),
        "target_rate": bench.rate,
        "achieved_rate": round(m.achieved),
        "produce_to_effect_ms": {
            q: _ms(quantile(latency, p)) for q, p in (("p50", 0.5), ("p99", 0.99))
        },
        "batch_ms": {q: _ms(quantile(batches, p)) for q, p in (("p50", 0.5), ("p99", 0.99))},
        "alerts": len(to_alert),
        "order_to_alert_ms": {
            q: _ms(percentile(to_alert, p)) for q, p in (("p50", 0.5), ("p99", 0.99))
        },
    }


def _close_figures(m: _Measured) -> dict[str, object]:
    close_buckets, close_seconds, close_count = histogram(m.closes, CLOSE)
    n = m.partitions
    return {
        "closes": int(close_count),
        "series_at_last_close": int(_gauge(m.closes, "shelfcast_active_series")),
        "mean_seconds_per_partition": round(close_seconds / max(close_count, 1), 4),
        # interpolated within the histogram's buckets (0.5, 1, 2.5 s, ...): a rough figure
        "p99_seconds_per_partition": quantile(close_buckets, 0.99),
        # one bucket across every partition: all the series active at that close
        "mean_seconds_all_partitions": round(close_seconds * n / max(close_count, 1), 4),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples)
    return 0.0
