"""``shelfcast backtest``: replay a file through a real worker on embedded services and score it.

The worker runs as its own process, exactly as in production, against an embedded broker and
Redis that this command starts and stops. Completion is exact, not a sleep: the worker counts
the records it has fully processed (outputs delivered) in Redis, and outputs are read back until
their count equals what the worker says it published.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.request import urlopen

import numpy as np
import orjson
import redis
from tqdm import tqdm

from models.demand_class import DemandClass, classify
from models.evaluation import JsonLines, Prequential, score
from models.forecast_table import ForecastTable, TableBuilder
from models.lstm.registry import Registry
from models.series import ALL_LOCATIONS, is_rollup, series_key, sku_of
from models.signals import Signals
from streamer.alerts.reorder import peak_rule
from streamer.config.settings import Settings, child_environment
from streamer.eventtime.clock import DAY_SECONDS, bucket_of, bucket_start, epoch, iso
from streamer.features.keys import STATS
from streamer.features.store import summed_evaluation, summed_stats
from streamer.ops.alert_quality import explain_stockouts, miss_breakdown, score_alerts
from streamer.ops.closed_loop import Loop, Planner, Shelves
from streamer.ops.embedded import (
    die_with_parent,
    embedded_services,
    free_port,
    mock_cluster,
    stop_process,
)
from streamer.ops.policies import (
    Outcome,
    Panel,
    Setup,
    compare,
    panel_of,
    published_means,
    references_at,
)
from streamer.ops.replay import (
    InputFormat,
    Produced,
    order_line,
    produce,
    produce_time,
    read_events,
    replay_producer,
)
from streamer.ops.retention import Reader, Retention
from streamer.ops.simulation import SimulationSettings, StockTrace, simulate
from streamer.trainer.service import panel_through, run_once

__all__ = [
    "LOCKSTEP_POLL",
    "MAX_AHEAD",
    "BacktestResult",
    "Phases",
    "Replay",
    "TopicCollector",
    "Truth",
    "WorkerProcess",
    "Workers",
    "alert_quality",
    "by_demand_class",
    "child_env",
    "hold_back",
    "isolated",
    "reference_policies",
    "refresh",
    "rollup_demand",
    "run_backtest",
    "scrape",
    "summarize",
    "training_segments",
    "truth_from",
    "wait_processed",
]

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from models.lstm.network import Panel

log = logging.getLogger(__name__)


@dataclass
class BacktestResult:
    out: Path
    summary: dict[str, object]
    metrics_urls: list[str]  # each worker's


@dataclass
class Truth:
    demand: dict[tuple[str, int], float]
    revenue: dict[tuple[str, int], float]
    closed: set[int]
    # customer and promotion signals per (series, bucket), in models.signals.SIGNALS order
    signals: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def rollup_demand(demand: Mapping[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    """Each SKU's demand over all its locations per bucket, keyed by its rollup series."""
    out: dict[tuple[str, int], float] = defaultdict(float)
    for (series, b), y in demand.items():
        out[(series_key(sku_of(series), ALL_LOCATIONS), b)] += y
    return dict(out)


def truth_from(events: Iterable[Produced], bucket_seconds: int) -> Truth:
    """Demand per (series, bucket) from the replayed orders, computed independently of the
    worker with the same rules (docs/forecasting.md): returns are not demand, and a return
    that cancels an order of the same size in the same bucket removes it. Also the closed
    buckets (those without any order, between the first and the last) and the customer and
    promotion signals (``models.signals``)."""
    truth: dict[tuple[str, int], float] = defaultdict(float)
    revenue: dict[tuple[str, int], float] = defaultdict(float)
    sizes: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)
    signals = Signals()
    open_buckets: set[int] = set()
    for ev in events:
        if ev.role != "orders" or not ev.ts or (line := order_line(ev)) is None:
            continue  # the worker dead-letters what order_line refuses
        qty, series, price = line.quantity, line.series, line.unit_price
        b = bucket_of(ev.ts, bucket_seconds)
        if qty > 0:
            truth[(series, b)] += qty
            revenue[(series, b)] += qty * price
            sizes[(series, b)][qty] += 1
            open_buckets.add(b)
            signals.order(series, b, qty, line.customer_id, line.promo)
        elif sizes[(series, b)][-qty] > 0:
            sizes[(series, b)][-qty] -= 1
            truth[(series, b)] += qty
            revenue[(series, b)] += qty * price
            signals.cancel(series, b, -qty)
    span = range(min(open_buckets), max(open_buckets)) if open_buckets else range(0)
    return Truth(truth, revenue, set(span) - open_buckets, dict(signals.values))


