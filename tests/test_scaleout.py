"""Two workers in one consumer group, on a 3-broker Kafka, killed in turn, one stopped past its
session, and hit by broker faults: every count, forecast and alert stays exact, and the
evaluation equals one worker's, partition by partition (docs/delivery.md).

Woken up, a stopped Faust worker mostly learns of the rebalance before its next write; where
the write comes first the fence refuses it, which tests/streamer/pipeline/test_batch.py forces every
time."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from streamer.config.settings import Settings, all_topics
from streamer.ops.embedded import MockKafkaCluster
from streamer.ops.replay import produce, read_events
from streamer.ops.simulation import SimulationSettings, simulate
from tests.conftest import alert_problems, new_redis, redis_client
from tests.worker_harness import (
    HEAD_DATA,
    Published,
    Worker,
    applied_count,
    counter,
    csv_truth,
    demand_problems,
    evaluation,
    exact_outputs,
    generations,
    in_background,
    rebalance_story,
    redis_truth,
    single_worker_evaluation,
    stock_truth,
    stopping,
    wait_all_committed,
    wait_until,
)

LINES = 52_000  # every line of HEAD_DATA: 50,8xx product order lines, Dec 2010
PARTITIONS = 8
BROKERS = 3

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]


def test_alert_problems_names_gaps_reuse_and_two_contents() -> None:
    fine = [("A1@UK|1|raised", 5), ("A1@UK|2|cleared", 40), ("A1@UK|1|raised", 5)]
    assert alert_problems(fine) == []
    assert alert_problems([("A1@UK|2|cleared", 40)]) == ["A1@UK: seqs [2]"]
    assert alert_problems([("A1@UK|1|raised", 5), ("A1@UK|1|raised", 20)]) == [
        "A1@UK|1|raised: two contents"
    ]
    assert alert_problems([("A1@UK|1|cleared", 5)]) == ["A1@UK|1|cleared: status out of turn"]


@pytest.mark.cluster
@pytest.mark.cluster_only
@pytest.mark.solo
def test_two_workers_killed_in_turn_and_broker_faults_leave_every_number_exact(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("SHELFCAST_CRASH_SEED", random.randrange(1 << 30)))
    print(f"scale-out seed {seed} (rerun with SHELFCAST_CRASH_SEED={seed})")
    rng = random.Random(seed)
    events, stats = read_events(HEAD_DATA, LINES)
    assert stats.orders + stats.returns >= 50_000
    merged, _, _ = simulate(events, SimulationSettings())
    simulated = [e for e in merged if e.role == "inventory" and b'"sim:' in e.value]

    kafka = MockKafkaCluster(
        all_topics(Settings()), PARTITIONS, brokers=BROKERS, partitions_for={"forecasts": 64}
    )
    server = new_redis(tmp_path / "redis")
    server.start()
    workers = [
        Worker(
            kafka.bootstrap, server.url, tmp_path / f"home{i}", SHELFCAST_HISTORY_BUCKETS="1000",
            SHELFCAST_IDLE_ADVANCE_SECONDS="5", SHELFCAST_PARTITIONS=str(PARTITIONS),
            SHELFCAST_LOG_LEVEL="info",  # the rebalances, should the numbers differ
        )
        for i in range(2)
    ]  # fmt: skip
    published = Published(kafka.bootstrap)
    done: list[str] = []
    with stopping(kafka, server, *workers):
        produce(kafka.bootstrap, {}, Settings().kafka.topics, merged, progress=False)
        one_worker = Settings.of(partitions=PARTITIONS, history_buckets=1000)
        reference = in_background(
            lambda: single_worker_evaluation(merged, tmp_path / "one", one_worker)
        )
        published.start()
        for w in workers:
            w.start()
        faults = ["pause 1", "kill 0", "leader change", "kill 1", "broker bounce"]
        points = sorted(int(rng.uniform(0.15, 0.85) * len(merged)) for _ in faults)
        for fault, point in zip(faults, points, strict=True):
            wait_until(lambda p=point: applied_count(server.url) >= p, 600, f"{point}", workers[0])
            at = applied_count(server.url)
            if fault.startswith("kill"):  # kill -9 one worker, then the other, and restart each
                victim = workers[int(fault[-1])]
                victim.kill()
                victim.start()
            elif fault == "pause 1":
                # from a settled group: librdkafka's mock coordinator answers a SyncGroup that
                # comes after the group settled with INVALID_REQUEST, which stalls aiokafka
                wait_until(lambda: settled(workers), 120, "a settled group", workers[0])
                pause_past_takeover(workers[1], server.url, workers[0])
            elif fault == "leader change":
                kafka.move_leader("orders", rng.randrange(PARTITIONS), rng.randint(1, BROKERS))
            else:
                broker = rng.randint(1, BROKERS)
                kafka.broker_down(broker)
                time.sleep(3)
                kafka.broker_up(broker)
                fault = f"broker {broker} bounce"
            done.append(f"{fault} at {at}")
        for w in workers:
            wait_all_committed(kafka.bootstrap, w)
        rows = published.stop()
        learned = counter(server.url, "learned_buckets")
        sums = evaluation(redis_client(server.url, decode_responses=True), PARTITIONS)
        demand, stock = redis_truth(server.url)
        truth_demand, moves = csv_truth(HEAD_DATA, LINES)
        # explained while Kafka and Redis still run: which lines never landed, and where
        assert demand == truth_demand, "\n".join(
            (demand_problems(kafka.bootstrap, server.url, truth_demand, demand),
             rebalance_story(workers))
        )  # fmt: skip
        for w in workers:
            w.check_alive()
    refused = workers[1].log.read_text().count("no longer owns it")
    print(f"{len(merged)} events; {'; '.join(done)}; the woken worker fenced off {refused} times")

    assert stock == stock_truth(moves, simulated)

    print(exact_outputs(*rows, learned))
    one = reference.result(timeout=600)
    assert all(sums[p]["published|1|n"] > 0 for p in sums)
    differ = {p: sum(one[p].get(k) != v for k, v in sums[p].items()) for p in sums}
    assert sums == one, f"evaluation sums that differ from one worker's, by partition: {differ}"


def pause_past_takeover(paused: Worker, redis_url: str, other: Worker) -> None:
    """SIGSTOP ``paused`` (a long GC, a frozen VM) until ``other`` holds every partition and has
    taken each of the paused one's over (its owner generation grew), then wake it: it still
    believes it owns them, and none of its writes may land."""
    before = generations(redis_url, PARTITIONS)
    theirs = paused.owned()
    assert theirs, "the worker to pause holds no partition"
    paused.pause()

    def taken_over() -> bool:
        grown = {p for p, g in enumerate(generations(redis_url, PARTITIONS)) if g > before[p]}
        return other.owned() == set(range(PARTITIONS)) and theirs <= grown

    try:
        wait_until(taken_over, 240, "the other worker to take every partition over", other)
    finally:
        paused.resume()


def settled(workers: list[Worker]) -> bool:
    """Whether every worker holds partitions and together they hold each one once."""
    held = [w.owned() for w in workers]
    return all(held) and sorted(p for h in held for p in h) == list(range(PARTITIONS))
