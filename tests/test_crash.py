"""kill -9 the worker at random points while it replays real orders: the numbers stay exact."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from models.evaluation import parse_forecast_id
from streamer.config import Settings, all_topics
from streamer.embedded import MockKafkaCluster
from streamer.replay import produce, read_events
from streamer.simulation import SimulationSettings, simulate
from tests.conftest import new_redis
from tests.worker_harness import (
    HEAD_DATA,
    IdCollector,
    Worker,
    applied_count,
    counter,
    csv_truth,
    redis_truth,
    stock_truth,
    wait_all_committed,
    wait_until,
)

LINES = 52_000  # every line of HEAD_DATA: 50,8xx product order lines, Dec 2010
KILLS = 3


@pytest.mark.slow
@pytest.mark.cluster
def test_kill_9_at_random_points_leaves_every_number_exact(tmp_path: Path) -> None:
    seed = int(os.environ.get("SHELFCAST_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed {seed} (rerun with SHELFCAST_CRASH_SEED={seed})")
    rng = random.Random(seed)
    events, stats = read_events(HEAD_DATA, LINES)
    assert stats.orders + stats.returns >= 50_000
    merged, _, _ = simulate(events, SimulationSettings())
    simulated = [e for e in merged if e.role == "inventory" and b'"sim:' in e.value]

    kafka = MockKafkaCluster(all_topics(Settings()), partitions=8, partitions_for={"forecasts": 64})
    server = new_redis(tmp_path / "redis")
    server.start()
    worker = Worker(
        kafka.bootstrap, server.url, tmp_path / "home", SHELFCAST_HISTORY_BUCKETS="1000"
    )
    forecasts = IdCollector(kafka.bootstrap, "forecasts", ("forecast_id",))
    try:
        produce(kafka.bootstrap, {}, Settings().topics, merged, progress=False)
        forecasts.start()
        worker.start()
        kill_points = sorted(int(rng.uniform(0.1, 0.9) * len(merged)) for _ in range(KILLS))
        for point in kill_points:
            wait_until(
                lambda p=point: applied_count(server.url) >= p, 600, f"{point} applied", worker
            )
            worker.kill()
            print(f"killed at {applied_count(server.url)} applied events")
            worker.start()
        wait_all_committed(kafka.bootstrap, worker)
        ids = [row[0] for row in forecasts.stop()]
        learned = counter(server.url, "learned_buckets")
        demand, stock = redis_truth(server.url)
    finally:
        worker.stop()
        server.stop()
        kafka.stop()

    truth_demand, moves = csv_truth(HEAD_DATA, LINES)
    truth_stock = stock_truth(moves, simulated)
    demand_diff = {k: (demand.get(k), v) for k, v in truth_demand.items() if demand.get(k) != v}
    demand_diff.update({k: (v, None) for k, v in demand.items() if k not in truth_demand})
    stock_diff = {s: (stock.get(s), v) for s, v in truth_stock.items() if stock.get(s) != v}
    print(
        f"{len(merged)} events, kills at {kill_points}: {len(truth_demand)} (series, day) demand "
        f"cells, {len(truth_stock)} stock levels; differences: {len(demand_diff)} demand, "
        f"{len(stock_diff)} stock"
    )
    assert demand_diff == {}
    assert stock_diff == {}

    # every closed (series, bucket) learned exactly once
    parsed = [parse_forecast_id(i) for i in ids]  # type: ignore[arg-type]
    pairs = {(s, b) for s, b, _ in parsed if not s.endswith("@*")}
    rollups = {(s, b) for s, b, _ in parsed if s.endswith("@*")}
    assert learned == len(pairs)
    # one published forecast per closed (series, bucket) and one rollup per (SKU, bucket): a
    # replay re-derives the same model
    assert len(set(ids)) == len(pairs) + len(rollups)
    copies = Counter(ids)
    print(f"{len(pairs)} closed (series, bucket), {len(ids) - len(copies)} redelivered copies")