def child_env(settings: Settings) -> dict[str, str]:
    """The environment that points a child process at these (embedded) services."""
    return child_environment(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        REDIS_URL=settings.redis.url,
        SHELFCAST_HOME=str(settings.home),
        # its registry, not one an inherited SHELFCAST_MODEL_DIR names (a live deployment's)
        SHELFCAST_MODEL_DIR=str(settings.models_path()),
        SHELFCAST_WEB_PORT=str(settings.web_port),
        SHELFCAST_PARTITIONS=str(settings.kafka.partitions),
        SHELFCAST_FETCH_MAX_WAIT_MS=str(settings.kafka.fetch_max_wait_ms),
        # historical event time must not be advanced by the wall clock
        SHELFCAST_IDLE_ADVANCE_SECONDS="0",
    )


class WorkerProcess:
    """``shelfcast worker`` as a child process that dies with its parent, serving its web
    pages on ``settings.web_port``."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self.url = f"http://{settings.web_bind}:{settings.web_port}"
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer.cli", "worker"],
            env=child_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its state is in Redis and the broker dies with us: nothing to shut down gently.
            preexec_fn=die_with_parent(signal.SIGKILL),
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {self.proc.returncode}; {self.tail()}")

    def tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.proc, timeout)
        self._log.close()

    def ready(self) -> bool:
        """Whether its /readyz answers 200: joined the group, not in a rebalance."""
        try:
            with urlopen(f"{self.url}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:  # URLError and HTTPError (a 503) among them
            return False


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` of a worker's log, for an error: a temporary folder's log may be gone
    by the time someone reads the error (CI, pytest's retention of its folders)."""
    last = path.read_text(errors="replace").splitlines()[-lines:]
    return f"last lines of {path}:\n" + "\n".join(last)


# what a stalled run's error shows of each worker's metrics: how far it got and what it waits
# on, or why its page could not be read (``scrape``)
PROGRESS_METRICS = (
    "shelfcast_events_total", "shelfcast_consumer_lag_messages",
    "shelfcast_orders_waited_total", "shelfcast_orders_paused", "shelfcast_buckets_closed_total",
    "# metrics endpoint",
)  # fmt: skip


def progress_lines(exposition: bytes) -> list[str]:
    """The samples of ``PROGRESS_METRICS`` in a worker's metrics page. Its lag gauges read 0
    for a partition whose fetching is paused (its high watermark is not fetched either), so a
    stall shows as events short of the input with every lag at 0.

    >>> page = b'# HELP x\\nshelfcast_events_total{topic="orders"} 5.0\\nprocess_cpu 1.0\\n'
    >>> progress_lines(page)
    ['shelfcast_events_total{topic="orders"} 5.0']
    """
    return [
        line for line in exposition.decode(errors="replace").splitlines()
        if line.startswith(PROGRESS_METRICS) and "_created" not in line
    ]  # fmt: skip


class Workers:
    """``count`` workers in one consumer group, as a deployment scales out: each owns some of
    the partitions and closes them in its own process, and together they give one worker's
    numbers (tests/test_scaleout.py). The first keeps the run's home; the others get a home
    of their own (Faust's data folder) beside it, and share its model registry."""

    def __init__(self, settings: Settings, out: Path, count: int = 1) -> None:
        self.members = [WorkerProcess(settings, out / "worker.log")]
        for i in range(1, count):
            home = settings.home / f"worker-{i}"
            home.mkdir(parents=True, exist_ok=True)
            models = str(settings.models_path())
            own = settings.replace(home=home, model_dir=models, web_port=free_port())
            self.members.append(WorkerProcess(own, out / f"worker-{i}.log"))

    def check(self) -> None:
        for worker in self.members:
            worker.check()

    def tails(self) -> str:
        return "\n".join(worker.tail() for worker in self.members)

    def progress(self) -> str:
        """Each worker's ``progress_lines``, for an error: its log says nothing of a stall."""
        return "\n".join(
            f"metrics of {url}:\n" + "\n".join(progress_lines(scrape(url)))
            for url in self.metrics_urls()
        )

    def stop(self) -> None:
        # all told at once: one stopping alone would hand its partitions to the others
        for worker in self.members:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in self.members:
            worker.stop()

    def wait_ready(self, timeout: float) -> None:
        """Until every worker is ready at once: the group has settled its partitions, so no
        rebalance moves them in the middle of the replay."""
        deadline = time.monotonic() + timeout
        while not all(worker.ready() for worker in self.members):
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers were not ready in {timeout:.0f}s; {self.tails()}")
            time.sleep(0.2)

    def metrics_urls(self) -> list[str]:
        return [f"{worker.url}/metrics" for worker in self.members]


