"""Redis is killed in the middle of a stream and comes back on its AOF: the worker waits, the
totals, forecasts, alerts and evaluation are exact; Redis back empty is detected and rewound."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from streamer.config.settings import Settings, all_topics
from streamer.ingest.retry import EXIT_HALTED
from streamer.ops.embedded import EmbeddedRedis, MockKafkaCluster
from streamer.ops.replay import produce, read_events
from streamer.ops.simulation import SimulationSettings, simulate
from tests.conftest import ROOT, SAMPLE
from tests.worker_harness import (
    Published,
    Worker,
    applied_count,
    counter,
    csv_truth,
    evaluation,
    exact_outputs,
    redis_truth,
    single_worker_evaluation,
    stock_truth,
    stopping,
    wait_all_committed,
    wait_until,
)

OUTAGE_SECONDS = 5.0
PARTITIONS = 4


@pytest.mark.slow
@pytest.mark.scaleout
@pytest.mark.solo
def test_redis_killed_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    events, _ = read_events(SAMPLE)
    merged, _, _ = simulate(events, SimulationSettings())
    simulated = [e for e in merged if e.role == "inventory" and b'"sim:' in e.value]
    kafka = MockKafkaCluster(all_topics(Settings()), partitions=PARTITIONS)
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    worker = Worker(
        kafka.bootstrap, server.url, tmp_path / "home", SHELFCAST_HISTORY_BUCKETS="1000",
        SHELFCAST_PARTITIONS=str(PARTITIONS),
    )  # fmt: skip
    published = Published(kafka.bootstrap)
    with stopping(kafka, server, worker):
        produce(kafka.bootstrap, {}, Settings().kafka.topics, merged, progress=False)
        published.start()
        worker.start()
        wait_until(lambda: applied_count(server.url) >= len(merged) // 3, 300, "a third", worker)
        server.kill()  # kill -9 mid-stream: only the AOF (fsync always) survives
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        worker.check_alive()
        server.start()  # same port, on its AOF
        print(f"Redis was down for {time.monotonic() - stopped:.1f}s")
        wait_all_committed(kafka.bootstrap, worker)
        demand, stock = redis_truth(server.url)
        rows = published.stop()
        learned = counter(server.url, "learned_buckets")
        sums = evaluation(redis.Redis.from_url(server.url, decode_responses=True), PARTITIONS)

    truth_demand, moves = csv_truth(SAMPLE)
    assert demand == truth_demand
    assert stock == stock_truth(moves, simulated)
    print(exact_outputs(*rows, learned))
    settings = Settings.of(partitions=PARTITIONS, history_buckets=1000)
    assert sums == single_worker_evaluation(merged, tmp_path / "one", settings)
    log = worker.log.read_text()
    assert log.count("Redis unreachable") == 1, log[-3000:]
    assert log.count("Redis is back") == 1
    assert "Traceback" not in log


@pytest.mark.solo
def test_a_redis_restarted_empty_is_detected_then_rewound_and_replayed_exactly(
    tmp_path: Path,
) -> None:
    events, _ = read_events(SAMPLE, limit=3000)
    kafka = MockKafkaCluster(all_topics(Settings()), partitions=2)
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    worker = Worker(kafka.bootstrap, server.url, tmp_path / "home", SHELFCAST_PARTITIONS="2")
    env = {**worker.env, "SHELFCAST_PARTITIONS": "2"}
    with stopping(kafka, server, worker):
        produce(kafka.bootstrap, {}, Settings().kafka.topics, events, progress=False)
        worker.start()
        wait_all_committed(kafka.bootstrap, worker)
        before, _ = redis_truth(server.url)
        worker.stop()
        redis.Redis.from_url(server.url).flushall()  # a Redis that came back empty
        worker.start()
        assert worker.wait_exit(60) == EXIT_HALTED
        log = worker.log.read_text()
        assert "Redis is behind the consumer group's committed input" in log
        assert "shelfcast offsets rewind" in log and "Traceback" not in log
        check = cli(["offsets", "check"], env)
        assert check.returncode == 1 and "<- Redis behind" in check.stdout
        rewound = cli(["offsets", "rewind"], env)
        assert rewound.returncode == 0, rewound.stderr
        assert "orders:0: committed 1318 -> 0" in rewound.stdout
        assert cli(["offsets", "check"], env).returncode == 0  # the group is back at Redis's
        worker.start()
        wait_all_committed(kafka.bootstrap, worker)
        after, _ = redis_truth(server.url)
    assert after == before and sum(before.values()) > 0


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
