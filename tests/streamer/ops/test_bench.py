"""``shelfcast bench``: its arithmetic on known answers, and one small run on real services."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streamer.config.settings import Settings
from streamer.ops import bench_close
from streamer.ops.bench import (
    BenchSettings,
    alert_latencies,
    delta,
    histogram,
    probe_orders,
    quantile,
    reference_id,
    run_bench,
    worker_rate,
)
from streamer.ops.bench_close import CloseBench, _Closers, run_close_bench
from streamer.ops.replay import Produced, read_online_retail
from tests.conftest import ROOT, SAMPLE, redis_client


def test_quantiles_from_a_scraped_histogram_match_the_observations() -> None:
    registry = CollectorRegistry()
    h = Histogram("lat_seconds", "x", buckets=(0.01, 0.02, 0.05, 0.1), registry=registry)
    for v in [0.005] * 50 + [0.015] * 40 + [0.08] * 10:
        h.observe(v)
    before = generate_latest(registry).decode()
    buckets, total, count = histogram(before, "lat_seconds")
    assert count == 100 and total == pytest.approx(0.25 + 0.6 + 0.8)
    assert quantile(buckets, 0.5) == pytest.approx(0.01)  # the 50th of 100 ends the first bucket
    assert quantile(buckets, 0.95) == pytest.approx(0.05 + 0.05 * 5 / 10)
    for _ in range(100):
        h.observe(0.5)  # beyond the last bound: histogram_quantile answers that bound
    recent = delta(histogram(generate_latest(registry).decode(), "lat_seconds")[0], buckets)
    assert quantile(recent, 0.5) == pytest.approx(0.1)
    assert quantile([], 0.5) is None


def test_probe_orders_stay_in_one_bucket_and_keep_their_order() -> None:
    day = 86_400
    late = 20 * day - 5.0  # five seconds before midnight
    later = [
        Produced("orders", "a", json.dumps({"event_id": str(i), "ts": 0}).encode(), 0.0)
        for i in range(10_000)
    ]
    later.insert(3, Produced("inventory", "a", b"{}", 0.0))
    probes = probe_orders(later, late, 10_000)
    assert len(probes) == 10_000 and all(p.role == "orders" for p in probes)
    assert all(b.ts - a.ts == pytest.approx(0.001) for a, b in pairwise(probes))
    assert int(probes[0].ts // day) == int(probes[-1].ts // day) == 19
    with pytest.raises(ValueError, match="need 10001"):
        probe_orders(later, late, 10_001)


def test_alert_latency_pairs_each_alert_with_the_order_that_raised_it() -> None:
    ms = 1_300_000_000_000  # 2011-03-13T07:06:40Z
    sent = {ms + 1: 100.0, ms + 2: 100.5}
    alerts = [
        (100.04, json.dumps({"ts": "2011-03-13T07:06:40.001Z"}).encode()),
        (100.52, json.dumps({"ts": ms + 2}).encode()),
        (99.0, json.dumps({"ts": "2011-03-13T00:00:00Z"}).encode()),  # a close's alert
    ]
    assert alert_latencies(alerts, sent) == pytest.approx([0.04, 0.02])


class _Running:
    """A worker process that keeps running: ``worker_rate`` asks it at every poll."""

    def check(self) -> None:
        pass


def test_waiting_for_a_backlog_stops_at_once_when_its_producer_failed(redis_url: str) -> None:
    """The burst's producer runs beside the wait: its failure ends the wait at the next poll,
    not after the bench's timeout with the wrong cause."""

    def failed() -> None:
        raise RuntimeError("cannot produce to 127.0.0.1:9")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot produce"):
        worker_rate(redis_client(redis_url), _Running(), 10, 300.0, check=failed)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("burst", "rounds", "refusal"),
    [
        # timed from the worker's first batch of it, which then does not count
        (500, 3, "--burst 500: more than one batch"),
        (2000, 0, "--rounds 0: at least one burst"),
    ],
)
def test_a_burst_too_small_to_time_is_refused_before_anything_starts(
    tmp_path: Path, burst: int, rounds: int, refusal: str
) -> None:
    bench = BenchSettings(lines=3000, rate=200.0, seconds=2.0, burst=burst, rounds=rounds)
    with pytest.raises(ValueError, match=refusal):
        run_bench(SAMPLE, tmp_path, Settings.of(home=tmp_path, batch_size=500), bench)
    assert not (tmp_path / "bench.json").exists()