# The embedded broker keeps a few MiB per partition: a replay stays at most this many events
# ahead of the worker ("as fast as the pipeline takes it"), so no input ages out unread.
MAX_AHEAD = 100_000


def hold_back(client: redis.Redis, worker: Workers, produced: int) -> None:
    while produced - int(client.hget(STATS, "events_done") or 0) > MAX_AHEAD:
        worker.check()
        time.sleep(0.2)


def wait_processed(
    client: redis.Redis,
    worker: Workers,
    expected: int,
    timeout: float,
    progress: bool,
    poll: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    with tqdm(total=expected, unit="ev", desc="process", disable=not progress) as bar:
        while True:
            done = int(client.hget(STATS, "events_done") or 0)
            bar.update(min(done, expected) - bar.n)
            if done >= expected:
                return
            worker.check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"worker processed {done} of {expected} events in {timeout:.0f}s; "
                    f"{worker.tails()}\n{worker.progress()}"
                )
            time.sleep(poll)


class TopicCollector(threading.Thread):
    """Copies a topic, from the beginning, to a JSON-lines file while the replay runs.

    The embedded broker drops a partition's oldest data past a few MiB, so outputs are read as
    they are produced; they go straight to disk, unparsed, because a year of forecasts does not
    fit in memory as objects.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        path: Path,
        table: TableBuilder | None = None,
        retention: Retention | None = None,
    ) -> None:
        super().__init__(name=f"collect-{topic}", daemon=True)
        self.table = table  # also read into columns as they come, on a core the replay spares
        from confluent_kafka import Consumer, TopicPartition

        self.topic = topic
        self.path = path
        self.count = 0
        self._stop_at: int | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"backtest-collector-{topic}-{os.getpid()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assigned = [TopicPartition(topic, p, 0) for p in partitions]
        self._consumer.assign(assigned)
        self._reader = (
            None if retention is None else Reader(retention, "collector", self._consumer, assigned)
        )
        self._done = threading.Event()
        self._failed: Exception | None = None

    def run(self) -> None:
        try:
            self._copy()
        except Exception as exc:  # raised again by finish(), in the caller
            self._failed = exc
        finally:
            self._consumer.close()

    def _copy(self) -> None:
        with self.path.open("wb") as out:
            while not self._done.is_set():
                values = [m.value() for m in self._consumer.consume(5000, timeout=0.2)
                          if m.error() is None]  # fmt: skip
                if self.table is not None:  # before the count: a bad one is not in it
                    for value in values:
                        self.table.add(orjson.loads(value))
                if values:  # one write a batch: a year of forecasts is millions of lines
                    out.write(b"\n".join(values) + b"\n")
                    self.count += len(values)
                if self._reader is not None:
                    self._reader.read()
                if self._stop_at is not None and self.count >= self._stop_at:
                    self._done.set()

    def finish(self, expected: int, timeout: float) -> int:
        """Wait until ``expected`` messages are on disk, then stop reading."""
        self._stop_at = expected
        self.join(timeout)
        self._done.set()
        self.join()  # its loop ends within a poll: nothing is added to the table after
        if self._failed is not None:
            raise RuntimeError(
                f"copying {self.topic!r} failed after {self.count} messages: {self._failed}"
            ) from self._failed
        if self.count < expected:
            raise TimeoutError(
                f"read {self.count} of {expected} messages from {self.topic!r}; "
                "the embedded broker may have dropped old data (use more partitions)"
            )
        return self.count


def training_segments(
    events: list[Produced], every: int, bucket_seconds: int
) -> list[tuple[list[Produced], int | None]]:
    """The events in produce order, cut at the trainer's points: buckets that are multiples
    of ``every``, with the bucket each segment lets the trainer see through (None after the
    last point).

    A segment holds every event produced before the end of its point's bucket, so all of that
    bucket's demand is in Redis when the trainer reads it.

    >>> e = [Produced("orders", "a", b"", ts) for ts in (10.0, 25.0, 35.0, 61.0)]
    >>> [([x.ts for x in seg], through) for seg, through in training_segments(e, 2, 10)]
    [([10.0, 25.0], 2), ([35.0], 4), ([61.0], None)]
    """
    events = sorted(events, key=produce_time)
    if every <= 0 or not events:
        return [(events, None)]
    out: list[tuple[list[Produced], int | None]] = []
    segment: list[Produced] = []
    point = (bucket_of(produce_time(events[0]), bucket_seconds) // every + 1) * every
    for ev in events:
        while produce_time(ev) >= bucket_start(point + 1, bucket_seconds):
            out.append((segment, point))
            segment, point = [], point + every
        segment.append(ev)
    out.append((segment, None))
    return [(seg, through) for seg, through in out if seg or through is not None]


# how often a closed-loop replay looks whether the worker is done with a bucket
LOCKSTEP_POLL = 0.005


class Replay:
    """Produces a backtest's events to a running worker and trains the LSTM on event time:
    at each training point, once the worker has processed every event up to it and nothing
    is in flight, so each replay trains on the same data.

    The closed loop trains beside the replay: the data through bucket ``T`` is read at once,
    the refresh runs in a thread while the replay moves on, and its outcome takes effect
    before the worker closes bucket ``T + train_delay_buckets`` (the replay waits for it
    there if need be). So the same close serves the same version in every replay, however
    fast the machine, and the worker is not idle while the LSTM trains. The open loop trains
    in line (its refreshes serve from the close of ``T``)."""

    def __init__(
        self,
        live: Settings,
        client: redis.Redis,
        worker: Workers,
        timeout: float,
        progress: bool,
        refreshes: list[dict[str, object]],
    ) -> None:
        self.live, self.client, self.worker = live, client, worker
        self.timeout, self.progress, self.refreshes = timeout, progress, refreshes
        self.produced = 0
        self._producer: Producer | None = None
        # the closed loop's refresh in flight: the bucket it serves from, the seconds its data
        # took to read, and its record
        self._training: tuple[int, float, AsyncResult[dict[str, object]]] | None = None

    def open_loop(self, events: list[Produced]) -> None:
        """As fast as the worker takes it, a bounded distance ahead."""
        segments = training_segments(
            events, self.live.trainer.every_buckets, self.live.time.bucket_seconds
        )
        for segment, through in tqdm(
            segments, desc="replay", unit="segment", disable=not self.progress
        ):
            hold = partial(self._hold, self.produced)
            self._produce(segment, hold=hold)
            if through is not None:
                self._train(through)

    def closed_loop(self, events: list[Produced], loop: Loop) -> list[Produced]:
        """A bucket at a time: its events, the deliveries and lost-sale corrections that go
        with them; then the worker and the planner settle (the planner's purchase orders
        processed, no new alert) before the next bucket. Returns what the loop added."""
        if self.live.trainer.delay_buckets >= self.live.trainer.every_buckets:
            raise ValueError(
                f"SHELFCAST_TRAIN_DELAY_BUCKETS ({self.live.trainer.delay_buckets}) must be "
                f"below SHELFCAST_TRAIN_EVERY_BUCKETS ({self.live.trainer.every_buckets}): a "
                "refresh must take effect before the next one starts from its champion"
            )
        size = self.live.time.bucket_seconds
        by_bucket: dict[int, list[Produced]] = defaultdict(list)
        for ev in events:
            by_bucket[bucket_of(produce_time(ev), size)].append(ev)
        first, last = min(by_bucket), max(by_bucket)
        added: list[Produced] = []
        # one connection for the whole loop, which produces a batch a bucket; dropped after,
        # so that nothing reconnects to the broker once the backtest stops it
        self._producer = replay_producer(self.live.kafka.bootstrap_servers, {})
        # A process of its own: a thread would share this process's interpreter lock with the
        # topic collectors and the lockstep (docs/benchmark.md: the replay waited 233 s for the
        # year's refreshes in a thread, 181 s in a process)
        self._trainer = multiprocessing.get_context("spawn").Pool(1)
        try:
            self._lockstep(by_bucket, first, last, loop, added)
            self._land_refresh()
        finally:
            self._producer = None
            # on an error, not waiting for a refresh that no longer serves anything
            self._trainer.terminate()
        return added + loop.planner.placed

    def _lockstep(
        self,
        by_bucket: dict[int, list[Produced]],
        first: int,
        last: int,
        loop: Loop,
        added: list[Produced],
    ) -> None:
        every = self.live.trainer.every_buckets
        for bucket in tqdm(
            range(first, last + 1), desc="replay", unit="day", disable=not self.progress
        ):
            if self._training is not None and bucket > self._training[0]:
                self._land_refresh()  # its first event closes the bucket it serves from
            batch = by_bucket.get(bucket, [])
            step = loop.step(bucket, batch)
            added += step[len(batch) :]
            # The worker reads orders and inventory side by side: were the two produced
            # together, how many stock events it applied before an order that closes a bucket
            # would depend on which topic it fetched first. The stock events go first and are
            # processed (those stamped after the orders wait for them in the worker), then
            # the orders.
            for stock in (True, False):
                self._produce(
                    sorted((e for e in step if (e.role == "inventory") is stock), key=produce_time)
                )
                self._settle()
            # until the planner's purchase orders raise no new alert
            while orders := loop.planner.react(self._published()):
                self.produced += orders
                self._settle()
            loop.shelves.end_of_day(bucket)
            if every > 0 and bucket > first and bucket % every == 0:
                self._train_beside(bucket)

    def _settle(self) -> None:
        """Wait until the worker has processed everything produced."""
        wait_processed(self.client, self.worker, self.produced, self.timeout, False, LOCKSTEP_POLL)

    def _published(self) -> int:
        """The alerts the worker has published."""
        return summed_stats(self.client, self.live.kafka.partitions).get("alerts", 0)

    def _hold(self, base: int, n: int) -> None:
        hold_back(self.client, self.worker, base + n)

    def _produce(self, events: list[Produced], hold: Callable[[int], None] | None = None) -> None:
        live = self.live
        self.produced += produce(
            live.kafka.bootstrap_servers, {}, live.kafka.topics, events, progress=False, hold=hold,
            producer=self._producer,
        )  # fmt: skip

    def _train(self, through: int) -> None:
        wait_processed(self.client, self.worker, self.produced, self.timeout, progress=False)
        self._done(run_once(self.live, through=through)[0])

    def _train_beside(self, through: int) -> None:
        """Start a refresh on the data through ``through`` (processed, as in ``_train``)."""
        wait_processed(self.client, self.worker, self.produced, self.timeout, progress=False)
        started = time.perf_counter()
        panel = panel_through(self.live, through)
        if panel is None:  # nothing sold: the refresh records its skip at once, in line
            self._train(through)
            return
        read = time.perf_counter() - started
        serves = through + self.live.trainer.delay_buckets
        training = self._trainer.apply_async(refresh, (self.live, through, panel))
        self._training = (serves, read, training)

    def _land_refresh(self) -> None:
        """Wait for the refresh in flight, and promote its candidate if it won."""
        if self._training is None:
            return
        serves, read, future = self._training
        self._training = None
        started = time.perf_counter()
        record = future.get()
        # time the replay stood still for it: above zero, the delay is shorter than a refresh
        record["replay_waited_seconds"] = round(time.perf_counter() - started, 3)
        record["read_seconds"] = round(read, 3)  # read before, in line
        if record["promoted"]:
            version = int(str(record["version"]))
            Registry(self.live.models_path()).promote(version)
            record["champion"] = version
        record["serves_from_bucket"] = serves
        self._done(record)

    def _done(self, record: dict[str, object]) -> None:
        self.refreshes.append(record)
        if self.progress:
            tqdm.write(
                f"LSTM through bucket {record['through']}: {record['outcome']}, {record['reason']}"
            )


def refresh(settings: Settings, through: int, panel: Panel) -> dict[str, object]:
    """The record of a refresh on ``panel`` (the data through ``through``), its winner left to
    the caller to promote: what the closed loop's trainer process runs."""
    return run_once(settings, through=through, panel=panel, promote=False)[0]


