"""The LSTM trainer process against a real redis-server, on histories of the real demo data
written in the workers' Redis layout (docs/redis-layout.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from models.lstm.network import LSTMConfig
from models.lstm.registry import Registry
from streamer import metrics
from streamer.cli import build_parser, main
from streamer.config.settings import Settings
from streamer.features.keys import part_key, part_series_key, series_base
from streamer.ops.backtest import Truth, truth_from
from streamer.ops.embedded import free_port
from streamer.ops.replay import read_online_retail
from streamer.trainer.service import (
    HISTORY_FILE,
    STATUS,
    buckets_needed,
    last_closed,
    lstm_config,
    read_panel,
    run_once,
    train_once,
)
from tests.conftest import CLUSTER, ROOT, SAMPLE, redis_client

# the integration tests of the feature store: on one Redis and on a Redis Cluster
pytestmark = pytest.mark.cluster

DAY = 86_400
PARTITIONS = 8  # the default: few series per partition, so partitions disagree on closed days
# small enough to train in about a second, good enough to beat the seasonal naive on the sample
TINY = LSTMConfig(seq_len=28, hidden=16, epochs=6, windows_per_epoch=4096)
TINY_ENV = {
    "SHELFCAST_LSTM_SEQ_LEN": "28",
    "SHELFCAST_LSTM_HIDDEN": "16",
    "SHELFCAST_LSTM_EPOCHS": "6",
    "SHELFCAST_LSTM_WINDOWS_PER_EPOCH": "4096",
}


@pytest.fixture(autouse=True, scope="module")
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()  # train_once pins 1 thread in this process
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def truth() -> Truth:
    events, _ = read_online_retail(SAMPLE)
    return truth_from(events, DAY)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings.of(
        redis_url=redis_url, redis_cluster=CLUSTER, home=tmp_path / "home", partitions=PARTITIONS
    )


def partition_of(series: str) -> int:
    # librdkafka's default partitioner: crc32 of the key (the SKU) modulo the partitions
    return zlib.crc32(series.split("@")[0].encode()) % PARTITIONS


def store(client: redis.Redis, truth: Truth, settings: Settings, through: int) -> None:
    """What the workers keep of ``truth`` once every partition closed ``through``, with the
    two buckets after it still open (their orders stored, nothing closed)."""
    kept = range(through - settings.models.history_buckets + 1, through + 3)
    traded: dict[int, set[int]] = defaultdict(set)
    last_order: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    for (s, b), units in truth.demand.items():
        if b in kept:
            base = series_base(s, partition_of(s))
            pipe.hset(base + "demand", str(b), int(units))
            pipe.hset(base + "revenue", str(b), repr(truth.revenue[(s, b)]))
            pipe.hset(base + "signals", str(b), json.dumps(truth.signals[(s, b)]))
        if b <= through:
            last_order[s] = max(last_order.get(s, b), b)
        traded[partition_of(s)].add(b)
    for s, b in last_order.items():
        if b > through - settings.models.active_buckets:  # the workers drop quieter series
            pipe.zadd(part_series_key(partition_of(s)), {s: b})
    for p in range(PARTITIONS):
        flags = {str(b): int(b not in traded[p]) for b in kept if b <= through}
        pipe.hset(part_key(p, "closed"), mapping=flags)
        pipe.hset(part_key(p, "clock"), "closed", through)
    pipe.execute()


def active(truth: Truth, through: int, settings: Settings) -> list[str]:
    recent = range(through - settings.models.active_buckets + 1, through + 1)
    return sorted({s for s, b in truth.demand if b in recent})


def test_read_panel_returns_exactly_the_stored_series_and_buckets(
    settings: Settings, truth: Truth
) -> None:
    through = max(b for _, b in truth.demand) - 2
    client = redis_client(settings.redis.url)
    store(client, truth, settings, through)
    assert last_closed(client, settings) == through
    off = read_panel(client, settings, None)  # models that do not read signals get none read
    assert off is not None and off.signals is None
    settings = settings.replace(lstm_signals=True)
    for end in (None, through - 20):
        panel = read_panel(client, settings, end)
        assert panel is not None
        last = through if end is None else end
        assert panel.last_bucket == last
        # the oldest stored bucket is left out: a close in progress may be trimming it
        assert panel.first_bucket == through - settings.models.history_buckets + 2
        columns = range(panel.first_bucket, last + 1)
        sold = {s for s, b in truth.demand if b in columns}
        assert panel.series == [s for s in active(truth, through, settings) if s in sold]
        expected = np.array(
            [[truth.demand.get((s, b), 0.0) for b in columns] for s in panel.series]
        )
        np.testing.assert_array_equal(panel.demand, expected)
        money = np.array([[truth.revenue.get((s, b), 0.0) for b in columns] for s in panel.series])
        priced = (expected > 0) & (money > 0)  # free lines have no price
        np.testing.assert_allclose(panel.price[priced], money[priced] / expected[priced], 1e-6)
        assert np.isnan(panel.price[~priced]).all()
        # closed: no order in any partition, truth_from's rule, although most open days are
        # flagged closed by some partition whose few SKUs sold nothing
        assert [b for b in columns if panel.closed[b - panel.first_bucket]] == sorted(
            b for b in truth.closed if b in columns
        )
        assert panel.weekday.tolist() == [settings.time.calendar().weekday(b) for b in columns]
        assert panel.signals is not None and panel.signals[..., 0].max() > 1  # several buyers
        signals = [[truth.signals.get((s, b), [0.0] * 5) for b in columns] for s in panel.series]
        np.testing.assert_array_equal(panel.signals, np.array(signals, np.float32))
    days = [str(b) for b in columns]
    flags = [client.hmget(part_key(p, "closed"), days) for p in range(PARTITIONS)]
    assert sum(b"1" in day for day in zip(*flags, strict=True)) > 2 * panel.closed.sum()


def test_a_partition_behind_holds_the_panel_back(settings: Settings, truth: Truth) -> None:
    through = max(b for _, b in truth.demand) - 2
    client = redis_client(settings.redis.url)
    store(client, truth, settings, through)
    client.hset(part_key(3, "clock"), "closed", through - 1)
    panel = read_panel(client, settings)
    assert panel is not None and panel.last_bucket == through - 1


def test_train_once_promotes_a_winner_then_rejects_the_same_model(
    settings: Settings, truth: Truth
) -> None:
    through = max(b for _, b in truth.demand) - 2
    client = redis_client(settings.redis.url, decode_responses=True)
    store(client, truth, settings, through)
    counted = metrics.TRAINER_REGISTRY.get_sample_value

    def refreshes(outcome: str) -> float:
        return counted("shelfcast_lstm_refreshes_total", {"outcome": outcome}) or 0.0

    promoted, rejected = refreshes("promoted"), refreshes("rejected")

    report = train_once(settings, cfg=TINY, device="cpu")
    assert report is not None and report.promoted, report
    assert report.version == 1 and report.candidate.mae < report.candidate.naive_mae
    registry = Registry(settings.models_path())
    assert registry.champion() == 1
    assert registry.metadata(1)["data_range"] == {
        "first_bucket": through - settings.models.history_buckets + 2,
        "last_bucket": through - TINY.validation,
    }
    status = client.hgetall(STATUS)
    assert status["outcome"] == "promoted" and status["promoted"] == "1"
    assert status["through"] == str(through) and status["version"] == status["champion"] == "1"
    assert status["reason"] == report.reason and status["device"] == "cpu"
    assert float(status["train_seconds"]) <= float(status["total_seconds"])
    assert int(status["series"]) == len(active(truth, through, settings))
    assert refreshes("promoted") == promoted + 1
    assert counted("shelfcast_lstm_champion_version") == 1
    mae = counted("shelfcast_lstm_validation_mae", {"model": "candidate"})
    assert mae == pytest.approx(report.candidate.mae)
    assert np.isnan(counted("shelfcast_lstm_validation_mae", {"model": "champion"}))

    # the same data and seed make the same model (from scratch, as a warm start would not):
    # not strictly better than the champion
    again = train_once(settings, cfg=replace(TINY, warm_epochs=0), device="cpu")
    assert again is not None and not again.promoted and again.version == 2
    assert "champion v1" in again.reason
    assert client.hget(STATUS, "outcome") == "rejected"
    assert client.hget(STATUS, "champion") == "1"
    assert refreshes("rejected") == rejected + 1
    assert counted("shelfcast_lstm_validation_mae", {"model": "champion"}) == pytest.approx(
        report.candidate.mae
    )

    lines = (settings.models_path() / HISTORY_FILE).read_text().splitlines()
    first, second = map(json.loads, lines)
    assert (first["outcome"], first["version"], first["champion"]) == ("promoted", 1, 1)
    assert (second["outcome"], second["version"], second["champion"]) == ("rejected", 2, 1)
    assert first["first_bucket"] == through - settings.models.history_buckets + 2
    assert first["validation_buckets"] == [through - TINY.validation + 1, through]
    assert first["config"] == TINY.to_dict()
    assert first["report"]["candidate"]["mae"] == pytest.approx(report.candidate.mae)
    assert second["report"]["champion"]["mae"] == pytest.approx(report.candidate.mae)


def test_a_tournament_records_every_entrant(settings: Settings, truth: Truth) -> None:
    through = max(b for _, b in truth.demand) - 2
    store(redis_client(settings.redis.url), truth, settings, through)
    tournament = settings.replace(tournament=("lstm", "lightgbm"))
    record, report = run_once(tournament, cfg=replace(TINY, signals=True), device="cpu")
    assert report is not None
    assert [e["arch"] for e in record["report"]["entrants"]] == ["lstm", "lightgbm"]
    assert Registry(settings.models_path()).versions() == [1, 2]
    for e in report.entrants:
        mae = metrics.TRAINER_REGISTRY.get_sample_value(
            "shelfcast_lstm_validation_mae", {"model": f"entrant_{e.arch}"}
        )
        assert mae == pytest.approx(e.validation.mae)


def test_too_little_history_is_a_recorded_skip_without_a_checkpoint(
    settings: Settings, truth: Truth
) -> None:
    short = settings.replace(history_buckets=40)
    first = min(b for _, b in truth.demand)
    store(redis_client(settings.redis.url), truth, short, first + 60)
    assert train_once(short, cfg=TINY, device="cpu") is None
    registry = Registry(short.models_path())
    assert registry.versions() == [] and registry.champion() is None
    status = redis_client(settings.redis.url, decode_responses=True).hgetall(STATUS)
    assert status["outcome"] == "skipped" and status["version"] == "" and status["promoted"] == "0"
    assert status["through"] == str(first + 60)
    assert f"a refresh needs {buckets_needed(TINY)}" in status["reason"]
    (line,) = (short.models_path() / HISTORY_FILE).read_text().splitlines()
    assert json.loads(line)["reason"] == status["reason"]


def test_nothing_closed_yet_is_a_skip_and_an_unreachable_redis_a_recorded_failure(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {**TINY_ENV, "SHELFCAST_HOME": str(settings.home)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", settings.redis.url)
    monkeypatch.setenv("SHELFCAST_PARTITIONS", str(PARTITIONS))
    assert main(["trainer", "--once"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["outcome"] == "skipped" and "no bucket closed yet" in record["reason"]
    assert record["config"] == TINY.to_dict()

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert main(["trainer", "--once"]) == 1
    assert "Redis at redis://127.0.0.1" in capsys.readouterr().err
    last = (settings.models_path() / HISTORY_FILE).read_text().splitlines()[-1]
    assert json.loads(last)["outcome"] == "failed"
    assert "ConnectionError" in json.loads(last)["reason"]


def test_lstm_config_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lstm_config(Settings.from_env()) == LSTMConfig()
    for name, value in TINY_ENV.items():
        monkeypatch.setenv(name, value)
    assert lstm_config(Settings.from_env()) == TINY
    monkeypatch.setenv("SHELFCAST_LSTM_WINDOWS_PER_EPOCH", "all")
    assert lstm_config(Settings.from_env()).windows_per_epoch is None
    monkeypatch.setenv("SHELFCAST_LSTM_EPOCHS", "0")
    with pytest.raises(ValueError, match="SHELFCAST_LSTM_EPOCHS='0'"):
        lstm_config(Settings.from_env())


def test_trainer_help_and_refusals(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["trainer", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: shelfcast trainer") and "--every-minutes" in out
    assert "SHELFCAST_LSTM_EPOCHS" in out
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("SHELFCAST_HOME", str(tmp_path))
    assert main(["trainer", "--once"]) == 2
    assert "Set REDIS_URL" in capsys.readouterr().err
    assert not (tmp_path / "redis").exists()  # no Redis of its own
    assert main(["trainer", "--through", "15000"]) == 2
    assert "--through needs --once" in capsys.readouterr().err


def test_the_trainer_process_refreshes_serves_metrics_and_stops_on_sigterm(
    settings: Settings, truth: Truth, tmp_path: Path
) -> None:
    through = max(b for _, b in truth.demand) - 2
    store(redis_client(settings.redis.url), truth, settings, through)
    port = free_port()
    env = {
        **os.environ,
        **TINY_ENV,
        "REDIS_URL": settings.redis.url,
        "SHELFCAST_HOME": str(settings.home),
        "SHELFCAST_PARTITIONS": str(PARTITIONS),
        "SHELFCAST_TRAINER_PORT": str(port),
    }
    log = tmp_path / "trainer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # a slot every 3 s: the second finds no new closed bucket and trains nothing
            [sys.executable, "-m", "streamer.cli", "trainer", "--every-minutes", "0.05"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "LSTM refresh not needed: data still ends at bucket" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'shelfcast_lstm_refreshes_total{outcome="promoted"} 1.0' in text
        assert "shelfcast_lstm_champion_version 1.0" in text
        assert "shelfcast_lstm_training_seconds_count 1.0" in text
        assert "process_resident_memory_bytes" in text
        # the worker's metrics are not the trainer's
        assert "shelfcast_batch_duration_seconds" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
    text = log.read_text()
    assert "LSTM refresh promoted v1" in text and "LSTM trainer stopped" in text
    assert Registry(settings.models_path()).versions() == [1]