def test_a_small_bench_measures_every_phase_on_real_services(tmp_path: Path) -> None:
    bench = BenchSettings(lines=3000, rate=200.0, seconds=2.0, burst=2000, rounds=2, timeout=300.0)
    result = run_bench(SAMPLE, tmp_path, Settings.of(home=tmp_path), bench, progress=False)
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    for phase in ("replay", "burst"):
        r = result[phase]
        assert r["raw_consume_messages_per_second"] > 0 and r["worker_orders_per_second"] > 0
        assert 0 < r["ratio"] < 1
    # every burst, and both references run right after it (speeds are not compared here: a
    # test is no benchmark); burst_figures' doctest checks the medians
    burst = result["burst"]
    assert len(burst["rounds"]) == 2
    for k, each in enumerate(burst["rounds"]):
        assert each["raw_consume_messages_per_second"] > 0
        assert 0 < each["absorbed_seconds"] < bench.timeout
        assert each["ratio_to_faust_noop"] == pytest.approx(
            each["worker_orders_per_second"] / each["faust_noop_messages_per_second"], abs=1e-3
        )
        # each round's Faust agent read the replay and a burst's worth, to its batch's end
        reference = json.loads((tmp_path / f"{reference_id(k)}.json").read_text())
        taken = result["replay"]["events"] + bench.burst
        assert taken <= reference["messages"] < taken + Settings.of().kafka.batch_size
    assert burst["ratio_to_faust_noop"] == pytest.approx(
        sum(each["ratio_to_faust_noop"] for each in burst["rounds"]) / 2, abs=1e-4
    )
    latency = result["latency"]
    assert latency["orders"] == 400
    assert 0 < latency["produce_to_effect_ms"]["p50"] <= latency["produce_to_effect_ms"]["p99"]
    close = result["bucket_close"]
    assert close["closes"] > 0 and close["series_at_last_close"] > 0
    assert close["mean_seconds_all_partitions"] > close["mean_seconds_per_partition"] > 0


def run_script(name: str, out: Path, *args: str) -> dict[str, float]:
    """``scripts/NAME.py ARGS``, run as a user runs it; the JSON it saves in ``out``."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args, "--out", str(out),
         "--no-progress"],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads((out / f"{name}.json").read_text())
    return result


def test_the_bank_benchmark_times_the_bank_against_river_and_sums_its_forecasts(
    tmp_path: Path,
) -> None:
    """scripts/bench_bank.py, run as a user runs it, on a small partition."""
    result = run_script("bench_bank", tmp_path, "--rows", "40", "--closes", "2")
    assert result["rows"] == 40 and result["timed_closes"] == 2
    assert result["us_per_series"] > 0 and result["river_hw_us_per_series"] > 0
    assert result["ratio_to_river_hw"] == pytest.approx(
        result["us_per_series"] / result["river_hw_us_per_series"], rel=0.01
    )
    assert result["checksum"] > 0  # the sample's series sell: the bank forecasts demand


def test_the_apply_benchmark_applies_every_order_and_counts_redis_calls(tmp_path: Path) -> None:
    """scripts/bench_apply.py, run as a user runs it, on the shipped sample."""
    result = run_script("bench_apply", tmp_path, "--orders", "600")
    assert result["orders"] == result["applied"] == 600
    assert result["us_per_order"] > 0 and result["reference_us_per_order"] > 0
    assert result["ratio_to_reference"] == pytest.approx(
        result["us_per_order"] / result["reference_us_per_order"], rel=0.01
    )
    # every new order is deduplicated by its id and adds to its series' demand
    calls = result["redis_calls_per_order_by_command"]
    assert calls["sadd"] >= 1 and calls["hincrby"] >= 1
    assert result["script_calls"] > 0 and result["redis_script_us_per_order"] > 0
    # the ids and sizes each line leaves, reported apart from the bytes a series
    dedupe = result["dedupe_bytes_per_order_line"]
    assert dedupe["timed"]["lines"] == 600 and dedupe["warm_up"]["lines"] > 0
    for phase in dedupe.values():
        assert phase["ids"] > 0 and phase["sizes"] > 0
        assert 0 < phase["new_series_buckets"] <= phase["lines"]
        assert phase["all"] == pytest.approx(phase["ids"] + phase["sizes"], abs=0.11)


def test_the_window_benchmark_reads_both_ways_and_checks_they_agree(tmp_path: Path) -> None:
    """scripts/bench_window.py, run as a user runs it, on a small partition (it fails if the
    kept window read differently from a whole read)."""
    result = run_script("bench_window", tmp_path, "--series", "60", "--traded", "9")
    assert set(result) == {"whole_ms", "whole_cpu_ms", "kept_ms", "kept_cpu_ms"}
    assert all(v > 0 for v in result.values())


def test_the_accuracy_replay_publishes_what_the_worker_pipeline_publishes() -> None:
    """scripts/bench_accuracy.py --check-pipeline, run as a user runs it, on the whole shipped
    sample (183 days, 181 closes: closed Saturdays and the Christmas closure among them): its
    28,031 forecasts include those of series kept active by a return after their last sale,
    which the replay once dropped early."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_accuracy.py"), "--data", str(SAMPLE),
         "--check-pipeline", "183"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = done.stdout.strip().splitlines()[-1]
    assert verdict.startswith("pipeline check: agree on "), verdict
    assert int(verdict.split()[4]) > 25_000  # forecasts compared
    assert "largest difference 0.0000" in verdict