def isolated(settings: Settings, out: Path) -> Settings:
    """Settings for fresh embedded services under ``out``, whose state folder (``out/state``,
    LSTM checkpoints included) is emptied first: a backtest or a benchmark must not write into
    a live deployment, nor start from an earlier run's models (a second backtest into the same
    folder served, from its first day, the LSTM the first one had trained on the whole year),
    and historical event time must not follow the wall clock."""
    home = out / "state"
    if home.exists():
        log.info("emptying %s: a run starts from no state", home)
        shutil.rmtree(home)
    return settings.replace(
        kafka_bootstrap_servers="",
        redis_url="",
        home=home,
        model_dir=None,
        web_port=free_port(),
        idle_advance_seconds=0,
    )


@dataclass
class _Input:
    """The events a backtest replays, with the simulated opening stock, and what reading and
    simulating found."""

    events: list[Produced]
    read_stats: object
    sim_stats: object
    trace: StockTrace


@dataclass
class _LiveRun:
    """What a replay through embedded services left behind, once they stopped."""

    given: _Input
    events: list[Produced]  # the input, and in a closed loop the planner's stock events
    stats: dict[str, int]
    forecasts: ForecastTable
    wall: float
    evaluation: Prequential
    metrics_urls: list[str]
    closed: tuple[list[str], Outcome] | None  # the closed loop's outcome