def test_the_accuracy_benchmark_scores_any_orders_file_as_it_scores_online_retail(
    tmp_path: Path,
) -> None:
    """A held-out data set comes in its own layout: the sample's first lines rewritten as a
    CSV with other column names and dates score exactly as the Online Retail file does."""
    lines = 20_000
    events, _ = read_online_retail(SAMPLE, lines)
    rows = [json.loads(ev.value) for ev in events]
    own = tmp_path / "orders.csv"
    with own.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["Id", "When", "Item", "Store", "Units", "Price", "Order", "Buyer"])
        for r in rows:
            if "quantity" not in r:  # a line the reader passes on for the worker to refuse
                continue
            when = datetime.fromisoformat(r["ts"]).strftime("%d/%m/%Y %H:%M")
            out.writerow([r["event_id"], when, r["sku"], r["location"], r["quantity"],
                          r["unit_price"], r["order_id"], r.get("customer_id", "")])  # fmt: skip
    script = [sys.executable, str(ROOT / "scripts" / "bench_accuracy.py"), "--no-lstm",
              "--no-statsforecast", "--top", "50"]  # fmt: skip
    runs = {
        "retail": ["--data", str(SAMPLE), "--limit", str(lines)],
        "own": ["--data", str(own), "--format", "csv", "--date-format", "%d/%m/%Y %H:%M",
                "--columns", "event_id=Id,ts=When,sku=Item,location=Store,quantity=Units,"
                "unit_price=Price,order_id=Order,customer_id=Buyer"],
    }  # fmt: skip
    tables, heads = {}, {}
    for name, args in runs.items():
        done = subprocess.run(
            [*script, *args, "--out", str(tmp_path / name)], cwd=ROOT, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads((tmp_path / name / "accuracy.json").read_text())
        tables[name] = (result["all_series"], result["top_50"], result["oracle_p10_p90"],
                        result["oracle_local_level"])  # fmt: skip
        heads[name] = result["all_series_head_to_head"]
    assert tables["own"] == tables["retail"] and heads["own"] == heads["retail"]
    # the published forecast on each model's points: where the model forecast every row the
    # published one did (the moving average), head to head is the plain ratio of the rows
    rows = {r["model"]: r for r in tables["own"][0]}
    pairs = {r["model"]: r for r in heads["own"]}
    assert set(pairs) == set(rows) - {"published", "rollup"}
    assert {m: r["points"] for m, r in pairs.items()} == {m: rows[m]["points"] for m in pairs}
    everywhere = pairs["moving_average"]
    assert everywhere["points"] == rows["published"]["points"]
    for m in ("mae", "rmse", "pinball"):
        assert everywhere[f"{m}_published_vs_model"] == pytest.approx(
            rows["published"][m] / rows["moving_average"][m]
        )
    # count data: a calibrated band holds the atoms too, so it covers at least 80%
    assert tables["own"][2]["all_series"]["coverage"] >= 0.8
    # knowing the weeks around each day, the median beats seasonal naive and the mean zeros
    level = tables["own"][3]["all_series"]
    assert level["mae_vs_seasonal_naive"] < 1 and level["rmse_vs_zeros"] < 1
    assert any(row["model"] == "published" and row["points"] > 10_000 for row in tables["own"][0])


def test_the_accuracy_benchmark_names_the_fix_for_a_file_without_event_times(
    tmp_path: Path,
) -> None:
    orders = tmp_path / "orders.jsonl"
    orders.write_text('{"sku": "A", "location": "UK", "quantity": 1}\n')
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_accuracy.py"), "--data", str(orders),
         "--no-lstm", "--no-statsforecast", "--out", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no event times" in done.stderr and "--format csv" in done.stderr


def test_the_close_bench_times_real_closes_and_says_where_redis_memory_goes(
    tmp_path: Path,
) -> None:
    """``shelfcast bench --close-only``, small: every close through Redis and the embedded
    broker, river's reference in the same run, the restore, Redis's memory in parts."""
    bench = CloseBench(series=120, partitions=2, closes=2, river_series=40)
    result = run_close_bench(tmp_path, Settings.of(home=tmp_path), bench, progress=False)
    assert json.loads((tmp_path / "bench.json").read_text()) == result
    close = result["close"]
    assert close["series"] == 120 and close["timed_closes"] == 2
    assert close["ratio_to_river_hw"] == pytest.approx(
        close["us_per_series"] / close["river_hw_us_per_series"], rel=0.01
    )
    assert close["forecasts"] > 0 and close["outputs_acknowledged"] > 0
    assert close["worker_bytes_per_series"] > 0 and close["restore_seconds"] > 0
    cpu = close["cpu_us_per_series"]
    assert cpu["closers"] > 0 and cpu["redis"] > 0 and cpu["broker"] >= 0
    assert cpu["all"] == pytest.approx(cpu["closers"] + cpu["redis"] + cpu["broker"], abs=0.01)
    # a part of Redis's CPU, read a moment after the whole process's (the reading's own CPU
    # falls between): a few percent of slack on so short a run
    assert 0 < cpu["redis_main_thread"] <= 1.05 * cpu["redis"]
    memory = close["redis_memory"]
    assert memory["used"] == memory["dataset"] + memory["overhead"]
    assert 0 < memory["keyspace_tables"] < memory["overhead"]
    assert 0 < close["redis_bytes_per_series"] * 120 < memory["used"]


def test_the_close_bench_in_two_processes_closes_the_same_as_in_one(tmp_path: Path) -> None:
    """``--workers 2``: each process closes its share of the partitions, on one Redis and one
    broker, and together they publish what one process does; more workers than partitions
    is refused."""
    figures = {}
    for workers in (1, 2):
        bench = CloseBench(series=120, partitions=2, closes=2, river_series=40, workers=workers)
        out = tmp_path / str(workers)
        close = run_close_bench(out, Settings.of(home=out), bench, progress=False)["close"]
        assert close["workers"] == workers
        figures[workers] = {
            k: close[k]
            for k in ("forecasts", "alerts", "outputs_acknowledged", "worker_bytes_per_series")
        }
    assert figures[2] == figures[1] and figures[1]["forecasts"] > 0
    three = CloseBench(series=120, partitions=2, workers=3)
    with pytest.raises(ValueError, match="--workers 3"):
        run_close_bench(tmp_path, Settings.of(home=tmp_path), three)


def test_a_closing_process_that_fails_fails_the_close_bench_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closing process that dies (here: no Redis to close on) breaks the barriers: the run
    fails within seconds, naming the exit codes, instead of waiting out its timeout (cut to
    a minute here, so that a regression fails this test rather than hanging it)."""
    monkeypatch.setattr(bench_close, "CLOSE_TIMEOUT", 60.0)
    settings = Settings.of(
        home=tmp_path, redis_url="redis://127.0.0.1:9/0", kafka_bootstrap_servers="127.0.0.1:9"
    )
    closers = _Closers(settings, CloseBench(series=8, partitions=2, warmup=0, closes=1, workers=2))
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match=r"closing process failed .*exit codes"):
            closers.meet(closers.start)
            closers.meet(closers.done)
    finally:
        closers.stop()
    assert time.monotonic() - started < 30