def _run_settings(
    closed_loop: bool, settings: Settings, simulation: SimulationSettings
) -> tuple[Settings, SimulationSettings]:
    """The settings a closed loop needs."""
    if closed_loop:  # the planner restocks; only the opening stock is simulated
        simulation = replace(simulation, restock=False)
        # each bucket waits for the worker: an idle consumer's fetch must not sit out 500 ms
        settings = settings.replace(fetch_max_wait_ms=min(settings.kafka.fetch_max_wait_ms, 10))
    return settings, simulation


def _read_input(
    path: Path,
    limit: int | None,
    how: InputFormat | None,
    closed_loop: bool,
    simulation: SimulationSettings,
    phases: Phases,
) -> _Input:
    """The events of ``path`` with the simulated stock events merged in."""
    phases.lap("start")  # the services, and the workers on their way
    events, read_stats = read_events(path, limit, how)
    if closed_loop and not any(ev.ts for ev in events):
        raise ValueError(
            f"{path} has no event times (JSON lines are replayed in file order), and the "
            "closed loop replays a day at a time: run it with --open-loop"
        )
    phases.lap("read")
    events, sim_stats, trace = simulate(events, simulation)
    phases.lap("simulate")
    return _Input(events, read_stats, sim_stats, trace)


def _replay_live(
    load: Callable[[], _Input],
    out: Path,
    settings: Settings,
    simulation: SimulationSettings,
    closed_loop: bool,
    refreshes: list[dict[str, object]],
    timeout: float,
    progress: bool,
    keep_running: bool,
    workers: int,
) -> _LiveRun:
    """Replay the events ``load`` reads through fresh embedded services and collect what the
    workers wrote. The workers start first: they take seconds to start and join their group,
    and the input is read meanwhile."""
    loop = None
    # Its Redis outlives nothing: a backtest that fails is run again from the start
    with embedded_services(settings, durable=False) as live:
        worker = Workers(live, out, workers)
        # what the collectors and the planner have read leaves the embedded broker
        retention = Retention(mock_cluster(live.kafka.bootstrap_servers))
        bootstrap, topics = live.kafka.bootstrap_servers, live.kafka.topics
        if closed_loop:
            planner = Planner(bootstrap, topics, simulation.lead_time_days, retention)
            loop = Loop(planner, Shelves(live.time.bucket_seconds, live.kafka.max_message_bytes))
        try:
            given = load()  # before the collectors, which a bad input would leave reading
            client = redis.Redis.from_url(live.redis.url)
            table = TableBuilder()
            collectors = {
                "forecasts": TopicCollector(
                    bootstrap, topics["forecasts"], out / "forecasts.jsonl", table, retention
                ),
                "alerts": TopicCollector(
                    bootstrap, topics["alerts"], out / "alerts.jsonl", retention=retention
                ),
            }
            for collector in collectors.values():
                collector.start()
            worker.wait_ready(timeout)
            started, events = time.monotonic(), given.events
            replay = Replay(live, client, worker, timeout, progress, refreshes)
            if loop is None:
                replay.open_loop(events)
            else:
                events = events + replay.closed_loop(events, loop)
            wait_processed(client, worker, replay.produced, timeout, progress)
            stats = summed_stats(client, live.kafka.partitions)
            collectors["forecasts"].finish(stats.get("forecasts", 0), 300)
            collectors["alerts"].finish(stats.get("alerts", 0), 300)
            wall = time.monotonic() - started
            evaluation = Prequential()
            evaluation.merge(summed_evaluation(client, live.kafka.partitions))
            urls = worker.metrics_urls()
            for i, url in enumerate(urls):
                (out / ("metrics.prom" if i == 0 else f"metrics-{i}.prom")).write_bytes(scrape(url))
            if keep_running:
                _serve_until_interrupted(urls)
        finally:
            retention.close()  # before the broker stops: a failed run leaves collectors reading
            worker.stop()
            if loop is not None:
                loop.planner.close()
    forecasts = table.table()
    closed = None if loop is None else loop.outcome()
    return _LiveRun(given, events, stats, forecasts, wall, evaluation, urls, closed)


class Phases:
    """The seconds each phase of a run took, by name, in the order they ran: each ``lap``
    ends one.

    >>> phases = Phases()
    >>> phases.lap("read")
    >>> list(phases.seconds)
    ['read']
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._since, 3)
        self._since = now


def run_backtest(
    path: Path,
    out: Path,
    settings: Settings,
    simulation: SimulationSettings,
    limit: int | None = None,
    progress: bool = True,
    timeout: float = 1800.0,
    keep_running: bool = False,
    how: InputFormat | None = None,
    closed_loop: bool = False,
    workers: int = 1,
) -> BacktestResult:
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    settings, simulation = _run_settings(closed_loop, settings, simulation)
    settings = isolated(settings, out)
    load = partial(_read_input, path, limit, how, closed_loop, simulation, phases)
    refreshes: list[dict[str, object]] = []
    run = _replay_live(
        load, out, settings, simulation, closed_loop, refreshes, timeout, progress,
        keep_running, workers,
    )  # fmt: skip
    phases.lap("replay")
    alerts = list(JsonLines(out / "alerts.jsonl"))
    truth = truth_from(run.events, settings.time.bucket_seconds)
    given = run.given
    summary = summarize(
        run.events, truth, given.read_stats, given.sim_stats, run.stats, run.forecasts, alerts,
        run.wall,
    )  # fmt: skip
    summary["models"] = run.evaluation.summary()
    phases.lap("score")
    summary["inventory"] = reference_policies(
        truth, given.trace, run.forecasts, settings, simulation, out, run.closed
    )
    phases.lap("policies")
    summary["lstm_refreshes"] = refreshes
    # scored against the simulation's own restocks: a diagnostic of the open loop only
    summary["alert_quality"] = (
        None if closed_loop else alert_quality(alerts, given.trace, settings, simulation, out)
    )
    phases.lap("alert_quality")
    summary["input"] = str(path)
    summary["workers"] = workers
    summary["phase_seconds"] = phases.seconds
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n")
    return BacktestResult(out, summary, run.metrics_urls)


def alert_quality(
    alerts: list[dict[str, object]],
    trace: StockTrace,
    settings: Settings,
    simulation: SimulationSettings,
    out: Path,
) -> dict[str, object]:
    """How the alerts foretold the simulated stock-outs (docs/alerts.md), with each stock-out
    in ``stockouts.jsonl``."""
    changes = [(series_key(a["sku"], a["location"]), a["status"], epoch(a["ts"])) for a in alerts]  # type: ignore[arg-type]
    explained = explain_stockouts(
        changes, trace.stockouts, trace.levels, trace.sales, trace.lives,
        simulation.lead_time_days, simulation.lead_time_days + settings.alerts.review_days,
    )  # fmt: skip
    with (out / "stockouts.jsonl").open("w") as f:
        for stockout in explained:
            f.write(json.dumps({**asdict(stockout), "ts": iso(stockout.ts)}) + "\n")
    return {
        **score_alerts(
            changes, trace.stockouts, trace.restocks, simulation.lead_time_days, trace.lives
        ),
        "misses": miss_breakdown(explained),
    }


def summarize(
    events: list[Produced],
    truth: Truth,
    read_stats: object,
    sim_stats: object,
    stats: dict[str, int],
    forecasts: ForecastTable,
    alerts: list[dict[str, object]],
    wall: float,
) -> dict[str, object]:
    rollups = sum(is_rollup(s) for s in forecasts.series)
    by_status: dict[str, int] = defaultdict(int)
    for a in alerts:
        by_status[a["status"]] += 1
    return {
        "events_in": len(events),
        "orders_events": sum(ev.role == "orders" for ev in events),
        "inventory_events": sum(ev.role == "inventory" for ev in events),
        "dlq": stats.get("dlq", 0),
        "duplicates_skipped": stats.get("duplicate", 0),
        "series": len(forecasts.series) - rollups,
        "skus_rolled_up": rollups,
        # (series, bucket) pairs closed: each learned once, counted with the learned markers
        "buckets_closed": stats.get("learned_buckets", 0),
        "partition_bucket_closes": stats.get("buckets_closed", 0),
        "forecasts_published": len(forecasts),
        "alerts_published": len(alerts),
        "alerts_by_status": dict(by_status),
        "wall_seconds": round(wall, 3),
        "events_per_second": round(len(events) / wall, 1) if wall else None,
        "closed_buckets": len(truth.closed),
        "accuracy": score(
            forecasts, {**truth.demand, **rollup_demand(truth.demand)}, closed=truth.closed
        ),
        "accuracy_note": (
            "prequential: each forecast issued at a bucket close is scored on the open buckets "
            "that closed after it. 'accuracy' re-scores the forecasts topic against the input "
            "file; 'models' is every model's score kept by the worker (horizons 1..H). MAE "
            "scores the p50, RMSE the mean; MASE is scaled by in-sample weekly seasonal naive; "
            "rel_mae, rel_rmse and rel_pinball < 1 beat the classic seasonal naive on the same "
            "points (vs_seasonal_naive) or a forecast of zeros (vs_zeros), which on intermittent "
            "demand often wins on MAE alone; the published forecast ('combined') learns a "
            "weight per model: 'weight' is each model's mean weight in it"
        ),
        "read": asdict(read_stats),  # type: ignore[call-overload]
        "stock_simulation": asdict(sim_stats),  # type: ignore[call-overload]
    }


def reference_policies(
    truth: Truth,
    trace: StockTrace,
    forecasts: ForecastTable,
    settings: Settings,
    simulation: SimulationSettings,
    out: Path,
    closed: tuple[list[str], Outcome] | None = None,
) -> dict[str, object]:
    """What a planner gets from reordering by each policy on this demand (streamer/ops/policies.py),
    each series opening with the simulation's stock, and from the ``closed`` loop when there
    was one: pooled in the summary, per series in ``policies.jsonl``."""
    opening = {s: float(levels[0][1]) for s, levels in trace.levels.items() if levels}
    panel, first = panel_of(truth.demand, opening)
    lead, review = max(round(simulation.lead_time_days), 1), round(settings.alerts.review_days)
    peak = peak_rule(settings.alerts, DAY_SECONDS)  # the worker's
    setup = Setup(lead, review, settings.alerts.service_level, settings.alerts.measure, peak)
    summary, outcomes = compare(panel, published_means(forecasts, panel, first), setup)
    runs = {name: (panel.series, outcome) for name, outcome in outcomes.items()}
    if closed is not None:
        runs["closed_loop"] = closed
        summary["closed_loop"] = loop = closed[1].pooled()
        summary["at_closed_loop_stock"] = references_at(summary, loop["mean_on_hand_days"])
    classes = dict(zip(panel.series, map(str, classify(panel.demand, panel.start)), strict=True))
    summary["by_demand_class"] = by_demand_class(panel, classes, runs)
    with (out / "policies.jsonl").open("wb") as f:
        for name, (names, outcome) in runs.items():
            columns = {k: np.round(v, 4).tolist() for k, v in outcome.per_series().items()}
            for i, series in enumerate(names):
                row = {"policy": name, "series": series, "demand_class": classes.get(series)}
                f.write(orjson.dumps(row | {k: v[i] for k, v in columns.items()}) + b"\n")
    return summary


def by_demand_class(
    panel: Panel, classes: Mapping[str, str], runs: Mapping[str, tuple[list[str], Outcome]]
) -> dict[str, dict[str, object]]:
    """Each policy's pooled measures within each demand class of the series (``classes``,
    models/demand_class.py), with the class's series and units: a rule can hold too much on
    slow series and lose sales on lumpy ones, which the pooled figures average away."""
    out: dict[str, dict[str, object]] = {}
    for c in DemandClass:
        mine = np.array([classes[s] == c for s in panel.series], bool)
        if not mine.any():
            continue
        row: dict[str, object] = {
            "series": int(mine.sum()), "units": float(panel.demand[mine].sum()),
        }  # fmt: skip
        for name, (names, outcome) in runs.items():
            keep = np.array([classes.get(s) == c for s in names], bool)
            row[name] = outcome.rows(keep).pooled()
        out[str(c)] = row
    return out


def scrape(url: str) -> bytes:
    try:
        with urlopen(url, timeout=5) as resp:
            return bytes(resp.read())
    except OSError as exc:
        return f"# metrics endpoint {url} did not answer: {exc}\n".encode()


def _serve_until_interrupted(metrics_urls: list[str]) -> None:
    urls = ", ".join(metrics_urls)
    print(f"workers still running; metrics at {urls} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
